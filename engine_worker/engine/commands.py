"""Commands: the only input of the engine.

Every command carries ``ts`` (microseconds since the epoch, set by whoever enqueued
it) because the core never reads a clock: replaying the same commands must give the
same events, byte for byte. Commands are keyword-only so a queue decoder cannot
silently swap two integer fields.
"""

from dataclasses import dataclass

from .types import (
    GTC,
    OPEN,
    REJECT_TAKER,
    MarketStatus,
    OrderType,
    SelfTradePrevention,
    Side,
    TimeInForce,
)


@dataclass(slots=True, kw_only=True)
class AddMarket:
    """Create a market. Ignored (no events) if ``symbol`` already exists, which is what
    makes tick and lot sizes fixed once a market exists: they live outside the engine.

    The three counters are the LAST values already used (0 for a new market), so an
    engine rebuilt from the database continues them: the next trade gets
    ``trade_id + 1`` and so on. ``reference_price`` 0 means none; ``band_bps`` 0 means
    no band. Fees are stored only (the database side computes fees).
    """

    symbol: str
    ts: int
    status: MarketStatus = OPEN
    maker_fee_ppm: int = 0
    taker_fee_ppm: int = 0
    band_bps: int = 0
    reference_price: int = 0
    trade_id: int = 0
    event_seq: int = 0
    book_update_id: int = 0


@dataclass(slots=True, kw_only=True)
class UpdateMarket:
    """Change a market's configuration; ``None`` leaves a field unchanged. Ignored for an
    unknown symbol. A ``reference_price`` given here is the band reference until the
    next trade replaces it (staff re-anchor a market this way after a halt)."""

    symbol: str
    ts: int
    status: MarketStatus | None = None
    maker_fee_ppm: int | None = None
    taker_fee_ppm: int | None = None
    band_bps: int | None = None
    reference_price: int | None = None


@dataclass(slots=True, kw_only=True)
class PlaceOrder:
    """A new order.

    - LIMIT: ``price`` > 0 and ``quantity`` > 0 required; ``quote_cap`` must be None.
    - MARKET: ``price`` ignored. Either ``quantity`` > 0 (with an optional
      ``quote_cap``: the order stops before the sum of price*qty would exceed it) or
      ``quantity`` None and ``quote_cap`` > 0 (spend at most that much quote, whole
      lots only, rounded down at each level).
    - ``post_only`` only with LIMIT GTC.
    - ``order_id`` is globally unique; an id the engine already knows (including a
      finished or rejected one) makes the command a no-op.
    """

    order_id: int
    user_id: int
    symbol: str
    side: Side
    order_type: OrderType
    price: int
    quantity: int | None
    ts: int
    quote_cap: int | None = None
    time_in_force: TimeInForce = GTC
    post_only: bool = False
    self_trade_prevention: SelfTradePrevention = REJECT_TAKER
    client_id: int | None = None


@dataclass(slots=True, kw_only=True)
class CancelOrder:
    """Cancel one live order of ``user_id`` by ``order_id`` or, if that is None, by
    ``client_id``."""

    symbol: str
    user_id: int
    ts: int
    order_id: int | None = None
    client_id: int | None = None


@dataclass(slots=True, kw_only=True)
class CancelAll:
    """Cancel every live order of ``user_id`` in ``symbol``, or in every market that is
    not Closed when ``symbol`` is None."""

    user_id: int
    ts: int
    symbol: str | None = None


@dataclass(slots=True, kw_only=True)
class AmendOrder:
    """Change a live order's price and/or TOTAL quantity (``None`` = unchanged).

    The new remaining is ``new_quantity - executed``; if that is <= 0 the order is
    cancelled (reason ``amend``). A pure quantity decrease keeps time priority. A price
    change or a quantity increase is handled like a new placement of the same order id
    at the back of the new level: it may trade if it now crosses (keeping its
    self-trade mode, the band applies, the remainder rests). An amend that would cross
    is rejected (order unchanged) if the order is post-only or the market is PostOnly.
    """

    symbol: str
    user_id: int
    order_id: int
    ts: int
    new_price: int | None = None
    new_quantity: int | None = None


Command = AddMarket | UpdateMarket | PlaceOrder | CancelOrder | CancelAll | AmendOrder
