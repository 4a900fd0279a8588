"""Candles: bucket arithmetic and their maintenance by the DB processor.

Candles are written when trades are, in the DB processor's transaction
(`engine_worker.settlement.settlement_apply` calls `candles_apply`), never computed with
`time_bucket` at read time: the embedded PostgreSQL of the default run has no TimescaleDB
(ARCHITECTURE.md, "Embedded defaults").

Alignment, in UTC, chosen to agree with TimescaleDB so that `time_bucket` over the trades
is an exact oracle for the stored candles:
- fixed intervals (1m … 3d, 1w) are counted from `ORIGIN` = Monday 2000-01-03 00:00 UTC,
  `time_bucket`'s default origin. Every interval up to 1d divides a day, so they are the
  plain calendar boundaries; weeks start on Monday; `3d` buckets are the 3-day steps from
  2000-01-03 (so 2000-01-03, -06, -09, …; not tied to months or weeks).
- `1month` is the calendar month (`date_trunc('month', …)` in UTC).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from django.db import connection

MONTH = "1month"
# Fixed-width intervals; `1month` is the one calendar interval.
WIDTHS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "3m": timedelta(minutes=3),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "30m": timedelta(minutes=30),
    "1h": timedelta(hours=1),
    "2h": timedelta(hours=2),
    "4h": timedelta(hours=4),
    "6h": timedelta(hours=6),
    "8h": timedelta(hours=8),
    "12h": timedelta(hours=12),
    "1d": timedelta(days=1),
    "3d": timedelta(days=3),
    "1w": timedelta(weeks=1),
}
INTERVALS: tuple[str, ...] = (*WIDTHS, MONTH)
ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)  # a Monday: TimescaleDB's default time_bucket origin


def bucket_start(interval: str, when: datetime) -> datetime:
    """The start of the `interval` bucket holding `when` (aware), in UTC."""
    when = when.astimezone(UTC)
    if interval == MONTH:
        return when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    width = WIDTHS[interval]
    return ORIGIN + ((when - ORIGIN) // width) * width


def bucket_next(interval: str, start: datetime) -> datetime:
    """The start of the bucket after the one starting at `start` (its end)."""
    if interval == MONTH:
        return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start + WIDTHS[interval]


def bucket_previous(interval: str, start: datetime) -> datetime:
    if interval == MONTH:
        return start.replace(year=start.year - 1, month=12) if start.month == 1 else start.replace(month=start.month - 1)
    return start - WIDTHS[interval]


def bucket_starts(interval: str, first: datetime, last: datetime) -> Iterator[datetime]:
    """Bucket starts from `first` to `last` inclusive (both bucket starts)."""
    start = first
    while start <= last:
        yield start
        start = bucket_next(interval, start)


class CandleTrade(NamedTuple):
    """What a candle needs of one trade."""

    market_id: int
    trade_id: int
    price: Decimal
    quantity: Decimal
    quote_quantity: Decimal
    time: datetime


@dataclass(slots=True)
class CandleBucket:
    """One partial candle: the trades of a batch that fell in one bucket."""

    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: int
    first_trade_id: int
    last_trade_id: int


_Bucket = CandleBucket  # the old private name


def candles_fold_minutes(trades: Iterable[CandleTrade]) -> dict[tuple[int, datetime], CandleBucket]:
    """The trades folded into one partial 1m candle per (market, minute start)."""
    buckets: dict[tuple[int, datetime], CandleBucket] = {}
    # By trade id within each market: open is the first trade of a bucket, close the last.
    for trade in sorted(trades, key=lambda t: (t.market_id, t.trade_id)):
        when = trade.time.astimezone(UTC)
        key = (trade.market_id, when.replace(second=0, microsecond=0))
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = CandleBucket(
                open=trade.price, high=trade.price, low=trade.price, close=trade.price,
                volume=trade.quantity, quote_volume=trade.quote_quantity, trades=1,
                first_trade_id=trade.trade_id, last_trade_id=trade.trade_id,
            )
            continue
        if trade.price > bucket.high:
            bucket.high = trade.price
        if trade.price < bucket.low:
            bucket.low = trade.price
        bucket.close = trade.price
        bucket.last_trade_id = trade.trade_id
        bucket.volume += trade.quantity
        bucket.quote_volume += trade.quote_quantity
        bucket.trades += 1
    return buckets


def candles_rollup(
    minutes: Mapping[tuple[int, datetime], CandleBucket],
) -> dict[tuple[int, str, datetime], CandleBucket]:
    """Partial 1m candles rolled up into every interval (1m included).

    A batch touches a handful of minutes, so this is a handful of rows whatever the number
    of trades: folding each trade into all 15 intervals cost more than the database did.
    Every interval's bucket is a union of whole minutes (all widths are whole minutes from a
    minute-aligned origin; months start on a minute), so the roll-up is exact.
    """
    out: dict[tuple[int, str, datetime], CandleBucket] = {}
    # Merged in trade-id order so open/close come from the first/last minute.
    for (market_id, start), b in sorted(minutes.items(), key=lambda kv: (kv[0][0], kv[1].first_trade_id)):
        for interval in INTERVALS:
            key = (market_id, interval, start if interval == "1m" else bucket_start(interval, start))
            acc = out.get(key)
            if acc is None:
                out[key] = CandleBucket(
                    b.open, b.high, b.low, b.close, b.volume, b.quote_volume, b.trades, b.first_trade_id,
                    b.last_trade_id,
                )
                continue
            acc.high = max(acc.high, b.high)
            acc.low = min(acc.low, b.low)
            acc.close = b.close
            acc.last_trade_id = b.last_trade_id
            acc.volume += b.volume
            acc.quote_volume += b.quote_volume
            acc.trades += b.trades
    return out


def candles_aggregate(trades: Iterable[CandleTrade]) -> dict[tuple[int, str, datetime], CandleBucket]:
    """The trades folded into one partial candle per (market, interval, bucket start)."""
    return candles_rollup(candles_fold_minutes(trades))


# One statement for every interval of the batch. Adding volume, quote volume and the trade
# count to the stored row is safe because a batch is applied exactly once: the DB processor
# skips events whose sequence is already applied (settlement_apply), so the same trade never
# reaches this twice. open/close are decided by trade id, so batches may meet in a bucket in
# any order.
_UPSERT = """
INSERT INTO marketdata_candle AS c
    (market_id, "interval", start, open, high, low, close, volume, quote_volume, trades, first_trade_id, last_trade_id)
SELECT * FROM unnest(%s::bigint[], %s::varchar[], %s::timestamptz[], %s::numeric[], %s::numeric[], %s::numeric[],
                     %s::numeric[], %s::numeric[], %s::numeric[], %s::bigint[], %s::bigint[], %s::bigint[])
ON CONFLICT (market_id, "interval", start) DO UPDATE SET
    open = CASE WHEN EXCLUDED.first_trade_id < c.first_trade_id THEN EXCLUDED.open ELSE c.open END,
    high = GREATEST(c.high, EXCLUDED.high),
    low = LEAST(c.low, EXCLUDED.low),
    close = CASE WHEN EXCLUDED.last_trade_id > c.last_trade_id THEN EXCLUDED.close ELSE c.close END,
    volume = c.volume + EXCLUDED.volume,
    quote_volume = c.quote_volume + EXCLUDED.quote_volume,
    trades = c.trades + EXCLUDED.trades,
    first_trade_id = LEAST(c.first_trade_id, EXCLUDED.first_trade_id),
    last_trade_id = GREATEST(c.last_trade_id, EXCLUDED.last_trade_id)
"""


def candles_apply(*, trades: Iterable[CandleTrade]) -> int:
    """Fold newly inserted trades into the candles of every interval; how many candle rows
    were written.

    Preconditions: called inside the transaction that inserts these trades, and with each
    trade exactly once (the DB processor's exactly-once application guarantees it).
    """
    return candles_upsert(candles_aggregate(trades))


def candles_apply_minutes(*, minutes: Mapping[tuple[int, datetime], CandleBucket]) -> int:
    """`candles_apply` for trades already folded into 1m partial candles (the DB processor
    folds them while walking its events, in integers); same preconditions."""
    return candles_upsert(candles_rollup(minutes))


def candles_upsert(buckets: Mapping[tuple[int, str, datetime], CandleBucket]) -> int:
    if not buckets:
        return 0
    keys = list(buckets)
    rows = [buckets[key] for key in keys]
    with connection.cursor() as cursor:
        cursor.execute(
            _UPSERT,
            [
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                [r.open for r in rows],
                [r.high for r in rows],
                [r.low for r in rows],
                [r.close for r in rows],
                [r.volume for r in rows],
                [r.quote_volume for r in rows],
                [r.trades for r in rows],
                [r.first_trade_id for r in rows],
                [r.last_trade_id for r in rows],
            ],
        )
    return len(keys)
