"""The suite talks to the real servers: PostgreSQL with TimescaleDB loaded, and Redis."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


def test_postgresql_has_timescaledb_loaded() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SHOW shared_preload_libraries")
        assert "timescaledb" in cursor.fetchone()[0]
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        row = cursor.fetchone()
    assert row is not None, "timescaledb extension is not created in the test database"
    assert connection.vendor == "postgresql"


def test_time_bucket_works_on_the_test_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT time_bucket('1 hour', timestamptz '2026-01-01 10:42:00+00')")
        (bucket,) = cursor.fetchone()
    assert bucket.hour == 10 and bucket.minute == 0


def test_redis_is_a_real_server_on_a_test_database(redis_conn: Any) -> None:
    info = redis_conn.info("server")
    assert info["redis_version"].split(".")[0] >= "6"
    redis_conn.set("bourse:probe", "1")
    assert redis_conn.get("bourse:probe") == b"1"
    assert redis_conn.connection_pool.connection_kwargs["db"] != 0
