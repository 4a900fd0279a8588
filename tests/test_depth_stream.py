"""A depth-following client ends with exactly the engine's book (issue "Market data").

The client does what a trading bot does: subscribe to `depth.<symbol>` on `/ws`, take the
REST snapshot while a random order flow runs through the real engine and DB processor,
drop the deltas the snapshot already holds (`u <= lastUpdateId`), then apply the rest,
which must follow each other without a gap (`U == previous u + 1`). At the end its book
must equal the engine's, every level. The flow stays within the snapshot's depth.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework.test import APIClient

from accounts.tests.factories import fund, make_user
from exchange_site.asgi import application
from tests.pipeline import Pipeline, engine_books, settled, wait_until
from tests.test_e2e_pipeline import _subscribed
from trading import services
from trading.models import Market
from trading.services import OrderParams
from trading.tests.factories import make_market

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SYMBOL = "AAPL_USD"


@pytest.fixture
def pipeline(tmp_path: Path, redis_conn: Any) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path)
    yield p.start()
    p.stop()


def _flow(market: Market, users: list[Any], rng: random.Random, count: int, placed: list[Any]) -> None:
    """Limits around 100.00 (some crossing, some IOC) and cancels of earlier orders."""
    for _ in range(count):
        if placed and rng.random() < 0.2:
            victim = rng.choice(placed)
            try:
                services.order_cancel(user=victim.user, market=market, order_id=victim.pk)
            except Exception:  # noqa: BLE001 — it finished meanwhile: fine
                pass
            continue
        side = rng.choice(["Bid", "Ask"])
        offset = rng.randint(-15, 25)  # mostly resting, some crossing the spread
        ticks = 10000 - offset if side == "Bid" else 10000 + offset
        params = OrderParams(
            side=side, order_type="Limit", price=Decimal(ticks) / 100, quantity=Decimal(rng.randint(1, 9)),
            time_in_force="IOC" if rng.random() < 0.1 else "GTC",
        )
        placed.append(services.order_place(user=rng.choice(users), market=market, params=params))


def _snapshot() -> dict[str, Any]:
    response = APIClient().get("/api/v1/depth", {"symbol": SYMBOL, "limit": 1000})
    assert response.status_code == 200, response.content
    data: dict[str, Any] = response.json()
    return data


def test_snapshot_plus_depth_stream_equals_the_engine_book(pipeline: Pipeline, redis_conn: Any) -> None:
    market = make_market()
    users = [make_user() for _ in range(4)]
    for user in users:
        fund(user, market.quote, Decimal("1000000"))
        fund(user, market.base, 100_000)
    rng = random.Random(5)
    placed: list[Any] = []
    _flow(market, users, rng, 80, placed)  # a book exists before the client arrives
    wait_until(settled, timeout=60, message=pipeline.logs())

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        ws = WebsocketCommunicator(application, "/ws")
        connected, _ = await ws.connect()
        assert connected
        await ws.send_json_to({"method": "SUBSCRIBE", "params": [f"depth.{SYMBOL}"], "id": 1})
        assert await ws.receive_json_from(timeout=5) == {"id": 1, "result": None}
        await _subscribed(f"depth.{SYMBOL}")
        # The snapshot is taken in the middle of the flow, so deltas straddle it.
        await sync_to_async(_flow)(market, users, rng, 60, placed)
        snapshot = await sync_to_async(_snapshot)()
        await sync_to_async(_flow)(market, users, rng, 120, placed)
        await sync_to_async(wait_until)(settled, 60, 0.05, pipeline.logs())
        final_id = int((await sync_to_async(_snapshot)())["lastUpdateId"])
        frames: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while not frames or frames[-1]["data"]["u"] < final_id:
            frames.append(await ws.receive_json_from(timeout=max(deadline - time.monotonic(), 0.01)))
        await ws.disconnect()
        return snapshot, frames

    snapshot, frames = async_to_sync(scenario)()

    book = {
        "Bid": {price: qty for price, qty in snapshot["bids"]},
        "Ask": {price: qty for price, qty in snapshot["asks"]},
    }
    last = int(snapshot["lastUpdateId"])
    applied = 0
    for frame in frames:
        assert frame["stream"] == f"depth.{SYMBOL}"
        delta = frame["data"]
        if delta["u"] <= last:
            continue  # already in the snapshot
        assert delta["U"] == last + 1 if applied else delta["U"] <= last + 1 <= delta["u"], (
            f"gap in the depth stream after {last}: {delta['U']}..{delta['u']}"
        )
        for side, key in (("Bid", "b"), ("Ask", "a")):
            for price, qty in delta[key]:
                if Decimal(qty) == 0:
                    book[side].pop(price, None)
                else:
                    book[side][price] = qty
        last = delta["u"]
        applied += 1
    assert applied > 10, "the stream should have carried the flow after the snapshot"

    engine = engine_books(redis_conn)[SYMBOL]
    levels: dict[str, dict[Decimal, int]] = {"Bid": {}, "Ask": {}}
    for _order_id, side, price_ticks, remaining in engine["orders"]:
        price = Decimal(price_ticks) * market.tick_size
        levels[side][price] = levels[side].get(price, 0) + remaining
    for side in ("Bid", "Ask"):
        mine = {Decimal(p): int(Decimal(q)) for p, q in book[side].items()}
        assert mine == levels[side], f"{side} side differs from the engine's book"
    assert engine["counters"]["book_update_id"] == last
    assert book["Bid"] and book["Ask"], "the flow should leave both sides of the book"
