"""Applying engine events to the database: the DB processor's one service.

ARCHITECTURE.md "The flow of one order" step 4 and "Money". One call applies any number of
engine batches in ONE transaction, set-based: the involved orders are read once under a
row lock, changed in Python and written back with one statement; trades and fills go in
with COPY; every balance change goes through one `ledger_post`.

Money is counted in integers while walking the events (lots, tick*lot units, the quote
asset's smallest unit; each fill's fee floored exactly as `trading.money.fee` does) and
turned into decimals once per order, per ledger line and per COPY value. Trades post ONE
ledger entry per (user, asset, reason) per market per call, referenced
`trade:<symbol>:<first>-<last>` (the trade ids settled); the fills keep the per-trade
detail, and each balance still equals the sum of its entries. Releases stay per order
(`order:<id>`).

Exactly once: the `MarketState` row of every market in the batches is locked first (which
also serialises two processors, should two ever run), and an event is applied only if its
`seq` is the market's `last_event_seq + 1`. Older events were applied by an earlier call
and are skipped; a newer one means the transport lost a batch (a gap): that market's
events are dropped from here on, up to the batch's engine `epoch`, and the caller asks the
engine to rebuild the market from the database.

Lock order: market states, then orders, then balances (inside `ledger_post`). Order entry
locks balances only and cancels lock one order only, so no cycle is possible.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import ZERO, LedgerEntry, User
from accounts.services import LedgerChange, house_user, ledger_post
from engine_worker.engine.types import REQ_CANCEL, REQ_PLACE
from exchange_site.db.arrays import array_literal, array_literal_quoted
from marketdata.candles import CandleBucket, candles_apply_minutes
from trading.models import Market, MarketState, Order

logger = logging.getLogger(__name__)

Reason = LedgerEntry.Reason
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FINISHED = frozenset((Order.Status.FILLED, Order.Status.CANCELLED, Order.Status.EXPIRED))
_OPEN = frozenset(Order.OPEN_STATUSES)


def ts_datetime(ts_us: int) -> datetime:
    """An engine timestamp (µs since the epoch) as an aware UTC datetime, exactly."""
    return _EPOCH + timedelta(microseconds=ts_us)


@dataclass(slots=True)
class SettlementResult:
    """What one `settlement_apply` call did; the worker logs it and acts on `gaps`."""

    applied: int = 0  # events applied now
    duplicates: int = 0  # events skipped: applied by an earlier call
    dropped: int = 0  # events skipped: their market has a gap (or is unknown here)
    trades: int = 0
    # symbol -> epoch: markets where a gap was found now; drop their events up to that
    # epoch and ask the engine to rebuild them.
    gaps: dict[str, int] = field(default_factory=dict)
    balance_keys: set[tuple[int, int]] = field(default_factory=set)  # (user_id, asset_id) changed
    last_ts: int = 0  # newest event ts seen (µs), for the lag


@dataclass(slots=True)
class _MarketInfo:
    market_id: int
    symbol: str
    tick: Decimal
    lot: Decimal
    unit: Decimal
    base_id: int
    quote_id: int
    quote_places: int
    # The MarketState row, changed in memory and written back once.
    last_event_seq: int
    last_trade_id: int
    last_book_update_id: int
    last_price: Decimal | None
    changed: bool = False
    # Integer arithmetic for the hot path: a quote amount in the quote asset's smallest unit
    # ("minor") is units * unit_minor; fees are floor(minor * rate).
    unit_minor: int = 0
    last_price_ticks: int | None = None
    price_str: dict[int, str] = field(default_factory=dict)  # ticks -> decimal text, for COPY
    qty_str: dict[int, str] = field(default_factory=dict)  # lots -> decimal text
    # (user, asset, reason) -> [available, locked] in lots (base) or minor units (quote),
    # one ledger entry each per transaction; the fills keep the per-trade detail.
    ledger: dict[tuple[int, int, str], list[int]] = field(default_factory=dict)
    house_fee: int = 0
    first_trade_id: int = 0

    def price(self, ticks: int) -> str:
        text = self.price_str.get(ticks)
        if text is None:
            text = self.price_str[ticks] = str(ticks * self.tick)
        return text

    def qty(self, lots: int) -> str:
        text = self.qty_str.get(lots)
        if text is None:
            text = self.qty_str[lots] = str(lots * self.lot)
        return text

    def minor(self, amount: int) -> str:
        return _minor_text(amount, self.quote_places)

    def quote_dec(self, amount: int) -> Decimal:
        return Decimal(amount).scaleb(-self.quote_places)


def _minor_text(amount: int, places: int) -> str:
    """An integer count of 10**-places as decimal text ("1234", 2 -> "12.34")."""
    if places <= 0:
        return str(amount)
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**places)
    return f"{sign}{whole}.{frac:0{places}d}"


_RATES: dict[Decimal, tuple[int, int]] = {}


def _ratio(rate: Decimal) -> tuple[int, int]:
    ratio = _RATES.get(rate)
    if ratio is None:
        ratio = _RATES[rate] = rate.as_integer_ratio()
    return ratio


_TS_TEXT: dict[int, str] = {}


def _ts_text(ts_us: int) -> str:
    # Many events share a command's ts (and a backlog's pushes share theirs): cache the text.
    text = _TS_TEXT.get(ts_us)
    if text is None:
        if len(_TS_TEXT) > 100_000:
            _TS_TEXT.clear()
        text = _TS_TEXT[ts_us] = ts_datetime(ts_us).isoformat()
    return text


@dataclass(slots=True)
class _Rows:
    """Everything one call writes, gathered while walking the events."""

    trades: list[str] = field(default_factory=list)  # COPY text lines
    fills: list[str] = field(default_factory=list)  # COPY text lines
    ledger: list[LedgerChange] = field(default_factory=list)  # releases (per order)
    orders: dict[int, _OrderRow] = field(default_factory=dict)  # changed orders by id
    minutes: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # (market, minute) -> 1m candle


# --- reading and locking --------------------------------------------------------------------


def _lock_market_states(symbols: Iterable[str]) -> dict[str, _MarketInfo]:
    """Lock (creating at zero where missing) the MarketState of each known market symbol."""
    wanted = sorted(set(symbols))
    if not wanted:
        return {}
    with connection.cursor() as cursor:
        # ON CONFLICT DO NOTHING: a row created concurrently is then waited for and locked below.
        cursor.execute(
            """
            INSERT INTO trading_marketstate
                (market_id, last_event_seq, last_trade_id, last_book_update_id, last_price, updated_at)
            SELECT id, 0, 0, 0, NULL, now() FROM trading_market WHERE symbol = ANY(%s)
            ON CONFLICT (market_id) DO NOTHING
            """,
            [wanted],
        )
    states = (
        MarketState.objects.select_for_update(of=("self",))
        .select_related("market__quote")
        .filter(market__symbol__in=wanted)
        .order_by("market_id")
    )
    return {state.market.symbol: _market_info(state.market, state) for state in states}


def _market_info(market: Market, state: MarketState | None) -> _MarketInfo:
    unit = market.tick_size * market.lot_size
    places = market.quote.precision
    return _MarketInfo(
        market_id=market.pk, symbol=market.symbol, tick=market.tick_size, lot=market.lot_size,
        unit=unit, base_id=market.base_id, quote_id=market.quote_id,
        quote_places=places,
        last_event_seq=state.last_event_seq if state else 0, last_trade_id=state.last_trade_id if state else 0,
        last_book_update_id=state.last_book_update_id if state else 0, last_price=state.last_price if state else None,
        # tick * lot is a whole number of the quote's smallest unit (ARCHITECTURE.md "Money").
        unit_minor=int(unit.scaleb(places)),
    )


@dataclass(slots=True)
class _OrderRow:
    """The columns of a locked order the settlement reads and writes (named as on Order)."""

    pk: int
    user_id: int
    market_id: int
    side: str
    status: str
    executed_quantity: Decimal
    executed_quote_quantity: Decimal
    fee_paid: Decimal
    locked: Decimal
    maker_fee_rate: Decimal
    taker_fee_rate: Decimal
    cancel_requested_at: datetime | None
    accepted_seq: int | None
    reason: str
    # Changes made by this call's trades, in integers, turned into decimals once at write time.
    d_lots: int = 0  # executed quantity, lots
    d_units: int = 0  # executed quote, tick*lot units
    d_fee: int = 0  # fees, quote minor units
    d_lock: int = 0  # locked spent: quote minor units (bid) or lots (ask)

    def executed_lots(self, info: _MarketInfo) -> tuple[int, int]:
        return (
            int(self.executed_quantity / info.lot) + self.d_lots,
            int(self.executed_quote_quantity / info.unit) + self.d_units,
        )

    def settle(self, info: _MarketInfo) -> None:
        """Fold the integer changes into the decimal columns."""
        if self.d_lots:
            self.executed_quantity += self.d_lots * info.lot
            self.executed_quote_quantity += self.d_units * info.unit
            self.d_lots = self.d_units = 0
        if self.d_fee:
            self.fee_paid += info.quote_dec(self.d_fee)
            self.d_fee = 0
        if self.d_lock:
            self.locked -= info.quote_dec(self.d_lock) if self.side == Order.Side.BID else self.d_lock * info.lot
            self.d_lock = 0


_ORDER_COLUMNS = (
    "id, user_id, market_id, side, status, executed_quantity, executed_quote_quantity, fee_paid, locked,"
    " maker_fee_rate, taker_fee_rate, cancel_requested_at, accepted_seq, reason"
)


def _lock_orders(order_ids: Iterable[int]) -> dict[int, _OrderRow]:
    ids = sorted(set(order_ids))
    if not ids:
        return {}
    # `= ANY(array)`: one parameter however many orders (an IN list grows the statement).
    # Plain rows, not model instances: a batch locks thousands of orders, and Model.__init__
    # (with its signals) cost more than the query.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_ORDER_COLUMNS} FROM trading_order WHERE id = ANY(%s::bigint[]) ORDER BY id FOR UPDATE", [ids]
        )
        return {row[0]: _OrderRow(*row) for row in cursor.fetchall()}


# Encoded events (`engine_worker.codec`): [kind, symbol, seq, ts, fields in dataclass order].
# The settlement reads them as lists: building the dataclasses cost more than applying them.
_ORDER_ID_AT = {"A": 4, "U": 4, "C": 4, "X": 4, "R": 4}
_STATE_KINDS = frozenset("UCX")


# --- the service ----------------------------------------------------------------------------


# savepoint=False: the worker wraps this in its own atomic block (to fail at
# "db.before_commit" inside the transaction); a savepoint would only add two statements
# per batch, and on any error the whole transaction is rolled back anyway.
@transaction.atomic(savepoint=False)
def settlement_apply(
    *, batches: Sequence[Mapping[str, Any]], dropped_epochs: Mapping[str, int] | None = None
) -> SettlementResult:
    """Apply engine batches (`{"epoch": int, "events": [encoded event, ...]}`, in queue order).

    `dropped_epochs` (symbol -> epoch) are markets whose events of that epoch or older are
    dropped unapplied (a gap was found earlier; the engine is rebuilding them). A batch
    applied twice changes nothing. Gaps found now are in the result's `gaps`; the caller
    records them and asks the engine to rebuild after commit.
    """
    result = SettlementResult()
    symbols: set[str] = set()
    order_ids: set[int] = set()
    last_ts = 0
    for batch in batches:
        for row in batch["events"]:
            kind = row[0]
            symbols.add(row[1])
            if kind == "T":
                order_ids.add(row[8])
                order_ids.add(row[9])
            elif kind in _ORDER_ID_AT and row[4] is not None:
                order_ids.add(row[4])
            if row[3] > last_ts:
                last_ts = row[3]
    result.last_ts = last_ts
    if not symbols:
        return result

    markets = _lock_market_states(symbols)
    orders = _lock_orders(order_ids)
    markets_by_id = {info.market_id: info for info in markets.values()}
    missing_markets = {o.market_id for o in orders.values()} - markets_by_id.keys()
    if missing_markets:
        # Only orders rejected for a market the engine does not know (seq 0) get here.
        for market in Market.objects.select_related("quote").filter(pk__in=missing_markets):
            markets_by_id[market.pk] = _market_info(market, None)

    rows = _Rows()
    drop = dict(dropped_epochs or {})
    for batch in batches:
        epoch = int(batch["epoch"])
        for row in batch["events"]:
            seq = row[2]
            if seq == 0:
                # Outside every sequence (a rejection for a market unknown to the engine):
                # applying it is idempotent by itself (it only finishes a Pending order).
                if row[0] == "R":
                    _apply_rejected(row, orders, markets_by_id, rows)
                result.applied += 1
                continue
            symbol = row[1]
            info = markets.get(symbol)
            if info is None:
                logger.error("event for unknown market %s dropped: %r", symbol, row)
                result.dropped += 1
                continue
            if epoch <= drop.get(symbol, -1):
                result.dropped += 1
                continue
            if seq <= info.last_event_seq:
                result.duplicates += 1
                continue
            if seq != info.last_event_seq + 1:
                logger.error(
                    "gap in %s: expected seq %d, got %d (epoch %d); dropping its events and asking for a rebuild",
                    symbol, info.last_event_seq + 1, seq, epoch,
                )
                drop[symbol] = epoch
                result.gaps[symbol] = epoch
                result.dropped += 1
                continue
            info.last_event_seq = seq
            info.changed = True
            result.applied += 1
            _apply_event(row, info, orders, rows, result)

    _write(rows, markets, result)
    return result


def _apply_event(
    row: list[Any], info: _MarketInfo, orders: dict[int, _OrderRow], rows: _Rows, result: SettlementResult
) -> None:
    kind = row[0]
    if kind == "T":
        _apply_trade(row, info, orders, rows)
        result.trades += 1
    elif kind == "L":
        if row[7] > info.last_book_update_id:
            info.last_book_update_id = row[7]
    elif kind == "B":
        if row[8] > info.last_book_update_id:
            info.last_book_update_id = row[8]
    elif kind in _STATE_KINDS:
        _apply_order_state(row, info, orders, rows)
    elif kind == "A":
        order = orders.get(row[4])
        if order is None:
            logger.error("%s: accepted order %d is not in the database", info.symbol, row[4])
            return
        if order.status == Order.Status.PENDING:
            order.status = Order.Status.NEW
        order.accepted_seq = row[2]
        rows.orders[order.pk] = order
    elif kind == "R":
        _apply_rejected(row, orders, {info.market_id: info}, rows)
    elif kind == "M":
        # No API sends amends yet; when one does, settle the new lock here.
        logger.warning("%s: amend of order %d ignored (not supported by the DB side)", info.symbol, row[4])


def _apply_trade(row: list[Any], info: _MarketInfo, orders: dict[int, _OrderRow], rows: _Rows) -> None:
    # [T, symbol, seq, ts, trade_id, price, quantity, taker_side, maker_order_id, taker_order_id, ...]
    _k, _s, _seq, ts, trade_id, ticks, lots, taker_side, maker_id, taker_id = row[:10]
    maker = orders.get(maker_id)
    taker = orders.get(taker_id)
    if maker is None or taker is None:
        logger.error("%s trade %d: order missing from the database, not settled: %r", info.symbol, trade_id, row)
        return
    units = ticks * lots
    notional = units * info.unit_minor  # quote minor units
    # Each fill's fee rounded down (trading.money.fee), exactly, in integers.
    num, den = _ratio(maker.maker_fee_rate)
    maker_fee = notional * num // den
    num, den = _ratio(taker.taker_fee_rate)
    taker_fee = notional * num // den
    buyer_is_maker = taker_side == "Ask"
    if buyer_is_maker:
        buy, sell, buy_fee, sell_fee = maker, taker, maker_fee, taker_fee
    else:
        buy, sell, buy_fee, sell_fee = taker, maker, taker_fee, maker_fee
    when = _ts_text(ts)
    price = info.price(ticks)
    quantity = info.qty(lots)
    quote = info.minor(notional)
    market_id = info.market_id
    rows.trades.append(
        f"{market_id}\t{trade_id}\t{price}\t{quantity}\t{quote}\t{buy.pk}\t{sell.pk}\t{buy.user_id}\t"
        f"{sell.user_id}\t{'t' if buyer_is_maker else 'f'}\t{when}\n"
    )
    rows.fills.append(
        f"{trade_id}\t{market_id}\t{maker.pk}\t{maker.user_id}\t{maker.side}\t{price}\t{quantity}\t{quote}\t"
        f"{info.minor(maker_fee)}\tt\t{when}\n"
        f"{trade_id}\t{market_id}\t{taker.pk}\t{taker.user_id}\t{taker.side}\t{price}\t{quantity}\t{quote}\t"
        f"{info.minor(taker_fee)}\tf\t{when}\n"
    )
    maker.d_lots += lots
    maker.d_units += units
    maker.d_fee += maker_fee
    taker.d_lots += lots
    taker.d_units += units
    taker.d_fee += taker_fee
    rows.orders[maker.pk] = maker
    rows.orders[taker.pk] = taker
    buy.d_lock += notional + buy_fee
    sell.d_lock += lots

    # One ledger entry per (user, asset, reason) for the whole transaction.
    base, quote_id, ledger = info.base_id, info.quote_id, info.ledger
    for key, available, locked in (
        ((buy.user_id, base, Reason.TRADE), lots, 0),
        ((buy.user_id, quote_id, Reason.TRADE), 0, -notional),
        ((sell.user_id, base, Reason.TRADE), 0, -lots),
        ((sell.user_id, quote_id, Reason.TRADE), notional, 0),
        ((buy.user_id, quote_id, Reason.FEE), 0, -buy_fee),
        ((sell.user_id, quote_id, Reason.FEE), -sell_fee, 0),
    ):
        sums = ledger.get(key)
        if sums is None:
            ledger[key] = [available, locked]
        else:
            sums[0] += available
            sums[1] += locked
    info.house_fee += buy_fee + sell_fee
    if not info.first_trade_id:
        info.first_trade_id = trade_id
    info.last_trade_id = trade_id
    info.last_price_ticks = ticks

    # The 1m candle, in integers; rolled up to the other intervals at write time.
    key2 = (market_id, ts // 60_000_000)
    c = rows.minutes.get(key2)
    if c is None:
        rows.minutes[key2] = [ticks, ticks, ticks, ticks, lots, units, 1, trade_id, trade_id]
    else:
        if ticks > c[1]:
            c[1] = ticks
        elif ticks < c[2]:
            c[2] = ticks
        c[3] = ticks
        c[4] += lots
        c[5] += units
        c[6] += 1
        c[8] = trade_id


def _release(order: _OrderRow, info: _MarketInfo, rows: _Rows) -> None:
    """Give back what the finished order still locks: the unspent quote of a bid (better
    prices, an IOC/market remainder, a cancel) or the unsold base of an ask."""
    order.settle(info)
    if order.locked:
        asset = info.quote_id if order.side == Order.Side.BID else info.base_id
        rows.ledger.append(
            LedgerChange(order.user_id, asset, order.locked, -order.locked, Reason.ORDER_RELEASE, f"order:{order.pk}")
        )
        order.locked = ZERO


def _apply_order_state(row: list[Any], info: _MarketInfo, orders: dict[int, _OrderRow], rows: _Rows) -> None:
    # [U|C|X, symbol, seq, ts, order_id, user_id, status, remaining, executed_qty, executed_quote(, reason)]
    order = orders.get(row[4])
    if order is None:
        logger.error("%s: order %d of %r is not in the database", info.symbol, row[4], row)
        return
    status = row[6]
    order.status = status
    if row[0] != "U":
        order.reason = row[10]
    rows.orders[order.pk] = order
    if (row[8], row[9]) != order.executed_lots(info):
        # The fills we settled disagree with the engine: money is at stake, say so loudly.
        lots, units = order.executed_lots(info)
        logger.error(
            "%s order %d: engine says executed %s (quote %s), fills sum to %s (quote %s)",
            info.symbol, order.pk, row[8] * info.lot, row[9] * info.unit, lots * info.lot, units * info.unit,
        )
    if status in _FINISHED:
        _release(order, info, rows)


def _apply_rejected(
    row: list[Any], orders: dict[int, _OrderRow], markets_by_id: Mapping[int, _MarketInfo], rows: _Rows
) -> None:
    # [R, symbol, seq, ts, order_id, user_id, request, reason]
    order_id, request, reason = row[4], row[6], row[7]
    if order_id is None:
        return
    order = orders.get(order_id)
    if order is None:
        return
    if request == REQ_PLACE:
        if order.status != Order.Status.PENDING:
            return
        info = markets_by_id.get(order.market_id)
        if info is None:
            logger.error("order %d rejected (%s) but its market is not loaded", order.pk, reason)
            return
        order.status = Order.Status.EXPIRED
        order.reason = reason
        _release(order, info, rows)
        rows.orders[order.pk] = order
    elif request == REQ_CANCEL:
        # The engine refused the cancel: stop the sweep re-sending it. A Pending order keeps
        # its request: the engine has not seen the order yet (its placement may still be on
        # its way, or be re-sent by the sweep), and the cancel must follow it.
        if order.status in _OPEN and order.status != Order.Status.PENDING and order.cancel_requested_at is not None:
            order.cancel_requested_at = None
            rows.orders[order.pk] = order


def _house_user_id() -> int:
    # One plain SELECT per batch; `house_user()` (get_or_create, two savepoints) only the first time.
    house_id = User.objects.filter(username=settings.BOURSE_HOUSE_USERNAME).values_list("pk", flat=True).first()
    return int(house_id) if house_id is not None else int(house_user().pk)


# --- writing --------------------------------------------------------------------------------


def _copy_text(table: str, columns: Sequence[str], lines: list[str]) -> None:
    # COPY through the psycopg connection Django holds (same transaction); the fastest
    # way to insert many rows, and the trades table is a hypertable, which COPY supports.
    # The lines are COPY text built while walking the events (numbers, fixed words and
    # timestamps only: nothing to escape), sent in large chunks.
    raw = connection.connection
    with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for start in range(0, len(lines), 20_000):
            copy.write("".join(lines[start : start + 20_000]))


_REFERENCE_MAX = LedgerEntry._meta.get_field("reference").max_length or 64


def _trade_reference(info: _MarketInfo) -> str:
    # The trade ids of this market settled in this transaction; the fills name each trade.
    if info.first_trade_id == info.last_trade_id:
        return f"trade:{info.symbol}:{info.last_trade_id}"
    reference = f"trade:{info.symbol}:{info.first_trade_id}-{info.last_trade_id}"
    if len(reference) > _REFERENCE_MAX:  # a 33-character symbol with 12-digit ids
        reference = f"trade:{info.symbol}:-{info.last_trade_id}"[:_REFERENCE_MAX]
    return reference


def _trade_ledger(markets: Mapping[str, _MarketInfo]) -> list[LedgerChange]:
    changes: list[LedgerChange] = []
    house_id: int | None = None
    for info in markets.values():
        if not info.ledger:
            continue
        ref = _trade_reference(info)
        for (user_id, asset_id, reason), (available, locked) in info.ledger.items():
            if not (available or locked):
                continue
            if asset_id == info.quote_id:
                changes.append(
                    LedgerChange(user_id, asset_id, info.quote_dec(available), info.quote_dec(locked), reason, ref)
                )
            else:
                changes.append(LedgerChange(user_id, asset_id, available * info.lot, locked * info.lot, reason, ref))
        if info.house_fee:
            if house_id is None:
                house_id = _house_user_id()
            changes.append(LedgerChange(house_id, info.quote_id, info.quote_dec(info.house_fee), ZERO, Reason.FEE, ref))
    return changes


def _minute_candles(rows: _Rows, markets: Mapping[str, _MarketInfo]) -> dict[tuple[int, datetime], CandleBucket]:
    by_id = {info.market_id: info for info in markets.values()}
    out: dict[tuple[int, datetime], CandleBucket] = {}
    for (market_id, minute), (o, h, low, c, lots, units, n, first, last) in rows.minutes.items():
        info = by_id[market_id]
        out[(market_id, _EPOCH + timedelta(minutes=minute))] = CandleBucket(
            open=o * info.tick, high=h * info.tick, low=low * info.tick, close=c * info.tick, volume=lots * info.lot,
            quote_volume=units * info.unit, trades=n, first_trade_id=first, last_trade_id=last,
        )
    return out


def _write(rows: _Rows, markets: Mapping[str, _MarketInfo], result: SettlementResult) -> None:
    now = timezone.now()
    if rows.trades:
        _copy_text(
            "marketdata_trade",
            ("market_id", "trade_id", "price", "quantity", "quote_quantity", "buy_order_id", "sell_order_id",
             "buyer_id", "seller_id", "is_buyer_maker", "time"),
            rows.trades,
        )
        _copy_text(
            "trading_fill",
            ("trade_id", "market_id", "order_id", "user_id", "side", "price", "quantity", "quote_quantity", "fee",
             "is_maker", "created_at"),
            rows.fills,
        )
        # The candles of these trades, in the same transaction (so also exactly once).
        candles_apply_minutes(minutes=_minute_candles(rows, markets))
    if rows.orders:
        changed = list(rows.orders.values())
        by_id = {info.market_id: info for info in markets.values()}
        for order in changed:
            if order.d_lots or order.d_fee or order.d_lock:
                order.settle(by_id[order.market_id])
        with connection.cursor() as cursor:
            cursor.execute(
                """
                UPDATE trading_order AS o
                SET status = v.status, accepted_seq = v.accepted_seq, executed_quantity = v.executed_quantity,
                    executed_quote_quantity = v.executed_quote_quantity, fee_paid = v.fee_paid, locked = v.locked,
                    reason = v.reason, cancel_requested_at = v.cancel_requested_at, updated_at = %s
                FROM unnest(%s::bigint[], %s::varchar[], %s::bigint[], %s::numeric[], %s::numeric[], %s::numeric[],
                            %s::numeric[], %s::varchar[], %s::timestamptz[])
                    AS v(id, status, accepted_seq, executed_quantity, executed_quote_quantity, fee_paid, locked,
                         reason, cancel_requested_at)
                WHERE o.id = v.id
                """,
                [
                    now,
                    array_literal(o.pk for o in changed),
                    array_literal_quoted(o.status for o in changed),
                    array_literal(o.accepted_seq for o in changed),
                    array_literal(o.executed_quantity for o in changed),
                    array_literal(o.executed_quote_quantity for o in changed),
                    array_literal(o.fee_paid for o in changed),
                    array_literal(o.locked for o in changed),
                    array_literal_quoted(o.reason for o in changed),
                    array_literal_quoted(o.cancel_requested_at for o in changed),
                ],
            )
    ledger = _trade_ledger(markets) + rows.ledger
    if ledger:
        ledger_post(changes=ledger)
        result.balance_keys.update((c.user_id, c.asset_id) for c in ledger)
    states = [info for info in markets.values() if info.changed]
    for info in states:
        if info.last_price_ticks is not None:
            info.last_price = info.last_price_ticks * info.tick
    if states:
        with connection.cursor() as cursor:
            cursor.execute(
                """
                UPDATE trading_marketstate AS s
                SET last_event_seq = v.seq, last_trade_id = v.trade_id, last_book_update_id = v.book_update_id,
                    last_price = v.price, updated_at = %s
                FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::numeric[])
                    AS v(market_id, seq, trade_id, book_update_id, price)
                WHERE s.market_id = v.market_id
                """,
                [
                    now,
                    [i.market_id for i in states],
                    [i.last_event_seq for i in states],
                    [i.last_trade_id for i in states],
                    [i.last_book_update_id for i in states],
                    [i.last_price for i in states],
                ],
            )
