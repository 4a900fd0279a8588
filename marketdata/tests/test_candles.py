"""Candles maintained by the DB processor, checked against an independent SQL oracle.

Trades go through the real path (order_place, the engine core with chosen timestamps,
settlement_apply); then, for every interval, the Candle table must equal TimescaleDB's
`time_bucket` (and `date_trunc('month')`) aggregation of the stored trades, with `first`/
`last` ordered by trade id.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from engine_worker.settlement import settlement_apply
from engine_worker.tests.factories import batch_payload, make_market
from exchange_site.db.base import timescaledb_installed
from marketdata.candles import (
    INTERVALS,
    MONTH,
    ORIGIN,
    WIDTHS,
    CandleTrade,
    bucket_next,
    bucket_start,
    candles_apply,
)
from marketdata.models import Candle, Trade
from marketdata.tests.factories import Tape
from trading.models import Market

pytestmark = pytest.mark.django_db

D = Decimal
SQL_INTERVAL = {
    "1m": "1 minute", "3m": "3 minutes", "5m": "5 minutes", "15m": "15 minutes", "30m": "30 minutes",
    "1h": "1 hour", "2h": "2 hours", "4h": "4 hours", "6h": "6 hours", "8h": "8 hours", "12h": "12 hours",
    "1d": "1 day", "3d": "3 days", "1w": "1 week",
}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def oracle(market: Market, interval: str) -> list[tuple[Any, ...]]:
    bucket = "date_trunc('month', time, 'UTC')" if interval == MONTH else "time_bucket(%(width)s::interval, time)"
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT {bucket} AS b, first(price, trade_id), max(price), min(price), last(price, trade_id),
                   sum(quantity), sum(quote_quantity), count(*), min(trade_id), max(trade_id)
            FROM marketdata_trade WHERE market_id = %(market)s GROUP BY b ORDER BY b
            """,
            {"width": SQL_INTERVAL.get(interval), "market": market.pk},
        )
        return [tuple(row) for row in cursor.fetchall()]


def stored(market: Market, interval: str) -> list[tuple[Any, ...]]:
    return list(
        Candle.objects.filter(market=market, interval=interval)
        .order_by("start")
        .values_list(
            "start", "open", "high", "low", "close", "volume", "quote_volume", "trades", "first_trade_id",
            "last_trade_id",
        )
    )


@pytest.fixture
def timescale() -> None:
    if not timescaledb_installed(connection):
        pytest.skip("the oracle uses TimescaleDB's time_bucket/first/last")


def test_intervals_are_backpacks_and_three_day_buckets_follow_time_bucket() -> None:
    assert INTERVALS == ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1month")
    # Weeks start on Monday; 3-day steps count from Monday 2000-01-03 (time_bucket's origin).
    assert bucket_start("1w", utc(2026, 2, 1, 23, 59)) == utc(2026, 1, 26)
    assert bucket_start("3d", utc(2000, 1, 5, 12)) == ORIGIN
    assert bucket_start("1month", utc(2026, 12, 31, 23, 59, 59, 999999)) == utc(2026, 12, 1)
    assert bucket_next("1month", utc(2026, 12, 1)) == utc(2027, 1, 1)


def test_candles_equal_the_sql_oracle_for_every_interval(timescale: None) -> None:
    market = make_market("AAPL", "USD", tick="0.01", lot="1")
    other = make_market("MSFT", "USD", tick="0.01", lot="1")
    tape = Tape(market, other)

    # Hand-picked edges: minute, hour, 8-hour, day, week (Monday 2026-02-02) and month
    # boundaries hit exactly, a microsecond either side, a 3-day boundary, and gaps.
    three_day_edge = bucket_start("3d", utc(2026, 2, 8))
    assert three_day_edge == ORIGIN + ((three_day_edge - ORIGIN) // WIDTHS["3d"]) * WIDTHS["3d"]
    edges = [
        utc(2026, 1, 30, 23, 58, 30),
        utc(2026, 1, 30, 23, 58, 40),
        utc(2026, 1, 30, 23, 59, 40),
        utc(2026, 1, 31),
        utc(2026, 1, 31, 23, 59, 59, 999999),
        utc(2026, 2, 1),  # month boundary
        utc(2026, 2, 1, 0, 0, 0, 1),
        utc(2026, 2, 2),  # Monday: week boundary
        utc(2026, 2, 2, 7, 59, 59),
        utc(2026, 2, 2, 8),
        three_day_edge,
        three_day_edge - timedelta(microseconds=1),
        utc(2026, 2, 17, 12, 34, 56),  # after a gap of days
        utc(2026, 3, 1),
        utc(2026, 3, 2, 0, 3),
    ]
    rng = random.Random(20260201)
    spread = [utc(2026, 1, 29) + timedelta(seconds=rng.randrange(0, 40 * 86400)) for _ in range(25)]
    times = sorted(edges + spread)

    price = 10000  # cents
    for when in times:
        levels = rng.choice((1, 1, 1, 2, 3))  # sometimes a sweep: several trades at one time
        book = []
        for _ in range(levels):
            price = max(100, price + rng.randrange(-300, 301))
            book.append((price, str(rng.randrange(1, 20))))
        book.sort()  # the taker bid meets the cheapest ask first
        taker = "Bid"
        if rng.random() < 0.3:
            book.reverse()  # a taker ask meets the highest bid first
            taker = "Ask"
        tape.trade(market, when, *[(f"{p / 100:.2f}", q) for p, q in book], taker=taker)
        if rng.random() < 0.2:
            tape.trade(other, when, (f"{rng.randrange(5000, 6000) / 100:.2f}", "3"))
        # Batches of one to a few commands, so buckets are built across several upserts.
        if rng.random() < 0.5:
            tape.commit()
    tape.commit()

    assert Trade.objects.filter(market=market).count() > len(times)
    for interval in INTERVALS:
        expected = oracle(market, interval)
        assert stored(market, interval) == expected, interval
        assert stored(other, interval) == oracle(other, interval), interval
    assert len(stored(market, "1month")) == 3  # January, February, March
    # The trade exactly on the month boundary opens February's candle.
    february = Candle.objects.get(market=market, interval="1month", start=utc(2026, 2, 1))
    first_in_february = Trade.objects.filter(market=market, time__gte=utc(2026, 2, 1)).order_by("trade_id").first()
    assert first_in_february is not None and first_in_february.time == utc(2026, 2, 1)
    assert february.open == first_in_february.price


def test_a_batch_applied_twice_does_not_count_twice() -> None:
    market = make_market("AAPL", "USD", tick="0.01", lot="1")
    tape = Tape(market)
    tape.trade(market, utc(2026, 3, 2, 10, 0, 5), ("100.00", "2"), ("101.00", "3"))
    tape.trade(market, utc(2026, 3, 2, 10, 0, 50), ("99.00", "1"), taker="Ask")
    events = tape.pending
    tape.commit()
    again = settlement_apply(batches=[batch_payload(events)])

    assert again.duplicates == len(events) and again.trades == 0
    candle = Candle.objects.get(market=market, interval="1m", start=utc(2026, 3, 2, 10))
    assert (candle.open, candle.high, candle.low, candle.close) == (D("100.00"), D("101.00"), D("99.00"), D("99.00"))
    assert (candle.volume, candle.quote_volume, candle.trades) == (D(6), D("200.00") + D("303.00") + D("99.00"), 3)
    assert Candle.objects.filter(market=market).count() == len(INTERVALS)


def test_upsert_orders_open_and_close_by_trade_id_whatever_the_batch_order() -> None:
    market = make_market("AAPL", "USD", tick="0.01", lot="1")
    when = utc(2026, 3, 2, 10, 0, 30)

    # Later trades first, then an earlier one (as if batches met out of order).
    candles_apply(trades=[CandleTrade(market.pk, 7, D(12), D(1), D(12), when), CandleTrade(market.pk, 8, D(13), D(1), D(13), when)])
    candles_apply(trades=[CandleTrade(market.pk, 3, D(20), D(2), D(40), when)])

    candle = Candle.objects.get(market=market, interval="1m")
    assert (candle.open, candle.high, candle.low, candle.close) == (D(20), D(20), D(12), D(13))
    assert (candle.volume, candle.quote_volume, candle.trades) == (D(4), D(65), 3)
    assert (candle.first_trade_id, candle.last_trade_id) == (3, 8)
