"""Reads of market data: klines from the stored candles, 24-hour tickers and trades."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.db.models import QuerySet

from marketdata.candles import MONTH, WIDTHS, bucket_next, bucket_previous, bucket_start, bucket_starts
from marketdata.models import Trade
from trading.models import Market

MAX_KLINES = 1000
TICKER_WINDOW = timedelta(hours=24)
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Kline:
    """One candle as the API sends it. Times are epoch seconds; prices and volumes are
    decimal strings formatted by PostgreSQL (`trim_scale(x)::text`, "100.5" not
    "100.5000000000000000"): turning 8,000 numerics into Decimals and back cost more than
    the index scan itself (bench/marketdata_bench.py)."""

    start: int
    end: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trades: int
    closed: bool  # the bucket has ended (end <= now): it will not change any more


_CANDLES_SQL = """
SELECT extract(epoch FROM start)::bigint, trim_scale(open)::text, trim_scale(high)::text,
       trim_scale(low)::text, trim_scale(close)::text, trim_scale(volume)::text,
       trim_scale(quote_volume)::text, trades
FROM marketdata_candle
WHERE market_id = %s AND interval = %s AND start >= %s AND start <= %s
"""
# The close before the range, for leading gaps: one probe of (market, interval, start DESC).
_CLOSE_BEFORE_SQL = """
SELECT trim_scale(close)::text FROM marketdata_candle
WHERE market_id = %s AND interval = %s AND start < %s
ORDER BY start DESC LIMIT 1
"""


def _epoch(when: datetime) -> int:
    return int(when.timestamp())


def _bucket_epochs(interval: str, first: datetime, last: datetime) -> list[int]:
    """Bucket starts from `first` to `last` inclusive, plus the end of the last one."""
    if interval == MONTH:
        starts = [*bucket_starts(interval, first, last), bucket_next(interval, last)]
        return [_epoch(start) for start in starts]
    width = int(WIDTHS[interval].total_seconds())
    return list(range(_epoch(first), _epoch(last) + width + 1, width))


def klines(market: Market, interval: str, start: datetime, end: datetime, *, now: datetime) -> list[Kline]:
    """The candles of the buckets that overlap [start, end) and have begun by `now`, oldest
    first, at most MAX_KLINES (the newest ones: an over-long range loses its oldest end).

    Gaps are filled: a bucket without trades is flat at the previous close with zero volume
    and trades. Buckets before the market's first trade are left out (there is no price).
    Precondition: `interval` is one of `marketdata.candles.INTERVALS`.
    """
    if end <= start:
        return []
    last = bucket_start(interval, min(end - timedelta(microseconds=1), now))
    first = bucket_start(interval, start)
    if last < first:
        return []
    oldest_allowed = last
    for _ in range(MAX_KLINES - 1):
        if oldest_allowed <= first:
            break
        oldest_allowed = bucket_previous(interval, oldest_allowed)
    first = max(first, oldest_allowed)

    with connection.cursor() as cursor:
        cursor.execute(_CANDLES_SQL, [market.pk, interval, first, last])
        stored = {row[0]: row for row in cursor.fetchall()}
        cursor.execute(_CLOSE_BEFORE_SQL, [market.pk, interval, first])
        before = cursor.fetchone()
    previous_close: str | None = before[0] if before else None
    now_epoch = _epoch(now)
    edges = _bucket_epochs(interval, first, last)
    out: list[Kline] = []
    for bucket, bucket_end in zip(edges, edges[1:], strict=False):
        candle = stored.get(bucket)
        if candle is not None:
            _start, open_, high, low, close, volume, quote_volume, trades = candle
            out.append(Kline(bucket, bucket_end, open_, high, low, close, volume, quote_volume, trades,
                             bucket_end <= now_epoch))
            previous_close = close
        elif previous_close is not None:
            out.append(Kline(bucket, bucket_end, previous_close, previous_close, previous_close, previous_close,
                             "0", "0", 0, bucket_end <= now_epoch))
    return out


@dataclass(frozen=True, slots=True)
class Ticker:
    symbol: str
    first_price: Decimal | None
    last_price: Decimal | None
    high: Decimal | None
    low: Decimal | None
    volume: Decimal
    quote_volume: Decimal
    trades: int

    @property
    def price_change(self) -> Decimal | None:
        if self.first_price is None or self.last_price is None:
            return None
        return self.last_price - self.first_price

    @property
    def price_change_percent(self) -> Decimal | None:
        """A fraction, as Backpack sends it (-0.031279 is -3.13%)."""
        change = self.price_change
        if change is None or not self.first_price:
            return None
        return change / self.first_price


# Rolling 24 hours from the trades themselves, window [since, now] inclusive at both ends:
# candles would blur the edges to a bucket. Per market, one aggregate over the window plus
# two LIMIT 1 probes for the first and last price, all on the (market, time) index
# (TimescaleDB also skips chunks outside the window). `before` is the last trade at or
# before `now`, so a quiet market still shows its last price: first = last = high = low
# with zero volume, as exchanges show it.
_TICKERS = """
SELECT m.symbol, f.price, l.price, a.high, a.low, a.volume, a.quote_volume, a.trades, before.price
FROM trading_market m
CROSS JOIN LATERAL (
    SELECT max(t.price) AS high, min(t.price) AS low, coalesce(sum(t.quantity), 0) AS volume,
           coalesce(sum(t.quote_quantity), 0) AS quote_volume, count(*) AS trades
    FROM marketdata_trade t WHERE t.market_id = m.id AND t.time >= %(since)s AND t.time <= %(now)s
) a
LEFT JOIN LATERAL (
    SELECT t.price FROM marketdata_trade t
    WHERE t.market_id = m.id AND t.time >= %(since)s AND t.time <= %(now)s
    ORDER BY t.time, t.trade_id LIMIT 1
) f ON true
LEFT JOIN LATERAL (
    SELECT t.price FROM marketdata_trade t
    WHERE t.market_id = m.id AND t.time >= %(since)s AND t.time <= %(now)s
    ORDER BY t.time DESC, t.trade_id DESC LIMIT 1
) l ON true
LEFT JOIN LATERAL (
    SELECT t.price FROM marketdata_trade t
    WHERE t.market_id = m.id AND t.time < %(since)s
    ORDER BY t.time DESC, t.trade_id DESC LIMIT 1
) before ON a.trades = 0
WHERE %(market_id)s::bigint IS NULL OR m.id = %(market_id)s::bigint
ORDER BY m.symbol
"""


def _tickers(now: datetime, market_id: int | None) -> list[Ticker]:
    with connection.cursor() as cursor:
        cursor.execute(_TICKERS, {"since": now - TICKER_WINDOW, "now": now, "market_id": market_id})
        rows = cursor.fetchall()
    out = []
    for symbol, first, last, high, low, volume, quote_volume, trades, before in rows:
        if not trades:
            first = last = high = low = before
        out.append(Ticker(
            symbol=symbol, first_price=first, last_price=last, high=high, low=low,
            volume=volume, quote_volume=quote_volume, trades=int(trades),
        ))
    return out


def ticker(market: Market, now: datetime) -> Ticker:
    """The market's rolling 24-hour statistics over [now - 24 h, now]."""
    return _tickers(now, market.pk)[0]


def tickers(now: datetime) -> list[Ticker]:
    """Every market's ticker (as `ticker`), by symbol, in one query."""
    return _tickers(now, None)


def trades_recent(market: Market, *, limit: int, offset: int = 0) -> QuerySet[Trade]:
    """The market's trades, newest first."""
    return Trade.objects.filter(market=market).order_by("-time", "-trade_id")[offset : offset + limit]
