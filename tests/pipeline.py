"""Runs the real pipeline processes (engine, DB processor) as subprocesses for tests.

They connect to the same test database and Redis database as the test itself, over real
connections, so a test can place orders through the API and watch them settle — and kill
a process with SIGKILL at any point to check that nothing is lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, F, Sum

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """URL of the database the test is using (pytest-django's test_… database)."""
    db = connection.settings_dict
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


class Process:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, **extra_env: str) -> None:
        env = {**self.env, **extra_env}
        log = open(self.log_path, "ab")  # noqa: SIM115 — owned by the child for its life
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", *self.args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_dead(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, *, count: int = 1, timeout: float = 60) -> None:
        """Wait until the log holds `text` `count` times (it is appended to across restarts)."""
        wait_until(lambda: self.log().count(text) >= count, timeout=timeout, message=f"{self.name} to log {text!r}")


class Pipeline:
    """The engine and the DB processor, started against the test's database and Redis."""

    def __init__(self, log_dir: Path) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "DJANGO_SETTINGS_MODULE": "exchange_site.settings.test",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("BOURSE_FAULT", None)
        self.engine = Process("engine", ["run_engine"], env, log_dir)
        self.db_processor = Process("db_processor", ["run_db_processor"], env, log_dir)

    def start(self) -> Pipeline:
        self.db_processor.start()
        self.engine.start()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until both processes are up: the engine has rebuilt its books, the DB processor polls.

        Until then commands only queue up, and the engine's rebuild replays them all as one
        batch: a test that wants a fault point reached several times should wait first.
        """
        self.db_processor.wait_log("DB processor started", timeout=timeout)
        self.engine.wait_log("engine rebuilt", timeout=timeout)

    def stop(self) -> None:
        self.engine.stop()
        self.db_processor.stop()

    def logs(self) -> str:
        return f"--- engine ---\n{self.engine.log()[-4000:]}\n--- db_processor ---\n{self.db_processor.log()[-4000:]}"


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message or predicate}")
        time.sleep(interval)


# --- the invariants of the pipeline after a quiet period ---------------------------------------
# Shared by the crash tests and bench/chaos.py. Models are imported inside the functions so
# this module stays importable before Django's app registry is ready.


def settled(market: Any = None) -> bool:
    """Nothing in flight: no order still Pending, no cancel still requested, both queues empty.

    `market` is accepted for the crash tests' call shape; the check is exchange-wide.
    """
    from engine_worker import transport
    from trading import messaging
    from trading.models import Order

    open_pending = Order.objects.filter(status=Order.Status.PENDING).exists()
    cancels = Order.objects.filter(status__in=Order.OPEN_STATUSES, cancel_requested_at__isnull=False).exists()
    queues = transport.queue_length(transport.get_queue(transport.DB_QUEUE)) + transport.queue_length(messaging.messages_queue())
    return not open_pending and not cancels and queues == 0


def engine_books(redis_conn: Any, timeout: float = 20) -> dict[str, Any]:
    """Every book as the running engine holds it (asked for with a `dump` command)."""
    from engine_worker.worker import BOOKS_KEY
    from trading import messaging

    redis_conn.delete(BOOKS_KEY)
    messaging.enqueue([{"kind": "dump"}])
    raw = wait_until(lambda: redis_conn.get(BOOKS_KEY), timeout=timeout, message="engine book dump")
    books: dict[str, Any] = json.loads(raw)["books"]
    return books


def check_consistency(market: Any, redis_conn: Any) -> list[str]:
    """Assert that nothing was lost, doubled or left inconsistent in `market`; what was checked.

    Run once the pipeline has settled (`settled()`) with the engine up: every order agrees
    with its fills and its locked funds, trade ids are contiguous, the engine's book is the
    database's open orders in the same priority, the counters continue from what is
    persisted, and the ledger balances.
    """
    from accounts.ledger import ledger_check
    from marketdata.models import Trade
    from trading.models import Fill, MarketState, Order

    checked: list[str] = []
    # Every acknowledged order is in exactly one final or open state, agreeing with its fills.
    orders = Order.objects.filter(market=market)
    assert not orders.filter(status=Order.Status.PENDING).exists()
    fills = {
        row["order_id"]: row
        for row in Fill.objects.filter(market=market).values("order_id").annotate(q=Sum("quantity"), n=Count("id"), t=Count("trade_id", distinct=True))
    }
    count = 0
    for order in orders:
        count += 1
        row = fills.get(order.pk, {"q": Decimal(0), "n": 0, "t": 0})
        assert row["n"] == row["t"], f"order {order.pk} has a trade settled twice"
        assert order.executed_quantity == row["q"], f"order {order.pk}: executed {order.executed_quantity} != fills {row['q']}"
        if order.quantity is not None:
            assert order.executed_quantity <= order.quantity, f"order {order.pk} over-filled"
        if order.status == Order.Status.FILLED and order.quantity is not None:
            assert order.executed_quantity == order.quantity, f"order {order.pk} Filled with {order.executed_quantity}"
        if order.quote_quantity is not None:
            # A market buy by quote amount: that amount includes the fee, and is Filled
            # once what is left cannot buy another lot.
            spent = order.executed_quote_quantity + order.fee_paid
            assert spent <= order.quote_quantity, f"order {order.pk} spent {spent} of {order.quote_quantity}"
        if order.status in (Order.Status.FILLED, Order.Status.CANCELLED, Order.Status.EXPIRED):
            assert order.locked == 0, f"order {order.pk} finished with funds still locked"
        if order.order_type == "Market" or order.time_in_force in ("IOC", "FOK"):
            assert order.status not in Order.OPEN_STATUSES, f"IOC/market order {order.pk} left open"
    # Fills have an order and copy its user and market; trades name this market's orders
    # (the database checks none of these references: settlement writes them).
    orphans = Fill.objects.filter(market=market).exclude(order_id__in=Order.objects.values("pk"))
    assert not orphans.exists(), f"fills without their order: {list(orphans.values_list('pk', flat=True)[:5])}"
    strays = Fill.objects.filter(order__market=market).exclude(user_id=F("order__user_id"), market_id=F("order__market_id"))
    assert not strays.exists(), f"fills whose user or market is not their order's: {list(strays.values_list('pk', flat=True)[:5])}"
    checked.append(
        f"{count} orders: none Pending, executed quantity == sum of fills, no trade settled twice, "
        "none over-filled (nor over-spent by quote amount), finished orders lock nothing, no IOC/market order left open, "
        "every fill has its order and carries its user and market"
    )
    # No trade stored twice, trade ids contiguous (none lost, none reused), each between two
    # of this market's orders.
    trades = Trade.objects.filter(market=market)
    ids = list(trades.order_by("trade_id").values_list("trade_id", flat=True))
    assert ids == list(range(1, len(ids) + 1)), "trade ids must be unique and contiguous"
    foreign = trades.exclude(buy_order_id__in=orders.values("pk"), sell_order_id__in=orders.values("pk"))
    assert not foreign.exists(), f"trades naming another market's orders: {list(foreign.values_list('trade_id', flat=True)[:5])}"
    assert not Trade.objects.exclude(market_id__in=type(market).objects.values("pk")).exists(), "trades of no market"
    checked.append(f"{len(ids)} trades: ids 1..{len(ids)}, unique and contiguous, each between two orders of the market")
    # The engine's books equal the open orders in the database, in priority order.
    books = engine_books(redis_conn)[market.symbol]
    db_open = [
        [o.pk, o.side, int(o.price / market.tick_size), int((o.quantity - o.executed_quantity) / market.lot_size)]
        for o in orders.filter(status__in=Order.OPEN_STATUSES).order_by("accepted_seq")
    ]
    engine_open = books["orders"]

    def key(row: list[Any]) -> tuple[str, int]:
        return (row[1], -row[2] if row[1] == "Bid" else row[2])

    assert sorted(engine_open, key=lambda r: r[0]) == sorted(db_open, key=lambda r: r[0]), "same orders and remainders"

    # Priority: within each price level, engine FIFO order == database acceptance order.
    def levels(rows: list[list[Any]]) -> dict[tuple[str, int], list[int]]:
        out: dict[tuple[str, int], list[int]] = {}
        for row in rows:
            out.setdefault((row[1], row[2]), []).append(row[0])
        return out

    assert levels(engine_open) == levels(sorted(db_open, key=key)), "priority order differs"
    checked.append(f"engine book == {len(db_open)} open orders in the database, same remainders, same priority")
    # Counters never go backwards: the engine continues from what is persisted.
    state = MarketState.objects.get(market=market)
    counters = books["counters"]
    assert counters["trade_id"] == state.last_trade_id == (ids[-1] if ids else 0)
    assert counters["event_seq"] >= state.last_event_seq
    checked.append(
        f"counters: engine trade id {counters['trade_id']} == persisted {state.last_trade_id}, "
        f"engine event seq {counters['event_seq']} >= persisted {state.last_event_seq}"
    )
    problems = ledger_check()
    assert not problems, problems
    checked.append("ledger_check: balances == ledger entries, totals == deposits - withdrawals + allocations")
    return checked
