"""Prepared statements for the few queries that run on every order request.

Django sends each query as text with its values inlined (psycopg's client-side binding), so
PostgreSQL parses and plans it afresh every time. For the statements every order POST
runs (the token look-up, the market look-up, the order's lock-and-insert) that planning
was a large share of PostgreSQL's work per order. `prepared_cursor()` gives a cursor whose
`execute` binds values on the server and prepares the statement on first use on each
connection (psycopg keeps the prepared names per connection; a pooled connection keeps
them for its life). The cursor is Django's wrapper around it, so query logging, counting
(`CaptureQueriesContext`) and the conversion of database errors to Django's work as for
any other cursor.

Written for these statements: values are typed by psycopg from the Python value, so each
placeholder is given an explicit cast where PostgreSQL could not infer its type. Settings
give the connections a `prepare_threshold` so that `prepare=True` is honoured; nothing else
is prepared (Django's own cursors bind on the client and never prepare). A statement
prepared before a migration that changes its result columns fails once on a running
process ("cached plan must not change result type"); deploys restart the web processes.
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.backends.postgresql.base import ServerBindingCursor
from django.db.backends.utils import CursorWrapper


class _PreparingCursor(ServerBindingCursor):
    def execute(self, query: Any, params: Any = None, *, prepare: bool | None = True, binary: bool | None = None) -> Any:
        return super().execute(query, params, prepare=prepare, binary=binary)


def prepared_cursor() -> CursorWrapper:
    """A cursor on the default connection that prepares what it executes (see above)."""
    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw = _PreparingCursor(connection.connection)
    return connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)
