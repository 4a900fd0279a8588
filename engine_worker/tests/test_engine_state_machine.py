"""Stateful property test: the engine against a naive reference model.

The model keeps each market's book as one flat list and re-sorts it for every taker,
implementing the rules from the engine's docstrings in the most obvious way (FOK by
trial on a deep copy). After every step the engine and the model must agree on every
fill, cancel, expiry and rejection and on the open orders in priority order, and the
engine's own invariants must hold: book never crossed, no order over-filled,
quantity conserved, contiguous sequence numbers, level/top events consistent with
the book. A shadow engine restored from a snapshot (taken at random points, through
JSON) must produce exactly the same events as the original afterwards.
"""

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from engine_worker.engine import (
    AddMarket,
    AmendOrder,
    BestBidAsk,
    BookLevel,
    CancelAll,
    CancelOrder,
    Engine,
    Event,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderExpired,
    OrderRejected,
    OrderUpdate,
    PlaceOrder,
    Trade,
    UpdateMarket,
)

SYMS = ("AAA", "BBB")
UNBOUNDED = 1 << 62


@dataclass
class MOrder:
    oid: int
    user: int
    side: str
    price: int
    qty: int | None
    rem: int
    stp: str
    post_only: bool
    cid: int | None
    time: int
    exq: int = 0
    exquote: int = 0


@dataclass
class MMarket:
    status: str = "Open"
    band: int = 0
    ref: int = 0
    book: list[MOrder] = field(default_factory=list)


class Model:
    """The naive reference. Emits summaries: tuples describing the order-level events."""

    def __init__(self) -> None:
        self.markets: dict[str, MMarket] = {}
        self.known: set[int] = set()
        self.clock = 0

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    @staticmethod
    def priority(side: str) -> Any:
        # Best first for the side being swept.
        if side == "Bid":
            return lambda o: (-o.price, o.time)
        return lambda o: (o.price, o.time)

    def sorted_side(self, m: MMarket, side: str) -> list[MOrder]:
        return sorted((o for o in m.book if o.side == side), key=self.priority(side))

    def open_orders(self, sym: str) -> list[tuple[Any, ...]]:
        m = self.markets[sym]
        return [
            (o.oid, o.user, o.side, o.price, o.qty, o.rem, o.exq, o.exquote)
            for side in ("Bid", "Ask") for o in self.sorted_side(m, side)
        ]

    def add_market(self, sym: str) -> None:
        self.markets.setdefault(sym, MMarket())

    # -- commands
    def place(self, c: PlaceOrder) -> list[tuple[Any, ...]]:
        if c.order_id in self.known:
            return []
        self.known.add(c.order_id)
        m = self.markets.get(c.symbol)
        rej = [("R", c.order_id)]
        if m is None:
            return [("R", c.order_id, "unknown_market")]
        mkt = c.order_type == "Market"
        ok = c.side in ("Bid", "Ask")
        if mkt:
            if c.quantity is None:
                ok = ok and c.quote_cap is not None and c.quote_cap > 0 and c.time_in_force != "FOK"
            else:
                ok = ok and c.quantity > 0 and (c.quote_cap is None or c.quote_cap > 0)
            ok = ok and not c.post_only
        else:
            ok = (ok and c.quantity is not None and c.quantity > 0 and c.price > 0
                  and c.quote_cap is None and not (c.post_only and c.time_in_force != "GTC"))
        if not ok:
            return [rej[0] + ("invalid",)]
        s = m.status
        if s == "Closed":
            return [rej[0] + ("market_closed",)]
        if s == "CancelOnly":
            return [rej[0] + ("market_cancel_only",)]
        if s == "PostOnly" and not c.post_only:
            return [rej[0] + ("market_post_only",)]
        if s == "LimitOnly" and mkt:
            return [rej[0] + ("market_limit_only",)]
        o = MOrder(c.order_id, c.user_id, c.side, 0 if mkt else c.price, c.quantity,
                   UNBOUNDED if c.quantity is None else c.quantity, c.self_trade_prevention,
                   c.post_only, c.client_id, self.tick())
        out: list[tuple[Any, ...]] = [("A", o.oid)]
        self.execute(m, o, mkt, c.time_in_force, c.quote_cap, out)
        return out

    def crossing(self, m: MMarket, o: MOrder, mkt: bool) -> list[MOrder]:
        opp = "Ask" if o.side == "Bid" else "Bid"
        return [
            x for x in self.sorted_side(m, opp)
            if mkt or (x.price <= o.price if o.side == "Bid" else x.price >= o.price)
        ]

    def sweep(self, m: MMarket, o: MOrder, mkt: bool, cap: int | None,
              out: list[tuple[Any, ...]]) -> str | None:
        ref = m.ref
        spent = 0
        last = 0
        for mk in self.crossing(m, o, mkt):
            if o.rem == 0:
                break
            if m.band > 0 and ref > 0 and abs(mk.price - ref) * 10000 > m.band * ref:
                return self._done(m, last, "price_band")
            afford = UNBOUNDED
            if cap is not None:
                afford = (cap - spent) // mk.price
                if afford == 0:
                    return self._done(m, last, "quote_cap")
            if mk.user == o.user:
                if o.stp == "RejectTaker":
                    return self._done(m, last, "self_trade")
                m.book.remove(mk)
                out.append(("X", mk.oid, "self_trade", mk.rem, mk.exq, mk.exquote))
                if o.stp == "RejectBoth":
                    return self._done(m, last, "self_trade")
                continue
            f = min(o.rem, mk.rem, afford)
            out.append(("T", mk.oid, o.oid, mk.price, f))
            mk.rem -= f
            mk.exq += f
            mk.exquote += f * mk.price
            o.rem -= f
            o.exq += f
            o.exquote += f * mk.price
            spent += f * mk.price
            last = mk.price
            if mk.rem == 0:
                m.book.remove(mk)
                out.append(("U", mk.oid, "Filled", 0, mk.exq, mk.exquote))
            else:
                out.append(("U", mk.oid, "PartiallyFilled", mk.rem, mk.exq, mk.exquote))
            if cap is not None and o.rem and (spent == cap or mk.rem):
                # The cap stopped this fill short, or nothing is left to spend.
                return self._done(m, last, "quote_cap")
        return self._done(m, last, None)

    @staticmethod
    def _done(m: MMarket, last: int, reason: str | None) -> str | None:
        if last:
            m.ref = last
        return reason

    def execute(self, m: MMarket, o: MOrder, mkt: bool, tif: str, cap: int | None,
                out: list[tuple[Any, ...]]) -> None:
        reason = None
        exq0 = o.exq
        if self.crossing(m, o, mkt):
            if o.post_only:
                reason = "post_only"
            elif tif == "FOK":
                trial_m, trial_o = copy.deepcopy((m, o))
                self.sweep(trial_m, trial_o, mkt, cap, [])
                if trial_o.rem:
                    reason = "fok"
                else:
                    reason = self.sweep(m, o, mkt, cap, out)
            else:
                reason = self.sweep(m, o, mkt, cap, out)
        if reason is None and o.rem:
            if tif == "FOK":
                reason = "fok"
            elif mkt:
                reason = "no_liquidity"
            elif tif == "IOC":
                reason = "ioc"
            else:
                o.time = o.time if o.time else self.tick()
                m.book.append(o)
                if o.exq != exq0:
                    out.append(("U", o.oid, "PartiallyFilled", o.rem, o.exq, o.exquote))
                return
        if reason is None or (o.qty is None and reason == "quote_cap" and o.exq):
            out.append(("U", o.oid, "Filled", 0, o.exq, o.exquote))
        else:
            out.append(("X", o.oid, reason, 0 if o.qty is None else o.rem, o.exq, o.exquote))

    def find(self, m: MMarket, oid: int | None) -> MOrder | None:
        return next((o for o in m.book if o.oid == oid), None)

    def cancel(self, c: CancelOrder) -> list[tuple[Any, ...]]:
        m = self.markets.get(c.symbol)
        if m is None:
            return [("R", c.order_id, "unknown_market")]
        if m.status == "Closed":
            return [("R", c.order_id, "market_closed")]
        if c.order_id is not None:
            o = self.find(m, c.order_id)
        else:
            o = next((x for x in m.book if (x.user, x.cid) == (c.user_id, c.client_id)
                      and c.client_id is not None), None)
        if o is None or o.user != c.user_id:
            return [("R", c.order_id, "unknown_order")]
        m.book.remove(o)
        return [("C", o.oid, "user", o.rem, o.exq, o.exquote)]

    def cancel_all(self, c: CancelAll) -> list[tuple[Any, ...]]:
        if c.symbol is None:
            syms = sorted(s for s, m in self.markets.items() if m.status != "Closed")
        elif self.markets[c.symbol].status == "Closed":
            return [("R", None, "market_closed")]
        else:
            syms = [c.symbol]
        out: list[tuple[Any, ...]] = []
        for s in syms:
            m = self.markets[s]
            for o in sorted((x for x in m.book if x.user == c.user_id), key=lambda x: x.oid):
                m.book.remove(o)
                out.append(("C", o.oid, "cancel_all", o.rem, o.exq, o.exquote))
        return out

    def amend(self, c: AmendOrder) -> list[tuple[Any, ...]]:
        m = self.markets[c.symbol]
        if m.status == "Closed":
            return [("R", c.order_id, "market_closed")]
        o = self.find(m, c.order_id)
        if o is None or o.user != c.user_id:
            return [("R", c.order_id, "unknown_order")]
        assert o.qty is not None
        price = o.price if c.new_price is None else c.new_price
        qty = o.qty if c.new_quantity is None else c.new_quantity
        if price <= 0 or qty <= 0:
            return [("R", c.order_id, "invalid")]
        rem = qty - o.exq
        if rem <= 0:
            m.book.remove(o)
            return [("C", o.oid, "amend", o.rem, o.exq, o.exquote)]
        if price == o.price and rem == o.rem:
            return [("R", o.oid, "no_change")]
        if price == o.price and rem < o.rem:
            o.rem, o.qty = rem, qty
            return [("M", o.oid, False)]
        if m.status == "CancelOnly":
            return [("R", o.oid, "market_cancel_only")]
        if (o.post_only or m.status == "PostOnly") and self.crossing(
            m, MOrder(0, 0, o.side, price, 1, 1, "", False, None, 0), False
        ):
            return [("R", o.oid, "post_only")]
        m.book.remove(o)
        o.price, o.qty, o.rem, o.time = price, qty, rem, self.tick()
        out: list[tuple[Any, ...]] = [("M", o.oid, True)]
        self.execute(m, o, False, "GTC", None, out)
        return out


def summarise(events: list[Event]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for e in events:
        if isinstance(e, OrderAccepted):
            out.append(("A", e.order_id))
        elif isinstance(e, OrderRejected):
            out.append(("R", e.order_id, e.reason))
        elif isinstance(e, Trade):
            out.append(("T", e.maker_order_id, e.taker_order_id, e.price, e.quantity))
        elif isinstance(e, OrderUpdate):
            out.append(("U", e.order_id, e.status, e.remaining, e.executed_qty, e.executed_quote))
        elif isinstance(e, OrderExpired):
            out.append(("X", e.order_id, e.reason, e.remaining, e.executed_qty, e.executed_quote))
        elif isinstance(e, OrderCancelled):
            out.append(("C", e.order_id, e.reason, e.remaining, e.executed_qty, e.executed_quote))
        elif isinstance(e, OrderAmended):
            out.append(("M", e.order_id, e.requeued))
    return out


users = st.integers(1, 4)
prices = st.integers(97, 103)
qtys = st.integers(1, 6)
sides = st.sampled_from(["Bid", "Ask"])
stps = st.sampled_from(["RejectTaker", "RejectMaker", "RejectBoth"])
# Mostly one market, so its book gets deep enough to trade.
syms = st.sampled_from([SYMS[0]] * 4 + [SYMS[1]])


class EngineVsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.eng = Engine()
        self.shadow: Engine | None = None
        self.model = Model()
        self.ts = 0
        self.next_id = 1
        self.ids: list[int] = []
        self.seq = {s: 0 for s in SYMS}
        self.buid = {s: 0 for s in SYMS}
        self.top: dict[str, tuple[Any, ...]] = {s: (None, 0, None, 0) for s in SYMS}
        # Per order with a quantity: its quantity and what trades executed so far.
        self.qty: dict[int, int] = {}
        self.traded: dict[int, int] = {}
        self.closed_rem: dict[int, int] = {}
        for s in SYMS:
            assert self.eng.apply(AddMarket(symbol=s, ts=0)) == []
            self.model.add_market(s)

    def stamp(self) -> int:
        self.ts += 1
        return self.ts

    def run(self, cmd: Any) -> list[Event]:
        events = self.eng.apply(cmd)
        if self.shadow is not None:
            assert self.shadow.apply(cmd) == events
        self.check_events(events)
        return events

    def check_events(self, events: list[Event]) -> None:
        touched: dict[str, dict[tuple[str, int], int]] = {}
        for e in events:
            if e.seq == 0:
                assert isinstance(e, OrderRejected) and e.reason == "unknown_market"
                continue
            assert e.seq == self.seq[e.symbol] + 1, "event sequence must be contiguous"
            self.seq[e.symbol] = e.seq
            if isinstance(e, BookLevel):
                assert e.book_update_id == self.buid[e.symbol] + 1
                self.buid[e.symbol] = e.book_update_id
                key = (e.side, e.price)
                assert key not in touched.setdefault(e.symbol, {}), "one BookLevel per level"
                touched[e.symbol][key] = e.quantity
            elif isinstance(e, BestBidAsk):
                top = (e.bid_price, e.bid_qty, e.ask_price, e.ask_qty)
                assert top != self.top[e.symbol]
                self.top[e.symbol] = top
            elif isinstance(e, OrderAccepted) and e.quantity is not None:
                self.qty[e.order_id] = e.quantity
                self.traded[e.order_id] = 0
            elif isinstance(e, OrderAmended):
                self.qty[e.order_id] = e.quantity
            elif isinstance(e, Trade):
                for oid in (e.maker_order_id, e.taker_order_id):
                    if oid in self.traded:
                        self.traded[oid] += e.quantity
            elif isinstance(e, (OrderCancelled, OrderExpired)) or (
                isinstance(e, OrderUpdate) and e.status == "Filled"
            ):
                if e.order_id in self.qty:
                    self.closed_rem[e.order_id] = e.remaining
                    assert e.executed_qty == self.traded[e.order_id]
        for sym in SYMS:
            bids, asks, buid = self.eng.depth(sym)
            assert buid == self.buid[sym]
            book = {("Bid", p): q for p, q in bids} | {("Ask", p): q for p, q in asks}
            for key, q in touched.get(sym, {}).items():
                assert book.get(key, 0) == q, "BookLevel carries the level's final total"
            top = (
                bids[0][0] if bids else None, bids[0][1] if bids else 0,
                asks[0][0] if asks else None, asks[0][1] if asks else 0,
            )
            assert top == self.top[sym], "BestBidAsk sent whenever the top changes"

    def compare(self, events: list[Event], expected: list[tuple[Any, ...]]) -> None:
        assert summarise(events) == expected

    @initialize(band=st.sampled_from([0, 100, 200]), ref=st.sampled_from([0, 100]))
    def start_with_band(self, band: int, ref: int) -> None:
        for sym in SYMS:
            self.set_band(sym, band, ref)

    def pick(self, data: st.DataObject, sym: str) -> int:
        """Mostly a live order of ``sym``, sometimes any id ever used."""
        live = [o.oid for o in self.model.markets[sym].book]
        if live and data.draw(st.integers(0, 3)):
            return data.draw(st.sampled_from(live))
        return data.draw(st.sampled_from(self.ids))

    # -- rules
    @rule(sym=syms, user=users, side=sides, price=prices, qty=qtys,
          tif=st.sampled_from(["GTC", "GTC", "IOC", "FOK"]), post_only=st.booleans(),
          stp=stps, cid=st.none() | st.integers(1, 3))
    def place_limit(self, sym: str, user: int, side: str, price: int, qty: int, tif: str,
                    post_only: bool, stp: str, cid: int | None) -> None:
        oid = self.next_id
        self.next_id += 1
        self.ids.append(oid)
        c = PlaceOrder(order_id=oid, user_id=user, symbol=sym, side=side,  # type: ignore[arg-type]
                       order_type="Limit", price=price, quantity=qty, ts=self.stamp(),
                       time_in_force=tif, post_only=post_only and tif == "GTC",  # type: ignore[arg-type]
                       self_trade_prevention=stp, client_id=cid)  # type: ignore[arg-type]
        self.compare(self.run(c), self.model.place(c))

    @rule(sym=syms, user=users, side=sides, price=prices, qty=qtys, stp=stps)
    def place_plain_limit(self, sym: str, user: int, side: str, price: int, qty: int,
                          stp: str) -> None:
        # The commonest order, as a rule of its own so books fill up and trade.
        self.place_limit(sym, user, side, price, qty, "GTC", False, stp, None)

    @rule(sym=syms, user=users, side=sides, qty=st.none() | qtys,
          cap=st.none() | st.integers(50, 1500), stp=stps, fok=st.booleans())
    def place_market(self, sym: str, user: int, side: str, qty: int | None, cap: int | None,
                     stp: str, fok: bool) -> None:
        if qty is None and cap is None:
            cap = 500
        oid = self.next_id
        self.next_id += 1
        c = PlaceOrder(order_id=oid, user_id=user, symbol=sym, side=side,  # type: ignore[arg-type]
                       order_type="Market", price=0, quantity=qty, quote_cap=cap,
                       ts=self.stamp(), self_trade_prevention=stp,  # type: ignore[arg-type]
                       time_in_force="FOK" if fok and qty is not None else "IOC")
        self.compare(self.run(c), self.model.place(c))

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), sym=syms)
    def replay_known_id(self, data: st.DataObject, sym: str) -> None:
        oid = data.draw(st.sampled_from(self.ids))
        c = PlaceOrder(order_id=oid, user_id=1, symbol=sym, side="Bid", order_type="Limit",
                       price=100, quantity=1, ts=self.stamp())
        assert self.run(c) == []
        assert self.model.place(c) == []

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), sym=syms, user=users, by_client=st.booleans())
    def cancel(self, data: st.DataObject, sym: str, user: int, by_client: bool) -> None:
        if by_client:
            c = CancelOrder(symbol=sym, user_id=user, client_id=data.draw(st.integers(1, 3)),
                            ts=self.stamp())
        else:
            oid = self.pick(data, sym)
            owner = next((o.user for o in self.model.markets[sym].book if o.oid == oid), user)
            c = CancelOrder(symbol=sym, user_id=owner if data.draw(st.integers(0, 3)) else user,
                            order_id=oid, ts=self.stamp())
        self.compare(self.run(c), self.model.cancel(c))

    @rule(sym=st.none() | syms, user=users)
    def cancel_all(self, sym: str | None, user: int) -> None:
        c = CancelAll(user_id=user, symbol=sym, ts=self.stamp())
        self.compare(self.run(c), self.model.cancel_all(c))

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), sym=syms, user=users, price=st.none() | prices,
          qty=st.none() | st.integers(0, 8))
    def amend(self, data: st.DataObject, sym: str, user: int, price: int | None,
              qty: int | None) -> None:
        oid = self.pick(data, sym)
        # Mostly the owner, so amends actually happen.
        owner = next((o.user for o in self.model.markets[sym].book if o.oid == oid), user)
        uid = owner if data.draw(st.integers(0, 4)) else user
        c = AmendOrder(symbol=sym, user_id=uid, order_id=oid, new_price=price,
                       new_quantity=qty, ts=self.stamp())
        self.compare(self.run(c), self.model.amend(c))

    @rule(sym=syms, status=st.sampled_from(
        ["Open"] * 6 + ["LimitOnly", "PostOnly", "CancelOnly", "Closed"]))
    def set_status(self, sym: str, status: str) -> None:
        assert self.run(UpdateMarket(symbol=sym, status=status, ts=self.stamp())) == []  # type: ignore[arg-type]
        self.model.markets[sym].status = status

    # Reference 100 puts band edges exactly on ticks (99/101 at 100 bps).
    @rule(sym=syms, band=st.sampled_from([0, 0, 100, 200, 300]),
          ref=st.none() | st.sampled_from([100, 100, 99, 101]))
    def set_band(self, sym: str, band: int, ref: int | None) -> None:
        self.run(UpdateMarket(symbol=sym, band_bps=band, reference_price=ref, ts=self.stamp()))
        self.model.markets[sym].band = band
        if ref is not None:
            self.model.markets[sym].ref = ref

    @rule()
    def snapshot_into_shadow(self) -> None:
        snap = json.loads(json.dumps(self.eng.snapshot()))
        self.shadow = Engine.restore(snap)
        assert self.shadow.state_hash() == self.eng.state_hash()

    # -- invariants
    @invariant()
    def same_open_orders_as_model(self) -> None:
        for sym in SYMS:
            got = [
                (o.order_id, o.user_id, o.side, o.price, o.quantity, o.remaining,
                 o.executed_qty, o.executed_quote)
                for o in self.eng.open_orders(sym)
            ]
            assert got == self.model.open_orders(sym)

    @invariant()
    def book_not_crossed_and_levels_exact(self) -> None:
        for sym in SYMS:
            bids, asks, _ = self.eng.depth(sym)
            if bids and asks:
                assert bids[0][0] < asks[0][0]
            totals: dict[tuple[str, int], int] = {}
            for o in self.eng.open_orders(sym):
                totals[(o.side, o.price)] = totals.get((o.side, o.price), 0) + o.remaining
            assert totals == {("Bid", p): q for p, q in bids} | {("Ask", p): q for p, q in asks}
            assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
            assert [p for p, _ in asks] == sorted(p for p, _ in asks)

    @invariant()
    def quantity_conserved_and_never_overfilled(self) -> None:
        live = {o.order_id: o for s in SYMS for o in self.eng.open_orders(s)}
        for oid, qty in self.qty.items():
            traded = self.traded[oid]
            assert traded <= qty
            if oid in live:
                assert live[oid].executed_qty == traded
                assert traded + live[oid].remaining == qty
            else:
                assert oid in self.closed_rem
                assert traded + self.closed_rem[oid] == qty


EngineVsModel.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineVsModel = EngineVsModel.TestCase
