"""Bot API order entry, cancels and history — as a bot (and CCXT's backpack class) sees them."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

import ccxt
import django_rq
import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.ledger import ledger_check
from accounts.models import Asset, Balance, LedgerEntry, User
from accounts.tests.api_helpers import ccxt_request, register_key
from accounts.tests.factories import fund, make_asset, make_user
from tests.concurrency import run_together
from trading import messaging
from trading.api import serializers
from trading.models import Market, Order
from trading.services import market_update
from trading.tests.factories import make_fill, make_market, make_racer, place

pytestmark = pytest.mark.django_db

ORDER = "/api/v1/order"
ORDERS = "/api/v1/orders"
HISTORY = "/wapi/v1/history/orders"
FILLS = "/wapi/v1/history/fills"

VALID = {"symbol": "AAPL_USD", "side": "Bid", "orderType": "Limit", "price": "10.00", "quantity": "2"}


def post(api: APIClient, path: str, body: Any, **headers: str) -> Any:
    """POST `body` as JSON (a str is sent as is, so tests can write raw JSON numbers)."""
    raw = body if isinstance(body, str) else json.dumps(body)
    return api.generic("POST", path, raw, content_type="application/json", headers=headers)


def delete(api: APIClient, path: str, body: Any) -> Any:
    return api.generic("DELETE", path, json.dumps(body), content_type="application/json")


def queued() -> int:
    return len(django_rq.get_queue(messaging.MESSAGES_QUEUE))


def queued_messages() -> list[dict[str, Any]]:
    """The queued commands in order (a job holds one, or a request's list of them)."""
    jobs = [job.args[0] for job in messaging.messages_queue().get_jobs()]
    return [m for arg in jobs for m in (arg if isinstance(arg, list) else [arg])]


def balance(user: User, symbol: str) -> tuple[Decimal, Decimal]:
    row = Balance.objects.filter(user=user, asset__symbol=symbol).first()
    return (row.available, row.locked) if row else (Decimal(0), Decimal(0))


def ccxt_market(api: APIClient) -> dict[str, Any]:
    return ccxt.backpack().parse_market(api.get("/api/v1/market", {"symbol": "AAPL_USD"}).json())


# --- refusals: every field, and nothing locked ----------------------------------------------

BAD_ORDERS = [
    # (overrides of VALID, expected code); None as a value deletes the key.
    pytest.param({"side": "Buy"}, "INVALID_ORDER", id="side-unknown"),
    pytest.param({"side": 1}, "INVALID_ORDER", id="side-number"),
    pytest.param({"side": "bid"}, "INVALID_ORDER", id="side-lower-case"),
    pytest.param({"orderType": "Stop"}, "INVALID_ORDER", id="orderType-unknown"),
    pytest.param({"orderType": ["Limit"]}, "INVALID_ORDER", id="orderType-list"),
    pytest.param({"timeInForce": "GTD"}, "INVALID_ORDER", id="timeInForce-unknown"),
    pytest.param({"timeInForce": 1}, "INVALID_ORDER", id="timeInForce-number"),
    pytest.param({"selfTradePrevention": "EXPIRE_MAKER"}, "INVALID_ORDER", id="stp-ccxt-name"),
    pytest.param({"postOnly": "true"}, "INVALID_ORDER", id="postOnly-string"),
    pytest.param({"postOnly": 1}, "INVALID_ORDER", id="postOnly-number"),
    pytest.param({"price": "0"}, "INVALID_PRICE", id="price-zero"),
    pytest.param({"price": 0}, "INVALID_PRICE", id="price-zero-number"),
    pytest.param({"price": "-10.00"}, "INVALID_PRICE", id="price-negative"),
    pytest.param({"price": "10.001"}, "INVALID_PRICE", id="price-off-tick"),
    pytest.param({"price": 10.001}, "INVALID_PRICE", id="price-off-tick-json-number"),
    pytest.param({"price": "NaN"}, "INVALID_PRICE", id="price-nan"),
    pytest.param({"price": "Infinity"}, "INVALID_PRICE", id="price-infinity"),
    pytest.param({"price": "1e400"}, "INVALID_PRICE", id="price-1e400"),
    pytest.param({"price": "ten"}, "INVALID_PRICE", id="price-text"),
    pytest.param({"price": True}, "INVALID_PRICE", id="price-bool"),
    pytest.param({"price": {"v": 1}}, "INVALID_PRICE", id="price-object"),
    pytest.param({"price": None}, "INVALID_PRICE", id="price-missing"),
    pytest.param({"quantity": "0"}, "INVALID_QUANTITY", id="quantity-zero"),
    pytest.param({"quantity": "-2"}, "INVALID_QUANTITY", id="quantity-negative"),
    pytest.param({"quantity": "1.5"}, "INVALID_QUANTITY", id="quantity-off-lot"),
    pytest.param({"quantity": 1.5}, "INVALID_QUANTITY", id="quantity-off-lot-json-number"),
    pytest.param({"quantity": "NaN"}, "INVALID_QUANTITY", id="quantity-nan"),
    pytest.param({"quantity": "-Infinity"}, "INVALID_QUANTITY", id="quantity-minus-infinity"),
    pytest.param({"quantity": "1e400"}, "INVALID_QUANTITY", id="quantity-1e400"),
    pytest.param({"quantity": "1" * 40}, "INVALID_QUANTITY", id="quantity-too-large"),
    pytest.param({"quantity": [2]}, "INVALID_QUANTITY", id="quantity-list"),
    pytest.param({"quantity": None}, "INVALID_QUANTITY", id="quantity-missing"),
    pytest.param({"price": "0.10", "quantity": "5"}, "INVALID_ORDER", id="below-min-notional"),
    pytest.param({"quoteQuantity": "20.00"}, "INVALID_ORDER", id="quoteQuantity-on-limit"),
    pytest.param({"clientId": -1}, "INVALID_CLIENT_REQUEST", id="clientId-negative"),
    pytest.param({"clientId": 2**32}, "INVALID_CLIENT_REQUEST", id="clientId-over-uint32"),
    pytest.param({"clientId": True}, "INVALID_CLIENT_REQUEST", id="clientId-bool"),
    pytest.param({"clientId": 1.5}, "INVALID_CLIENT_REQUEST", id="clientId-fraction"),
    pytest.param({"clientId": "abc"}, "INVALID_CLIENT_REQUEST", id="clientId-text"),
    pytest.param({"symbol": "TSLA_USD"}, "INVALID_MARKET", id="symbol-unknown"),
    pytest.param({"symbol": 7}, "INVALID_SYMBOL", id="symbol-number"),
    pytest.param({"symbol": ""}, "INVALID_SYMBOL", id="symbol-empty"),
    pytest.param({"reduceOnly": False}, "INVALID_CLIENT_REQUEST", id="unknown-key"),
    pytest.param({"side": None}, "INVALID_CLIENT_REQUEST", id="side-missing"),
    pytest.param({"quantity": "100"}, "INSUFFICIENT_FUNDS", id="bid-over-balance"),
    pytest.param({"side": "Ask", "quantity": "101"}, "INSUFFICIENT_FUNDS", id="ask-over-holding"),
]


def _assert_nothing_happened(user: User, before: dict[str, tuple[Decimal, Decimal]], queue_before: int) -> None:
    assert {symbol: balance(user, symbol) for symbol in before} == before
    assert not Order.objects.exists()
    assert queued() == queue_before


@pytest.mark.parametrize(("overrides", "code"), BAD_ORDERS)
def test_bad_order_is_refused_with_its_code_and_locks_nothing(
    api: APIClient, funded_user: User, market: Market, overrides: dict[str, Any], code: str,
    django_capture_on_commit_callbacks: Any,
) -> None:
    body = {**VALID, **overrides}
    body = {key: value for key, value in body.items() if value is not None or key not in overrides}
    before = {"USD": balance(funded_user, "USD"), "AAPL": balance(funded_user, "AAPL")}
    queue_before = queued()

    with django_capture_on_commit_callbacks(execute=True):
        response = post(api, ORDER, body)

    assert response.status_code == 400, response.json()
    assert response.json()["code"] == code, response.json()
    assert response.json()["message"]
    _assert_nothing_happened(funded_user, before, queue_before)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param('{"symbol":"AAPL_USD","side":"Bid","orderType":"Limit","price":NaN,"quantity":"1"}', id="NaN-literal"),
        pytest.param('{"symbol":"AAPL_USD","side":"Bid","orderType":"Limit","price":"10","quantity":Infinity}', id="Infinity-literal"),
        pytest.param('{"symbol":"AAPL_USD","side":"Bid","orderType":"Limit","price":"10","quantity":1e400}', id="1e400-number"),
        pytest.param('[{"symbol":"AAPL_USD"}]', id="list-body"),
        pytest.param('"order"', id="string-body"),
        pytest.param("{not json", id="malformed"),
    ],
)
def test_malformed_bodies_are_refused(
    api: APIClient, funded_user: User, market: Market, raw: str, django_capture_on_commit_callbacks: Any
) -> None:
    before = {"USD": balance(funded_user, "USD")}
    queue_before = queued()

    with django_capture_on_commit_callbacks(execute=True):
        response = post(api, ORDER, raw)

    assert response.status_code == 400
    # 1e400 parses (as an exact Decimal) and is then refused as a quantity; the rest never parse.
    assert response.json()["code"] in ("INVALID_CLIENT_REQUEST", "INVALID_QUANTITY")
    _assert_nothing_happened(funded_user, before, queue_before)


@pytest.mark.parametrize("status", [Market.Status.CANCEL_ONLY, Market.Status.CLOSED])
def test_halted_market_takes_no_orders(
    api: APIClient, funded_user: User, market: Market, status: str, django_capture_on_commit_callbacks: Any
) -> None:
    market_update(market_id=market.pk, status=status)
    before = {"USD": balance(funded_user, "USD")}
    queue_before = queued()

    with django_capture_on_commit_callbacks(execute=True):
        response = post(api, ORDER, VALID)

    assert (response.status_code, response.json()["code"]) == (400, "TRADING_PAUSED")
    _assert_nothing_happened(funded_user, before, queue_before)


def test_below_min_quantity_is_refused(api: APIClient, funded_user: User, usd: Asset) -> None:
    make_market("MSFT", "USD", min_quantity=Decimal("5"))
    fund(funded_user, make_asset("MSFT", precision=0, kind="stock"), Decimal("10"))

    response = post(api, ORDER, {**VALID, "symbol": "MSFT_USD", "quantity": "4"})

    assert (response.status_code, response.json()["code"]) == (400, "INVALID_QUANTITY")
    assert not Order.objects.exists()


def test_unauthenticated_order_is_refused(market: Market) -> None:
    response = post(APIClient(), ORDER, VALID)
    assert (response.status_code, response.json()["code"]) == (401, "UNAUTHORIZED")


# --- acceptance ------------------------------------------------------------------------------


def test_valid_limit_bid_locks_notional_plus_taker_fee_and_queues_once(
    api: APIClient, funded_user: User, market: Market, django_capture_on_commit_callbacks: Any
) -> None:
    queue_before = queued()
    # JSON numbers, not strings: read as exact decimals, never as floats.
    body = '{"symbol":"AAPL_USD","side":"Bid","orderType":"Limit","price":10.01,"quantity":3,"clientId":7}'

    with django_capture_on_commit_callbacks(execute=True):
        response = post(api, ORDER, body)

    assert response.status_code == 200, response.json()
    data = response.json()
    order = Order.objects.get()
    assert data == {
        "id": str(order.pk),
        "clientId": 7,
        "symbol": "AAPL_USD",
        "side": "Bid",
        "orderType": "Limit",
        "timeInForce": "GTC",
        "price": "10.01",
        "quantity": "3",
        "quoteQuantity": None,
        "executedQuantity": "0",
        "executedQuoteQuantity": "0",
        "status": "New",
        "postOnly": False,
        "selfTradePrevention": "RejectTaker",
        "expiryReason": None,
        "createdAt": serializers.ms(order.created_at),
    }
    assert order.status == Order.Status.PENDING
    assert (order.user, order.market, order.client_id, order.time_in_force, order.price, order.quantity) == (
        funded_user, market, 7, "GTC", Decimal("10.01"), Decimal("3")
    )
    assert (order.maker_fee_rate, order.taker_fee_rate) == (market.maker_fee_rate, market.taker_fee_rate)
    # 30.03 notional + 0.2% taker fee (0.06006) = 30.09006, rounded UP to the cent.
    assert balance(funded_user, "USD") == (Decimal("969.90"), Decimal("30.10"))
    assert order.locked == Decimal("30.10")
    entry = LedgerEntry.objects.get(reference=f"order:{order.pk}")
    assert (entry.user, entry.asset.symbol, entry.reason, entry.available_delta, entry.locked_delta, entry.actor) == (
        funded_user, "USD", "order_lock", Decimal("-30.10"), Decimal("30.10"), funded_user
    )
    assert queued() == queue_before + 1
    assert queued_messages()[-1] | {"ts": 0} == {
        "kind": "place", "order_id": order.pk, "user_id": funded_user.pk, "symbol": "AAPL_USD", "side": "Bid",
        "type": "Limit", "price": 1001, "quantity": 3, "quote_cap": None, "tif": "GTC", "post_only": False,
        "stp": "RejectTaker", "client_id": 7, "ts": 0,
    }
    assert ledger_check() == []


@pytest.mark.parametrize(("funds", "available"), [("20.00", "20.00"), (None, "0.00")])
def test_insufficient_funds_says_what_is_available_and_needed(
    market: Market, usd: Asset, funds: str | None, available: str, django_capture_on_commit_callbacks: Any
) -> None:
    user = make_user("minnow")
    if funds is not None:
        fund(user, usd, Decimal(funds))
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {account_services.api_token_create(user=user)}")
    entries_before = LedgerEntry.objects.count()

    with django_capture_on_commit_callbacks(execute=True):
        response = post(api, ORDER, {**VALID, "quantity": "3"})  # 30.00 + 0.2 % fee = 30.06

    assert response.status_code == 400
    assert response.json() == {
        "code": "INSUFFICIENT_FUNDS", "message": f"Insufficient USD: {available} available, 30.06 needed"
    }
    assert balance(user, "USD") == (Decimal(available), Decimal(0))
    assert not Order.objects.filter(user=user).exists()
    assert LedgerEntry.objects.count() == entries_before


def test_valid_ask_locks_the_shares(api: APIClient, funded_user: User, market: Market) -> None:
    response = post(
        api, ORDER, {**VALID, "side": "Ask", "quantity": "5", "postOnly": True, "timeInForce": "GTC",
                     "selfTradePrevention": "RejectBoth"}
    )

    assert response.status_code == 200, response.json()
    assert (response.json()["postOnly"], response.json()["selfTradePrevention"]) == (True, "RejectBoth")
    assert balance(funded_user, "AAPL") == (Decimal("95"), Decimal("5"))
    assert balance(funded_user, "USD") == (Decimal("1000.00"), Decimal("0"))


def test_market_buy_by_quote_quantity_locks_that_amount(api: APIClient, funded_user: User, market: Market) -> None:
    response = post(api, ORDER, {"symbol": "AAPL_USD", "side": "Bid", "orderType": "Market", "quoteQuantity": "100.00"})

    assert response.status_code == 200, response.json()
    assert (response.json()["orderType"], response.json()["timeInForce"]) == ("Market", "IOC")
    assert (response.json()["quoteQuantity"], response.json()["quantity"]) == ("100", None)
    assert balance(funded_user, "USD") == (Decimal("900.00"), Decimal("100.00"))


def test_client_id_reuse_never_makes_a_second_order(api: APIClient, funded_user: User, market: Market) -> None:
    body = {**VALID, "clientId": 42}

    first = post(api, ORDER, body)
    again = post(api, ORDER, body)
    different = post(api, ORDER, {**body, "price": "10.50"})

    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert (different.status_code, different.json()["code"]) == (400, "INVALID_CLIENT_REQUEST")
    assert Order.objects.count() == 1
    # Locked once: 20.00 + 0.04 fee.
    assert balance(funded_user, "USD") == (Decimal("979.96"), Decimal("20.04"))


def test_idempotency_key_replays_the_first_answer(api: APIClient, funded_user: User, market: Market) -> None:
    first = post(api, ORDER, VALID, **{"Idempotency-Key": "k-1"})
    again = post(api, ORDER, VALID, **{"Idempotency-Key": "k-1"})

    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert Order.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_orders_for_the_whole_balance_accept_exactly_one() -> None:
    """20 bots' requests on 20 connections, each needing the whole balance: one wins."""
    threads_count = 20
    usd = make_asset("USD", precision=2, kind="cash")
    make_asset("AAPL", precision=0, kind="stock")
    make_market("AAPL", "USD")
    user = make_user("whale")
    fund(user, usd, Decimal("1000.00"))
    token = account_services.api_token_create(user=user)
    # 9.98 × 100 = 998.00, + 0.2% = 999.996 → 1000.00 locked: exactly the balance.
    body = {**VALID, "price": "9.98", "quantity": "100"}

    def bot(_i: int) -> tuple[int, str]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        response = post(client, ORDER, body)
        return response.status_code, response.json().get("code", response.json().get("status"))

    outcomes = [r if not isinstance(r, Exception) else (0, repr(r)) for r in run_together(bot, threads_count)]
    assert Counter(outcomes) == Counter({(200, "New"): 1, (400, "INSUFFICIENT_FUNDS"): threads_count - 1})
    assert balance(user, "USD") == (Decimal("0.00"), Decimal("1000.00"))
    assert Order.objects.filter(user=user).count() == 1
    assert ledger_check() == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_orders_racing_for_one_client_id_make_one_order() -> None:
    """Bids lock USD and asks AAPL, so the balance rows do not order them: the unique index
    does, and each loser answers as if it had come second (never a 500, never a second order)."""
    user, token = make_racer()
    threads_count = 8

    def bot(index: int) -> tuple[int, dict[str, Any]]:
        side = "Bid" if index % 2 else "Ask"
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        response = post(client, ORDER, {**VALID, "side": side, "price": "10.00" if side == "Bid" else "12.00", "clientId": 9})
        return response.status_code, response.json()

    answers = run_together(bot, threads_count)
    assert not [a for a in answers if isinstance(a, Exception)], answers
    order = Order.objects.get(user=user)
    same_side = [body for status, body in answers if status == 200]
    assert len(same_side) == threads_count // 2 and {body["id"] for body in same_side} == {str(order.pk)}
    assert Counter((status, body.get("code")) for status, body in answers if status != 200) == {
        (400, "INVALID_CLIENT_REQUEST"): threads_count // 2
    }
    locked = {"USD": Decimal("20.04"), "AAPL": Decimal(0)} if order.side == "Bid" else {"USD": 0, "AAPL": Decimal(2)}
    assert balance(user, "USD")[1] == locked["USD"] and balance(user, "AAPL")[1] == locked["AAPL"]
    assert ledger_check() == []


# --- signed requests and CCXT ----------------------------------------------------------------


def test_signed_order_built_by_ccxt_is_placed(funded_user: User, market: Market) -> None:
    client = Client()
    keys = register_key(funded_user)
    exchange = ccxt.backpack()
    exchange.set_markets([exchange.parse_market(client.get("/api/v1/market", {"symbol": "AAPL_USD"}).json())])
    request = exchange.create_order_request(
        "AAPL/USD", "limit", "buy", 3, 10.5, {"clientOrderId": 9, "selfTradePrevention": "EXPIRE_MAKER", "postOnly": True}
    )

    response = ccxt_request(client, keys, "POST", ORDER, request)

    assert response.status_code == 200, response.json()
    order = Order.objects.get()
    assert (order.user, order.price, order.quantity, order.client_id) == (funded_user, Decimal("10.5"), Decimal("3"), 9)
    assert (order.post_only, order.self_trade_prevention) == (True, "RejectMaker")


def test_signed_batch_is_placed_and_each_order_stands_alone(funded_user: User, market: Market) -> None:
    client = Client()
    keys = register_key(funded_user)
    batch = [
        {**VALID, "clientId": 1},
        {**VALID, "price": "10.001"},
        {**VALID, "side": "Ask", "price": "12.00", "quantity": "1"},
    ]

    response = ccxt_request(client, keys, "POST", ORDERS, batch)  # type: ignore[arg-type]

    assert response.status_code == 200, response.json()
    first, refused, third = response.json()
    assert (first["status"], first["clientId"], third["side"]) == ("New", 1, "Ask")
    assert refused["code"] == "INVALID_PRICE" and refused["message"]
    assert Order.objects.count() == 2
    parsed = ccxt.backpack().parse_orders([first, third])
    assert [(o["side"], o["status"]) for o in parsed] == [("buy", "open"), ("sell", "open")]


def test_signed_cancel_and_history_use_ccxts_instructions(funded_user: User, market: Market) -> None:
    client = Client()
    keys = register_key(funded_user)
    order = place(funded_user, market, client_id=4)

    history = ccxt_request(client, keys, "GET", HISTORY, {"symbol": "AAPL_USD", "orderId": str(order.pk)})
    open_one = ccxt_request(client, keys, "GET", ORDER, {"symbol": "AAPL_USD", "orderId": str(order.pk)})
    cancel = ccxt_request(client, keys, "DELETE", ORDER, {"symbol": "AAPL_USD", "orderId": str(order.pk)})
    cancel_all = ccxt_request(client, keys, "DELETE", ORDERS, {"symbol": "AAPL_USD"})
    fills = ccxt_request(client, keys, "GET", FILLS, {"symbol": "AAPL_USD", "fillType": "User", "limit": 10})

    assert [row["id"] for row in history.json()] == [str(order.pk)]
    assert open_one.json()["clientId"] == 4
    assert cancel.status_code == 200, cancel.json()
    assert [row["id"] for row in cancel_all.json()] == [str(order.pk)]
    assert (fills.status_code, fills.json()) == (200, [])
    assert Order.objects.get(pk=order.pk).cancel_requested_at is not None


def test_batch_refuses_a_non_list_and_too_many(api: APIClient, market: Market) -> None:
    assert post(api, ORDERS, VALID).json()["code"] == "INVALID_CLIENT_REQUEST"
    assert post(api, ORDERS, []).json()["code"] == "INVALID_CLIENT_REQUEST"
    too_many = post(api, ORDERS, [VALID] * 51)
    assert (too_many.status_code, too_many.json()["code"]) == (400, "INVALID_CLIENT_REQUEST")
    assert not Order.objects.exists()


def test_ccxt_parse_order_reads_our_order(api: APIClient, funded_user: User, market: Market) -> None:
    data = post(api, ORDER, {**VALID, "price": "10.01", "quantity": "3", "clientId": 5}).json()

    parsed = ccxt.backpack().parse_order(data, ccxt_market(api))

    assert (parsed["id"], parsed["clientOrderId"], parsed["symbol"]) == (data["id"], "5", "AAPL/USD")
    assert (parsed["side"], parsed["type"], parsed["status"]) == ("buy", "limit", "open")
    assert (parsed["price"], parsed["amount"], parsed["filled"], parsed["remaining"]) == (10.01, 3.0, 0.0, 3.0)
    assert parsed["timestamp"] == data["createdAt"]
    assert parsed["timeInForce"] == "GTC" and parsed["postOnly"] is False


# --- cancels ---------------------------------------------------------------------------------


def test_cancel_marks_the_order_and_queues_a_cancel(
    api: APIClient, funded_user: User, market: Market, django_capture_on_commit_callbacks: Any
) -> None:
    order_id = post(api, ORDER, VALID).json()["id"]
    queue_before = queued()

    with django_capture_on_commit_callbacks(execute=True):
        response = delete(api, ORDER, {"symbol": "AAPL_USD", "orderId": order_id})

    assert response.status_code == 200, response.json()
    # Still open until the engine confirms; the funds stay locked until then.
    assert (response.json()["id"], response.json()["status"]) == (order_id, "New")
    assert Order.objects.get(pk=order_id).cancel_requested_at is not None
    assert queued() == queue_before + 1
    assert queued_messages()[-1]["kind"] == "cancel"
    assert queued_messages()[-1]["order_id"] == int(order_id)
    assert balance(funded_user, "USD")[1] == Decimal("20.04")


def test_cancel_by_client_id_in_the_query_string(api: APIClient, funded_user: User, market: Market) -> None:
    order_id = post(api, ORDER, {**VALID, "clientId": 77}).json()["id"]

    response = api.delete(f"{ORDER}?symbol=AAPL_USD&clientId=77")

    assert response.status_code == 200, response.json()
    assert response.json()["id"] == order_id
    assert Order.objects.get(pk=order_id).cancel_requested_at is not None


def test_cancel_of_another_users_order_is_not_found(
    api: APIClient, market: Market, usd: Asset, django_capture_on_commit_callbacks: Any
) -> None:
    bob = make_user("bob")
    fund(bob, usd, Decimal("100.00"))
    bobs = place(bob, market)
    queue_before = queued()

    with django_capture_on_commit_callbacks(execute=True):
        response = delete(api, ORDER, {"symbol": "AAPL_USD", "orderId": str(bobs.pk)})

    assert (response.status_code, response.json()["code"]) == (404, "RESOURCE_NOT_FOUND")
    assert Order.objects.get(pk=bobs.pk).cancel_requested_at is None
    assert queued() == queue_before


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({"symbol": "AAPL_USD"}, "INVALID_CLIENT_REQUEST", id="no-id"),
        pytest.param({"symbol": "AAPL_USD", "orderId": "x1"}, "INVALID_CLIENT_REQUEST", id="bad-order-id"),
        pytest.param({"symbol": "AAPL_USD", "orderId": "1", "extra": 1}, "INVALID_CLIENT_REQUEST", id="unknown-key"),
        pytest.param({"symbol": "TSLA_USD", "orderId": "1"}, "INVALID_MARKET", id="unknown-market"),
    ],
)
def test_bad_cancel_requests(api: APIClient, market: Market, body: dict[str, Any], code: str) -> None:
    response = delete(api, ORDER, body)
    assert (response.status_code, response.json()["code"]) == (400, code)


def test_cancel_all_in_a_market(api: APIClient, funded_user: User, market: Market, usd: Asset) -> None:
    make_asset("MSFT", precision=0, kind="stock")
    make_market("MSFT", "USD")
    ids = [post(api, ORDER, VALID).json()["id"] for _ in range(2)]
    other = post(api, ORDER, {**VALID, "symbol": "MSFT_USD"}).json()["id"]

    response = delete(api, ORDERS, {"symbol": "AAPL_USD"})

    assert response.status_code == 200, response.json()
    assert [row["id"] for row in response.json()] == ids
    assert Order.objects.filter(pk__in=ids, cancel_requested_at__isnull=False).count() == 2
    assert Order.objects.get(pk=other).cancel_requested_at is None
    assert delete(api, ORDERS, {}).json()["code"] == "INVALID_CLIENT_REQUEST"


# --- reads -----------------------------------------------------------------------------------


def test_get_order_by_id_or_client_id_open_or_not(api: APIClient, funded_user: User, market: Market, usd: Asset) -> None:
    order_id = post(api, ORDER, {**VALID, "clientId": 3}).json()["id"]
    Order.objects.filter(pk=order_id).update(status=Order.Status.CANCELLED, reason="user")
    bob = make_user("bob")
    fund(bob, usd, Decimal("100.00"))
    bobs = place(bob, market)

    by_id = api.get(ORDER, {"symbol": "AAPL_USD", "orderId": order_id})
    by_client_id = api.get(ORDER, {"symbol": "AAPL_USD", "clientId": "3"})
    not_mine = api.get(ORDER, {"symbol": "AAPL_USD", "orderId": str(bobs.pk)})

    assert by_id.status_code == 200
    assert (by_id.json()["status"], by_id.json()["expiryReason"]) == ("Cancelled", "user")
    assert by_client_id.json()["id"] == order_id
    assert (not_mine.status_code, not_mine.json()["code"]) == (404, "RESOURCE_NOT_FOUND")
    assert ccxt.backpack().parse_order(by_id.json())["status"] == "canceled"


def test_open_orders_oldest_first_and_by_symbol(
    api: APIClient, funded_user: User, market: Market, usd: Asset, django_assert_max_num_queries: Any
) -> None:
    make_asset("MSFT", precision=0, kind="stock")
    make_market("MSFT", "USD")
    ids = [post(api, ORDER, {**VALID, "price": f"{9 + i}.00"}).json()["id"] for i in range(8)]
    msft = post(api, ORDER, {**VALID, "symbol": "MSFT_USD"}).json()["id"]
    Order.objects.filter(pk=ids[0]).update(status=Order.Status.FILLED)
    Order.objects.filter(pk=ids[1]).update(status=Order.Status.PARTIALLY_FILLED)

    with django_assert_max_num_queries(2):
        everything = api.get(ORDERS)
    with django_assert_max_num_queries(3):
        aapl_only = api.get(ORDERS, {"symbol": "AAPL_USD"})

    assert [row["id"] for row in everything.json()] == ids[1:] + [msft]
    assert [row["id"] for row in aapl_only.json()] == ids[1:]
    assert everything.json()[0]["status"] == "PartiallyFilled"


def test_order_history_newest_first_every_status_paged(
    api: APIClient, funded_user: User, market: Market, django_assert_max_num_queries: Any
) -> None:
    ids = [post(api, ORDER, VALID).json()["id"] for _ in range(6)]
    Order.objects.filter(pk=ids[0]).update(status=Order.Status.EXPIRED, reason="postOnly")

    with django_assert_max_num_queries(3):
        everything = api.get(HISTORY, {"symbol": "AAPL_USD"})
    page = api.get(HISTORY, {"limit": "2", "offset": "1"})
    one = api.get(HISTORY, {"orderId": ids[0]})

    assert [row["id"] for row in everything.json()] == ids[::-1]
    assert everything.json()[-1]["status"] == "Expired"
    assert [row["id"] for row in page.json()] == [ids[4], ids[3]]
    assert [row["id"] for row in one.json()] == [ids[0]]
    assert api.get(HISTORY, {"limit": "1001"}).json()["code"] == "INVALID_CLIENT_REQUEST"
    assert api.get(HISTORY, {"symbol": "TSLA_USD"}).json()["code"] == "INVALID_MARKET"


def test_fills_shape_filters_and_ccxt_parse_trade(
    api: APIClient, funded_user: User, market: Market, django_assert_max_num_queries: Any
) -> None:
    order = Order.objects.get(pk=post(api, ORDER, {**VALID, "clientId": 11, "quantity": "3"}).json()["id"])
    old = make_fill(order, quantity="1", created_at=timezone.now() - timedelta(hours=2))
    fills = [make_fill(order, quantity="1", fee="0.02", is_maker=True) for _ in range(2)]

    with django_assert_max_num_queries(3):
        response = api.get(FILLS, {"symbol": "AAPL_USD", "fillType": "User"})

    assert response.status_code == 200
    rows = response.json()
    assert [row["tradeId"] for row in rows] == [fills[1].trade_id, fills[0].trade_id, old.trade_id]
    newest = rows[0]
    assert newest == {
        "tradeId": fills[1].trade_id,
        "orderId": str(order.pk),
        "clientId": 11,
        "symbol": "AAPL_USD",
        "side": "Bid",
        "price": "10",
        "quantity": "1",
        "quoteQuantity": "10",
        "fee": "0.02",
        "feeSymbol": "USD",
        "isMaker": True,
        "timestamp": newest["timestamp"],
    }
    since = serializers.ms(timezone.now() - timedelta(hours=1))
    assert len(api.get(FILLS, {"from": since}).json()) == 2
    assert len(api.get(FILLS, {"to": since}).json()) == 1
    assert len(api.get(FILLS, {"orderId": str(order.pk), "limit": "1"}).json()) == 1
    assert api.get(FILLS, {"from": "2", "to": "1"}).json()["code"] == "INVALID_RANGE"

    trade = ccxt.backpack().parse_trade(newest, ccxt_market(api))
    assert (trade["id"], trade["order"], trade["symbol"]) == (str(fills[1].trade_id), str(order.pk), "AAPL/USD")
    assert (trade["side"], trade["takerOrMaker"], trade["price"], trade["amount"]) == ("buy", "maker", 10.0, 1.0)
    assert (trade["fee"]["cost"], trade["fee"]["currency"]) == (0.02, "USD")
    assert trade["timestamp"] == serializers.ms(fills[1].created_at)


def test_fills_of_other_users_are_not_shown(api: APIClient, market: Market, usd: Asset) -> None:
    bob = make_user("bob")
    fund(bob, usd, Decimal("100.00"))
    make_fill(place(bob, market))

    assert api.get(FILLS).json() == []
