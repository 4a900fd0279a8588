"""End-to-end benchmark of the order pipeline: queue → engine → DB processor → PostgreSQL.

    .venv/bin/python bench/pipeline_bench.py [--orders 700000] [--rate 12000] [--http]

Set-up (not timed), on a scratch database (`--db`, dropped and re-created, migrated) and a
Redis database of its own (`--redis`, flushed):
- one market AAPL_USD (tick 0.01, lot 1, fees 0.10 % / 0.20 %), 100 users funded by staff
  allocations;
- the real `run_engine` and `run_db_processor` processes are started (they rebuild from an
  empty book), then `--orders` `Pending` limit orders are written set-based: COPY into
  trading_order with their funds locked (one UPDATE of the balances, COPY of the matching
  `order_lock` ledger entries, so `check_ledger` holds), prices around a mid so that about
  half of them trade; a share of them (`--cancel`) get a cancel request, queued after them.
- The command stream is simulated once with the pure engine core, so every cancel names an
  order that is live at that point and the report can say how many orders should trade.

Timed: a feeder thread pushes the messages (built by `trading.messaging.place_message` /
`cancel_message`, pushed as one job each — as single-order requests push them, the engine's
costliest intake; a batch request pushes its orders as one job) at `--rate` messages/s
(0 = as fast as it can), stamping `ts` at the push. The bench samples every 20 ms: how many
commands the engine has taken off `messages`, and `trading_marketstate.last_event_seq` (what
the DB processor has committed). An order counts as persisted when the committed sequence
reaches its `accepted_seq`; its latency is that observation time minus its `ts` (an upper
bound by at most the 20 ms sampling step).

`--http` runs the HTTP part instead, on a scratch database and Redis db of its own
(`bourse_bench_http`, db 13, logs in /tmp/bourse_bench_http, unless --db/--redis/--log-dir):
100 funded users with API tokens, `--daphnes` daphne processes (as production serves the
app), then two timed phases of `--http-seconds` each — token-authenticated `POST
/api/v1/order`, then `POST /api/v1/orders` batches of `--http-batch` — from `--http-clients`
keep-alive connections spread over `--http-procs` client processes (one Python process can
be the bottleneck itself). The engine and DB processor run meanwhile. Reports POSTs/s,
orders/s, p50/p99 latency and the load average; `check_ledger` at the end.

    flock /tmp/bourse-bench.lock .venv/bin/python bench/pipeline_bench.py --http [--http-seconds 25]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SYMBOL = "AAPL_USD"
MID = 10_000  # ticks of 0.01: 100.00 USD
USERS = 100
TICK = Decimal("0.01")
MAKER, TAKER = Decimal("0.001"), Decimal("0.002")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", type=int, default=700_000, help="pending orders written in the set-up")
    p.add_argument("--rate", type=int, default=12_000, help="messages pushed per second (0 = as fast as possible)")
    p.add_argument("--cancel", type=float, default=0.10, help="cancels of live orders, per order placed")
    p.add_argument("--spread", type=float, default=12.0, help="std dev of order prices around the mid, in ticks")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--db", default=None, help="scratch database (default bourse_bench, or bourse_bench_http with --http)")
    p.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    p.add_argument("--redis", default=None, help="Redis database (default db 3, or db 13 with --http)")
    p.add_argument("--timeout", type=float, default=600, help="give up waiting for the drain after this long")
    p.add_argument("--engine-args", default="", help="extra arguments for run_engine")
    p.add_argument("--dbp-args", default="", help="extra arguments for run_db_processor")
    p.add_argument("--http", action="store_true", help="run the HTTP bench instead of the queue bench")
    p.add_argument("--http-seconds", type=float, default=25, help="length of each HTTP phase")
    p.add_argument("--http-clients", type=int, default=8, help="client connections in all (threads over --http-procs)")
    p.add_argument("--http-procs", type=int, default=2, help="client processes (a single Python client can be the bottleneck)")
    p.add_argument("--http-batch", type=int, default=50, help="orders per POST /api/v1/orders")
    p.add_argument("--http-phases", default="single,batch", help="which HTTP phases to run: single, batch")
    p.add_argument("--daphnes", type=int, default=2)
    p.add_argument("--log-dir", default=None, help="default /tmp/bourse_bench, or /tmp/bourse_bench_http with --http")
    args = p.parse_args()
    # The HTTP bench gets its own scratch database, Redis db and logs, so it can run next to
    # (not at the same time as: flock) the queue bench without dropping its database.
    args.db = args.db or ("bourse_bench_http" if args.http else "bourse_bench")
    args.redis = args.redis or ("redis://127.0.0.1:6379/13" if args.http else "redis://127.0.0.1:6379/3")
    args.log_dir = args.log_dir or ("/tmp/bourse_bench_http" if args.http else "/tmp/bourse_bench")
    return args


ARGS = parse_args()
os.environ["DATABASE_URL"] = f"{ARGS.pg}/{ARGS.db}"
os.environ["REDIS_URL"] = ARGS.redis
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.bench_settings"
os.environ.setdefault("SECRET_KEY", "bench-only-" + "x" * 60)
os.environ["PYTHONUNBUFFERED"] = "1"
os.environ.pop("BOURSE_FAULT", None)
LOG_DIR = Path(ARGS.log_dir)
LOG_DIR.mkdir(parents=True, exist_ok=True)


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine_speed() -> str:
    """CPU time of a fixed pure-Python loop (best of three): a rough sign of a busy host (two
    cores of a shared machine). It understates it: on 2026-12-01 the same code's daphne CPU
    per order POST moved from 3.0 to 5.8 ms while this loop moved from 79 to at most 133 ms,
    and sometimes not at all. Compare builds in alternating runs, not against old figures."""
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        total = 0
        for i in range(3_000_000):
            total += i
        best = min(best, time.process_time() - t)
    return f"machine: a fixed 3M-step Python loop took {best * 1000:.0f} ms of CPU (about 80 when the host is quiet)"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# --- scratch database -------------------------------------------------------------------------


def recreate_database() -> None:
    import psycopg

    with psycopg.connect(f"{ARGS.pg}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{ARGS.db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{ARGS.db}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True)
    import redis

    redis.Redis.from_url(ARGS.redis).flushdb()


class Proc:
    def __init__(self, name: str, args: list[str]) -> None:
        self.name = name
        self.log_path = LOG_DIR / f"{name}.log"
        self.log_path.unlink(missing_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 — the child's for its life
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PGAPPNAME": f"bench-{name}"})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def manage(name: str, command: str, extra: str = "") -> Proc:
    return Proc(name, [sys.executable, "manage.py", command, *extra.split()])


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


# --- set-up ----------------------------------------------------------------------------------


def make_exchange() -> tuple[Any, list[Any], Any]:
    from accounts.models import Asset, User
    from accounts.services import asset_create
    from trading.services import market_create

    usd = asset_create(symbol="USD", name="US Dollar", precision=2, kind=Asset.Kind.CASH)
    aapl = asset_create(symbol="AAPL", name="Apple", precision=0, kind=Asset.Kind.STOCK)
    market = market_create(base=aapl, quote=usd, tick_size=TICK, lot_size=Decimal(1), maker_fee_rate=MAKER, taker_fee_rate=TAKER)
    staff = User.objects.create(username="bench_staff", is_staff=True, is_superuser=True)
    users = User.objects.bulk_create([User(username=f"bench{i:03d}") for i in range(USERS)])
    return market, users, staff


def simulate(n: int, user_ids: list[int], first_id: int) -> tuple[list[tuple[Any, ...]], list[tuple[str, int]], dict[str, int]]:
    """Orders (id, user, side, price ticks, lots) and the command stream [("place"|"cancel", id)],
    run once through the pure engine so cancels name live orders; plus what the engine did."""
    from engine_worker.engine import (
        AddMarket,
        CancelOrder,
        Engine,
        OrderAccepted,
        OrderCancelled,
        OrderExpired,
        OrderRejected,
        OrderUpdate,
        PlaceOrder,
        Trade,
    )

    rng = random.Random(ARGS.seed)
    eng = Engine()
    eng.apply(AddMarket(symbol=SYMBOL, ts=1, maker_fee_ppm=1000, taker_fee_ppm=2000))
    orders: list[tuple[Any, ...]] = []
    stream: list[tuple[str, int]] = []
    live: list[int] = []
    where: dict[int, int] = {}
    traded: set[int] = set()
    stats = {"trades": 0, "rejected": 0, "cancelled": 0}
    owner: dict[int, int] = {}

    def gone(oid: int) -> None:
        i = where.pop(oid, None)
        if i is not None:
            last = live.pop()
            if last != oid:
                live[i] = last
                where[last] = i

    def run(cmd: Any) -> None:
        for ev in eng.apply(cmd):
            if isinstance(ev, Trade):
                stats["trades"] += 1
                traded.add(ev.maker_order_id)
                traded.add(ev.taker_order_id)
            elif isinstance(ev, OrderAccepted):
                where[ev.order_id] = len(live)
                live.append(ev.order_id)
            elif isinstance(ev, OrderUpdate) and ev.status in ("Filled", "Cancelled", "Expired"):
                gone(ev.order_id)
            elif isinstance(ev, OrderCancelled | OrderExpired):
                gone(ev.order_id)
                stats["cancelled"] += isinstance(ev, OrderCancelled)
            elif isinstance(ev, OrderRejected):
                stats["rejected"] += 1

    ts = 2
    for k in range(n):
        oid = first_id + k
        side = "Bid" if rng.random() < 0.5 else "Ask"
        # Bids lean a little above the mid and asks below, so about half the orders cross.
        offset = int(rng.gauss(0, ARGS.spread))
        price = MID + offset + (2 if side == "Bid" else -2)
        lots = rng.randint(1, 10)
        user = user_ids[rng.randrange(len(user_ids))]
        owner[oid] = user
        orders.append((oid, user, side, price, lots))
        stream.append(("place", oid))
        ts += 1
        run(PlaceOrder(order_id=oid, user_id=user, symbol=SYMBOL, side=side, order_type="Limit", price=price, quantity=lots, ts=ts))
        if live and rng.random() < ARGS.cancel:
            target = live[rng.randrange(len(live))]
            stream.append(("cancel", target))
            ts += 1
            run(CancelOrder(symbol=SYMBOL, user_id=owner[target], order_id=target, ts=ts))
    stats["traded_orders"] = len(traded)
    stats["resting_at_end"] = len(live)
    return orders, stream, stats


def write_orders(market: Any, users: list[Any], staff: Any, orders: list[tuple[Any, ...]], cancelled: set[int]) -> None:
    """The orders as order entry would have left them: Pending, funds locked, ledger entries."""
    from django.db import connection, transaction

    from accounts.models import Asset
    from accounts.services import allocation_create
    from trading.money import bid_lock

    usd, aapl = market.quote, market.base
    locks: dict[tuple[int, int], Decimal] = {}
    rows = []
    ledger = []
    now = datetime.now(UTC)
    for oid, user, side, price_ticks, lots in orders:
        price = price_ticks * TICK
        qty = Decimal(lots)
        if side == "Bid":
            lock, asset = bid_lock(price * qty, TAKER, usd.precision), usd.pk
        else:
            lock, asset = qty, aapl.pk
        locks[(user, asset)] = locks.get((user, asset), Decimal(0)) + lock
        rows.append((oid, user, market.pk, side, "Limit", "GTC", False, "RejectTaker", price, qty, "Pending",
                     0, 0, 0, lock, MAKER, TAKER, now if oid in cancelled else None, "", now, now))
        ledger.append((user, asset, -lock, lock, "order_lock", f"order:{oid}", user, now))
    by_user = {u.pk: u for u in users}
    for (user, asset_id), total in sorted(locks.items()):
        asset = usd if asset_id == usd.pk else aapl
        allocation_create(user=by_user[user], asset=asset, quantity=total + 1_000_000, staff=staff, note="bench")
    for u in users:  # every user holds both assets
        for asset in (usd, aapl):
            if (u.pk, asset.pk) not in locks:
                allocation_create(user=u, asset=asset, quantity=Decimal(1_000_000), staff=staff, note="bench")
    del Asset
    with transaction.atomic():
        raw = connection.connection
        with raw.cursor() as cur:
            with cur.copy(
                "COPY trading_order (id, user_id, market_id, side, order_type, time_in_force, post_only,"
                " self_trade_prevention, price, quantity, status, executed_quantity, executed_quote_quantity,"
                " fee_paid, locked, maker_fee_rate, taker_fee_rate, cancel_requested_at, reason, created_at,"
                " updated_at) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
            with cur.copy(
                "COPY accounts_ledgerentry (user_id, asset_id, available_delta, locked_delta, reason, reference,"
                " actor_id, created_at) FROM STDIN"
            ) as copy:
                for row in ledger:
                    copy.write_row(row)
            cur.execute("SELECT setval(pg_get_serial_sequence('trading_order', 'id'), %s)", [max(r[0] for r in rows)])
            keys = sorted(locks)
            cur.execute(
                """
                UPDATE accounts_balance AS b SET available = b.available - v.amount, locked = b.locked + v.amount,
                    updated_at = now()
                FROM unnest(%s::bigint[], %s::bigint[], %s::numeric[]) AS v(user_id, asset_id, amount)
                WHERE b.user_id = v.user_id AND b.asset_id = v.asset_id
                """,
                [[k[0] for k in keys], [k[1] for k in keys], [locks[k] for k in keys]],
            )
    with connection.cursor() as cur:
        cur.execute("ANALYZE trading_order; ANALYZE accounts_ledgerentry; ANALYZE accounts_balance")


def build_messages(market: Any, orders: list[tuple[Any, ...]], stream: list[tuple[str, int]]) -> list[dict[str, Any]]:
    from trading.messaging import cancel_message, place_message

    by_id = {o[0]: o for o in orders}
    mk = SimpleNamespace(symbol=market.symbol)
    out = []
    for kind, oid in stream:
        _, user, side, price, lots = by_id[oid]
        order = SimpleNamespace(
            pk=oid, user_id=user, market=mk, side=side, order_type="Limit", engine_cap=None, time_in_force="GTC",
            post_only=False, self_trade_prevention="RejectTaker", client_id=None,
        )
        out.append(place_message(order, price_ticks=price, quantity_lots=lots) if kind == "place" else cancel_message(order))  # type: ignore[arg-type]
    return out


# --- the timed run ---------------------------------------------------------------------------


class Feeder(threading.Thread):
    """Pushes the messages at a steady rate, one job each (`push_one_job_each`), stamping `ts`."""

    CHUNK = 1000

    def __init__(self, messages: list[dict[str, Any]], rate: int) -> None:
        super().__init__(daemon=True, name="feeder")
        self.messages = messages
        self.rate = rate
        self.pushed = 0
        self.lock = threading.Lock()
        self.started_at = 0.0
        self.finished_at = 0.0

    def run(self) -> None:
        from trading.messaging import now_us

        self.started_at = time.time()
        n = len(self.messages)
        if self.rate <= 0:  # already queued (push_backlog)
            self.pushed = self.finished_at = n
            return
        while self.pushed < n:
            due = n if self.rate <= 0 else min(n, int((time.time() - self.started_at) * self.rate) + 1)
            if due <= self.pushed:
                time.sleep(0.005)
                continue
            end = min(due, self.pushed + self.CHUNK)
            chunk = self.messages[self.pushed : end]
            ts = now_us()
            for m in chunk:
                m["ts"] = ts
            with self.lock:
                push_one_job_each(chunk)
                self.pushed = end
        self.finished_at = time.time()


def push_one_job_each(messages: list[dict[str, Any]]) -> None:
    """One `messages` job per command, in one round trip: what a flow of single-order
    requests writes (`messaging.enqueue` of one message), so `LLEN` counts commands."""
    from engine_worker.transport import push_jobs
    from trading.messaging import ENGINE_JOB, messages_queue

    push_jobs(messages_queue(), ENGINE_JOB, messages, [f"{m['kind']} {m['symbol']} {m['order_id']}" for m in messages])


def push_backlog(messages: list[dict[str, Any]], engine: Proc) -> None:
    """`--rate 0`: the whole stream is queued in the set-up while the engine is paused
    (SIGSTOP), so the timed run measures the pipeline alone, not this process pushing."""
    from trading.messaging import now_us

    engine.proc.send_signal(signal.SIGSTOP)
    try:
        for start in range(0, len(messages), 2000):
            chunk = messages[start : start + 2000]
            ts = now_us()
            for m in chunk:
                m["ts"] = ts
            push_one_job_each(chunk)
    finally:
        engine.proc.send_signal(signal.SIGCONT)


def timed_run(messages: list[dict[str, Any]], n_orders: int, first_id: int, engine: Proc) -> dict[str, Any]:
    import redis
    from django.db import connection

    if ARGS.rate <= 0:
        t = time.time()
        push_backlog(messages, engine)
        say(f"queued all {len(messages)} messages in the set-up (engine paused) in {time.time() - t:.1f} s")

    r = redis.Redis.from_url(ARGS.redis)
    from trading.messaging import messages_queue

    qkey = messages_queue().key
    feeder = Feeder(messages, ARGS.rate)
    engine_tl: list[tuple[float, int]] = []  # (time, commands taken by the engine)
    commit_tl: list[tuple[float, int]] = []  # (time, committed event seq)
    total = len(messages)
    say(f"timed run: pushing {total} messages ({n_orders} orders) at {ARGS.rate or 'max'}/s")
    feeder.start()
    deadline = time.time() + ARGS.timeout
    last_print = time.time()
    while True:
        now = time.time()
        with feeder.lock:
            taken = feeder.pushed - int(r.llen(qkey))
        with connection.cursor() as cur:
            cur.execute("SELECT last_event_seq FROM trading_marketstate")
            row = cur.fetchone()
        seq = int(row[0]) if row else 0
        engine_tl.append((now, taken))
        if not commit_tl or commit_tl[-1][1] != seq:
            commit_tl.append((now, seq))
        if now - last_print >= 5:
            say(f"  pushed {feeder.pushed}, engine took {taken}, db queue {r.llen('rq:queue:db_processor')}, committed seq {seq}")
            last_print = now
        if taken >= total and r.llen("rq:queue:db_processor") == 0:
            with connection.cursor() as cur:
                cur.execute("SELECT last_event_seq FROM trading_marketstate")
                seq2 = int(cur.fetchone()[0])
            if seq2 == seq and len(commit_tl) > 1 and now - commit_tl[-1][0] > 1.0:
                break
        if now > deadline:
            say("TIMEOUT: the pipeline did not drain")
            break
        time.sleep(0.02)
    feeder.join(5)
    return {"feeder": feeder, "engine_tl": engine_tl, "commit_tl": commit_tl}


def report(run: dict[str, Any], messages: list[dict[str, Any]], n_orders: int, first_id: int, stats: dict[str, int]) -> bool:
    from django.db import connection

    feeder: Feeder = run["feeder"]
    engine_tl, commit_tl = run["engine_tl"], run["commit_tl"]
    t0 = feeder.started_at
    total = len(messages)
    ts_of = {m["order_id"]: m["ts"] / 1e6 for m in messages if m["kind"] == "place"}
    with connection.cursor() as cur:
        cur.execute("SELECT status, count(*) FROM trading_order GROUP BY status ORDER BY status")
        statuses = dict(cur.fetchall())
        cur.execute("SELECT id, accepted_seq FROM trading_order WHERE accepted_seq IS NOT NULL")
        accepted = cur.fetchall()
        cur.execute("SELECT count(*), count(DISTINCT order_id) FROM trading_fill")
        fills, filled_orders = cur.fetchone()
        cur.execute("SELECT count(*) FROM marketdata_trade")
        trades = cur.fetchone()[0]
    # Engine: first/last moment the engine took commands.
    eng_start = next((t for t, k in engine_tl if k > 0), t0)
    eng_end = next((t for t, k in engine_tl if k >= total), engine_tl[-1][0])
    eng_secs = max(eng_end - t0, 1e-9)
    # Persisted: each accepted order's commit time (first committed seq >= its accepted_seq).
    seqs = [s for _, s in commit_tl]
    latencies = []
    persisted_at = []
    for oid, aseq in accepted:
        i = bisect.bisect_left(seqs, aseq)
        if i >= len(seqs):
            continue
        t = commit_tl[i][0]
        persisted_at.append(t)
        if oid in ts_of:
            latencies.append((t - ts_of[oid]) * 1000)
    last_commit = max(persisted_at) if persisted_at else t0
    per_secs = max(last_commit - t0, 1e-9)
    # Steady state: orders persisted per second over the middle 80 % of the persisted window.
    persisted_at.sort()
    lo, hi = persisted_at[len(persisted_at) // 10], persisted_at[len(persisted_at) * 9 // 10]
    steady = (len(persisted_at) * 0.8) / max(hi - lo, 1e-9)
    feed_secs = max(feeder.finished_at - t0, 1e-9)
    cancels = total - n_orders
    out = [
        "",
        "=== pipeline bench ===",
        f"orders {n_orders} (pending, funds locked, set-up untimed) + {cancels} cancels of live orders; 100 users",
        f"simulated by the engine core: {stats['traded_orders']} orders trade ({stats['traded_orders'] / n_orders:.0%}), "
        f"{stats['trades']} trades, {stats['cancelled']} cancelled",
        f"offered: {total} messages in {feed_secs:.1f} s = {total / feed_secs:,.0f} msg/s (target rate {ARGS.rate})"
        if ARGS.rate > 0 else f"offered: {total} messages queued before the timed run (backlog; latency includes queue wait)",
        f"engine:    {total} commands in {eng_secs:.1f} s = {total / eng_secs:,.0f} commands/s, "
        f"{n_orders / eng_secs:,.0f} orders/s (first pop {eng_start - t0:.2f} s after start)",
        f"persisted: {len(persisted_at)} orders accepted in {per_secs:.1f} s = {len(persisted_at) / per_secs:,.0f} orders/s "
        f"(steady middle 80 %: {steady:,.0f} orders/s); {trades} trades, {fills} fills settled "
        f"({filled_orders} orders with fills) = {fills / per_secs:,.0f} fills/s",
        f"latency queue → persisted (acceptance committed): p50 {pct(latencies, 0.5):,.0f} ms, "
        f"p99 {pct(latencies, 0.99):,.0f} ms, max {max(latencies, default=0):,.0f} ms (n={len(latencies)})",
        f"order statuses: {statuses}",
    ]
    print("\n".join(out), flush=True)
    ok = statuses.get("Pending", 0) == 0
    if not ok:
        print(f"NOT DRAINED: {statuses.get('Pending')} orders still Pending", flush=True)
    return ok


def check_ledger() -> bool:
    res = subprocess.run([sys.executable, "manage.py", "check_ledger"], cwd=ROOT, capture_output=True, text=True)
    print(f"check_ledger: exit {res.returncode}: {(res.stdout + res.stderr).strip()[-600:]}", flush=True)
    return res.returncode == 0


# --- HTTP ------------------------------------------------------------------------------------


def _http_order(rng: random.Random) -> dict[str, Any]:
    side = "Bid" if rng.random() < 0.5 else "Ask"
    price = (MID + int(rng.gauss(0, ARGS.spread)) + (2 if side == "Bid" else -2)) * TICK
    return {"symbol": SYMBOL, "side": side, "orderType": "Limit", "price": f"{price:f}", "quantity": str(rng.randint(1, 10))}


def _http_client_proc(
    proc_no: int, threads: int, ports: list[int], tokens: list[str], batch: int, stop_at: float, out: Any
) -> None:
    """One client process: `threads` keep-alive connections POSTing until `stop_at`, then report."""
    import http.client

    lat: list[float] = []
    counts = {"ok": 0, "err": 0, "orders": 0}
    errors: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        rng = random.Random(i)
        port = ports[i % len(ports)]
        hdr = {"Authorization": f"Token {tokens[i % len(tokens)]}", "Content-Type": "application/json"}
        path = "/api/v1/order" if batch == 1 else "/api/v1/orders"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        my_lat: list[float] = []
        ok_n = err_n = orders_n = 0
        # Bodies encoded before the clock starts: the clients share the server's two cores,
        # and every millisecond they spend is one the server does not get.
        bodies = [
            json.dumps(_http_order(rng) if batch == 1 else [_http_order(rng) for _ in range(batch)]).encode()
            for _ in range(200 if batch == 1 else 40)
        ]
        sent = 0
        while time.time() < stop_at:
            body = bodies[sent % len(bodies)]
            sent += 1
            t = time.perf_counter()
            status, data = 0, b""
            try:
                conn.request("POST", path, body=body, headers=hdr)
                resp = conn.getresponse()
                status, data = resp.status, resp.read()
            except OSError as exc:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                data = repr(exc).encode()
            my_lat.append((time.perf_counter() - t) * 1000)
            if status == 200:
                ok_n += 1
                # Each placed order's object has an "id"; an error object has none.
                orders_n += 1 if batch == 1 else data.count(b'"id":')
            else:
                err_n += 1
                if len(errors) < 3:
                    errors.append(f"{status}: {data[:200]!r}")
        conn.close()
        with lock:
            lat.extend(my_lat)
            counts["ok"] += ok_n
            counts["err"] += err_n
            counts["orders"] += orders_n

    pool = [
        threading.Thread(target=client, args=(proc_no * threads + k,), daemon=True) for k in range(threads)
    ]
    for t in pool:
        t.start()
    for t in pool:
        t.join(max(0.0, stop_at - time.time()) + 60)
    out.put((lat, counts, errors))


def _cpu_seconds(procs: list[Proc]) -> float:
    """User + system CPU the processes have used so far (Linux /proc), to report server CPU per request."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for proc in procs:
        try:
            fields = Path(f"/proc/{proc.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


def http_bench(market: Any, users: list[Any], staff: Any) -> None:
    import http.client
    import multiprocessing

    from accounts.services import allocation_create, api_token_create

    # Enough for every order the phases can place: 10 M USD and 1 M AAPL per user.
    for u in users:
        allocation_create(user=u, asset=market.quote, quantity=Decimal(10_000_000), staff=staff, note="bench")
        allocation_create(user=u, asset=market.base, quantity=Decimal(1_000_000), staff=staff, note="bench")
    tokens = [api_token_create(user=u) for u in users]
    ports = [18700 + i for i in range(ARGS.daphnes)]
    daphnes = [
        Proc(f"daphne{p}", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(p), "exchange_site.asgi:application"])
        for p in ports
    ]

    def up(port: int) -> bool:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/api/v1/markets")
            return c.getresponse().status == 200
        except OSError:
            return False

    def load() -> str:
        return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())

    # fork: the children only speak HTTP (never the inherited DB connection) and leave with os._exit.
    ctx = multiprocessing.get_context("fork")
    try:
        for p in ports:
            wait_for(lambda p=p: up(p), 60, f"daphne on {p}")

        def phase(name: str, batch: int, seconds: float) -> None:
            procs = max(1, min(ARGS.http_procs, ARGS.http_clients))
            threads = max(1, ARGS.http_clients // procs)
            say(f"phase {name}: {procs} client processes × {threads} connections, {seconds:.0f} s ({load()})")
            out = ctx.Queue()
            cpu0 = _cpu_seconds(daphnes)
            t0 = time.time()
            stop_at = t0 + seconds
            workers = [
                ctx.Process(target=_http_client_proc, args=(k, threads, ports, tokens, batch, stop_at, out), daemon=True)
                for k in range(procs)
            ]
            for w in workers:
                w.start()
            lat: list[float] = []
            counts = {"ok": 0, "err": 0, "orders": 0}
            for _ in workers:
                part, c, errors = out.get(timeout=seconds + 120)
                lat.extend(part)
                for key in counts:
                    counts[key] += c[key]
                for e in errors:
                    say(f"  error {e}")
            secs = time.time() - t0
            server_cpu = _cpu_seconds(daphnes) - cpu0
            for w in workers:
                w.join(10)
            print(
                f"HTTP {name}: {counts['ok']} requests ok, {counts['err']} errors in {secs:.1f} s = "
                f"{counts['ok'] / secs:,.0f} POSTs/s, {counts['orders'] / secs:,.0f} orders/s; "
                f"latency p50 {pct(lat, 0.5):.1f} ms p99 {pct(lat, 0.99):.1f} ms; "
                f"daphne CPU {server_cpu / max(1, counts['ok']) * 1000:.2f} ms/request, "
                f"{server_cpu / max(1, counts['orders']) * 1000:.2f} ms/order, {server_cpu / secs:.2f} cores "
                f"({procs}×{threads} clients, {len(ports)} daphne; {load()} at the end)",
                flush=True,
            )

        phases = ARGS.http_phases.split(",")
        if "single" in phases:
            phase("POST /api/v1/order", 1, ARGS.http_seconds)
        if "batch" in phases:
            phase(f"POST /api/v1/orders (batches of {ARGS.http_batch})", ARGS.http_batch, ARGS.http_seconds)
    finally:
        for d in daphnes:
            d.stop()
    for d in daphnes:
        tail = [line for line in d.log().splitlines() if "ERROR" in line or "Traceback" in line]
        if tail:
            print(f"{d.name} log has {len(tail)} error lines, e.g. {tail[:3]}", flush=True)


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    say(machine_speed())
    say(f"set-up: scratch database {ARGS.db}, Redis {ARGS.redis}")
    recreate_database()
    import django

    django.setup()
    market, users, staff = make_exchange()
    user_ids = [u.pk for u in users]
    first_id = 1
    n = 0 if ARGS.http else ARGS.orders
    engine = manage("engine", "run_engine", ARGS.engine_args)
    dbp = manage("db_processor", "run_db_processor", ARGS.dbp_args)
    try:
        wait_for(lambda: "engine rebuilt" in engine.log(), 120, "the engine to start")
        wait_for(lambda: "DB processor started" in dbp.log(), 120, "the DB processor to start")
        if ARGS.http:
            http_bench(market, users, staff)
            time.sleep(3)
        else:
            t = time.time()
            orders, stream, stats = simulate(n, user_ids, first_id)
            say(f"simulated {len(stream)} commands in {time.time() - t:.1f} s: {stats}")
            cancelled = {oid for kind, oid in stream if kind == "cancel"}
            t = time.time()
            write_orders(market, users, staff, orders, cancelled)
            say(f"wrote {n} pending orders (COPY) with funds locked in {time.time() - t:.1f} s")
            messages = build_messages(market, orders, stream)
            del orders, stream
            run = timed_run(messages, n, first_id, engine)
            report(run, messages, n, first_id, stats)
    finally:
        engine.stop()
        dbp.stop()
    for p in (engine, dbp):
        tail = [line for line in p.log().splitlines() if "ERROR" in line or "Traceback" in line]
        if tail:
            print(f"{p.name} log has {len(tail)} error lines, e.g. {tail[:3]}", flush=True)
    print(f"logs: {LOG_DIR}", flush=True)
    check_ledger()
    say(machine_speed())


if __name__ == "__main__":
    main()
