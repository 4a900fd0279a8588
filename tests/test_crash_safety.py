"""Crash safety of the order pipeline: kill -9 at each fault-injection point, restart,
and check that nothing was lost, doubled or left inconsistent (issue "Order pipeline").

Each case runs the real engine and DB processor as subprocesses against the test
database and Redis, with a few hundred orders from several users in flight.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from accounts.models import User
from accounts.tests.factories import fund, make_asset, make_user
from marketdata.models import Trade
from tests.pipeline import Pipeline, check_consistency, wait_until
from tests.pipeline import settled as _settled
from trading import messaging, services
from trading.models import Market, Order
from trading.services import OrderParams

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

USERS = 4
ORDERS = 240


@pytest.fixture
def pipeline(tmp_path: Path, redis_conn: Any) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path)
    yield p
    p.stop()


def _setup_market() -> tuple[Market, list[User]]:
    usd = make_asset("USD", precision=2)
    aapl = make_asset("AAPL", precision=0, kind="stock")
    market = services.market_create(base=aapl, quote=usd, tick_size=Decimal("0.01"), lot_size=Decimal("1"))
    users = [make_user() for _ in range(USERS)]
    for user in users:
        fund(user, usd, Decimal("1000000"))
        fund(user, aapl, 10_000)
    return market, users


def _order_flow(market: Market, users: list[User], count: int, seed: int) -> list[Order]:
    """A mix of resting and crossing limits, IOCs, market orders and cancels."""
    rng = random.Random(seed)
    placed: list[Order] = []
    for _ in range(count):
        user = rng.choice(users)
        side = rng.choice(["Bid", "Ask"])
        roll = rng.random()
        if roll < 0.1 and placed:
            victim = rng.choice(placed)
            if victim.order_type == "Limit":
                try:
                    services.order_cancel(user=victim.user, market=market, order_id=victim.pk)
                except Exception:  # noqa: BLE001 — already finished: fine
                    pass
            continue
        if roll < 0.2:
            params = OrderParams(side=side, order_type="Market", quantity=Decimal(rng.randint(1, 5)))
        else:
            offset = rng.randint(-20, 20)
            price = Decimal(10000 + (offset if side == "Bid" else -offset)) / 100
            tif = "IOC" if roll < 0.3 else "GTC"
            params = OrderParams(side=side, order_type="Limit", price=price, quantity=Decimal(rng.randint(1, 10)), time_in_force=tif)
        try:
            placed.append(services.order_place(user=user, market=market, params=params))
        except Exception as exc:  # noqa: BLE001 — e.g. a market order on an empty book
            assert "liquidity" in str(exc), exc
    return placed


def _check_consistency(market: Market, redis_conn: Any) -> None:
    # Shared with bench/chaos.py (tests/pipeline.py).
    check_consistency(market, redis_conn)


FAULTS = [
    ("engine", "engine.after_dequeue"),
    ("engine", "engine.after_enqueue"),
    ("engine", "engine.after_publish"),
    ("db_processor", "db.before_commit"),
    ("db_processor", "db.after_commit"),
]


@pytest.mark.parametrize(("process", "fault"), FAULTS)
def test_kill_at_fault_point_loses_nothing(process: str, fault: str, pipeline: Pipeline, redis_conn: Any) -> None:
    market, users = _setup_market()
    victim = getattr(pipeline, process)
    other = pipeline.engine if process == "db_processor" else pipeline.db_processor
    other.start()
    victim.start(BOURSE_FAULT=fault, BOURSE_FAULT_AFTER="3")
    pipeline.wait_ready()  # else a slow start replays the whole flow as one batch: too few hits
    _order_flow(market, users, ORDERS // 2, seed=1)
    assert victim.wait_dead(timeout=60) is not None, f"{process} did not die at {fault}\n{pipeline.logs()}"
    _order_flow(market, users, ORDERS // 2, seed=2)  # more flow while it is down
    victim.start()
    wait_until(lambda: _settled(market), timeout=60, message=f"pipeline to settle after {fault}\n{pipeline.logs()}")
    _check_consistency(market, redis_conn)
    assert Trade.objects.filter(market=market).exists(), "the flow should have traded"


def test_web_dies_between_commit_and_enqueue_then_the_sweep_delivers(pipeline: Pipeline, redis_conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    market, users = _setup_market()
    pipeline.start()
    # The push after commit never happens, as if the web process died right after COMMIT.
    monkeypatch.setattr(messaging, "enqueue_on_commit", lambda messages: None)
    order = services.order_place(user=users[0], market=market, params=OrderParams(side="Bid", order_type="Limit", price=Decimal("99"), quantity=Decimal("5")))
    monkeypatch.undo()
    assert Order.objects.get(pk=order.pk).status == Order.Status.PENDING
    services.orders_requeue_stale(older_than=timedelta(0))
    wait_until(lambda: Order.objects.get(pk=order.pk).status == Order.Status.NEW, timeout=20, message=pipeline.logs())
    _check_consistency(market, redis_conn)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM accounts_ledgerentry WHERE reference = %s", [f"order:{order.pk}"])
        assert cursor.fetchone()[0] == 1, "the funds were locked once"
