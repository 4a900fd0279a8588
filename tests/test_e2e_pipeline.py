"""The order pipeline end to end (issue "Order pipeline"): two users trade through the bot
API with the real engine and DB processor running as processes, on real PostgreSQL and Redis.

What a user would notice: the order comes back Filled, the money moves to the cent with
the fees (the house account gets them), the ledger still balances, and each user's bot
hears about its own order and balances on `/ws` (and everyone sees the public trade).

The whole scenario is one coroutine run once with `async_to_sync`, so the WebSocket
communicators and the channel layer's Redis connections live on one event loop; the
synchronous parts (HTTP through DRF's APIClient, database reads) run through
`sync_to_async` on the test's own thread and database connection. The engine and DB
processor are other processes, so nothing here waits on itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.ledger import ledger_check
from accounts.models import User
from accounts.tests.api_helpers import KeyPair, register_key
from accounts.tests.factories import balance_of as _balance
from accounts.tests.factories import fund, make_user
from exchange_site.asgi import application
from marketdata import realtime
from marketdata.models import Trade
from marketdata.tests.test_consumers import signature_for
from tests.pipeline import Pipeline
from trading.models import Market, Order
from trading.tests.factories import make_market

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 30.0


@pytest.fixture
def pipeline(tmp_path: Path, redis_conn: Any) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path)
    yield p.start()
    p.stop()



def _api(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {account_services.api_token_create(user=user)}")
    return client


def _place(api: APIClient, body: dict[str, Any]) -> dict[str, Any]:
    response = api.generic("POST", "/api/v1/order", json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content
    data: dict[str, Any] = response.json()
    return data


def _order_status(api: APIClient, order_id: str) -> str:
    response = api.get("/api/v1/order", {"orderId": order_id, "symbol": "AAPL_USD"})
    assert response.status_code == 200, response.content
    return str(response.json()["status"])


def _layer_group(group: str) -> str:
    # channels_redis' pub/sub layer publishes a group on "<prefix>__group__<group>".
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
    return f"{prefix}__group__{group}"


async def _subscribed(*groups: str) -> None:
    """Wait until Redis has the layer's SUBSCRIBE for each group (the ack does not wait for it)."""
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    names = [_layer_group(group) for group in groups]
    try:
        deadline = time.monotonic() + 10
        while True:
            counts = dict(await client.pubsub_numsub(*names))
            if all(counts.get(name.encode(), 0) > 0 for name in names):
                return
            assert time.monotonic() < deadline, f"groups never subscribed: {counts}"
            await asyncio.sleep(0.01)
    finally:
        await client.aclose()


class Bot:
    """One user's WebSocket connection and every frame it has received so far."""

    def __init__(self, user: User, keys: KeyPair) -> None:
        self.user = user
        self.keys = keys
        self.ws = WebsocketCommunicator(application, "/ws")
        self.frames: list[dict[str, Any]] = []

    async def connect(self, topics: list[str], request_id: int) -> None:
        connected, _ = await self.ws.connect()
        assert connected
        await self.ws.send_json_to(
            {"method": "SUBSCRIBE", "params": topics, "id": request_id, "signature": signature_for(self.keys)}
        )
        assert await self.ws.receive_json_from(timeout=5) == {"id": request_id, "result": None}

    async def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], what: str) -> None:
        """Receive frames until `predicate(all frames so far)` holds.

        A receive that times out also cancels the consumer (asgiref's communicator), so
        each receive waits for the rest of the deadline rather than polling.
        """
        deadline = time.monotonic() + TIMEOUT
        while not predicate(self.frames):
            try:
                self.frames.append(await self.ws.receive_json_from(timeout=max(deadline - time.monotonic(), 0.01)))
            except TimeoutError:
                raise AssertionError(f"user {self.user.pk} never got {what}; frames: {self.frames}") from None

    def order_events(self, order_id: str) -> list[dict[str, Any]]:
        return [f["data"] for f in self.frames if f.get("stream") == "account.orderUpdate" and f["data"]["i"] == order_id]

    def balances(self) -> list[dict[str, Any]]:
        return [f["data"] for f in self.frames if f.get("stream") == "account.balanceUpdate"]


def _filled(bot: Bot, order_id: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda _frames: any(e.get("X") == "Filled" for e in bot.order_events(order_id))


def _balance_is(bot: Bot, asset: str, available: str, locked: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda _frames: any(
        b["a"] == asset and b["f"] == available and b["l"] == locked for b in bot.balances()
    )


def _setup() -> tuple[Market, User, User]:
    market = make_market("AAPL", "USD")  # tick 0.01, lot 1, maker 0.10 %, taker 0.20 %
    buyer, seller = make_user("buyer"), make_user("seller")
    fund(buyer, market.quote, Decimal("1000.00"))
    fund(seller, market.base, Decimal("10"))
    return market, buyer, seller


def test_two_users_trade_through_the_api_and_hear_it_on_the_websocket(pipeline: Pipeline) -> None:
    market, buyer_user, seller_user = _setup()
    buyer, seller = Bot(buyer_user, register_key(buyer_user)), Bot(seller_user, register_key(seller_user))
    buyer_api, seller_api = _api(buyer_user), _api(seller_user)

    async def scenario() -> None:
        # Both bots listen before anything happens; the buyer also watches the public trades.
        await buyer.connect(["account.orderUpdate", "account.balanceUpdate", "trade.AAPL_USD"], 1)
        await seller.connect(["account.orderUpdate", "account.balanceUpdate"], 2)
        await _subscribed(realtime.user_group(buyer_user.pk), realtime.user_group(seller_user.pk), "trade.AAPL_USD")

        # The seller's ask rests first (maker); the buyer's higher bid takes it at the ask.
        ask = await sync_to_async(_place)(
            seller_api, {"symbol": "AAPL_USD", "side": "Ask", "orderType": "Limit", "price": "150.00", "quantity": "3"}
        )
        await seller.wait_for(lambda _f: bool(seller.order_events(ask["id"])), "orderAccepted for the ask")
        bid = await sync_to_async(_place)(
            buyer_api, {"symbol": "AAPL_USD", "side": "Bid", "orderType": "Limit", "price": "151.00", "quantity": "3"}
        )
        # The bid locked its whole notional at its own price plus the taker fee, rounded up:
        # 453.00 + 0.906 -> 453.91.
        assert bid["status"] == "New"

        await seller.wait_for(_filled(seller, ask["id"]), "the ask Filled")
        await buyer.wait_for(_filled(buyer, bid["id"]), "the bid Filled")
        # Settled balances, read after the DB processor's commit.
        await buyer.wait_for(_balance_is(buyer, "USD", "549.1", "0"), "USD 549.10 available, none locked")
        await buyer.wait_for(_balance_is(buyer, "AAPL", "3", "0"), "3 AAPL")
        await seller.wait_for(_balance_is(seller, "USD", "449.55", "0"), "USD 449.55")
        await seller.wait_for(_balance_is(seller, "AAPL", "7", "0"), "7 AAPL left, none locked")
        await buyer.wait_for(lambda frames: any(f.get("stream") == "trade.AAPL_USD" for f in frames), "the trade")

        await buyer.ws.disconnect()
        await seller.ws.disconnect()

        # Order streams: each user saw its own order only, accepted then filled.
        ask_events, bid_events = seller.order_events(ask["id"]), buyer.order_events(bid["id"])
        assert {f["data"]["i"] for f in seller.frames if f.get("stream") == "account.orderUpdate"} == {ask["id"]}
        assert {f["data"]["i"] for f in buyer.frames if f.get("stream") == "account.orderUpdate"} == {bid["id"]}
        for events, side, price, maker in ((ask_events, "Ask", "150", True), (bid_events, "Bid", "151", False)):
            assert events[0]["e"] == "orderAccepted", events
            assert (events[0]["X"], events[0]["S"], events[0]["p"], events[0]["q"]) == ("New", side, price, "3")
            fills = [e for e in events if e["e"] == "orderFill"]
            assert [(f["l"], f["L"], f["m"]) for f in fills] == [("3", "150", maker)], events
            final = events[-1]
            assert (final["X"], final["z"], final["Z"]) == ("Filled", "3", "450"), events
        trades = [f["data"] for f in buyer.frames if f.get("stream") == "trade.AAPL_USD"]
        assert [(t["p"], t["q"], t["m"], t["s"]) for t in trades] == [("150", "3", False, "AAPL_USD")]
        assert trades[0]["b"] == int(bid["id"]) and trades[0]["a"] == int(ask["id"])

    async_to_sync(scenario)()

    # What the API and the database say once it has settled.
    bid_id, ask_id = (str(Order.objects.get(user=user).pk) for user in (buyer_user, seller_user))
    assert _order_status(buyer_api, bid_id) == "Filled"
    assert _order_status(seller_api, ask_id) == "Filled"
    trade = Trade.objects.get(market=market)
    assert (trade.price, trade.quantity, trade.quote_quantity) == (Decimal("150"), Decimal("3"), Decimal("450"))
    assert (str(trade.buy_order_id), trade.is_buyer_maker) == (bid_id, False)
    for order in Order.objects.all():
        assert (order.status, order.executed_quantity, order.locked) == (Order.Status.FILLED, 3, 0)
    assert Order.objects.get(user=buyer_user).fee_paid == Decimal("0.90")  # taker 0.20 % of 450
    assert Order.objects.get(user=seller_user).fee_paid == Decimal("0.45")  # maker 0.10 % of 450
    assert _balance(buyer_user, "USD") == (Decimal("549.10"), 0)  # 1000 - 450 - 0.90
    assert _balance(buyer_user, "AAPL") == (3, 0)
    assert _balance(seller_user, "USD") == (Decimal("449.55"), 0)  # 450 - 0.45
    assert _balance(seller_user, "AAPL") == (7, 0)
    assert _balance(account_services.house_user(), "USD") == (Decimal("1.35"), 0)
    assert ledger_check() == []
