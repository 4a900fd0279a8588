"""The public ticker and kline streams: published after the DB processor's commit, from the
stored candles, and each minute for the candles that ended (gap-filled where nothing traded).

Frames are heard on the real Redis pub/sub channel layer, as a WebSocket consumer would.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from engine_worker.settlement import settlement_apply
from engine_worker.tests.factories import batch_payload, make_market
from marketdata.candles import bucket_start
from marketdata.jobs import CLOSED_THROUGH_KEY, publish_closed_candles
from marketdata.streams import publish_after_commit, publish_closed
from marketdata.tests.factories import Tape
from marketdata.tests.listeners import GroupListener
from trading.models import Market

pytestmark = pytest.mark.django_db


def _away_from_a_minute_boundary() -> datetime:
    # The test trades "now" and expects the candle still open when it is published.
    now = timezone.now()
    if now.second >= 55:
        time.sleep(61 - now.second)
        now = timezone.now()
    return now


def _apply(tape: Tape) -> dict[str, Any]:
    """Settle the tape's pending events as one DB processor batch; its payload."""
    payload = batch_payload(tape.pending)
    tape.pending = []
    settlement_apply(batches=[payload])
    return payload


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_a_batch_with_trades_publishes_its_markets_ticker_and_current_candles() -> None:
    market = make_market("AAPL", "USD", tick="0.01", lot="1")
    other = make_market("MSFT", "USD", tick="0.01", lot="1")
    tape = Tape(market, other)
    now = _away_from_a_minute_boundary()
    # Earlier batches: one trade outside the 24 hours, two inside it.
    tape.trade(market, now - timedelta(hours=25), ("500.00", "9"))
    tape.trade(market, now - timedelta(hours=23, minutes=50), ("90.00", "2"))
    tape.trade(market, now - timedelta(hours=2), ("130.00", "1"))
    tape.trade(other, now - timedelta(hours=1), ("50.00", "1"))
    _apply(tape)

    minute = bucket_start("1m", now)
    hour = bucket_start("1h", now)
    listeners = {
        name: GroupListener(name) for name in ("kline.1m.AAPL_USD", "kline.1h.AAPL_USD", "ticker.AAPL_USD")
    }
    # Publishing returns once the frames are sent: a second is ample for one to arrive.
    silent = GroupListener("ticker.MSFT_USD", first=1.5)
    # The batch under test: two trades now, sweeping two ask levels.
    tape.trade(market, now, ("100.50", "2"), ("101.00", "3"))
    payload = _apply(tape)
    publish_after_commit([payload])

    [kline_1m] = listeners["kline.1m.AAPL_USD"].frames()
    assert kline_1m["stream"] == "kline.1m.AAPL_USD"
    assert kline_1m["data"] | {"E": 0} == {
        "e": "kline", "E": 0, "s": "AAPL_USD", "t": _iso(minute), "T": _iso(minute + timedelta(minutes=1)),
        "o": "100.5", "h": "101", "l": "100.5", "c": "101", "v": "5", "n": 2, "X": False,
    }
    [kline_1h] = listeners["kline.1h.AAPL_USD"].frames()
    assert (kline_1h["data"]["t"], kline_1h["data"]["v"], kline_1h["data"]["X"]) == (_iso(hour), "5", False)

    [ticker] = listeners["ticker.AAPL_USD"].frames()
    assert ticker["stream"] == "ticker.AAPL_USD"
    # 24 hours: 90 (first) … 130 (high) … 101 (last), 2 + 1 + 5 shares; the 500 is too old.
    assert ticker["data"] | {"E": 0} == {
        "e": "ticker", "E": 0, "s": "AAPL_USD", "o": "90", "c": "101", "h": "130", "l": "90",
        "v": "8", "V": "814", "n": 4,  # 180 + 130 + 201 + 303
    }
    # MSFT traded only in an earlier batch: nothing for it now.
    silent.thread.join(5)
    assert silent.messages == []


def test_a_late_trade_in_an_ended_bucket_is_published_closed() -> None:
    market = make_market("AAPL", "USD", tick="0.01", lot="1")
    tape = Tape(market)
    now = _away_from_a_minute_boundary()
    late = now - timedelta(minutes=10)
    listener = GroupListener("kline.1m.AAPL_USD")
    tape.trade(market, late, ("42.00", "3"))
    publish_after_commit([_apply(tape)])
    [frame] = listener.frames()
    assert (frame["data"]["t"], frame["data"]["c"], frame["data"]["v"], frame["data"]["X"]) == (
        _iso(bucket_start("1m", late)), "42", "3", True,
    )


def _trade_at(market: Market, when: datetime, price: str, qty: str) -> None:
    tape = Tape(market)
    tape.trade(market, when, (price, qty))
    _apply(tape)


def test_a_minute_without_trades_is_published_closed_at_the_previous_close() -> None:
    quiet = make_market("AAPL", "USD", tick="0.01", lot="1")
    busy = make_market("MSFT", "USD", tick="0.01", lot="1")
    never = make_market("IBM", "USD", tick="0.01", lot="1")
    boundary = datetime(2026, 3, 5, 10, 7, tzinfo=UTC)  # only 1m buckets end here (not 3m, 5m, …)
    _trade_at(quiet, boundary - timedelta(minutes=4, seconds=30), "77.70", "2")
    _trade_at(busy, boundary - timedelta(seconds=20), "12.00", "5")
    listeners = {s: GroupListener(f"kline.1m.{s}") for s in ("AAPL_USD", "MSFT_USD")}
    never_listener = GroupListener("kline.1m.IBM_USD", first=1.5)

    assert publish_closed(boundary - timedelta(minutes=1), boundary) == 2

    expected_minute = _iso(boundary - timedelta(minutes=1))
    [quiet_frame] = listeners["AAPL_USD"].frames()
    assert quiet_frame["data"] | {"E": 0} == {
        "e": "kline", "E": 0, "s": "AAPL_USD", "t": expected_minute, "T": _iso(boundary),
        "o": "77.7", "h": "77.7", "l": "77.7", "c": "77.7", "v": "0", "n": 0, "X": True,
    }
    [busy_frame] = listeners["MSFT_USD"].frames()
    assert (busy_frame["data"]["t"], busy_frame["data"]["c"], busy_frame["data"]["v"], busy_frame["data"]["X"]) == (
        expected_minute, "12", "5", True,
    )
    never_listener.thread.join(5)
    assert never_listener.messages == [], "a market that never traded has no price to show"
    assert never.pk


def test_the_job_continues_from_its_last_run_without_repeating_a_bucket(redis_conn: Any) -> None:
    market = make_market("AAPL", "USD", tick="0.01", lot="1")
    boundary = datetime(2026, 3, 5, 10, 7, tzinfo=UTC)
    _trade_at(market, boundary - timedelta(minutes=3), "10.00", "1")
    redis_conn.set(CLOSED_THROUGH_KEY, repr((boundary - timedelta(seconds=59)).timestamp()))
    listener = GroupListener("kline.1m.AAPL_USD")

    assert publish_closed_candles(now=boundary + timedelta(seconds=1)) == 1
    assert publish_closed_candles(now=boundary + timedelta(seconds=30)) == 0  # nothing else ended
    # A run that comes late publishes each bucket it missed, oldest first: the 1m of 10:07
    # and 10:08, and the 3m of 10:06 (heard on its own group).
    assert publish_closed_candles(now=boundary + timedelta(minutes=2, seconds=5)) == 3

    frames = listener.frames()
    assert [f["data"]["t"] for f in frames] == [
        _iso(boundary - timedelta(minutes=1)), _iso(boundary), _iso(boundary + timedelta(minutes=1)),
    ]
    assert all(f["data"]["X"] and f["data"]["c"] == "10" and f["data"]["v"] == "0" for f in frames)
    assert Decimal(frames[0]["data"]["o"]) == Decimal("10")
