"""Chaos run of the order pipeline: a steady order flow while the engine and the DB processor
are killed (SIGKILL) at random moments and at random fault points, then restarted.

    .venv/bin/python bench/chaos.py --seconds 120 --orders-per-second 200

Against the real servers: it creates a scratch database (default `bourse_chaos` on the local
PostgreSQL; the name must contain "chaos", since it is dropped and re-created), runs
`manage.py migrate` on it, and uses a Redis database of its own (default 14, flushed). The
engine and the DB processor run as subprocesses (`tests.pipeline.Pipeline`, the same
harness as the crash tests); the order flow runs in this process through
`trading.services` (GTC, IOC and FOK limits, post-only, market orders by quantity and by
quote amount, cancels) from several users on two markets, and the unqueued-order sweep
runs every 3 s as the scheduler does in production.

Chaos: every few seconds one process (sometimes both) gets `kill -9`; every (re)start is,
one time in two, armed with a random `BOURSE_FAULT` point of that process and a random
`BOURSE_FAULT_AFTER`, so it also dies by itself at that point. A dead process is restarted
after up to 1.5 s. At the end the flow stops, every process is restarted clean, and once the
pipeline is quiet the same invariants as the crash tests are checked
(`tests.pipeline.check_consistency`, per market) plus: the house account holds exactly the
fees of all fills. It prints the figures and exits non-zero if a check fails (keeping the
database and logs for a look).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETTINGS = "exchange_site.settings.test"  # what tests.pipeline.Pipeline gives its processes
FAULTS = {
    "engine": ["engine.after_dequeue", "engine.after_enqueue", "engine.after_publish"],
    "db_processor": ["db.before_commit", "db.after_commit"],
}
SWEEP_EVERY = 3.0  # exchange_site/cron.py runs the sweep at this interval
QUIESCE_TIMEOUT = 180.0
ARMED_GRACE = 10.0  # seconds an armed process gets to reach its fault point before kill -9


# --- scratch servers --------------------------------------------------------------------------


def _database_name(url: str) -> str:
    return urllib.parse.urlsplit(url).path.lstrip("/")


def _admin_connect(url: str) -> Any:
    import psycopg

    parts = urllib.parse.urlsplit(url)
    return psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True)


def recreate_database(url: str) -> None:
    name = _database_name(url)
    with _admin_connect(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    with _admin_connect(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{_database_name(url)}" WITH (FORCE)')


def migrate(env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"manage.py migrate failed:\n{done.stdout}\n{done.stderr}")


# --- the chaos monkey -------------------------------------------------------------------------


@dataclass
class Supervised:
    """One pipeline process under chaos: what it is armed with and when it comes back."""

    name: str
    process: Any  # tests.pipeline.Process
    armed: str | None = None
    started_at: float = 0.0
    killed_by_us: bool = False
    restart_at: float | None = None


@dataclass
class Figures:
    placed: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    cancels: int = 0
    cancels_refused: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    fault_deaths: Counter[str] = field(default_factory=Counter)
    other_exits: list[str] = field(default_factory=list)
    restarts: Counter[str] = field(default_factory=Counter)
    armed: Counter[str] = field(default_factory=Counter)
    swept_orders: int = 0
    swept_cancels: int = 0


class Chaos:
    def __init__(self, pipeline: Any, rng: random.Random, figures: Figures, *, min_gap: float, max_gap: float) -> None:
        self.rng = rng
        self.figures = figures
        self.min_gap, self.max_gap = min_gap, max_gap
        self.procs = [Supervised("engine", pipeline.engine), Supervised("db_processor", pipeline.db_processor)]
        self.next_kill = time.monotonic() + rng.uniform(min_gap, max_gap)

    def start(self, proc: Supervised, *, may_arm: bool = True) -> None:
        proc.armed = None
        extra: dict[str, str] = {}
        if may_arm and self.rng.random() < 0.5:
            proc.armed = self.rng.choice(FAULTS[proc.name])
            extra = {"BOURSE_FAULT": proc.armed, "BOURSE_FAULT_AFTER": str(self.rng.randint(0, 8))}
            self.figures.armed[proc.armed] += 1
        proc.killed_by_us = False
        proc.restart_at = None
        proc.started_at = time.monotonic()
        proc.process.start(**extra)

    def kill(self, proc: Supervised) -> None:
        if proc.process.alive():
            proc.process.kill()
            proc.killed_by_us = True
            self.figures.kills[proc.name] += 1

    def tick(self) -> None:
        """Kill when it is time, notice deaths, restart the dead when their downtime is over."""
        now = time.monotonic()
        if now >= self.next_kill:
            roll = self.rng.random()
            victims = self.procs if roll < 0.15 else [self.procs[0] if roll < 0.6 else self.procs[1]]
            for proc in victims:
                # An armed process is left to die at its fault point, unless it has not
                # reached it for a while (e.g. an engine still waiting to rebuild).
                if proc.armed is None or now - proc.started_at > ARMED_GRACE:
                    self.kill(proc)
            self.next_kill = now + self.rng.uniform(self.min_gap, self.max_gap)
        for proc in self.procs:
            if proc.restart_at is None and not proc.process.alive():
                self._record_death(proc)
                proc.restart_at = now + self.rng.uniform(0, 1.5)
            if proc.restart_at is not None and now >= proc.restart_at:
                self.start(proc)
                self.figures.restarts[proc.name] += 1

    def _record_death(self, proc: Supervised) -> None:
        code = proc.process.proc.returncode if proc.process.proc is not None else None
        if proc.killed_by_us:
            return
        if proc.armed is not None and code == -9:
            self.figures.fault_deaths[proc.armed] += 1
        else:
            self.figures.other_exits.append(f"{proc.name} exited with {code} (armed: {proc.armed})")

    def calm(self) -> None:
        """End of chaos: every process up and unarmed (an armed one is killed and restarted clean)."""
        for proc in self.procs:
            if proc.process.alive() and proc.armed is not None:
                self.kill(proc)
            if not proc.process.alive():
                if not proc.killed_by_us and proc.restart_at is None:
                    self._record_death(proc)
                self.start(proc, may_arm=False)
                self.figures.restarts[proc.name] += 1


# --- the order flow ---------------------------------------------------------------------------


class Flow(threading.Thread):
    """Random orders and cancels from several users on several markets, through the services.

    One of a few threads: an order is one short transaction whose time is mostly waiting
    on PostgreSQL (about 20 ms with its commit), so one thread alone cannot keep up the
    rate. Each thread has its own database connection, random stream and figures.
    """

    def __init__(self, markets: list[Any], users: list[Any], seed: int, rate: float, until: float) -> None:
        super().__init__(name=f"flow-{seed}", daemon=True)
        self.markets = markets
        self.users = users
        self.rng = random.Random(seed)
        self.rate = rate
        self.until = until
        self.figures = Figures()
        self.steps = 0
        self.resting: list[Any] = []  # GTC limits that may still be open: cancel candidates
        self.error: BaseException | None = None

    def run(self) -> None:
        from django.db import connection

        due = time.monotonic()
        try:
            while (now := time.monotonic()) < self.until:
                if now < due:
                    time.sleep(min(due - now, 0.05))
                    continue
                self.step()
                self.steps += 1
                # Behind schedule (a slow commit) is not made up in a burst beyond a second.
                due = max(due + 1 / self.rate, now - 1)
        except BaseException as exc:  # reported by the main thread
            self.error = exc
            traceback.print_exc()
        finally:
            connection.close()

    def step(self) -> None:
        from accounts.errors import ServiceError
        from trading import services
        from trading.services import OrderParams

        rng = self.rng
        roll = rng.random()
        if roll < 0.12 and self.resting:
            order = self.resting.pop(rng.randrange(len(self.resting)))
            try:
                services.order_cancel(user=order.user, market=order.market, order_id=order.pk)
                self.figures.cancels += 1
            except ServiceError:  # already filled or cancelled meanwhile
                self.figures.cancels_refused += 1
            return
        market = rng.choice(self.markets)
        user = rng.choice(self.users)
        side = rng.choice(["Bid", "Ask"])
        if roll < 0.22:
            if side == "Bid" and rng.random() < 0.3:
                kind = "Market buy by quote"
                params = OrderParams(side=side, order_type="Market", quote_quantity=Decimal(rng.randint(100, 800)))
            else:
                kind = "Market"
                params = OrderParams(side=side, order_type="Market", quantity=Decimal(rng.randint(1, 6)))
        else:
            # Around 100.00: a bid above 100 (or an ask below) is likely to cross.
            offset = rng.randint(-25, 20)
            price = Decimal(10000 + (offset if side == "Bid" else -offset)) / 100
            tif = "IOC" if roll < 0.34 else "FOK" if roll < 0.37 else "GTC"
            post_only = tif == "GTC" and rng.random() < 0.05
            kind = f"Limit {tif}{' post-only' if post_only else ''}"
            params = OrderParams(
                side=side, order_type="Limit", price=price, quantity=Decimal(rng.randint(1, 10)),
                time_in_force=tif, post_only=post_only,
            )
        try:
            order = services.order_place(user=user, market=market, params=params)
        except ServiceError as exc:  # e.g. a market order on an empty side of the book
            self.figures.refused[f"{kind}: {exc.code}"] += 1
            return
        self.figures.placed[kind] += 1
        if params.time_in_force == "GTC" and params.order_type == "Limit":
            self.resting.append(order)
            if len(self.resting) > 5000:
                del self.resting[:1000]


# --- the run ----------------------------------------------------------------------------------


def setup_exchange(users: int) -> tuple[list[Any], list[Any]]:
    from accounts import services as accounts
    from accounts.models import User
    from trading.services import market_create

    usd = accounts.asset_create(symbol="USD", name="US Dollar", precision=2, kind="cash")
    staff = User.objects.create_user(username="chaos-staff", password="x", is_staff=True)
    markets = []
    for symbol in ("AAPL", "MSFT"):
        stock = accounts.asset_create(symbol=symbol, name=symbol, precision=0, kind="stock")
        markets.append(market_create(base=stock, quote=usd, tick_size=Decimal("0.01"), lot_size=Decimal("1")))
    people = []
    for n in range(users):
        user = User.objects.create_user(username=f"chaos{n}", password="x")
        accounts.allocation_create(user=user, asset=usd, quantity=Decimal("100000000"), staff=staff, note="chaos")
        for market in markets:
            accounts.allocation_create(user=user, asset=market.base, quantity=Decimal("1000000"), staff=staff, note="chaos")
        people.append(user)
    return markets, people


def queues() -> tuple[int, int]:
    from engine_worker import transport
    from trading import messaging

    return (
        transport.queue_length(messaging.messages_queue()),
        transport.queue_length(transport.get_queue(transport.DB_QUEUE)),
    )


def run(args: argparse.Namespace, log_dir: Path) -> bool:
    import redis
    from django.db.models import Count, Sum

    from accounts.models import Balance
    from accounts.services import house_user
    from marketdata.models import Trade
    from tests.pipeline import Pipeline, check_consistency, settled
    from trading.models import Fill, Order
    from trading.services import orders_requeue_stale

    rng = random.Random(args.seed)
    figures = Figures()
    markets, users = setup_exchange(args.users)
    pipeline = Pipeline(log_dir)
    chaos = Chaos(pipeline, rng, figures, min_gap=args.min_gap, max_gap=args.max_gap)
    for proc in chaos.procs:
        chaos.start(proc, may_arm=False)
    print(f"chaos: {args.seconds:.0f} s at {args.orders_per_second:.0f} requests/s from {args.threads} threads, "
          f"{args.users} users, {len(markets)} markets, seed {args.seed}; logs in {log_dir}", flush=True)
    try:
        started = time.monotonic()
        flows = [
            Flow(markets, users, args.seed * 100 + n, args.orders_per_second / args.threads, started + args.seconds)
            for n in range(args.threads)
        ]
        for flow in flows:
            flow.start()
        next_sweep = started + SWEEP_EVERY
        next_report = started + 10
        while any(flow.is_alive() for flow in flows):
            now = time.monotonic()
            chaos.tick()
            if now >= next_sweep:
                swept = orders_requeue_stale()
                figures.swept_orders += swept[0]
                figures.swept_cancels += swept[1]
                next_sweep = now + SWEEP_EVERY
            if now >= next_report:
                messages, batches = queues()
                steps = sum(flow.steps for flow in flows)
                print(f"  {now - started:5.0f} s: {steps} requests ({steps / (now - started):.0f}/s), "
                      f"kills {sum(figures.kills.values())}, fault deaths {sum(figures.fault_deaths.values())}, "
                      f"restarts {sum(figures.restarts.values())}, queued {messages} commands / {batches} batches",
                      flush=True)
                next_report = now + 10
            time.sleep(0.05)
        flow_seconds = time.monotonic() - started
        for flow in flows:
            flow.join()
            assert flow.error is None, f"{flow.name} failed: {flow.error!r}"
            figures.placed.update(flow.figures.placed)
            figures.refused.update(flow.figures.refused)
            figures.cancels += flow.figures.cancels
            figures.cancels_refused += flow.figures.cancels_refused
        steps = sum(flow.steps for flow in flows)

        chaos.calm()
        calm_at = time.monotonic()
        while not settled():
            if time.monotonic() - calm_at > QUIESCE_TIMEOUT:
                raise AssertionError(f"not quiet after {QUIESCE_TIMEOUT:.0f} s; queues {queues()}\n{pipeline.logs()}")
            for proc in chaos.procs:
                assert proc.process.alive(), f"{proc.name} died after the chaos ended\n{pipeline.logs()}"
            time.sleep(0.1)
        quiesce = time.monotonic() - calm_at

        print()
        print(f"flow: {steps} requests in {flow_seconds:.1f} s ({steps / flow_seconds:.0f}/s)")
        print(f"  orders placed {sum(figures.placed.values())}: " + ", ".join(f"{k} {v}" for k, v in figures.placed.most_common()))
        print(f"  refused {sum(figures.refused.values())}: " + (", ".join(f"{k} {v}" for k, v in figures.refused.most_common()) or "-"))
        print(f"  cancels requested {figures.cancels}, refused (already finished) {figures.cancels_refused}")
        print(f"  sweep re-queued {figures.swept_orders} pending orders and {figures.swept_cancels} cancels")
        print(f"chaos: kill -9 {dict(figures.kills)}; armed fault points {dict(figures.armed)}; "
              f"died at a fault point {dict(figures.fault_deaths)}; restarts {dict(figures.restarts)}")
        if figures.other_exits:
            print(f"  UNEXPECTED exits: {figures.other_exits}")
        print(f"quiet {quiesce:.1f} s after the chaos ended (queues empty, nothing Pending, no cancel outstanding)")
        statuses = Counter(dict(Order.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n")))
        print(f"orders by status: {dict(statuses)}")

        print("checks:")
        client = redis.Redis.from_url(args.redis_url)
        ok = True
        for market in markets:
            trades = Trade.objects.filter(market=market).count()
            print(f"  {market.symbol}: {trades} trades")
            for line in check_consistency(market, client):
                print(f"    ok  {line}")
        fees = Fill.objects.aggregate(total=Sum("fee"))["total"] or Decimal(0)
        house = Balance.objects.filter(user=house_user(), asset__symbol="USD").values_list("available", flat=True).first() or Decimal(0)
        assert house == fees, f"house account {house} != fees of all fills {fees}"
        print(f"  ok  house account USD {house.normalize():f} == the fees of all {Fill.objects.count()} fills")
        if figures.other_exits:
            ok = False
            print("  FAIL processes exited other than by kill -9 or a fault point (see logs)")
        assert sum(figures.kills.values()) + sum(figures.fault_deaths.values()) > 0, "no process was ever killed"
        return ok
    finally:
        pipeline.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--orders-per-second", type=float, default=200)
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--threads", type=int, default=8, help="order flow threads (each with its own connection)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--min-gap", type=float, default=2.0, help="least seconds between two kills")
    parser.add_argument("--max-gap", type=float, default=6.0, help="most seconds between two kills")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/bourse_chaos")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args(argv)

    if "chaos" not in _database_name(args.database_url):
        parser.error("the database is dropped and re-created: its name must contain 'chaos'")
    import redis

    scratch = redis.Redis.from_url(args.redis_url)
    if scratch.connection_pool.connection_kwargs.get("db", 0) == 0:
        parser.error("use a Redis database of its own (not 0): it is flushed")

    env = {**os.environ, "DATABASE_URL": args.database_url, "REDIS_URL": args.redis_url, "DJANGO_SETTINGS_MODULE": SETTINGS}
    env.pop("BOURSE_FAULT", None)
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")})
    os.environ.pop("BOURSE_FAULT", None)
    started = time.monotonic()
    recreate_database(args.database_url)
    scratch.flushdb()
    migrate(env)
    print(f"scratch database {_database_name(args.database_url)} created and migrated, Redis {args.redis_url} "
          f"flushed ({time.monotonic() - started:.1f} s)", flush=True)

    import django

    django.setup()
    from django.db import connections

    log_dir = Path(tempfile.mkdtemp(prefix="bourse-chaos-"))
    ok = False
    try:
        ok = run(args, log_dir)
    except AssertionError:
        traceback.print_exc()
    finally:
        connections.close_all()
        if ok and not args.keep:
            drop_database(args.database_url)
            scratch.flushdb()
        scratch.close()
    print(f"RESULT: {'all checks passed' if ok else 'FAILED (database and logs kept: ' + str(log_dir) + ')'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
