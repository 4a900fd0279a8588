"""Events: the only output of the engine.

Every event carries the market ``symbol``, that market's event sequence ``seq``
(+1 per event, contiguous per market, so the DB processor can apply a batch exactly
once and detect gaps) and the ``ts`` of the command that produced it. The one
exception is a rejection for an unknown market: there is no market counter to stamp,
so its ``seq`` is 0 and it sits outside every sequence.

Order-state events: every change of an order's state is exactly ONE of
``OrderUpdate`` (New/PartiallyFilled/Filled), ``OrderCancelled`` or ``OrderExpired``,
and all three carry the full state (``status``, ``remaining``, ``executed_qty``,
``executed_quote``), so a consumer can treat them alike. ``OrderAccepted`` implies
status New with the whole quantity remaining, hence a limit order that rests without
trading gets no OrderUpdate.

Order of events within one command (deterministic):
  1. OrderAccepted / OrderAmended / OrderRejected / OrderCancelled (the command itself)
  2. per fill: Trade, then the maker's OrderUpdate; a maker removed by self-trade
     prevention gets its OrderExpired at the point of the sweep where it was met
  3. the taker's final OrderUpdate / OrderExpired (none if it rests untouched)
  4. one BookLevel per price level touched by the command, in first-touch order,
     with the level's final total (coalesced: a level changed twice is sent once)
  5. BestBidAsk if the top of book differs from the last one sent.

Events are mutable slotted dataclasses rather than frozen ones: frozen dataclasses
set fields through ``object.__setattr__``, which roughly doubles construction time on
the hot path. Treat them as read-only.

Prices are ticks, quantities lots, quote amounts tick*lot units.
"""

from dataclasses import dataclass


@dataclass(slots=True)
class OrderAccepted:
    symbol: str
    seq: int
    ts: int
    order_id: int
    user_id: int
    side: str
    order_type: str
    price: int  # 0 for a market order
    quantity: int | None  # None for a market order by quote amount
    client_id: int | None


@dataclass(slots=True)
class OrderRejected:
    """A refused command. ``request`` is place/cancel/cancel_all/amend; for a refused
    cancel or amend the order (if any) is unchanged."""

    symbol: str
    seq: int
    ts: int
    order_id: int | None
    user_id: int
    request: str
    reason: str


@dataclass(slots=True)
class Trade:
    symbol: str
    seq: int
    ts: int
    trade_id: int
    price: int
    quantity: int
    taker_side: str
    maker_order_id: int
    taker_order_id: int
    maker_user_id: int
    taker_user_id: int


@dataclass(slots=True)
class OrderUpdate:
    """``remaining`` is 0 once the order is finished (and always 0 for a market order
    by quote amount, which has no quantity)."""

    symbol: str
    seq: int
    ts: int
    order_id: int
    user_id: int
    status: str
    remaining: int
    executed_qty: int
    executed_quote: int


@dataclass(slots=True)
class OrderCancelled:
    """``remaining`` is what was left when cancelled (released by the DB side)."""

    symbol: str
    seq: int
    ts: int
    order_id: int
    user_id: int
    status: str  # always "Cancelled"
    remaining: int
    executed_qty: int
    executed_quote: int
    reason: str


@dataclass(slots=True)
class OrderExpired:
    """``remaining`` is what was left when expired."""

    symbol: str
    seq: int
    ts: int
    order_id: int
    user_id: int
    status: str  # always "Expired"
    remaining: int
    executed_qty: int
    executed_quote: int
    reason: str


@dataclass(slots=True)
class OrderAmended:
    """An accepted amend; ``requeued`` says whether time priority was lost. Trades and
    the final state follow as for a placement when ``requeued``."""

    symbol: str
    seq: int
    ts: int
    order_id: int
    user_id: int
    price: int
    quantity: int
    remaining: int
    requeued: bool


@dataclass(slots=True)
class BookLevel:
    """New total of one price level (0 = level gone). ``book_update_id`` is the
    market's depth counter, +1 per BookLevel, separate from ``seq``."""

    symbol: str
    seq: int
    ts: int
    side: str
    price: int
    quantity: int
    book_update_id: int


@dataclass(slots=True)
class BestBidAsk:
    """Top of book after the command; a missing side has price None and qty 0."""

    symbol: str
    seq: int
    ts: int
    bid_price: int | None
    bid_qty: int
    ask_price: int | None
    ask_qty: int
    book_update_id: int


Event = (
    OrderAccepted
    | OrderRejected
    | Trade
    | OrderUpdate
    | OrderCancelled
    | OrderExpired
    | OrderAmended
    | BookLevel
    | BestBidAsk
)
