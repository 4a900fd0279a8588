"""Public market-data endpoints: shapes, errors, gap-filled klines, depth from the engine's
snapshot, and CCXT's `backpack` class reading them end to end (its HTTP calls routed into
the Django test client)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from django.test import Client
from django.utils import timezone

from engine_worker.tests.factories import make_market
from marketdata.candles import bucket_start
from marketdata.depth import depth_key
from marketdata.tests.factories import Tape
from trading.models import Market

pytestmark = pytest.mark.django_db

D = Decimal
BASE_URL = "http://testserver"


class DjangoBackpack(ccxt.backpack):
    """CCXT's backpack class whose HTTP requests go to the Django test client."""

    def __init__(self, client: Client) -> None:
        super().__init__({"options": {"timeDifference": 0}})
        self.urls["api"] = {"public": BASE_URL, "private": BASE_URL}
        self.client = client

    def fetch(self, url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        response = self.client.generic(method, url.removeprefix(BASE_URL), body or "")
        assert response.status_code == 200, (url, response.content)
        return response.json()


@pytest.fixture
def client() -> Client:
    return Client()


@pytest.fixture
def market() -> Market:
    return make_market("AAPL", "USD", tick="0.01", lot="1")


def seconds(when: datetime) -> int:
    return int(when.timestamp())


def fmt(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S")


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/ticker", "/api/v1/depth", "/api/v1/trades", "/api/v1/trades/history"])
def test_unknown_or_missing_symbol_is_refused(client: Client, market: Market, path: str) -> None:
    unknown = client.get(path, {"symbol": "NOPE_USD"})
    missing = client.get(path)

    assert (unknown.status_code, unknown.json()["code"]) == (400, "INVALID_MARKET")
    assert (missing.status_code, missing.json()["code"]) == (400, "INVALID_SYMBOL")


@pytest.mark.parametrize(
    ("params", "code", "words"),
    [
        ({"interval": "2m", "startTime": "0"}, "INVALID_CLIENT_REQUEST", "interval must be one of"),
        ({"interval": "1m"}, "INVALID_CLIENT_REQUEST", "startTime"),
        ({"interval": "1m", "startTime": "abc"}, "INVALID_CLIENT_REQUEST", "startTime must be an integer"),
        ({"interval": "1m", "startTime": "200", "endTime": "100"}, "INVALID_RANGE", "after endTime"),
    ],
)
def test_klines_bad_requests(client: Client, market: Market, params: dict[str, str], code: str, words: str) -> None:
    response = client.get("/api/v1/klines", {"symbol": "AAPL_USD", **params})

    assert response.status_code == 400
    assert response.json()["code"] == code and words in response.json()["message"]


# --- ticker ---------------------------------------------------------------------------------


def test_ticker_and_tickers_in_backpack_shape_that_ccxt_parses(client: Client, market: Market) -> None:
    make_market("MSFT", "USD", tick="0.01", lot="1")
    now = timezone.now()
    tape = Tape(market)
    tape.trade(market, now - timedelta(hours=25), ("70.00", "5"))  # outside the window
    tape.trade(market, now - timedelta(hours=2), ("80.00", "1"), ("82.50", "2"))
    tape.trade(market, now - timedelta(minutes=1), ("84.00", "1"), taker="Ask")
    tape.commit()

    row = client.get("/api/v1/ticker", {"symbol": "AAPL_USD"}).json()

    assert row == {
        "symbol": "AAPL_USD", "firstPrice": "80", "lastPrice": "84", "high": "84", "low": "80",
        "priceChange": "4", "priceChangePercent": "0.05", "volume": "4", "quoteVolume": "329",
        "trades": "3",
    }
    parsed = ccxt.backpack().parse_ticker(row, {"symbol": "AAPL/USD"})
    assert (parsed["open"], parsed["last"], parsed["percentage"], parsed["baseVolume"]) == (80.0, 84.0, 5.0, 4.0)

    rows = client.get("/api/v1/tickers").json()
    assert [r["symbol"] for r in rows] == ["AAPL_USD", "MSFT_USD"]
    assert rows[0] == row
    assert rows[1]["volume"] == "0" and rows[1]["trades"] == "0" and rows[1]["lastPrice"] is None

    exchange = DjangoBackpack(client)
    assert exchange.fetch_ticker("AAPL/USD")["last"] == 84.0
    assert exchange.fetch_tickers(["AAPL/USD"])["AAPL/USD"]["high"] == 84.0


# --- depth ----------------------------------------------------------------------------------


def test_depth_is_the_engines_snapshot_best_first_and_limited(client: Client, market: Market, redis_conn: Any) -> None:
    snapshot = {
        "bids": [["99.99", "5"], ["99.50", "2"], ["98.00", "1"]],
        "asks": [["100.01", "3"], ["100.50", "4"], ["101.00", "7"]],
        "lastUpdateId": "42",
        "timestamp": 1_760_000_000_123_456,
    }
    redis_conn.set(depth_key("AAPL_USD"), json.dumps(snapshot))

    full = client.get("/api/v1/depth", {"symbol": "AAPL_USD"}).json()
    two = client.get("/api/v1/depth", {"symbol": "AAPL_USD", "limit": "2"}).json()

    assert full == snapshot
    assert two["asks"] == [["100.01", "3"], ["100.50", "4"]] and two["bids"] == [["99.99", "5"], ["99.50", "2"]]
    book = DjangoBackpack(client).fetch_order_book("AAPL/USD", limit=2)
    assert book["bids"] == [[99.99, 5.0], [99.5, 2.0]] and book["asks"] == [[100.01, 3.0], [100.5, 4.0]]
    assert (book["nonce"], book["timestamp"]) == (42, 1_760_000_000_123)


def test_depth_before_any_snapshot_is_an_empty_book(client: Client, market: Market, redis_conn: Any) -> None:
    row = client.get("/api/v1/depth", {"symbol": "AAPL_USD"}).json()

    assert (row["asks"], row["bids"], row["lastUpdateId"]) == ([], [], "0")
    assert abs(row["timestamp"] / 1e6 - timezone.now().timestamp()) < 60


# --- trades ---------------------------------------------------------------------------------


def test_trades_newest_first_with_limit_and_history_offset(client: Client, market: Market) -> None:
    start = datetime(2026, 4, 1, 9, 30, tzinfo=UTC)
    tape = Tape(market)
    for i in range(5):
        tape.trade(market, start + timedelta(seconds=i), (f"{100 + i}.00", str(i + 1)), taker="Ask" if i % 2 else "Bid")
    tape.commit()

    recent = client.get("/api/v1/trades", {"symbol": "AAPL_USD", "limit": "2"}).json()
    older = client.get("/api/v1/trades/history", {"symbol": "AAPL_USD", "limit": "2", "offset": "2"}).json()

    assert recent == [
        {"id": 5, "price": "104", "quantity": "5", "quoteQuantity": "520", "timestamp": 1775035804000,
         "isBuyerMaker": False},
        {"id": 4, "price": "103", "quantity": "4", "quoteQuantity": "412", "timestamp": 1775035803000,
         "isBuyerMaker": True},
    ]
    assert [row["id"] for row in older] == [3, 2]
    assert client.get("/api/v1/trades", {"symbol": "AAPL_USD", "limit": "1001"}).status_code == 400

    trades = DjangoBackpack(client).fetch_trades("AAPL/USD", limit=3)
    assert [(t["id"], t["side"], t["price"], t["amount"]) for t in trades] == [
        ("3", "buy", 102.0, 3.0), ("4", "sell", 103.0, 4.0), ("5", "buy", 104.0, 5.0),
    ]
    assert trades[-1]["timestamp"] == 1775035804000


# --- klines ---------------------------------------------------------------------------------


def test_klines_fill_gaps_with_the_previous_close(client: Client, market: Market) -> None:
    base = datetime(2026, 4, 1, 9, 30, tzinfo=UTC)
    tape = Tape(market)
    tape.trade(market, base + timedelta(seconds=10), ("100.00", "1"), ("101.00", "2"))
    tape.trade(market, base + timedelta(seconds=50), ("99.00", "1"), taker="Ask")
    tape.trade(market, base + timedelta(minutes=3, seconds=1), ("102.00", "4"))  # minutes 1 and 2 are empty
    tape.commit()

    rows = client.get(
        "/api/v1/klines",
        {"symbol": "AAPL_USD", "interval": "1m", "startTime": seconds(base - timedelta(minutes=2)),
         "endTime": seconds(base + timedelta(minutes=5))},
    ).json()

    # Nothing before the first trade (no price to show); then minute by minute to endTime.
    assert [row["start"] for row in rows] == [fmt(base + timedelta(minutes=i)) for i in range(5)]
    assert rows[0] == {
        "start": "2026-04-01 09:30:00", "end": "2026-04-01 09:31:00", "open": "100", "high": "101", "low": "99",
        "close": "99", "volume": "4", "quoteVolume": "401", "trades": "3", "closed": True,
    }
    for gap in rows[1:3]:
        assert (gap["open"], gap["high"], gap["low"], gap["close"]) == ("99",) * 4
        assert (gap["volume"], gap["quoteVolume"], gap["trades"]) == ("0", "0", "0")
    assert (rows[3]["open"], rows[3]["close"], rows[3]["volume"]) == ("102", "102", "4")
    assert (rows[4]["close"], rows[4]["trades"]) == ("102", "0")
    assert all(row["closed"] for row in rows)

    hourly = client.get(
        "/api/v1/klines", {"symbol": "AAPL_USD", "interval": "1h", "startTime": seconds(base), "endTime": seconds(base)}
    ).json()
    assert hourly == []  # an empty range


def test_klines_last_candle_is_open_and_the_range_is_capped_at_1000(client: Client, market: Market) -> None:
    now = timezone.now()
    tape = Tape(market)
    tape.trade(market, now - timedelta(minutes=3000), ("50.00", "1"))  # before the asked range
    tape.trade(market, now - timedelta(minutes=2), ("60.00", "1"))
    tape.commit()

    rows = client.get(
        "/api/v1/klines",
        {"symbol": "AAPL_USD", "interval": "1m", "startTime": seconds(now - timedelta(minutes=2500))},
    ).json()

    # The newest 1000 minutes up to now; the oldest are filled from the close before them.
    assert len(rows) == 1000
    assert rows[0]["close"] == "50" and rows[0]["trades"] == "0"
    assert rows[-1]["closed"] is False and all(row["closed"] for row in rows[:-1])
    assert rows[-1]["start"] in {fmt(bucket_start("1m", now)), fmt(bucket_start("1m", now + timedelta(minutes=1)))}
    assert rows[-3]["open"] == "60" or rows[-4]["open"] == "60"  # the minute still running may have turned


def test_monthly_and_weekly_klines_and_ccxt_fetch_ohlcv(client: Client, market: Market) -> None:
    tape = Tape(market)
    tape.trade(market, datetime(2026, 1, 31, 23, 59, tzinfo=UTC), ("10.00", "1"))
    tape.trade(market, datetime(2026, 2, 1, tzinfo=UTC), ("11.00", "2"))  # on the month boundary
    tape.trade(market, datetime(2026, 3, 15, tzinfo=UTC), ("12.00", "3"))
    tape.commit()
    start = seconds(datetime(2026, 1, 1, tzinfo=UTC))
    end = seconds(datetime(2026, 4, 1, tzinfo=UTC))

    months = client.get("/api/v1/klines", {"symbol": "AAPL_USD", "interval": "1month", "startTime": start,
                                           "endTime": end}).json()
    weeks = client.get("/api/v1/klines", {"symbol": "AAPL_USD", "interval": "1w", "startTime": start,
                                          "endTime": end}).json()

    assert [(r["start"], r["end"], r["open"], r["close"], r["volume"]) for r in months] == [
        ("2026-01-01 00:00:00", "2026-02-01 00:00:00", "10", "10", "1"),
        ("2026-02-01 00:00:00", "2026-03-01 00:00:00", "11", "11", "2"),
        ("2026-03-01 00:00:00", "2026-04-01 00:00:00", "12", "12", "3"),
    ]
    assert weeks[0]["start"] == "2026-01-26 00:00:00"  # the Monday of the week of the first trade
    assert weeks[1]["start"] == "2026-02-02 00:00:00"

    exchange = DjangoBackpack(client)
    ohlcv = exchange.fetch_ohlcv("AAPL/USD", "1M", since=start * 1000, limit=3)
    assert ohlcv == [
        [start * 1000, 10.0, 10.0, 10.0, 10.0, 1.0],
        [seconds(datetime(2026, 2, 1, tzinfo=UTC)) * 1000, 11.0, 11.0, 11.0, 11.0, 2.0],
        [seconds(datetime(2026, 3, 1, tzinfo=UTC)) * 1000, 12.0, 12.0, 12.0, 12.0, 3.0],
    ]
