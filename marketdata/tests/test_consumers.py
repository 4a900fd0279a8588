"""The `/ws` endpoint end to end: the real ASGI application (origin check, session, routing)
and the real Redis pub/sub channel layer, driven by Channels' WebsocketCommunicator.

Each test is a coroutine run once with `async_to_sync` (pytest-asyncio is not a
dependency); the channel layer's per-loop Redis connections are closed when that loop
closes. Every test gets its own channel-layer prefix, because Redis pub/sub ignores the
database number and other test runs on the same server publish to the same group names.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import ccxt
import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client

from accounts.models import User
from accounts.tests.api_helpers import KeyPair, register_key
from accounts.tests.factories import make_user
from exchange_site.asgi import application
from marketdata import consumers, realtime

pytestmark = pytest.mark.django_db(transaction=True)

TRADE = {"e": "trade", "E": 1, "s": "AAPL_USD", "t": 1, "p": "150.00", "q": "2", "m": False}


@pytest.fixture
def layer_prefix(settings: Any) -> Iterator[str]:
    prefix = f"test-ws-{uuid.uuid4().hex[:12]}"
    # Changing CHANNEL_LAYERS makes Channels drop its cached layer (setting_changed).
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [settings.REDIS_URL], "prefix": prefix},
        }
    }
    yield prefix


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async_to_sync(scenario)()


def communicator(origin: str | None = None, cookie: str | None = None) -> WebsocketCommunicator:
    headers = []
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    return WebsocketCommunicator(application, "/ws", headers=headers)


async def connect(origin: str | None = None, cookie: str | None = None) -> WebsocketCommunicator:
    ws = communicator(origin, cookie)
    connected, _ = await ws.connect()
    assert connected
    return ws


_ids = iter(range(1, 1_000_000))


async def request(ws: WebsocketCommunicator, method: str, params: list[str], **extra: Any) -> dict[str, Any]:
    """Send a request with an id and return the server's answer to it (ack or error)."""
    request_id = next(_ids)
    await ws.send_json_to({"method": method, "params": params, "id": request_id, **extra})
    answer: dict[str, Any] = await ws.receive_json_from(timeout=5)
    assert answer["id"] == request_id, answer
    return answer


async def subscribed(prefix: str, *groups: str) -> None:
    """Wait until Redis has the layer's SUBSCRIBE for each group.

    The layer sends SUBSCRIBE without waiting for Redis to confirm it, so a publish right
    after the ack could, on a busy server, overtake it.
    """
    client = redis.asyncio.Redis.from_url(django_settings.REDIS_URL)
    try:
        for _ in range(200):
            counts = dict(await client.pubsub_numsub(*(f"{prefix}__group__{group}" for group in groups)))
            if all(count > 0 for count in counts.values()):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"groups never subscribed: {counts}")
    finally:
        await client.aclose()


async def unsubscribed(prefix: str, group: str) -> bool:
    """Whether Redis soon has no subscriber left for the group (UNSUBSCRIBE is not awaited either)."""
    name = f"{prefix}__group__{group}"
    client = redis.asyncio.Redis.from_url(django_settings.REDIS_URL)
    try:
        for _ in range(200):
            if dict(await client.pubsub_numsub(name)).get(name.encode(), 0) == 0:
                return True
            await asyncio.sleep(0.01)
        return False
    finally:
        await client.aclose()


async def publish(group: str, stream: str, data: dict[str, Any]) -> None:
    await get_channel_layer().group_send(group, realtime.stream_message(stream, data))


def signature_for(keys: KeyPair, *, timestamp: int | None = None, window: int = 5000) -> list[Any]:
    """`signature` as CCXT's backpack class builds it in watch_private (its own eddsa)."""
    exchange = ccxt.backpack({"apiKey": keys.public_b64, "secret": keys.seed_b64})
    ts = str(timestamp if timestamp is not None else int(time.time() * 1000))
    payload = f"instruction=subscribe&timestamp={ts}&window={window}"
    signed = exchange.eddsa(exchange.encode(payload), exchange.base64_to_binary(keys.seed_b64), "ed25519")
    return [keys.public_b64, signed, ts, str(window)]


def order_update(symbol: str, order_id: str, event: str = "orderAccepted") -> dict[str, Any]:
    return {"e": event, "E": 1, "s": symbol, "i": order_id, "X": "New", "z": "0", "Z": "0"}


@pytest.fixture
def bot() -> tuple[User, KeyPair]:
    user = make_user()
    return user, register_key(user)


def test_public_trade_stream_until_unsubscribed(layer_prefix: str) -> None:
    async def scenario() -> None:
        ws = await connect()
        assert (await request(ws, "SUBSCRIBE", ["trade.AAPL_USD", "trade.MSFT_USD"]))["result"] is None
        await subscribed(layer_prefix, "trade.AAPL_USD", "trade.MSFT_USD")

        await publish("trade.AAPL_USD", "trade.AAPL_USD", TRADE)
        assert await ws.receive_json_from(timeout=5) == {"stream": "trade.AAPL_USD", "data": TRADE}

        await request(ws, "UNSUBSCRIBE", ["trade.AAPL_USD"])
        await publish("trade.AAPL_USD", "trade.AAPL_USD", {**TRADE, "t": 2})
        msft = {**TRADE, "s": "MSFT_USD", "t": 3}
        await publish("trade.MSFT_USD", "trade.MSFT_USD", msft)
        # Same subscriber connection, published in order: had the AAPL trade been
        # forwarded, it would come first.
        assert await ws.receive_json_from(timeout=5) == {"stream": "trade.MSFT_USD", "data": msft}
        assert await ws.receive_nothing(timeout=0.1)
        assert await unsubscribed(layer_prefix, "trade.AAPL_USD")
        await ws.disconnect()

    run(scenario)


def test_batch_arrives_as_frames_in_order(layer_prefix: str) -> None:
    async def scenario() -> None:
        ws = await connect()
        await request(ws, "SUBSCRIBE", ["depth.AAPL_USD", "kline.1m.AAPL_USD"])
        await subscribed(layer_prefix, "depth.AAPL_USD")
        deltas = [{"e": "depth", "s": "AAPL_USD", "U": n, "u": n, "a": [["150", "1"]], "b": []} for n in (1, 2, 3)]
        batch = realtime.stream_batch([("depth.AAPL_USD", delta) for delta in deltas])
        await get_channel_layer().group_send("depth.AAPL_USD", batch)
        received = [await ws.receive_json_from(timeout=5) for _ in deltas]
        assert received == [{"stream": "depth.AAPL_USD", "data": delta} for delta in deltas]
        await ws.disconnect()

    run(scenario)


def test_invalid_topic_is_an_error_and_the_connection_stays_open(layer_prefix: str) -> None:
    async def scenario() -> None:
        ws = await connect()
        for bad in ("trade.aapl_usd", "kline.7m.AAPL_USD", "orders.AAPL_USD", "account", "account.orderUpdate.x"):
            answer = await request(ws, "SUBSCRIBE", ["trade.AAPL_USD", bad])
            assert answer["error"]["code"] == consumers.ERR_INVALID_STREAM, bad
        # Nothing from a rejected request was subscribed; the connection still works.
        assert await unsubscribed(layer_prefix, "trade.AAPL_USD")
        assert "result" in await request(ws, "SUBSCRIBE", ["kline.1month.AAPL_USD", "bookTicker.AAPL_USD"])
        await ws.disconnect()

    run(scenario)


def test_malformed_messages_get_error_frames(layer_prefix: str) -> None:
    async def scenario() -> None:
        ws = await connect()
        for raw in ("{not json", "[1, 2]", '{"method": "PING"}', '{"method": "SUBSCRIBE", "params": "trade.AAPL_USD"}'):
            await ws.send_to(text_data=raw)
            assert (await ws.receive_json_from(timeout=5))["error"]["code"] == consumers.ERR_MALFORMED, raw
        assert "result" in await request(ws, "SUBSCRIBE", ["ticker.AAPL_USD"])
        await ws.disconnect()

    run(scenario)


def test_oversized_message_is_refused_and_the_connection_closed(layer_prefix: str) -> None:
    async def scenario() -> None:
        ws = await connect()
        await ws.send_to(text_data=json.dumps({"method": "SUBSCRIBE", "params": ["x" * consumers.MAX_MESSAGE_BYTES]}))
        assert (await ws.receive_json_from(timeout=5))["error"]["code"] == consumers.ERR_TOO_LARGE
        assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": consumers.CLOSE_TOO_LARGE}

    run(scenario)


def test_subscription_limit(layer_prefix: str) -> None:
    symbols = [f"S{n}_USD" for n in range(consumers.MAX_SUBSCRIPTIONS)]

    async def scenario() -> None:
        ws = await connect()
        assert "result" in await request(ws, "SUBSCRIBE", [f"trade.{s}" for s in symbols])
        # Re-subscribing to a topic already held costs nothing; one more does not fit.
        assert "result" in await request(ws, "SUBSCRIBE", [f"trade.{symbols[0]}"])
        answer = await request(ws, "SUBSCRIBE", ["depth.AAPL_USD"])
        assert answer["error"]["code"] == consumers.ERR_TOO_MANY_SUBSCRIPTIONS
        await ws.disconnect()

    run(scenario)


def test_private_topic_needs_authentication(layer_prefix: str) -> None:
    async def scenario() -> None:
        ws = await connect()
        for topic in ("account.orderUpdate", "account.balanceUpdate", "account.positionUpdate"):
            answer = await request(ws, "SUBSCRIBE", [topic])
            assert answer["error"]["code"] == consumers.ERR_UNAUTHORIZED
        await ws.disconnect()

    run(scenario)


def test_signed_subscription_gets_own_updates_only(layer_prefix: str, bot: tuple[User, KeyPair]) -> None:
    user, keys = bot
    other = make_user()

    async def scenario() -> None:
        ws = await connect()
        answer = await request(
            ws, "SUBSCRIBE", ["account.orderUpdate", "account.balanceUpdate"], signature=signature_for(keys)
        )
        assert answer["result"] is None
        await subscribed(layer_prefix, realtime.user_group(user.pk))

        await publish(realtime.user_group(other.pk), "account.orderUpdate", order_update("AAPL_USD", "other"))
        mine = order_update("AAPL_USD", "mine")
        await publish(realtime.user_group(user.pk), "account.orderUpdate", mine)
        assert await ws.receive_json_from(timeout=5) == {"stream": "account.orderUpdate", "data": mine}
        balance = {"e": "balanceUpdate", "E": 1, "a": "USD", "f": "100", "l": "0"}
        await publish(realtime.user_group(user.pk), "account.balanceUpdate", balance)
        assert await ws.receive_json_from(timeout=5) == {"stream": "account.balanceUpdate", "data": balance}
        assert await ws.receive_nothing(timeout=0.1)

        # Leaving every private topic leaves the user's group.
        await request(ws, "UNSUBSCRIBE", ["account.orderUpdate", "account.balanceUpdate"])
        assert await unsubscribed(layer_prefix, realtime.user_group(user.pk))
        await ws.disconnect()

    run(scenario)


def test_order_update_symbol_filter(layer_prefix: str, bot: tuple[User, KeyPair]) -> None:
    user, keys = bot
    group = realtime.user_group(user.pk)

    async def scenario() -> None:
        ws = await connect()
        await request(ws, "SUBSCRIBE", ["account.orderUpdate.AAPL_USD"], signature=signature_for(keys))
        await subscribed(layer_prefix, group)
        aapl, msft = order_update("AAPL_USD", "1"), order_update("MSFT_USD", "2")
        balance = {"e": "balanceUpdate", "a": "USD"}
        # One batch to the user's group: only the AAPL order update is for this client.
        await get_channel_layer().group_send(
            group,
            realtime.stream_batch(
                [("account.orderUpdate", msft), ("account.balanceUpdate", balance), ("account.orderUpdate", aapl)]
            ),
        )
        assert await ws.receive_json_from(timeout=5) == {"stream": "account.orderUpdate.AAPL_USD", "data": aapl}
        assert await ws.receive_nothing(timeout=0.1)

        # Adding the bare topic (no new signature: the connection is authenticated)
        # brings every market's updates, each on the stream the client asked for.
        assert "result" in await request(ws, "SUBSCRIBE", ["account.orderUpdate"])
        await publish(group, "account.orderUpdate", msft)
        assert await ws.receive_json_from(timeout=5) == {"stream": "account.orderUpdate", "data": msft}
        await ws.disconnect()
        # Disconnecting left the user's group.
        assert await unsubscribed(layer_prefix, group)

    run(scenario)


def test_rejected_signatures(layer_prefix: str, bot: tuple[User, KeyPair]) -> None:
    user, keys = bot
    stranger = register_key(make_user())
    stale = int(time.time() * 1000) - 10_000
    forged = signature_for(stranger)
    forged[0] = keys.public_b64  # the victim's key, signed by someone else

    async def scenario() -> None:
        ws = await connect()
        for signature in (
            signature_for(keys, timestamp=stale),
            signature_for(keys, window=120_000),
            forged,
            ["not base64", "x", str(int(time.time() * 1000)), "5000"],
            [keys.public_b64, "x", "²", "5000"],
            "a string",
        ):
            answer = await request(ws, "SUBSCRIBE", ["account.orderUpdate"], signature=signature)
            assert answer["error"]["code"] == consumers.ERR_SIGNATURE, signature
        # A longer window admits the older timestamp.
        assert "result" in await request(
            ws, "SUBSCRIBE", ["account.orderUpdate"], signature=signature_for(keys, timestamp=stale, window=60_000)
        )
        # One connection, one user.
        answer = await request(ws, "SUBSCRIBE", ["account.balanceUpdate"], signature=signature_for(stranger))
        assert answer["error"]["code"] == consumers.ERR_SIGNATURE
        await ws.disconnect()

    run(scenario)


def test_revoked_key_is_refused(layer_prefix: str, bot: tuple[User, KeyPair]) -> None:
    from django.utils import timezone

    _, keys = bot
    keys.api_key.revoked_at = timezone.now()
    keys.api_key.save(update_fields=["revoked_at"])

    async def scenario() -> None:
        ws = await connect()
        answer = await request(ws, "SUBSCRIBE", ["account.orderUpdate"], signature=signature_for(keys))
        assert answer["error"]["code"] == consumers.ERR_SIGNATURE
        await ws.disconnect()

    run(scenario)


def test_browser_session_subscribes_to_private_streams(layer_prefix: str) -> None:
    user = make_user()
    client = Client()
    client.force_login(user)
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={client.cookies[django_settings.SESSION_COOKIE_NAME].value}"

    async def scenario() -> None:
        ws = await connect(origin="http://localhost:8000", cookie=cookie)
        assert "result" in await request(ws, "SUBSCRIBE", ["account.orderUpdate"])
        await subscribed(layer_prefix, realtime.user_group(user.pk))
        update = order_update("AAPL_USD", "7")
        await publish(realtime.user_group(user.pk), "account.orderUpdate", update)
        assert await ws.receive_json_from(timeout=5) == {"stream": "account.orderUpdate", "data": update}
        await ws.disconnect()

    run(scenario)


def test_cross_site_origin_is_refused(layer_prefix: str) -> None:
    async def scenario() -> None:
        for origin in ("https://evil.example", "null"):
            connected, _ = await communicator(origin=origin).connect()
            assert not connected, origin
        # A page of this site, and a bot that sends no Origin, are both let in.
        for allowed in ("http://localhost:8000", None):
            ws = communicator(origin=allowed)
            connected, _ = await ws.connect()
            assert connected, allowed
            await ws.disconnect()

    run(scenario)
