"""The traders' pages through Django's test client: markets list, market page, order entry
and cancels over HTMX, with what a trader would see in the answers."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import Asset, Balance, User
from marketdata.models import Trade
from trading.models import Market, Order
from trading.tests.factories import place

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def _trade(market: Market, trade_id: int, price: str, quantity: str = "5", *, ago: timedelta) -> Trade:
    return Trade.objects.create(
        market=market, trade_id=trade_id, price=Decimal(price), quantity=Decimal(quantity),
        quote_quantity=Decimal(price) * Decimal(quantity), buy_order_id=1, sell_order_id=2, buyer_id=1,
        seller_id=2, is_buyer_maker=False, time=timezone.now() - ago,
    )


def _balance(user: User, asset: Asset) -> tuple[Decimal, Decimal]:
    b = Balance.objects.get(user=user, asset=asset)
    return b.available, b.locked


def _order_url(market: Market) -> str:
    return reverse("trading:order_create", kwargs={"symbol": market.symbol})


def _limit(side: str = "Bid", price: str = "10.00", quantity: str = "2", **extra: str) -> dict[str, str]:
    return {"side": side, "order_type": "Limit", "price": price, "quantity": quantity, **extra}


# --- Markets list and landing page ----------------------------------------------------------


def test_markets_list_shows_last_price_24h_change_and_links(client: Client, market: Market) -> None:
    _trade(market, 1, "10.00", ago=timedelta(hours=3))
    _trade(market, 2, "10.50", ago=timedelta(minutes=5))
    response = client.get(reverse("trading:markets"))
    assert response.status_code == 200
    html = response.content.decode()
    row = re.search(r'<tr data-symbol="AAPL_USD".*?</tr>', html, re.S)
    assert row, html
    assert "10.50" in row.group(0)
    assert "+5.00%" in row.group(0)
    assert reverse("trading:market", kwargs={"symbol": "AAPL_USD"}) in row.group(0)
    assert "Open" in row.group(0)


def test_landing_page_lists_markets_for_visitors_and_members(client: Client, market: Market, user: User) -> None:
    _trade(market, 1, "12.34", ago=timedelta(minutes=1))
    assert "12.34" in client.get("/").content.decode()
    client.force_login(user)
    assert "12.34" in client.get("/").content.decode()


# --- The market page --------------------------------------------------------------------------


def test_market_page_for_a_visitor_shows_market_data_and_a_log_in_prompt(client: Client, market: Market) -> None:
    _trade(market, 1, "10.25", ago=timedelta(minutes=1))
    response = client.get(reverse("trading:market", kwargs={"symbol": "AAPL_USD"}))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Log in to trade" in html
    assert 'id="order-form"' not in html
    assert 'id="book-bids"' in html and 'id="kline-chart"' in html and 'id="trades-list"' in html
    config = json.loads(re.search(r'<script id="market-config" type="application/json">(.*?)</script>', html, re.S).group(1))
    assert config["symbol"] == "AAPL_USD"
    assert config["authenticated"] is False
    assert config["pricePlaces"] == 2 and config["qtyPlaces"] == 0
    assert config["lastPrice"] == "10.2500000000000000"
    assert set(config["snapshot"]) == {"bids", "asks", "lastUpdateId"}


def test_market_page_for_a_trader_shows_the_order_panel_and_balances(client: Client, market: Market, funded_user: User) -> None:
    client.force_login(funded_user)
    html = client.get(reverse("trading:market", kwargs={"symbol": "AAPL_USD"})).content.decode()
    assert "Log in to trade" not in html
    assert 'id="order-form"' in html
    assert re.search(r'data-asset="USD".*?1,000\.00', html, re.S)
    assert re.search(r'data-asset="AAPL".*?100', html, re.S)
    assert "No open orders in AAPL_USD" in html


def test_unknown_market_is_404(client: Client, market: Market, funded_user: User) -> None:
    assert client.get("/markets/NOPE_USD/").status_code == 404
    client.force_login(funded_user)
    assert client.post("/markets/NOPE_USD/orders/", _limit(), **HTMX).status_code == 404
    assert not Order.objects.exists()


# --- Order entry ------------------------------------------------------------------------------


def test_valid_limit_buy_is_accepted_pending_with_funds_locked(
    client: Client, market: Market, funded_user: User, usd: Asset
) -> None:
    client.force_login(funded_user)
    response = client.post(_order_url(market), _limit(price="10.00", quantity="2"), **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Order placed: Buy 2 AAPL @ 10.00" in html
    assert json.loads(response["HX-Trigger"]) == {"ordersChanged": None}
    order = Order.objects.get()
    assert (order.user, order.side, order.status, order.price, order.quantity) == (
        funded_user, "Bid", Order.Status.PENDING, Decimal("10.00"), Decimal("2"),
    )
    # 20.00 notional + 0.2% taker fee on all of it.
    assert _balance(funded_user, usd) == (Decimal("979.96"), Decimal("20.04"))
    assert re.search(r'data-asset="USD".*?979\.96', html, re.S)
    # Side and price stay for the next order; the quantity is cleared.
    assert re.search(r'<input[^>]*name="price"[^>]*value="10.00"', html)
    quantity_input = re.search(r'<input[^>]*name="quantity"[^>]*>', html)
    assert quantity_input and "value=" not in quantity_input.group(0)

    fragment = client.get(reverse("trading:my_orders", kwargs={"symbol": market.symbol}), **HTMX).content.decode()
    row = re.search(rf'<tr data-order-id="{order.pk}"[^>]*>.*?</tr>', fragment, re.S)
    assert row and "Buy" in row.group(0) and "10.00" in row.group(0) and "Cancel" in row.group(0)


def test_post_only_ioc_sell_passes_the_flags_to_the_order(client: Client, market: Market, funded_user: User, aapl: Asset) -> None:
    client.force_login(funded_user)
    response = client.post(_order_url(market), _limit(side="Ask", price="11.00", quantity="3", post_only="on"), **HTMX)
    assert response.status_code == 200
    order = Order.objects.get()
    assert (order.side, order.post_only, order.time_in_force) == ("Ask", True, "GTC")
    assert _balance(funded_user, aapl) == (Decimal("97"), Decimal("3"))
    client.post(_order_url(market), _limit(side="Ask", price="11.00", quantity="1", ioc="on"), **HTMX)
    assert Order.objects.latest("pk").time_in_force == "IOC"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_limit(price="10.005"), "price 10.005 is not a multiple of 0.01"),
        (_limit(price="10.00", quantity="1000"), "Insufficient funds"),
        (_limit(price="10.00", quantity="1.5"), "quantity 1.5 is not a multiple of 1"),
        (_limit(price="", quantity="1"), "Enter a price for a limit order."),
        (_limit(price="abc", quantity="1"), "price is not a number"),
    ],
)
def test_refused_order_shows_the_reason_inline_and_creates_nothing(
    client: Client, market: Market, funded_user: User, usd: Asset, data: dict[str, str], message: str
) -> None:
    client.force_login(funded_user)
    response = client.post(_order_url(market), data, **HTMX)
    assert response.status_code == 422
    html = response.content.decode()
    assert message in html
    assert 'id="order-form"' in html  # the panel, with what was typed, to correct it
    assert f'value="{data["quantity"]}"' in html
    assert not Order.objects.exists()
    assert _balance(funded_user, usd) == (Decimal("1000.00"), Decimal("0"))


def test_plain_post_without_htmx_redirects_back_with_a_message(client: Client, market: Market, funded_user: User) -> None:
    client.force_login(funded_user)
    response = client.post(_order_url(market), _limit(), follow=True)
    assert response.redirect_chain[-1][0] == reverse("trading:market", kwargs={"symbol": market.symbol})
    assert "Order placed: Buy 2 AAPL @ 10.00" in response.content.decode()
    assert Order.objects.count() == 1


# --- Cancels and the orders fragment ------------------------------------------------------------


def test_cancel_from_the_page_marks_the_order_cancel_requested(client: Client, market: Market, funded_user: User) -> None:
    order = place(funded_user, market, price=Decimal("9.00"), quantity=Decimal("1"))
    client.force_login(funded_user)
    url = reverse("trading:order_cancel", kwargs={"symbol": market.symbol, "order_id": order.pk})
    response = client.post(url, **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Cancel requested: Buy 1 AAPL @ 9.00" in html
    assert re.search(rf'<tr data-order-id="{order.pk}"[^>]*>.*?Cancelling', html, re.S)
    order.refresh_from_db()
    assert order.cancel_requested_at is not None
    assert order.status == Order.Status.PENDING  # the engine decides; the page only asked


def test_someone_elses_order_cannot_be_cancelled(client: Client, market: Market, funded_user: User) -> None:
    from accounts.tests.factories import fund, make_user

    bob = make_user("bob")
    fund(bob, market.quote, Decimal("100"))
    order = place(bob, market)
    client.force_login(funded_user)
    url = reverse("trading:order_cancel", kwargs={"symbol": market.symbol, "order_id": order.pk})
    response = client.post(url, **HTMX)
    assert response.status_code == 422
    assert "Not found" in response.content.decode()
    order.refresh_from_db()
    assert order.cancel_requested_at is None


def test_cancel_all_and_history(client: Client, market: Market, funded_user: User) -> None:
    first = place(funded_user, market, price=Decimal("9.00"))
    place(funded_user, market, price=Decimal("9.50"))
    done = place(funded_user, market, price=Decimal("8.00"))
    Order.objects.filter(pk=done.pk).update(status=Order.Status.CANCELLED)
    client.force_login(funded_user)
    response = client.post(reverse("trading:order_cancel_all", kwargs={"symbol": market.symbol}), **HTMX)
    html = response.content.decode()
    assert "Cancel requested for 2 orders." in html
    assert Order.objects.filter(cancel_requested_at__isnull=False).count() == 2
    history = re.search(r'id="order-history".*?</table>', html, re.S).group(0)
    assert f'data-order-id="{done.pk}"' in history and "Cancelled" in history
    assert f'data-order-id="{first.pk}"' not in history


# --- Access -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["trading:order_create", "trading:order_cancel_all", "trading:my_orders", "trading:balances"])
def test_private_views_need_a_login(client: Client, market: Market, name: str) -> None:
    url = reverse(name, kwargs={"symbol": market.symbol})
    response = client.post(url, _limit(), **HTMX) if "order_" in name else client.get(url, **HTMX)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:login"))
    assert not Order.objects.exists()


def test_cancel_needs_a_login(client: Client, market: Market, funded_user: User) -> None:
    order = place(funded_user, market)
    response = client.post(reverse("trading:order_cancel", kwargs={"symbol": market.symbol, "order_id": order.pk}))
    assert response.status_code == 302
    order.refresh_from_db()
    assert order.cancel_requested_at is None


def test_htmx_posts_carry_the_csrf_token_in_a_header(market: Market, funded_user: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(funded_user)
    html = client.get(reverse("trading:market", kwargs={"symbol": market.symbol})).content.decode()
    # base.html puts the token in hx-headers on <body>; HTMX sends it as X-CSRFToken.
    token = json.loads(re.search(r"hx-headers='([^']+)'", html).group(1))["X-CSRFToken"]
    refused = client.post(_order_url(market), _limit(), **HTMX)
    assert refused.status_code == 403
    accepted = client.post(_order_url(market), _limit(), HTTP_X_CSRFTOKEN=token, **HTMX)
    assert accepted.status_code == 200
    assert Order.objects.count() == 1


def test_balances_fragment_shows_base_and_quote(client: Client, market: Market, funded_user: User) -> None:
    place(funded_user, market, price=Decimal("10.00"), quantity=Decimal("1"))
    client.force_login(funded_user)
    html = client.get(reverse("trading:balances", kwargs={"symbol": market.symbol}), **HTMX).content.decode()
    assert html.index('data-asset="AAPL"') < html.index('data-asset="USD"')
    assert re.search(r'data-asset="USD".*?989\.98.*?10\.02 locked', html, re.S)
