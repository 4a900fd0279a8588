"""Checks for the web's connection pool that cost no round trip when nothing has happened.

Django's pool with `CONN_HEALTH_CHECKS` runs `ConnectionPool.check_connection` (an empty
query, one round trip to PostgreSQL) each time a request takes a connection: one of the
eight statements an order POST sent. Here a connection is checked that way only when there
is a reason to doubt it:

- its socket has something to read while it sat idle in the pool: PostgreSQL says why it
  is closing a session (`pg_terminate_backend`, a restart, `idle_session_timeout`) before
  it closes it, and a closed socket reads as end of file; a healthy idle session sends
  nothing (Bourse never LISTENs on pooled connections);
- or it was last handed out more than `STALE_AFTER` seconds ago, for what a socket cannot
  show (a peer gone without a word, across a network).

A connection that fails the check is dropped and the pool hands out another, as before.
What no check can catch (the server dies between the check and the query) fails the
request either way.
"""

from __future__ import annotations

import select
import time
from typing import Any

from psycopg import Connection
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

STALE_AFTER = 30.0  # seconds since a connection was last handed out after which it is checked anyway


def check_if_doubtful(conn: Connection[Any]) -> None:
    """The pool's `check` callback: raise if the connection is unusable (it is then dropped).

    The time it was last handed out is kept on the connection (a `reset` callback could
    note when it came back, but makes the pool return every connection through its worker
    thread); a request holds one for milliseconds, so this errs towards checking.
    """
    now = time.monotonic()
    last = getattr(conn, "_bourse_handed_out_at", None)
    conn._bourse_handed_out_at = now  # type: ignore[attr-defined]
    if (
        last is None
        or now - last > STALE_AFTER
        or conn.closed
        or conn.info.transaction_status != TransactionStatus.IDLE
        or _readable(conn.fileno())
    ):
        ConnectionPool.check_connection(conn)


def _readable(fd: int) -> bool:
    # poll, not select: a busy web process (thousands of WebSocket clients) holds file
    # descriptors past select()'s limit of 1024.
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
