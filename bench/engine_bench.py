"""Throughput benchmark of the pure matching-engine core.

    .venv/bin/python bench/engine_bench.py [--seconds N] [--seed S] [--book N]

Workload (seeded, so runs are comparable): one market with a resting book of about
``--book`` orders around a mid price that follows the market; limit placements (a
quarter of them priced at or through the opposite best so they trade), cancels of
live orders, amends (half quantity decreases that keep priority, half re-prices) and
market orders. Amends and market orders are 15% and 5%; the place/cancel split of the
other 80% is steered by how far the book is from its target depth so it stays about
that deep for the whole run: it settles near 50/30 (at 45/35 the book drains unless
almost nothing crosses).

Commands are generated in chunks by a separate "generator" engine that runs the same
commands first (so cancels and amends target orders that are live at that moment);
generation is not timed. The measured engines are restored from the generator's
snapshot before the first chunk and apply exactly the same commands through the
normal ``Engine.apply`` path, producing the same event objects as production.

Two figures are printed: throughput of a plain ``apply`` loop, and per-command
latency (p50/p99) measured with ``perf_counter_ns`` around each ``apply`` on a second
engine (the timer adds its own overhead to that run's throughput).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine_worker.engine import (  # noqa: E402
    ASK,
    BID,
    LIMIT,
    MARKET,
    AddMarket,
    AmendOrder,
    CancelOrder,
    Command,
    Engine,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderUpdate,
    PlaceOrder,
    Trade,
)

SYMBOL = "BENCH_USD"
MID = 100_000
USERS = 2_000
CHUNK = 100_000


class Generator:
    """Drives its own engine so every generated cancel/amend names a live order."""

    def __init__(self, seed: int, book: int) -> None:
        self.rng = random.Random(seed)
        self.eng = Engine()
        self.target = book
        self.next_id = 1
        self.ts = 1_700_000_000_000_000
        self.live: dict[int, tuple[int, str, int, int]] = {}  # id -> user, side, price, qty
        self.live_ids: list[int] = []
        self.pos: dict[int, int] = {}
        self.mix: Counter[str] = Counter()
        self.eng.apply(AddMarket(symbol=SYMBOL, ts=self.ts))
        rng = self.rng
        for i in range(book):
            side = BID if i % 2 == 0 else ASK
            d = 1 + int(rng.expovariate(1 / 60))
            price = MID - d if side == BID else MID + d
            self._run(self._limit(side, price))

    # -- live-order bookkeeping from the generator engine's own events
    def _add(self, oid: int, info: tuple[int, str, int, int]) -> None:
        if oid not in self.live:
            self.pos[oid] = len(self.live_ids)
            self.live_ids.append(oid)
        self.live[oid] = info

    def _remove(self, oid: int) -> None:
        if oid in self.live:
            del self.live[oid]
            i = self.pos.pop(oid)
            last = self.live_ids.pop()
            if last != oid:
                self.live_ids[i] = last
                self.pos[last] = i

    def _run(self, cmd: Command) -> None:
        for e in self.eng.apply(cmd):
            t = type(e)
            if t is OrderAccepted:
                if e.order_type == LIMIT:  # type: ignore[union-attr]
                    assert e.quantity is not None  # type: ignore[union-attr]
                    self._add(e.order_id, (e.user_id, e.side, e.price, e.quantity))  # type: ignore[union-attr]
            elif t is OrderUpdate:
                if e.status == "Filled":  # type: ignore[union-attr]
                    self._remove(e.order_id)  # type: ignore[union-attr]
            elif t is OrderCancelled or t is OrderExpired:
                self._remove(e.order_id)  # type: ignore[union-attr]
        if isinstance(cmd, AmendOrder) and cmd.order_id in self.live:
            u, s, p, q = self.live[cmd.order_id]
            self.live[cmd.order_id] = (
                u,
                s,
                cmd.new_price if cmd.new_price is not None else p,
                cmd.new_quantity if cmd.new_quantity is not None else q,
            )

    def _limit(self, side: str, price: int, qty: int | None = None) -> PlaceOrder:
        rng = self.rng
        self.ts += 7
        oid = self.next_id
        self.next_id += 1
        return PlaceOrder(
            order_id=oid,
            user_id=rng.randrange(USERS),
            symbol=SYMBOL,
            side=side,  # type: ignore[arg-type]
            order_type=LIMIT,
            price=price,
            quantity=qty if qty is not None else rng.randint(1, 20),
            ts=self.ts,
        )

    def _best(self) -> tuple[int, int]:
        bids, asks, _ = self.eng.depth(SYMBOL, 1)
        bid = bids[0][0] if bids else (asks[0][0] - 1 if asks else MID - 1)
        ask = asks[0][0] if asks else bid + 1
        return bid, ask

    def next(self) -> Command:
        rng = self.rng
        # A quarter of placements cross. With 35% cancels the book would drain, so
        # the place/cancel split (80% together) is steered by the distance from the
        # target depth; it settles near 50/30.
        drift = (self.target - len(self.live_ids)) / self.target
        p_place = min(0.7, max(0.3, 0.5 + 4 * drift))
        p_cross = 0.25
        r = rng.random()
        if r < p_place or not self.live_ids:
            kind = "place"
        elif r < 0.80:
            kind = "cancel"
        elif r < 0.95:
            kind = "amend"
        else:
            kind = "market"
        bid, ask = self._best()
        if kind == "place":
            side = BID if rng.random() < 0.5 else ASK
            if rng.random() < p_cross:  # crossing: at or through the opposite best
                self.mix["crossing"] += 1
                k = rng.randint(0, 2)
                price = ask + k if side == BID else bid - k
                cmd: Command = self._limit(side, max(price, 1), rng.randint(1, 30))
            else:
                d = int(rng.expovariate(1 / 60))
                price = ask - 1 - d if side == BID else bid + 1 + d
                cmd = self._limit(side, max(price, 1))
        elif kind == "cancel":
            oid = self.live_ids[rng.randrange(len(self.live_ids))]
            self.ts += 7
            cmd = CancelOrder(symbol=SYMBOL, user_id=self.live[oid][0], order_id=oid, ts=self.ts)
        elif kind == "amend":
            oid = self.live_ids[rng.randrange(len(self.live_ids))]
            user, side, price, qty = self.live[oid]
            self.ts += 7
            if qty > 1 and rng.random() < 0.5:
                cmd = AmendOrder(
                    symbol=SYMBOL, user_id=user, order_id=oid, ts=self.ts,
                    new_quantity=rng.randint(1, qty - 1),
                )
            else:
                d = int(rng.expovariate(1 / 60))
                new_price = ask - 1 - d if side == BID else bid + 1 + d
                if new_price == price:
                    new_price += -1 if side == BID else 1
                cmd = AmendOrder(
                    symbol=SYMBOL, user_id=user, order_id=oid, ts=self.ts,
                    new_price=max(new_price, 1),
                )
        else:
            side = BID if rng.random() < 0.5 else ASK
            self.ts += 7
            oid = self.next_id
            self.next_id += 1
            by_quote = side == BID and rng.random() < 0.3
            cmd = PlaceOrder(
                order_id=oid,
                user_id=rng.randrange(USERS),
                symbol=SYMBOL,
                side=side,  # type: ignore[arg-type]
                order_type=MARKET,
                price=0,
                quantity=None if by_quote else rng.randint(1, 30),
                quote_cap=ask * rng.randint(5, 30) if by_quote else None,
                ts=self.ts,
            )
        self.mix[kind] += 1
        self._run(cmd)
        return cmd

    def chunk(self, n: int) -> list[Command]:
        nxt = self.next
        return [nxt() for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds (approx.)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--book", type=int, default=10_000, help="target resting orders")
    args = ap.parse_args()

    gen = Generator(args.seed, args.book)
    gen.chunk(CHUNK // 2)  # warm-up so the book has its steady shape before timing
    snap = gen.eng.snapshot()
    plain = Engine.restore(snap)
    timed = Engine.restore(snap)
    start_resting = len(plain.open_orders(SYMBOL))
    gen.mix.clear()

    # A production engine freezes its rebuilt book out of the cyclic GC the same way.
    gc.collect()
    gc.freeze()

    total = 0
    plain_ns = 0
    plain_cpu_ns = 0
    fills = 0
    events = 0
    lat: list[int] = []
    while plain_ns < args.seconds * 1e9:
        cmds = gen.chunk(CHUNK)
        apply = plain.apply
        c0 = time.process_time_ns()
        t0 = time.perf_counter_ns()
        for c in cmds:
            apply(c)
        plain_ns += time.perf_counter_ns() - t0
        plain_cpu_ns += time.process_time_ns() - c0

        apply = timed.apply
        pc = time.perf_counter_ns
        rec = lat.append
        for c in cmds:
            t = pc()
            evs = apply(c)
            rec(pc() - t)
            events += len(evs)
            for e in evs:
                if type(e) is Trade:
                    fills += 1
        total += len(cmds)

    assert plain.state_hash() == gen.eng.state_hash() == timed.state_hash(), "nondeterminism"
    lat.sort()
    mix_total = sum(gen.mix[k] for k in ('place', 'cancel', 'amend', 'market'))
    mix = ", ".join(
        f"{k} {100 * gen.mix[k] / mix_total:.1f}%" for k in ("place", "cancel", "amend", "market")
    )
    mix += f"  ({100 * gen.mix['crossing'] / max(gen.mix['place'], 1):.0f}% of places cross)"
    bids, asks, _ = plain.depth(SYMBOL)
    print(f"python            {sys.version.split()[0]} ({sys.implementation.name}), "
          f"load average at end {os.getloadavg()[0]:.2f}")
    print(f"seed              {args.seed}")
    print(f"commands          {total:,}")
    print(f"mix               {mix}")
    print(f"fills (trades)    {fills:,}   events {events:,} ({events / total:.2f}/command)")
    print(f"resting orders    start {start_resting:,}  end {len(plain.open_orders(SYMBOL)):,}"
          f"  (levels at end: {len(bids)} bids, {len(asks)} asks)")
    print(f"throughput        {total / (plain_ns / 1e9):,.0f} commands/s  (plain apply loop)")
    print(f"throughput        {total / (plain_cpu_ns / 1e9):,.0f} commands/s  (same loop, by "
          "process CPU time: unaffected by other processes competing for the cores)")
    timed_ns = sum(lat)
    print(f"throughput        {total / (timed_ns / 1e9):,.0f} commands/s  "
          "(sum of per-command timings, timer overhead included)")
    print(f"latency           p50 {lat[len(lat) // 2] / 1000:.2f} us   "
          f"p99 {lat[int(len(lat) * 0.99)] / 1000:.2f} us   max {lat[-1] / 1000:.1f} us")


if __name__ == "__main__":
    main()
