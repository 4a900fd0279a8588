"""In-memory order book structures.

One ``BookSide`` per side of a market:

- ``levels``: price -> ``Level``; a level holds a FIFO ``deque`` of ``Order`` objects
  (time priority) and its running ``total`` of remaining lots.
- ``keys``: the sorted list of level keys, kept with ``bisect``. The key is ``price``
  for bids and ``-price`` for asks, so on BOTH sides the best level is ``keys[-1]``:
  the level that is consumed most often is removed with an O(1) ``pop()`` and the
  memmove of a list insert/delete happens away from the hot end.

Cancel is O(1) plus the level bookkeeping: the market's ``orders`` index finds the
order, which is marked dead (``live = False``) and left in its deque; ``total`` and
``count`` are corrected at once so depth is always exact. Dead orders are dropped when
they reach the head of the queue during matching, or when the queue holds more than
twice as many entries as live orders (compaction keeps memory bounded for deep levels
that are never traded through). A level is deleted as soon as its live ``count`` is 0.
"""

from collections import deque

from .types import BID, CLOSED, OPEN


class Order:
    """A resting (or in-flight taker) order. ``quantity`` is None only for a market
    order by quote amount, which never rests."""

    __slots__ = (
        "order_id",
        "user_id",
        "side",
        "price",
        "quantity",
        "remaining",
        "executed_qty",
        "executed_quote",
        "stp",
        "post_only",
        "client_id",
        "live",
    )

    def __init__(
        self,
        order_id: int,
        user_id: int,
        side: str,
        price: int,
        quantity: int | None,
        remaining: int,
        executed_qty: int,
        executed_quote: int,
        stp: str,
        post_only: bool,
        client_id: int | None,
    ) -> None:
        self.order_id = order_id
        self.user_id = user_id
        self.side = side
        self.price = price
        self.quantity = quantity
        self.remaining = remaining
        self.executed_qty = executed_qty
        self.executed_quote = executed_quote
        self.stp = stp
        self.post_only = post_only
        self.client_id = client_id
        self.live = True


class Level:
    __slots__ = ("price", "total", "count", "queue")

    def __init__(self, price: int) -> None:
        self.price = price
        self.total = 0
        self.count = 0
        self.queue: deque[Order] = deque()


class BookSide:
    __slots__ = ("side", "bit", "sign", "levels", "keys")

    def __init__(self, side: str) -> None:
        self.side = side
        # bit identifies the side inside the per-command "touched levels" key.
        self.bit = 0 if side == BID else 1
        self.sign = 1 if side == BID else -1
        self.levels: dict[int, Level] = {}
        self.keys: list[int] = []


class Market:
    """A market's configuration, counters and two book sides.

    Counters hold the LAST value used. ``reference_price`` is the band reference: the
    last trade price, or the staff-set value until a trade replaces it (0 = none).
    ``bba`` is the last BestBidAsk published, so that one is sent only on change; it
    always equals the current top between commands, hence it is recomputed rather than
    stored in snapshots.
    """

    __slots__ = (
        "symbol",
        "status",
        "maker_fee_ppm",
        "taker_fee_ppm",
        "band_bps",
        "reference_price",
        "trade_id",
        "seq",
        "book_update_id",
        "bids",
        "asks",
        "orders",
        "client_ids",
        "bba",
    )

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.status: str = OPEN
        self.maker_fee_ppm = 0
        self.taker_fee_ppm = 0
        self.band_bps = 0
        self.reference_price = 0
        self.trade_id = 0
        self.seq = 0
        self.book_update_id = 0
        self.bids = BookSide(BID)
        self.asks = BookSide("Ask")
        self.orders: dict[int, Order] = {}
        self.client_ids: dict[tuple[int, int], Order] = {}
        self.bba: tuple[int | None, int, int | None, int] = (None, 0, None, 0)

    def top(self) -> tuple[int | None, int, int | None, int]:
        bk = self.bids.keys
        ak = self.asks.keys
        if bk:
            bp: int | None = bk[-1]
            bq = self.bids.levels[bk[-1]].total
        else:
            bp, bq = None, 0
        if ak:
            ap: int | None = -ak[-1]
            aq = self.asks.levels[-ak[-1]].total
        else:
            ap, aq = None, 0
        return (bp, bq, ap, aq)

    @property
    def accepts_cancels(self) -> bool:
        return self.status != CLOSED
