"""The engine's L2 depth snapshots in Redis: written by the engine, read by the API."""

from __future__ import annotations

import json
from typing import Any

import redis
from django.conf import settings

_client: redis.Redis | None = None


def depth_key(symbol: str) -> str:
    return f"bourse:depth:{symbol}"


def redis_client() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.REDIS_URL)
    return _client


def depth_snapshot(symbol: str) -> dict[str, Any] | None:
    """`{"bids": [[p, q]], "asks": [[p, q]], "lastUpdateId": "<id>", "timestamp": µs}` or None."""
    raw = redis_client().get(depth_key(symbol))
    return json.loads(raw) if raw else None
