"""Set-based batch placement (`orders_place_batch`, `POST /api/v1/orders`): one transaction
for the whole batch, each order standing or falling alone, in request order."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.errors import ServiceError
from accounts.ledger import ledger_check
from accounts.models import Asset, Balance, LedgerEntry, User
from accounts.tests.factories import fund, make_asset, make_user
from tests.concurrency import run_together
from trading import messaging
from trading.models import Market, Order
from trading.services import OrderParams, market_update, orders_place_batch
from trading.tests.factories import make_market, make_racer, place

pytestmark = pytest.mark.django_db

ORDERS = "/api/v1/orders"
BID = {"symbol": "AAPL_USD", "side": "Bid", "orderType": "Limit", "price": "10.00", "quantity": "1"}


def bid(price: str = "10.00", quantity: str = "1", **kw: Any) -> OrderParams:
    return OrderParams(side="Bid", order_type="Limit", price=Decimal(price), quantity=Decimal(quantity), **kw)


def ask(price: str = "12.00", quantity: str = "1", **kw: Any) -> OrderParams:
    return OrderParams(side="Ask", order_type="Limit", price=Decimal(price), quantity=Decimal(quantity), **kw)


def post(api: APIClient, body: Any) -> Any:
    return api.generic("POST", ORDERS, json.dumps(body), content_type="application/json")


def balance(user: User, asset: Asset) -> tuple[Decimal, Decimal]:
    row = Balance.objects.get(user=user, asset=asset)
    return row.available, row.locked


def queued_messages() -> list[dict[str, Any]]:
    """The queued commands in order (a job holds one, or a request's list of them)."""
    jobs = [job.args[0] for job in messaging.messages_queue().get_jobs()]
    return [m for arg in jobs for m in (arg if isinstance(arg, list) else [arg])]


def codes(results: list[Order | ServiceError]) -> list[str]:
    return [r.code if isinstance(r, ServiceError) else "order" for r in results]


def test_mixed_batch_over_http_answers_in_request_order(
    api: APIClient, funded_user: User, market: Market, usd: Asset, django_capture_on_commit_callbacks: Any
) -> None:
    batch = [
        BID,
        {**BID, "price": "10.001"},  # not a whole number of ticks
        {**BID, "symbol": "NOPE_USD"},  # unknown market
        {**BID, "side": "Ask", "price": "12.00", "quantity": "2"},
        {**BID, "quantity": "0"},
    ]

    with django_capture_on_commit_callbacks(execute=True):
        response = post(api, batch)

    assert response.status_code == 200, response.json()
    answer = response.json()
    assert [row.get("code", row.get("status")) for row in answer] == [
        "New", "INVALID_PRICE", "INVALID_MARKET", "New", "INVALID_QUANTITY",
    ]  # fmt: skip
    assert all(row["message"] for row in (answer[1], answer[2], answer[4]))
    placed = list(Order.objects.order_by("pk"))
    assert [str(o.pk) for o in placed] == [answer[0]["id"], answer[3]["id"]]
    assert (answer[3]["side"], answer[3]["quantity"], answer[3]["symbol"]) == ("Ask", "2", "AAPL_USD")
    # 10.00 + 0.2% taker fee = 10.02 USD locked for the bid, 2 AAPL for the ask.
    assert balance(funded_user, usd) == (Decimal("989.98"), Decimal("10.02"))
    assert [m["order_id"] for m in queued_messages()] == [o.pk for o in placed]
    assert ledger_check() == []


def test_funds_run_out_midway_and_later_orders_that_fit_still_go(
    user: User, market: Market, usd: Asset, aapl: Asset
) -> None:
    fund(user, usd, "25.00")
    fund(user, aapl, "1")
    # Each 1 @ 10.00 bid locks 10.02: two fit in 25.00, the third does not; a 4.00 bid
    # (4.01 locked) still fits in the 4.96 left, and an ask locks the other asset.
    results = orders_place_batch(
        user=user,
        requests=[(market, bid()), (market, bid()), (market, bid()), (market, ask()), (market, bid("4.00"))],
    )

    assert codes(results) == ["order", "order", "INSUFFICIENT_FUNDS", "order", "order"]
    assert "Insufficient USD: 4.96 available, 10.02 needed" in str(results[2])
    assert balance(user, usd) == (Decimal("0.95"), Decimal("24.05"))
    assert balance(user, aapl) == (Decimal("0"), Decimal("1"))
    placed = [r for r in results if isinstance(r, Order)]
    assert Order.objects.filter(user=user).count() == 4
    entries = LedgerEntry.objects.filter(reason=LedgerEntry.Reason.ORDER_LOCK).order_by("pk")
    assert [(e.reference, e.locked_delta) for e in entries] == [
        (f"order:{placed[0].pk}", Decimal("10.02")),
        (f"order:{placed[1].pk}", Decimal("10.02")),
        (f"order:{placed[2].pk}", Decimal("1")),
        (f"order:{placed[3].pk}", Decimal("4.01")),
    ]
    assert ledger_check() == []


def test_nothing_fits_nothing_is_written(user: User, market: Market, usd: Asset) -> None:
    fund(user, usd, "5.00")

    results = orders_place_batch(user=user, requests=[(market, bid()), (market, bid("10.001"))])

    assert codes(results) == ["INSUFFICIENT_FUNDS", "INVALID_PRICE"]
    assert Order.objects.count() == 0
    assert balance(user, usd) == (Decimal("5.00"), Decimal("0.00"))


def test_duplicate_client_id_in_a_batch_makes_one_order(funded_user: User, market: Market, usd: Asset) -> None:
    results = orders_place_batch(
        user=funded_user,
        requests=[
            (market, bid(client_id=7)),
            (market, bid(client_id=7)),  # the same request again: the same order
            (market, bid("11.00", client_id=7)),  # a different request with that id: refused
            (market, bid(client_id=8)),
        ],
    )

    assert codes(results) == ["order", "order", "INVALID_CLIENT_REQUEST", "order"]
    assert results[0] is results[1]
    assert "earlier order of this batch" in str(results[2])
    assert sorted(Order.objects.values_list("client_id", flat=True)) == [7, 8]
    assert balance(funded_user, usd) == (Decimal("979.96"), Decimal("20.04"))  # locked twice, not three times


def test_client_id_of_an_open_order_answers_with_it_or_is_refused(
    funded_user: User, market: Market, usd: Asset
) -> None:
    existing = place(funded_user, market, client_id=5)

    results = orders_place_batch(
        user=funded_user, requests=[(market, bid(client_id=5)), (market, ask(client_id=5)), (market, ask())]
    )

    assert codes(results) == ["order", "INVALID_CLIENT_REQUEST", "order"]
    assert isinstance(results[0], Order) and results[0].pk == existing.pk
    assert f"open order {existing.pk}" in str(results[1])
    assert Order.objects.count() == 2
    assert balance(funded_user, usd) == (Decimal("989.98"), Decimal("10.02"))


def test_a_retried_batch_answers_with_its_orders_after_a_halt(funded_user: User, market: Market) -> None:
    first = orders_place_batch(user=funded_user, requests=[(market, bid(client_id=1)), (market, ask(client_id=2))])
    market_update(market_id=market.pk, status=Market.Status.CANCEL_ONLY)
    market.refresh_from_db()

    again = orders_place_batch(
        user=funded_user, requests=[(market, bid(client_id=1)), (market, ask(client_id=2)), (market, bid())]
    )

    assert codes(again) == ["order", "order", "TRADING_PAUSED"]
    assert [o.pk for o in again[:2]] == [o.pk for o in first]  # type: ignore[union-attr]
    assert Order.objects.count() == 2


def test_queries_do_not_grow_with_the_batch(
    api: APIClient, funded_user: User, market: Market, django_assert_max_num_queries: Any
) -> None:
    """Set-based: a batch of 50 costs the database what a batch of 2 does."""
    with CaptureQueriesContext(connection) as small:
        post(api, [BID, {**BID, "side": "Ask", "price": "12.00", "clientId": 3}])
    with django_assert_max_num_queries(len(small)):
        answer = post(api, [BID] * 25 + [{**BID, "side": "Ask", "price": "12.00", "clientId": 100 + i} for i in range(25)])
    assert [row["status"] for row in answer.json()] == ["New"] * 50


def test_exactly_the_accepted_orders_are_queued_in_order(
    funded_user: User, market: Market, django_capture_on_commit_callbacks: Any
) -> None:
    requests = [(market, bid(str(Decimal("9.00") + i))) if i % 3 else (market, bid("0")) for i in range(12)]

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        results = orders_place_batch(user=funded_user, requests=requests)

    placed = [r for r in results if isinstance(r, Order)]
    assert len(placed) == 8
    assert len(callbacks) == 1  # one push for the whole batch
    messages = queued_messages()
    assert [m["order_id"] for m in messages] == [o.pk for o in placed]
    assert [m["price"] for m in messages] == [int(o.price * 100) for o in placed]  # type: ignore[operator]
    assert {m["kind"] for m in messages} == {"place"}


def test_each_stored_order_carries_its_request_and_the_fee_rates_of_the_day(funded_user: User, market: Market) -> None:
    market_update(market_id=market.pk, maker_fee_rate=Decimal("0.0005"), taker_fee_rate=Decimal("0.0015"))
    market.refresh_from_db()
    requests = [
        (market, bid("10.00", "3", client_id=7, time_in_force="IOC", self_trade_prevention="RejectBoth")),
        (market, ask("12.50", "2", post_only=True, self_trade_prevention="RejectMaker")),
        (market, OrderParams(side="Bid", order_type="Market", quote_quantity=Decimal("20.00"))),
    ]

    results = orders_place_batch(user=funded_user, requests=requests)

    stored = {o.pk: o for o in Order.objects.filter(user=funded_user)}
    assert len(stored) == 3
    got = [
        (o.side, o.order_type, o.price, o.quantity, o.quote_quantity, o.client_id, o.time_in_force, o.post_only,
         o.self_trade_prevention, o.status, o.locked, o.maker_fee_rate, o.taker_fee_rate, o.engine_cap,
         o.executed_quantity, o.fee_paid, o.reason)
        for o in (stored[r.pk] for r in results if isinstance(r, Order))
    ]
    fees = (Decimal("0.0005"), Decimal("0.0015"))
    assert got == [
        ("Bid", "Limit", Decimal("10.00"), Decimal("3"), None, 7, "IOC", False, "RejectBoth", "Pending",
         Decimal("30.05"), *fees, None, Decimal(0), Decimal(0), ""),  # 30.00 + 0.15 % fee, rounded up
        ("Ask", "Limit", Decimal("12.50"), Decimal("2"), None, None, "GTC", True, "RejectMaker", "Pending",
         Decimal("2"), *fees, None, Decimal(0), Decimal(0), ""),
        # A market buy by quote amount rests never: IOC, capped at 20.00 / 1.0015 in tick × lot units.
        ("Bid", "Market", None, None, Decimal("20.00"), None, "IOC", False, "RejectTaker", "Pending",
         Decimal("20.00"), *fees, 1997, Decimal(0), Decimal(0), ""),
    ]


def test_nothing_is_queued_before_commit(funded_user: User, market: Market) -> None:
    orders_place_batch(user=funded_user, requests=[(market, bid()), (market, ask())])

    assert Order.objects.count() == 2
    assert queued_messages() == []  # the test's transaction never commits


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_of_one_user_never_overdraw() -> None:
    """Batches on separate connections, each wanting more than is left: the sum never overdraws."""
    usd = make_asset("USD", precision=2, kind="cash")
    make_asset("AAPL", precision=0, kind="stock")
    make_market("AAPL", "USD")
    user = make_user("whale")
    fund(user, usd, "100.20")  # exactly 10 orders of 1 @ 10.00 (10.02 each)
    token = account_services.api_token_create(user=user)
    threads_count = 6

    def bot(_i: int) -> Any:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        return post(client, [BID] * 4).json()

    answers = run_together(bot, threads_count)
    assert not [a for a in answers if isinstance(a, Exception)], answers
    outcomes = Counter(row.get("code", row.get("status")) for answer in answers for row in answer)
    assert outcomes == Counter({"New": 10, "INSUFFICIENT_FUNDS": threads_count * 4 - 10})
    assert Balance.objects.get(user=user, asset=usd).available == Decimal("0.00")
    assert Order.objects.filter(user=user).count() == 10
    assert ledger_check() == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_racing_for_one_client_id_make_one_order() -> None:
    """Bids lock USD and asks AAPL, so the balance locks do not order them: the unique index
    does, and the loser answers as if it had come second (never a 500, never a second order)."""
    user, token = make_racer()
    threads_count = 8

    def bot(index: int) -> Any:
        side = "Bid" if index % 2 else "Ask"
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        response = post(client, [{**BID, "side": side, "price": "10.00" if side == "Bid" else "12.00", "clientId": 9}])
        return response.status_code, response.json()

    answers = run_together(bot, threads_count)
    assert not [a for a in answers if isinstance(a, Exception)], answers
    order = Order.objects.get(user=user)
    assert order.client_id == 9
    assert {status for status, _ in answers} == {200}
    rows = [body[0] for _, body in answers]
    same_side = [row for row in rows if row.get("side") == order.side]
    assert len(same_side) == threads_count // 2 and {row["id"] for row in same_side} == {str(order.pk)}
    assert Counter(row.get("code") for row in rows if row not in same_side) == {"INVALID_CLIENT_REQUEST": 4}
    assert ledger_check() == []
