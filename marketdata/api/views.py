"""Public market-data endpoints of the bot API: ticker(s), depth, trades and klines.

Thin (STYLE.md 2): parse, one selector call, serialize. Depth comes from the engine's L2
snapshot in Redis, never from a scan of the orders; trades, tickers and klines from the
tables the DB processor writes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api.base import PublicAPIView, query_int
from accounts.errors import ServiceError
from marketdata import selectors
from marketdata.api import serializers
from marketdata.candles import INTERVALS
from marketdata.depth import depth_snapshot
from trading.services import market_get

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000  # Backpack's cap on trades per request
DEFAULT_DEPTH = 100
MAX_DEPTH = 1000
# The last second of year 9999: later times do not fit a datetime.
_MAX_SECONDS = 253_402_300_799


class TickerView(PublicAPIView):
    def get(self, request: Request) -> Response:
        market = market_get(request.query_params.get("symbol"))
        return Response(serializers.ticker(selectors.ticker(market, timezone.now())))


class TickersView(PublicAPIView):
    def get(self, request: Request) -> Response:
        return Response([serializers.ticker(row) for row in selectors.tickers(timezone.now())])


class DepthView(PublicAPIView):
    def get(self, request: Request) -> Response:
        market = market_get(request.query_params.get("symbol"))
        limit = query_int(request, "limit", default=DEFAULT_DEPTH, minimum=1, maximum=MAX_DEPTH)
        snapshot = depth_snapshot(market.symbol)
        if snapshot is None:
            # The engine has not written this book yet (no order since it started): empty.
            return Response({"asks": [], "bids": [], "lastUpdateId": "0", "timestamp": time.time_ns() // 1000})
        # The engine writes each side best first; Backpack lists asks ascending and bids
        # descending, i.e. also best first, so a limit keeps the levels nearest the spread.
        return Response({
            "asks": snapshot["asks"][:limit],
            "bids": snapshot["bids"][:limit],
            "lastUpdateId": str(snapshot["lastUpdateId"]),
            "timestamp": int(snapshot["timestamp"]),
        })


class TradesView(PublicAPIView):
    """The most recent trades, newest first."""

    def get(self, request: Request) -> Response:
        market = market_get(request.query_params.get("symbol"))
        limit = query_int(request, "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
        return Response([serializers.trade(row) for row in selectors.trades_recent(market, limit=limit)])


class TradesHistoryView(PublicAPIView):
    """Older trades: newest first, `offset` trades back from the newest."""

    def get(self, request: Request) -> Response:
        market = market_get(request.query_params.get("symbol"))
        limit = query_int(request, "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
        offset = query_int(request, "offset", default=0)
        rows = selectors.trades_recent(market, limit=limit, offset=offset)
        return Response([serializers.trade(row) for row in rows])


def _seconds(request: Request, name: str) -> datetime | None:
    if not request.query_params.get(name):
        return None
    value = query_int(request, name, default=0, minimum=0, maximum=_MAX_SECONDS)
    return datetime.fromtimestamp(value, tz=UTC)


class KlinesView(PublicAPIView):
    """Candles of the buckets overlapping [startTime, endTime) (seconds; endTime defaults to
    now), oldest first. At most `selectors.MAX_KLINES`: a longer range keeps its newest
    candles (the start is moved forward), so "the last N up to now" always works."""

    def get(self, request: Request) -> Response:
        market = market_get(request.query_params.get("symbol"))
        interval = request.query_params.get("interval")
        if interval not in INTERVALS:
            raise ServiceError(f"interval must be one of {', '.join(INTERVALS)}.")
        now = timezone.now()
        start = _seconds(request, "startTime")
        if start is None:
            raise ServiceError("startTime (seconds) is required.")
        end = _seconds(request, "endTime") or now
        if start > end:
            raise ServiceError("startTime must not be after endTime.", code="INVALID_RANGE")
        rows = selectors.klines(market, interval, start, end, now=now)
        return Response([serializers.kline(row) for row in rows])
