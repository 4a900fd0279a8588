"""Public bot API reads: assets, markets, securities — and that CCXT's backpack class reads them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import ccxt
import pytest
from django.test import Client

from accounts.models import Asset
from accounts.tests.factories import make_asset
from trading.api import serializers
from trading.models import Market
from trading.services import market_update
from trading.tests.factories import make_market

pytestmark = pytest.mark.django_db


@pytest.fixture
def client() -> Client:
    return Client()


def test_assets_lists_active_assets_in_backpack_shape(client: Client, usd: Asset, aapl: Asset) -> None:
    make_asset("EUR", precision=2, kind="cash", is_active=False)

    response = client.get("/api/v1/assets")

    assert response.status_code == 200
    assert response.json() == [
        {"symbol": "AAPL", "displayName": "Apple Inc.", "tokens": []},
        {"symbol": "USD", "displayName": "US Dollar", "tokens": []},
    ]
    currency = ccxt.backpack().parse_currency(response.json()[0])
    assert (currency["code"], currency["name"]) == ("AAPL", "Apple Inc.")


def test_markets_shape_and_filters(client: Client, market: Market) -> None:
    response = client.get("/api/v1/markets")

    assert response.status_code == 200
    [row] = response.json()
    created_at = row.pop("createdAt")
    assert created_at.endswith("Z") and created_at.startswith(market.created_at.strftime("%Y-%m-%dT%H:%M:%S"))
    assert row == {
        "symbol": "AAPL_USD",
        "baseSymbol": "AAPL",
        "quoteSymbol": "USD",
        "marketType": "SPOT",
        "orderBookState": "Open",
        "visible": True,
        "filters": {
            "price": {"tickSize": "0.01", "minPrice": "0.01", "maxPrice": None},
            "quantity": {"stepSize": "1", "minQuantity": "1", "maxQuantity": None},
        },
    }


def test_market_minimum_is_never_below_one_lot(client: Client, usd: Asset) -> None:
    make_market("MSFT", "USD", tick_size=Decimal("0.05"), lot_size=Decimal("10"), min_quantity=Decimal("0"))

    row = client.get("/api/v1/market", {"symbol": "MSFT_USD"}).json()

    assert row["filters"]["quantity"] == {"stepSize": "10", "minQuantity": "10", "maxQuantity": None}
    assert row["filters"]["price"]["tickSize"] == "0.05"


def test_market_by_symbol_and_unknown_symbol(client: Client, market: Market) -> None:
    assert client.get("/api/v1/market", {"symbol": "AAPL_USD"}).json()["symbol"] == "AAPL_USD"

    unknown = client.get("/api/v1/market", {"symbol": "TSLA_USD"})
    assert (unknown.status_code, unknown.json()["code"]) == (400, "INVALID_MARKET")
    missing = client.get("/api/v1/market")
    assert (missing.status_code, missing.json()["code"]) == (400, "INVALID_SYMBOL")


def test_market_status_is_the_order_book_state(client: Client, market: Market) -> None:
    market_update(market_id=market.pk, status=Market.Status.CANCEL_ONLY)

    row = client.get("/api/v1/market", {"symbol": "AAPL_USD"}).json()

    assert row["orderBookState"] == "CancelOnly"
    assert ccxt.backpack().parse_market(row)["active"] is False


def test_securities_is_an_empty_list(client: Client) -> None:
    response = client.get("/api/v1/securities")
    assert (response.status_code, response.json()) == (200, [])


def test_ccxt_parse_market_reads_our_market(client: Client, market: Market) -> None:
    row = client.get("/api/v1/markets").json()[0]

    parsed = ccxt.backpack().parse_market(row)

    assert parsed is not None
    assert (parsed["id"], parsed["symbol"], parsed["base"], parsed["quote"]) == ("AAPL_USD", "AAPL/USD", "AAPL", "USD")
    assert (parsed["type"], parsed["spot"], parsed["active"]) == ("spot", True, True)
    assert parsed["precision"] == {"amount": 1.0, "price": 0.01}
    assert parsed["limits"]["amount"]["min"] == 1.0
    assert parsed["limits"]["price"]["min"] == 0.01
    assert parsed["created"] == serializers.ms(market.created_at)


def test_ccxt_fetch_markets_flow_keeps_spot_markets(client: Client, market: Market) -> None:
    """fetch_markets filters on marketType and merges securities: feed it our two answers."""
    exchange = ccxt.backpack()
    markets_answer = client.get("/api/v1/markets").json()
    securities_answer = client.get("/api/v1/securities").json()
    exchange.publicGetApiV1Markets = lambda params=None: markets_answer
    exchange.publicGetApiV1Securities = lambda params=None: securities_answer

    markets = exchange.fetch_markets()

    assert [m["symbol"] for m in markets] == ["AAPL/USD"]


def test_markets_query_count_does_not_grow(client: Client, usd: Asset, django_assert_max_num_queries: Any) -> None:
    for symbol in ("AAPL", "MSFT", "GOOG", "AMZN", "META"):
        make_market(symbol, "USD")

    with django_assert_max_num_queries(1):
        response = client.get("/api/v1/markets")

    assert len(response.json()) == 5
