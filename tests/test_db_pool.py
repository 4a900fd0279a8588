"""The web's connection pool (exchange_site/db/pool.py) on the real PostgreSQL: a connection the
server has dropped is never handed to a request, and a healthy one is handed out without the
round trip Django's own check makes per request."""

from __future__ import annotations

import copy
import os
import resource
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection
from psycopg_pool import ConnectionPool

from exchange_site.db import pool as pool_module
from exchange_site.db.base import DatabaseWrapper


@pytest.fixture
def pool() -> Iterator[ConnectionPool]:
    params = connection.get_connection_params()
    params.pop("prepare_threshold", None)
    pool = ConnectionPool(kwargs={**params, "autocommit": True}, min_size=1, max_size=1, check=pool_module.check_if_doubtful, open=True)
    pool.wait()
    yield pool
    pool.close()


@pytest.fixture
def round_trip_checks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The connections given the full check (an empty query), in order."""
    seen: list[Any] = []
    full = ConnectionPool.check_connection

    def spy(conn: Any) -> None:
        seen.append(conn)
        full(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(spy))
    return seen


def _backend_pid(pool: ConnectionPool) -> int:
    with pool.connection() as conn:
        return int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]


def _terminate(pid: int) -> None:
    with psycopg.connect(**{k: v for k, v in connection.get_connection_params().items() if k != "prepare_threshold"}) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    time.sleep(0.2)  # the server's notice reaches the idle socket


@pytest.mark.django_db
def test_a_connection_in_use_is_handed_out_again_without_a_round_trip(
    pool: ConnectionPool, round_trip_checks: list[Any]
) -> None:
    first = _backend_pid(pool)  # its first hand-out is checked in full
    round_trip_checks.clear()

    again = [_backend_pid(pool) for _ in range(5)]

    assert again == [first] * 5
    assert round_trip_checks == []


@pytest.mark.django_db
def test_a_connection_the_server_dropped_is_replaced_before_a_request_gets_it(
    pool: ConnectionPool, round_trip_checks: list[Any]
) -> None:
    dropped = _backend_pid(pool)
    _terminate(dropped)

    replacement = _backend_pid(pool)  # would raise "terminating connection" without the check

    assert replacement != dropped
    assert len(round_trip_checks) >= 1


@pytest.mark.django_db
def test_a_connection_idle_for_long_is_checked_in_full(
    pool: ConnectionPool, round_trip_checks: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _backend_pid(pool)
    round_trip_checks.clear()
    monkeypatch.setattr(pool_module, "STALE_AFTER", 0.0)

    _backend_pid(pool)

    assert len(round_trip_checks) == 1


@pytest.mark.django_db
def test_the_project_backend_gives_djangos_pool_this_check() -> None:
    settings_dict = copy.deepcopy(connection.settings_dict)
    settings_dict["CONN_MAX_AGE"] = 0
    settings_dict["CONN_HEALTH_CHECKS"] = True
    settings_dict["OPTIONS"]["pool"] = {"min_size": 0, "max_size": 1}
    wrapper = DatabaseWrapper(settings_dict, alias="pool_test")
    try:
        assert wrapper.pool is not None
        assert wrapper.pool._check is pool_module.check_if_doubtful
    finally:
        wrapper.close_pool()


@pytest.mark.django_db
def test_a_connection_on_a_high_file_descriptor_is_checked_like_any_other(
    pool: ConnectionPool, round_trip_checks: list[Any]
) -> None:
    """A web process with thousands of WebSocket clients holds descriptors past 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the descriptor limit here ({hard}) keeps every descriptor below 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    pool.close()
    null = os.open(os.devnull, os.O_RDONLY)
    filler = [os.dup(null)]
    while filler[-1] < 1100:  # every lower descriptor taken: the next socket's is above
        filler.append(os.dup(null))
    try:
        high = ConnectionPool(
            kwargs={**{k: v for k, v in connection.get_connection_params().items() if k != "prepare_threshold"}, "autocommit": True},
            min_size=1, max_size=1, check=pool_module.check_if_doubtful, open=True,
        )
        try:
            with high.connection() as conn:
                assert conn.fileno() > 1024
            round_trip_checks.clear()
            with high.connection() as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            assert round_trip_checks == []
        finally:
            high.close()
    finally:
        for fd in filler:
            os.close(fd)
        os.close(null)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
