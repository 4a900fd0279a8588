"""Fixtures shared by every app's tests: the real Redis test database and common users.

The suite runs against real PostgreSQL (+ TimescaleDB) and real Redis; nothing is mocked.
App-specific fixtures live in `<app>/tests/conftest.py`, factories in `<app>/tests/factories.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def redis_conn(settings: Any) -> Iterator[Any]:
    """A client on the test Redis database, emptied before and after the test."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    db = client.connection_pool.connection_kwargs.get("db", 0)
    # Never flush a database the test command did not reserve for tests.
    assert db != 0, f"refusing to flush Redis db 0 ({settings.REDIS_URL}); tests use their own db number"
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(autouse=True)
def _isolated_redis(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every database test starts with an empty test Redis (queues, channel layer, caches)."""
    if "django_db_setup" in request.fixturenames or request.node.get_closest_marker("django_db"):
        request.getfixturevalue("redis_conn")
    yield
