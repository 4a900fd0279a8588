"""The matching engine: commands in, events out, nothing else.

Design
------
- Pure and deterministic: no clock (``ts`` comes with each command), no I/O, no
  randomness, no iteration over unordered containers where order is observable. The
  same commands applied to the same state give the same events, which is what lets the
  DB processor apply batches exactly once and lets a snapshot stand in for history.
- Price-time priority per market (see ``book`` for the structures). One ``apply`` call
  is atomic from the caller's point of view: the events it returns describe the whole
  effect of the command.
- Every order id ever seen (placed, rejected, finished) is remembered in ``known``; a
  ``PlaceOrder`` for a known id is a no-op returning no events, because the accept
  sweep re-queues orders that are still pending and the engine must not apply one
  twice. A rejected id is known too: the retry would be rejected again anyway, and
  remembering it keeps "seen" a single rule. ``known`` grows with every order; a
  process rebuilt from the database seeds it with ``mark_known`` (the ids of orders
  that are no longer pending is enough).

Matching rules
--------------
- The taker's self-trade prevention mode decides when it meets a maker of the same
  user: RejectTaker expires the taker's remainder; RejectMaker expires that maker and
  goes on; RejectBoth does both. Reason ``self_trade``.
- Price band (``band_bps`` > 0 and a reference exists): a fill at price ``p`` is made
  only if ``|p - ref| * 10000 <= band_bps * ref``. The first fill that fails stops the
  taker and expires its remainder (``price_band``); earlier fills stand. ``ref`` is
  read once at the start of each command, so a sweep does not drag its own reference
  along; it becomes the last fill price after the command.
- FOK checks first, without changing anything, that the whole quantity can be filled
  under the same rules (limit price, band, quote cap; makers of the same user count as
  unavailable, and under RejectTaker/RejectBoth they end the walk as the sweep would).
  If not, the order expires (``fok``) and nothing else happens: in particular no
  RejectMaker cancellation. A market order by quote amount cannot be FOK (rejected).
- Post-only: an order that would take expires (``post_only``) without trading.
- Market orders never rest. By quantity: the remainder expires (``no_liquidity``
  when the book runs out, ``quote_cap`` when the optional cap allows no further whole
  lot). By quote amount (``quantity`` None): takes whole lots while the sum of
  price*qty stays within the cap, rounding down at each level (a sell goes on to
  cheaper bids while a lot still fits); it ends ``Filled`` when the cap stops it (or is
  spent exactly) after at least one fill, otherwise ``Expired``, and always reports
  ``remaining`` 0. The caller releases whatever quote was not spent.
- IOC: the remainder expires (``ioc``).

Market statuses: Open accepts everything; LimitOnly rejects market orders; PostOnly
accepts only post-only limit orders (amends that would cross are rejected);
CancelOnly accepts cancels and amends that only reduce quantity; Closed accepts
nothing, not even cancels, and keeps its book.
"""

import hashlib
import json
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .book import BookSide, Level, Market, Order
from .commands import (
    AddMarket,
    AmendOrder,
    CancelAll,
    CancelOrder,
    Command,
    PlaceOrder,
    UpdateMarket,
)
from .events import (
    BestBidAsk,
    BookLevel,
    Event,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderExpired,
    OrderRejected,
    OrderUpdate,
    Trade,
)
from .types import (
    ASK,
    BID,
    CANCEL_ONLY,
    CANCELLED,
    CLOSED,
    EXPIRED,
    FILLED,
    FOK,
    GTC,
    IOC,
    LIMIT,
    LIMIT_ONLY,
    MARKET,
    MARKET_STATUSES,
    OPEN,
    PARTIALLY_FILLED,
    POST_ONLY,
    R_AMEND,
    R_CANCEL_ALL,
    R_CANCEL_ONLY,
    R_FOK,
    R_INVALID,
    R_IOC,
    R_LIMIT_ONLY,
    R_MARKET_CLOSED,
    R_NO_CHANGE,
    R_NO_LIQUIDITY,
    R_POST_ONLY,
    R_POST_ONLY_MARKET,
    R_PRICE_BAND,
    R_QUOTE_CAP,
    R_SELF_TRADE,
    R_UNKNOWN_MARKET,
    R_UNKNOWN_ORDER,
    R_USER,
    REJECT_BOTH,
    REJECT_MAKER,
    REJECT_TAKER,
    REQ_AMEND,
    REQ_CANCEL,
    REQ_CANCEL_ALL,
    REQ_PLACE,
)

SNAPSHOT_VERSION = 1

# A market order by quote amount has no quantity; giving it an unreachable remaining
# lets the sweep share one loop with quantity orders.
_UNBOUNDED = 1 << 62
# Below every book key (keys are +-price), so a market order crosses every level.
_MIN_KEY = -(1 << 63)

_SIDES = frozenset((BID, ASK))
_TIFS = frozenset((GTC, IOC, FOK))
_STPS = frozenset((REJECT_TAKER, REJECT_MAKER, REJECT_BOTH))


@dataclass(frozen=True, slots=True)
class RestingOrder:
    """A read-only view of a live order, as returned by ``Engine.open_orders``."""

    order_id: int
    user_id: int
    side: str
    price: int
    quantity: int
    remaining: int
    executed_qty: int
    executed_quote: int
    self_trade_prevention: str
    post_only: bool
    client_id: int | None


class Engine:
    """In-memory books for any number of markets. Single-threaded: the caller applies
    commands one at a time, in queue order."""

    __slots__ = ("_markets", "_known", "_touched", "_dispatch")

    def __init__(self) -> None:
        self._markets: dict[str, Market] = {}
        self._known: set[int] = set()
        # Levels changed by the command being applied, keyed price*2+side bit; an
        # insertion-ordered dict gives both dedup and a deterministic emission order.
        self._touched: dict[int, None] = {}
        self._dispatch: dict[type, Callable[[Any], list[Event]]] = {
            PlaceOrder: self._place,
            CancelOrder: self._cancel,
            AmendOrder: self._amend,
            CancelAll: self._cancel_all,
            AddMarket: self._add_market,
            UpdateMarket: self._update_market,
        }

    # ------------------------------------------------------------------ public API

    def apply(self, cmd: Command) -> list[Event]:
        """Apply one command and return its events (possibly none).

        Precondition: ``cmd`` is one of the command classes; anything else raises
        ``TypeError``. Invalid field values never raise: they produce an
        ``OrderRejected`` (orders) or are ignored (market configuration).
        """
        try:
            handler = self._dispatch[type(cmd)]
        except KeyError:
            raise TypeError(f"not an engine command: {cmd!r}") from None
        return handler(cmd)

    def apply_batch(self, cmds: Iterable[Command]) -> list[Event]:
        """Apply commands in order; the concatenation of their events."""
        out: list[Event] = []
        extend = out.extend
        dispatch = self._dispatch
        for cmd in cmds:
            try:
                handler = dispatch[type(cmd)]
            except KeyError:
                raise TypeError(f"not an engine command: {cmd!r}") from None
            extend(handler(cmd))
        return out

    def is_known(self, order_id: int) -> bool:
        """True if a PlaceOrder with this id would be ignored."""
        return order_id in self._known

    def mark_known(self, order_ids: Iterable[int]) -> None:
        """Pre-seed ids that must never be placed again (e.g. finished orders)."""
        self._known.update(order_ids)

    def symbols(self) -> list[str]:
        return sorted(self._markets)

    def counters(self, symbol: str) -> tuple[int, int, int]:
        """``(trade_id, event_seq, book_update_id)``: the last values used.
        Precondition: the market exists (else KeyError)."""
        m = self._markets[symbol]
        return (m.trade_id, m.seq, m.book_update_id)

    def set_counters(
        self,
        symbol: str,
        *,
        trade_id: int | None = None,
        event_seq: int | None = None,
        book_update_id: int | None = None,
    ) -> None:
        """Set the last-used counters of a market (rebuild from the database).
        Precondition: the market exists; counters must not go backwards in production
        (not enforced here: the caller owns persistence)."""
        m = self._markets[symbol]
        if trade_id is not None:
            m.trade_id = trade_id
        if event_seq is not None:
            m.seq = event_seq
        if book_update_id is not None:
            m.book_update_id = book_update_id

    def load_resting(
        self,
        symbol: str,
        *,
        order_id: int,
        user_id: int,
        side: str,
        price: int,
        quantity: int,
        executed_qty: int = 0,
        executed_quote: int = 0,
        self_trade_prevention: str = REJECT_TAKER,
        post_only: bool = False,
        client_id: int | None = None,
    ) -> None:
        """Put an already-accepted order at the BACK of its price level without
        matching and without events (rebuild from the database: call in original
        priority order). The id becomes known.

        Preconditions (ValueError otherwise): the market exists, the order is not
        already live there, ``0 <= executed_qty < quantity``, ``price > 0``, valid side
        and STP mode, and the order does not cross the opposite side.
        """
        m = self._markets.get(symbol)
        if m is None:
            raise ValueError(f"unknown market {symbol!r}")
        if order_id in m.orders:
            raise ValueError(f"order {order_id} already resting")
        if side not in _SIDES or self_trade_prevention not in _STPS:
            raise ValueError("bad side or self-trade prevention mode")
        if price <= 0 or not 0 <= executed_qty < quantity:
            raise ValueError("bad price or quantities")
        opp = m.asks if side == BID else m.bids
        if opp.keys and opp.keys[-1] >= price * opp.sign:
            raise ValueError(f"order {order_id} would cross the book")
        o = Order(
            order_id,
            user_id,
            side,
            price,
            quantity,
            quantity - executed_qty,
            executed_qty,
            executed_quote,
            self_trade_prevention,
            post_only,
            client_id,
        )
        self._rest(m, o)
        self._touched.clear()
        self._known.add(order_id)
        m.bba = m.top()

    def depth(
        self, symbol: str, levels: int | None = None
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int]:
        """``(bids, asks, book_update_id)``, each side best first as ``(price, qty)``,
        at most ``levels`` per side (all if None). Precondition: the market exists."""
        m = self._markets[symbol]
        return (_side_depth(m.bids, levels), _side_depth(m.asks, levels), m.book_update_id)

    def open_orders(self, symbol: str) -> list[RestingOrder]:
        """Live orders in priority order: bids best first, then asks best first, FIFO
        within a level. Precondition: the market exists."""
        m = self._markets[symbol]
        out: list[RestingOrder] = []
        for book in (m.bids, m.asks):
            for key in reversed(book.keys):
                for o in book.levels[key * book.sign].queue:
                    if o.live:
                        assert o.quantity is not None
                        out.append(
                            RestingOrder(
                                o.order_id,
                                o.user_id,
                                o.side,
                                o.price,
                                o.quantity,
                                o.remaining,
                                o.executed_qty,
                                o.executed_quote,
                                o.stp,
                                o.post_only,
                                o.client_id,
                            )
                        )
        return out

    def snapshot(self) -> dict[str, Any]:
        """The full state as JSON-serialisable plain data (markets sorted by symbol,
        orders in priority order, known ids sorted)."""
        markets: list[dict[str, Any]] = []
        for symbol in sorted(self._markets):
            m = self._markets[symbol]
            sides: dict[str, list[list[Any]]] = {}
            for name, book in (("bids", m.bids), ("asks", m.asks)):
                rows: list[list[Any]] = []
                for key in reversed(book.keys):
                    for o in book.levels[key * book.sign].queue:
                        if o.live:
                            rows.append(
                                [
                                    o.order_id,
                                    o.user_id,
                                    o.price,
                                    o.quantity,
                                    o.remaining,
                                    o.executed_qty,
                                    o.executed_quote,
                                    o.stp,
                                    o.post_only,
                                    o.client_id,
                                ]
                            )
                sides[name] = rows
            markets.append(
                {
                    "symbol": symbol,
                    "status": m.status,
                    "maker_fee_ppm": m.maker_fee_ppm,
                    "taker_fee_ppm": m.taker_fee_ppm,
                    "band_bps": m.band_bps,
                    "reference_price": m.reference_price,
                    "trade_id": m.trade_id,
                    "event_seq": m.seq,
                    "book_update_id": m.book_update_id,
                    "bids": sides["bids"],
                    "asks": sides["asks"],
                }
            )
        return {"version": SNAPSHOT_VERSION, "known": sorted(self._known), "markets": markets}

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> "Engine":
        """A new engine in exactly the state ``snapshot()`` captured: it produces the
        same events as the original for any commands that follow.
        Precondition: ``snapshot`` came from ``snapshot()`` (possibly via JSON)."""
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported snapshot version {snapshot.get('version')!r}")
        eng = cls()
        for d in snapshot["markets"]:
            m = Market(d["symbol"])
            m.status = d["status"]
            m.maker_fee_ppm = d["maker_fee_ppm"]
            m.taker_fee_ppm = d["taker_fee_ppm"]
            m.band_bps = d["band_bps"]
            m.reference_price = d["reference_price"]
            m.trade_id = d["trade_id"]
            m.seq = d["event_seq"]
            m.book_update_id = d["book_update_id"]
            eng._markets[m.symbol] = m
            for side, rows in ((BID, d["bids"]), (ASK, d["asks"])):
                for r in rows:
                    o = Order(r[0], r[1], side, r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9])
                    eng._rest(m, o)
            m.bba = m.top()
        eng._touched.clear()
        eng._known = set(snapshot["known"])
        return eng

    def state_hash(self) -> str:
        """sha256 hex of the canonical JSON of ``snapshot()``."""
        blob = json.dumps(self.snapshot(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    # ------------------------------------------------------------ market commands

    def _add_market(self, c: AddMarket) -> list[Event]:
        if c.symbol in self._markets or c.status not in MARKET_STATUSES:
            return []
        m = Market(c.symbol)
        m.status = c.status
        m.maker_fee_ppm = c.maker_fee_ppm
        m.taker_fee_ppm = c.taker_fee_ppm
        m.band_bps = max(c.band_bps, 0)
        m.reference_price = max(c.reference_price or 0, 0)
        m.trade_id = c.trade_id
        m.seq = c.event_seq
        m.book_update_id = c.book_update_id
        self._markets[c.symbol] = m
        return []

    def _update_market(self, c: UpdateMarket) -> list[Event]:
        m = self._markets.get(c.symbol)
        if m is None:
            return []
        if c.status is not None and c.status in MARKET_STATUSES:
            m.status = c.status
        if c.maker_fee_ppm is not None:
            m.maker_fee_ppm = c.maker_fee_ppm
        if c.taker_fee_ppm is not None:
            m.taker_fee_ppm = c.taker_fee_ppm
        if c.band_bps is not None:
            m.band_bps = max(c.band_bps, 0)
        if c.reference_price is not None:
            m.reference_price = max(c.reference_price, 0)
        return []

    # ------------------------------------------------------------- order commands

    def _reject(
        self, m: Market, ts: int, order_id: int | None, user_id: int, request: str, reason: str
    ) -> list[Event]:
        m.seq += 1
        return [OrderRejected(m.symbol, m.seq, ts, order_id, user_id, request, reason)]

    def _place(self, c: PlaceOrder) -> list[Event]:
        oid = c.order_id
        known = self._known
        if oid in known:
            return []
        known.add(oid)
        m = self._markets.get(c.symbol)
        # Fast path for the commonest command: a valid GTC limit order in an Open
        # market that does not cross. Anything else, including every invalid or
        # rejected order, goes through _place_general.
        if (
            m is None
            or m.status != OPEN
            or c.order_type != LIMIT
            or c.time_in_force != GTC
            or c.quote_cap is not None
            or c.self_trade_prevention not in _STPS
        ):
            return self._place_general(c, m)
        qty = c.quantity
        price = c.price
        side = c.side
        if qty is None or qty <= 0 or price <= 0:
            return self._place_general(c, m)
        if side == BID:
            opp = m.asks
            own = m.bids
        elif side == ASK:
            opp = m.bids
            own = m.asks
        else:
            return self._place_general(c, m)
        sym = m.symbol
        ts = c.ts
        seq = m.seq + 1
        ev: list[Event] = [
            OrderAccepted(sym, seq, ts, oid, c.user_id, side, LIMIT, price, qty, c.client_id)
        ]
        o = Order(
            oid, c.user_id, side, price, qty, qty, 0, 0, c.self_trade_prevention, c.post_only,
            c.client_id,
        )
        okeys = opp.keys
        if okeys and okeys[-1] >= price * opp.sign:
            m.seq = seq
            self._execute(m, o, False, GTC, None, ev, ts)
            return ev
        # Rest (same as _rest, inlined).
        levels = own.levels
        lv = levels.get(price)
        keys = own.keys
        k = price * own.sign
        if lv is None:
            lv = Level(price)
            levels[price] = lv
            if not keys or k > keys[-1]:
                keys.append(k)
            else:
                insort(keys, k)
        lv.queue.append(o)
        total = lv.total + qty
        lv.total = total
        lv.count += 1
        m.orders[oid] = o
        if o.client_id is not None:
            m.client_ids[(o.user_id, o.client_id)] = o
        seq += 1
        buid = m.book_update_id + 1
        m.book_update_id = buid
        ev.append(BookLevel(sym, seq, ts, side, price, total, buid))
        # The top can only have changed if this level is now the best of its side.
        m.seq = _emit_top(m, ev, ts, seq, buid) if k == keys[-1] else seq
        return ev

    def _place_general(self, c: PlaceOrder, m: Market | None) -> list[Event]:
        """Every PlaceOrder the fast path does not take; ``c.order_id`` is already
        recorded as known."""
        oid = c.order_id
        sym = c.symbol
        ts = c.ts
        if m is None:
            return [OrderRejected(sym, 0, ts, oid, c.user_id, REQ_PLACE, R_UNKNOWN_MARKET)]
        otype = c.order_type
        qty = c.quantity
        price = c.price
        tif = c.time_in_force
        cap = c.quote_cap
        post_only = c.post_only
        is_market = otype == MARKET
        if is_market:
            price = 0
            if qty is None:
                bad = cap is None or cap <= 0 or tif == FOK
            else:
                bad = qty <= 0 or (cap is not None and cap <= 0)
            bad = bad or post_only
        elif otype == LIMIT:
            bad = (
                qty is None
                or qty <= 0
                or price <= 0
                or cap is not None
                or (post_only and tif != GTC)
            )
        else:
            bad = True
        if (
            bad
            or c.side not in _SIDES
            or tif not in _TIFS
            or c.self_trade_prevention not in _STPS
        ):
            return self._reject(m, ts, oid, c.user_id, REQ_PLACE, R_INVALID)
        status = m.status
        if status != OPEN:
            if status == CLOSED:
                return self._reject(m, ts, oid, c.user_id, REQ_PLACE, R_MARKET_CLOSED)
            if status == CANCEL_ONLY:
                return self._reject(m, ts, oid, c.user_id, REQ_PLACE, R_CANCEL_ONLY)
            if status == POST_ONLY and not post_only:
                return self._reject(m, ts, oid, c.user_id, REQ_PLACE, R_POST_ONLY_MARKET)
            if status == LIMIT_ONLY and is_market:
                return self._reject(m, ts, oid, c.user_id, REQ_PLACE, R_LIMIT_ONLY)
        seq = m.seq + 1
        m.seq = seq
        ev: list[Event] = [
            OrderAccepted(sym, seq, ts, oid, c.user_id, c.side, otype, price, qty, c.client_id)
        ]
        o = Order(
            oid,
            c.user_id,
            c.side,
            price,
            qty,
            _UNBOUNDED if qty is None else qty,
            0,
            0,
            c.self_trade_prevention,
            post_only,
            c.client_id,
        )
        self._execute(m, o, is_market, tif, cap, ev, ts)
        return ev

    def _execute(
        self,
        m: Market,
        o: Order,
        is_market: bool,
        tif: str,
        cap: int | None,
        ev: list[Event],
        ts: int,
    ) -> None:
        """Match ``o`` as a taker, then rest, fill or expire it, then flush book events.
        Precondition: ``o`` is not in the book or the order index."""
        if o.side == BID:
            opp = m.asks
            own = m.bids
        else:
            opp = m.bids
            own = m.asks
        okeys = opp.keys
        reason: str | None = None
        traded = False
        if okeys:
            limit_key = _MIN_KEY if is_market else o.price * opp.sign
            if okeys[-1] >= limit_key:
                if o.post_only:
                    reason = R_POST_ONLY
                elif tif == FOK and not self._fok_fillable(m, o, opp, limit_key, cap):
                    reason = R_FOK
                else:
                    exq0 = o.executed_qty
                    reason = self._sweep(m, o, opp, limit_key, cap, ev, ts)
                    traded = o.executed_qty != exq0
        rem = o.remaining
        if reason is None and rem:
            if tif == FOK:
                reason = R_FOK
            elif is_market:
                reason = R_NO_LIQUIDITY
            elif tif == IOC:
                reason = R_IOC
            else:
                # Rest. Inlined (see _rest) because this is the most common path.
                p = o.price
                levels = own.levels
                lv = levels.get(p)
                if lv is None:
                    lv = Level(p)
                    levels[p] = lv
                    keys = own.keys
                    k = p * own.sign
                    # New levels mostly open at the top; append avoids insort's memmove.
                    if not keys or k > keys[-1]:
                        keys.append(k)
                    else:
                        insort(keys, k)
                lv.queue.append(o)
                lv.total += rem
                lv.count += 1
                m.orders[o.order_id] = o
                if o.client_id is not None:
                    m.client_ids[(o.user_id, o.client_id)] = o
                touched = self._touched
                if not touched:
                    # The commonest command of all, a limit order resting without
                    # trading, touched this one level only: emit it without _flush.
                    seq = m.seq + 1
                    buid = m.book_update_id + 1
                    m.book_update_id = buid
                    ev.append(BookLevel(m.symbol, seq, ts, o.side, p, lv.total, buid))
                    # The top changed only if this level is now the best of its side.
                    if p * own.sign == own.keys[-1]:
                        seq = _emit_top(m, ev, ts, seq, buid)
                    m.seq = seq
                    return
                touched[p + p + own.bit] = None
                if traded:
                    m.seq += 1
                    ev.append(
                        OrderUpdate(
                            m.symbol, m.seq, ts, o.order_id, o.user_id, PARTIALLY_FILLED, rem,
                            o.executed_qty, o.executed_quote,
                        )
                    )
                self._flush(m, ev, ts)
                return
        m.seq += 1
        if reason is None:
            ev.append(
                OrderUpdate(
                    m.symbol, m.seq, ts, o.order_id, o.user_id, FILLED, 0,
                    o.executed_qty, o.executed_quote,
                )
            )
        elif o.quantity is None and reason == R_QUOTE_CAP and o.executed_qty:
            # By quote amount: stopped by its own cap after trading = done.
            ev.append(
                OrderUpdate(
                    m.symbol, m.seq, ts, o.order_id, o.user_id, FILLED, 0,
                    o.executed_qty, o.executed_quote,
                )
            )
        else:
            ev.append(
                OrderExpired(
                    m.symbol, m.seq, ts, o.order_id, o.user_id, EXPIRED,
                    0 if o.quantity is None else rem, o.executed_qty, o.executed_quote, reason,
                )
            )
        self._flush(m, ev, ts)

    def _sweep(
        self,
        m: Market,
        o: Order,
        opp: BookSide,
        limit_key: int,
        cap: int | None,
        ev: list[Event],
        ts: int,
    ) -> str | None:
        """Take liquidity from ``opp`` for ``o``; return why the taker stopped early, or
        None if it ran out of quantity, of book, or of crossing levels.
        This is the hot loop: attributes are bound to locals on purpose."""
        okeys = opp.keys
        levels = opp.levels
        osign = opp.sign
        obit = opp.bit
        touched = self._touched
        sym = m.symbol
        ref = m.reference_price
        bandref = m.band_bps * ref
        uid = o.user_id
        toid = o.order_id
        tside = o.side
        rem = o.remaining
        exq = o.executed_qty
        exquote = o.executed_quote
        seq = m.seq
        tid = m.trade_id
        append = ev.append
        spent = 0
        afford = 0
        last_p = 0
        reason: str | None = None
        while okeys:
            key = okeys[-1]
            if key < limit_key:
                break
            p = key * osign
            if bandref and abs(p - ref) * 10000 > bandref:
                reason = R_PRICE_BAND
                break
            if cap is not None:
                afford = (cap - spent) // p
                if afford <= 0:
                    reason = R_QUOTE_CAP
                    break
            lv = levels[p]
            q = lv.queue
            touched[p + p + obit] = None
            while True:
                mk = q[0]
                if not mk.live:
                    q.popleft()
                    continue
                if mk.user_id == uid:
                    stp = o.stp
                    if stp == REJECT_TAKER:
                        reason = R_SELF_TRADE
                        break
                    q.popleft()
                    mk.live = False
                    mrem = mk.remaining
                    lv.count -= 1
                    lv.total -= mrem
                    del m.orders[mk.order_id]
                    if mk.client_id is not None:
                        _drop_client_id(m, mk)
                    seq += 1
                    append(
                        OrderExpired(
                            sym, seq, ts, mk.order_id, uid, EXPIRED, mrem,
                            mk.executed_qty, mk.executed_quote, R_SELF_TRADE,
                        )
                    )
                    if stp == REJECT_BOTH:
                        reason = R_SELF_TRADE
                        break
                    if lv.count == 0:
                        break
                    continue
                mrem = mk.remaining
                f = rem if mrem > rem else mrem
                if cap is not None and f > afford:
                    f = afford
                notional = p * f
                moid = mk.order_id
                muid = mk.user_id
                tid += 1
                append(Trade(sym, seq + 1, ts, tid, p, f, tside, moid, toid, muid, uid))
                seq += 2
                mrem -= f
                mk.remaining = mrem
                mexq = mk.executed_qty + f
                mk.executed_qty = mexq
                mquote = mk.executed_quote + notional
                mk.executed_quote = mquote
                lv.total -= f
                rem -= f
                exq += f
                exquote += notional
                last_p = p
                if mrem == 0:
                    q.popleft()
                    mk.live = False
                    lv.count -= 1
                    del m.orders[moid]
                    if mk.client_id is not None:
                        _drop_client_id(m, mk)
                    append(OrderUpdate(sym, seq, ts, moid, muid, FILLED, 0, mexq, mquote))
                else:
                    append(
                        OrderUpdate(sym, seq, ts, moid, muid, PARTIALLY_FILLED, mrem, mexq, mquote)
                    )
                if cap is not None:
                    spent += notional
                    afford -= f
                    if afford == 0:
                        if spent == cap:
                            # Nothing is left to spend at any price.
                            reason = R_QUOTE_CAP
                        # Else the outer loop re-checks: a deeper level may still fit
                        # (cheaper bids, for a sell).
                        break
                if rem == 0 or lv.count == 0:
                    break
            if lv.count == 0:
                okeys.pop()
                del levels[p]
            if reason is not None or rem == 0:
                break
        o.remaining = rem
        o.executed_qty = exq
        o.executed_quote = exquote
        m.seq = seq
        m.trade_id = tid
        if last_p:
            m.reference_price = last_p
        return reason

    def _fok_fillable(
        self, m: Market, o: Order, opp: BookSide, limit_key: int, cap: int | None
    ) -> bool:
        """Whether the sweep would fill ``o`` completely; mirrors ``_sweep`` without
        changing anything."""
        need = o.remaining
        uid = o.user_id
        stp = o.stp
        ref = m.reference_price
        bandref = m.band_bps * ref
        spent = 0
        for key in reversed(opp.keys):
            if key < limit_key:
                return False
            p = key * opp.sign
            if bandref and abs(p - ref) * 10000 > bandref:
                return False
            for mk in opp.levels[p].queue:
                if not mk.live:
                    continue
                if mk.user_id == uid:
                    if stp == REJECT_MAKER:
                        continue
                    return False
                f = min(need, mk.remaining)
                if cap is not None:
                    if f * p > cap - spent:
                        return False
                    spent += f * p
                need -= f
                if need == 0:
                    return True
        return False

    def _rest(self, m: Market, o: Order) -> None:
        """Append ``o`` at the back of its level and index it."""
        book = m.bids if o.side == BID else m.asks
        p = o.price
        lv = book.levels.get(p)
        if lv is None:
            lv = Level(p)
            book.levels[p] = lv
            keys = book.keys
            k = p * book.sign
            # Most new levels open at or near the top; append avoids insort's memmove.
            if not keys or k > keys[-1]:
                keys.append(k)
            else:
                insort(keys, k)
        lv.queue.append(o)
        lv.total += o.remaining
        lv.count += 1
        m.orders[o.order_id] = o
        if o.client_id is not None:
            m.client_ids[(o.user_id, o.client_id)] = o
        self._touched[p + p + book.bit] = None

    def _unlink(self, m: Market, o: Order) -> None:
        """Take a live resting order out of the book and the indexes (no event)."""
        book = m.bids if o.side == BID else m.asks
        p = o.price
        lv = book.levels[p]
        o.live = False
        lv.total -= o.remaining
        n = lv.count - 1
        lv.count = n
        if n == 0:
            del book.levels[p]
            keys = book.keys
            k = p * book.sign
            if keys[-1] == k:
                keys.pop()
            else:
                del keys[bisect_left(keys, k)]
        elif len(lv.queue) > n + n + 8:
            lv.queue = deque([x for x in lv.queue if x.live])
        del m.orders[o.order_id]
        if o.client_id is not None:
            ck = (o.user_id, o.client_id)
            if m.client_ids.get(ck) is o:
                del m.client_ids[ck]
        self._touched[p + p + book.bit] = None

    def _flush(self, m: Market, ev: list[Event], ts: int) -> None:
        """Emit one BookLevel per touched level, then BestBidAsk if the top changed."""
        touched = self._touched
        if not touched:
            return
        sym = m.symbol
        seq = m.seq
        buid = m.book_update_id
        bids = m.bids
        asks = m.asks
        bl = bids.levels
        al = asks.levels
        append = ev.append
        for k in touched:
            p = k >> 1
            seq += 1
            buid += 1
            if k & 1:
                lv = al.get(p)
                append(BookLevel(sym, seq, ts, ASK, p, 0 if lv is None else lv.total, buid))
            else:
                lv = bl.get(p)
                append(BookLevel(sym, seq, ts, BID, p, 0 if lv is None else lv.total, buid))
        touched.clear()
        m.seq = _emit_top(m, ev, ts, seq, buid)
        m.book_update_id = buid

    def _cancel(self, c: CancelOrder) -> list[Event]:
        sym = c.symbol
        ts = c.ts
        m = self._markets.get(sym)
        if m is None:
            return [OrderRejected(sym, 0, ts, c.order_id, c.user_id, REQ_CANCEL, R_UNKNOWN_MARKET)]
        if m.status == CLOSED:
            return self._reject(m, ts, c.order_id, c.user_id, REQ_CANCEL, R_MARKET_CLOSED)
        oid = c.order_id
        if oid is not None:
            o = m.orders.get(oid)
        elif c.client_id is not None:
            o = m.client_ids.get((c.user_id, c.client_id))
        else:
            o = None
        if o is None or o.user_id != c.user_id:
            return self._reject(m, ts, oid, c.user_id, REQ_CANCEL, R_UNKNOWN_ORDER)
        # _unlink and _flush inlined: a cancel touches exactly one level, and this is
        # the second most frequent command.
        if o.side == BID:
            book = m.bids
            side = BID
        else:
            book = m.asks
            side = ASK
        p = o.price
        levels = book.levels
        lv = levels[p]
        o.live = False
        orem = o.remaining
        total = lv.total - orem
        lv.total = total
        n = lv.count - 1
        lv.count = n
        keys = book.keys
        k = p * book.sign
        if n == 0:
            del levels[p]
            if keys[-1] == k:
                keys.pop()
            else:
                del keys[bisect_left(keys, k)]
        elif len(lv.queue) > n + n + 8:
            lv.queue = deque([x for x in lv.queue if x.live])
        del m.orders[o.order_id]
        if o.client_id is not None:
            ck = (o.user_id, o.client_id)
            if m.client_ids.get(ck) is o:
                del m.client_ids[ck]
        seq = m.seq + 2
        buid = m.book_update_id + 1
        m.book_update_id = buid
        ev: list[Event] = [
            OrderCancelled(
                sym, seq - 1, ts, o.order_id, o.user_id, CANCELLED, orem, o.executed_qty,
                o.executed_quote, R_USER,
            ),
            BookLevel(sym, seq, ts, side, p, total, buid),
        ]
        # The top changed only if the cancelled order's level was the best.
        if not keys or k >= keys[-1]:
            seq = _emit_top(m, ev, ts, seq, buid)
        m.seq = seq
        return ev

    def _cancel_all(self, c: CancelAll) -> list[Event]:
        ts = c.ts
        uid = c.user_id
        if c.symbol is None:
            markets = [
                self._markets[s] for s in sorted(self._markets) if self._markets[s].status != CLOSED
            ]
        else:
            one = self._markets.get(c.symbol)
            if one is None:
                return [OrderRejected(c.symbol, 0, ts, None, uid, REQ_CANCEL_ALL, R_UNKNOWN_MARKET)]
            if one.status == CLOSED:
                return self._reject(one, ts, None, uid, REQ_CANCEL_ALL, R_MARKET_CLOSED)
            markets = [one]
        ev: list[Event] = []
        for m in markets:
            # Sorted by id, not by index order, so a restored engine cancels in the
            # same order as the original.
            mine = sorted(
                (o for o in m.orders.values() if o.user_id == uid), key=lambda o: o.order_id
            )
            for o in mine:
                self._unlink(m, o)
                m.seq += 1
                ev.append(
                    OrderCancelled(
                        m.symbol, m.seq, ts, o.order_id, uid, CANCELLED, o.remaining,
                        o.executed_qty, o.executed_quote, R_CANCEL_ALL,
                    )
                )
            # Touched levels carry no market, so flush before the next market.
            self._flush(m, ev, ts)
        return ev

    def _amend(self, c: AmendOrder) -> list[Event]:
        sym = c.symbol
        ts = c.ts
        uid = c.user_id
        oid = c.order_id
        m = self._markets.get(sym)
        if m is None:
            return [OrderRejected(sym, 0, ts, oid, uid, REQ_AMEND, R_UNKNOWN_MARKET)]
        status = m.status
        if status == CLOSED:
            return self._reject(m, ts, oid, uid, REQ_AMEND, R_MARKET_CLOSED)
        o = m.orders.get(oid)
        if o is None or o.user_id != uid:
            return self._reject(m, ts, oid, uid, REQ_AMEND, R_UNKNOWN_ORDER)
        assert o.quantity is not None  # resting orders always have a quantity
        new_price = o.price if c.new_price is None else c.new_price
        new_qty = o.quantity if c.new_quantity is None else c.new_quantity
        if new_price <= 0 or new_qty <= 0:
            return self._reject(m, ts, oid, uid, REQ_AMEND, R_INVALID)
        new_rem = new_qty - o.executed_qty
        ev: list[Event]
        if new_rem <= 0:
            self._unlink(m, o)
            m.seq += 1
            ev = [
                OrderCancelled(
                    sym, m.seq, ts, oid, uid, CANCELLED, o.remaining, o.executed_qty,
                    o.executed_quote, R_AMEND,
                )
            ]
            self._flush(m, ev, ts)
            return ev
        if new_price == o.price and new_rem <= o.remaining:
            if new_rem == o.remaining:
                return self._reject(m, ts, oid, uid, REQ_AMEND, R_NO_CHANGE)
            book = m.bids if o.side == BID else m.asks
            p = o.price
            lv = book.levels[p]
            lv.total -= o.remaining - new_rem
            o.remaining = new_rem
            o.quantity = new_qty
            # One level touched: emitted directly rather than through _flush.
            seq = m.seq + 2
            buid = m.book_update_id + 1
            m.book_update_id = buid
            ev = [
                OrderAmended(sym, seq - 1, ts, oid, uid, p, new_qty, new_rem, False),
                BookLevel(sym, seq, ts, o.side, p, lv.total, buid),
            ]
            if p * book.sign == book.keys[-1]:  # only the best level moves the top
                seq = _emit_top(m, ev, ts, seq, buid)
            m.seq = seq
            return ev
        if status == CANCEL_ONLY:
            return self._reject(m, ts, oid, uid, REQ_AMEND, R_CANCEL_ONLY)
        opp = m.asks if o.side == BID else m.bids
        if (
            (o.post_only or status == POST_ONLY)
            and opp.keys
            and opp.keys[-1] >= new_price * opp.sign
        ):
            return self._reject(m, ts, oid, uid, REQ_AMEND, R_POST_ONLY)
        self._unlink(m, o)
        n = Order(
            oid,
            uid,
            o.side,
            new_price,
            new_qty,
            new_rem,
            o.executed_qty,
            o.executed_quote,
            o.stp,
            o.post_only,
            o.client_id,
        )
        m.seq += 1
        ev = [OrderAmended(sym, m.seq, ts, oid, uid, new_price, new_qty, new_rem, True)]
        self._execute(m, n, False, GTC, None, ev, ts)
        return ev


def _side_depth(book: BookSide, levels: int | None) -> list[tuple[int, int]]:
    keys = book.keys
    n = len(keys) if levels is None else min(levels, len(keys))
    lv = book.levels
    sign = book.sign
    return [(keys[-1 - i] * sign, lv[keys[-1 - i] * sign].total) for i in range(n)]


def _drop_client_id(m: Market, o: Order) -> None:
    """Forget ``o``'s client id unless a later live order of the user reused it."""
    cid = o.client_id
    if cid is not None and m.client_ids.get((o.user_id, cid)) is o:
        del m.client_ids[(o.user_id, cid)]


def _emit_top(m: Market, ev: list[Event], ts: int, seq: int, buid: int) -> int:
    """Append BestBidAsk if the top of book differs from the last one sent; return the
    market's last event sequence. Runs once per book-changing command."""
    bids = m.bids
    asks = m.asks
    bk = bids.keys
    ak = asks.keys
    if bk:
        bp: int | None = bk[-1]
        bq = bids.levels[bk[-1]].total
    else:
        bp = None
        bq = 0
    if ak:
        ap: int | None = -ak[-1]
        aq = asks.levels[-ak[-1]].total
    else:
        ap = None
        aq = 0
    top = (bp, bq, ap, aq)
    if top != m.bba:
        m.bba = top
        seq += 1
        ev.append(BestBidAsk(m.symbol, seq, ts, bp, bq, ap, aq, buid))
    return seq
