"""Applying engine events to the database: the DB processor's one service.

ARCHITECTURE.md "The flow of one order" step 4 and "Money". One call applies any number of
engine batches in ONE transaction, set-based: the involved orders are read once under a
row lock, changed in Python and written back with one statement; trades and fills go in
with COPY; every balance change goes through one `ledger_post`.

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
from engine_worker.codec import decode_event
from engine_worker.engine import (
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
from engine_worker.engine.types import REQ_CANCEL, REQ_PLACE
from marketdata.candles import CandleTrade, candles_apply
from trading.models import Market, MarketState, Order
from trading.money import fee as fill_fee

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


@dataclass(slots=True)
class _Rows:
    """Everything one call writes, gathered while walking the events."""

    trades: list[tuple[Any, ...]] = field(default_factory=list)
    fills: list[tuple[Any, ...]] = field(default_factory=list)
    ledger: list[LedgerChange] = field(default_factory=list)
    orders: dict[int, _OrderRow] = field(default_factory=dict)  # changed orders by id
    house_fees: list[tuple[int, str, Decimal]] = field(default_factory=list)  # (quote asset, reference, amount)


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
    return _MarketInfo(
        market_id=market.pk, symbol=market.symbol, tick=market.tick_size, lot=market.lot_size,
        unit=market.tick_size * market.lot_size, base_id=market.base_id, quote_id=market.quote_id,
        quote_places=market.quote.precision,
        last_event_seq=state.last_event_seq if state else 0, last_trade_id=state.last_trade_id if state else 0,
        last_book_update_id=state.last_book_update_id if state else 0, last_price=state.last_price if state else None,
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


def _event_order_ids(event: Event) -> tuple[int, ...]:
    if isinstance(event, Trade):
        return (event.maker_order_id, event.taker_order_id)
    if isinstance(event, OrderAccepted | OrderUpdate | OrderCancelled | OrderExpired):
        return (event.order_id,)
    if isinstance(event, OrderRejected) and event.order_id is not None:
        return (event.order_id,)
    return ()


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
    decoded: list[tuple[int, list[Event]]] = [
        (int(batch["epoch"]), [decode_event(row) for row in batch["events"]]) for batch in batches
    ]
    result = SettlementResult()
    symbols: set[str] = set()
    order_ids: set[int] = set()
    for _epoch, events in decoded:
        for event in events:
            symbols.add(event.symbol)
            order_ids.update(_event_order_ids(event))
            if event.ts > result.last_ts:
                result.last_ts = event.ts
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
    for epoch, events in decoded:
        for event in events:
            seq = event.seq
            if seq == 0:
                # Outside every sequence (a rejection for a market unknown to the engine):
                # applying it is idempotent by itself (it only finishes a Pending order).
                if isinstance(event, OrderRejected):
                    _apply_rejected(event, orders, markets_by_id, rows)
                result.applied += 1
                continue
            info = markets.get(event.symbol)
            if info is None:
                logger.error("event for unknown market %s dropped: %r", event.symbol, event)
                result.dropped += 1
                continue
            if epoch <= drop.get(event.symbol, -1):
                result.dropped += 1
                continue
            if seq <= info.last_event_seq:
                result.duplicates += 1
                continue
            if seq != info.last_event_seq + 1:
                logger.error(
                    "gap in %s: expected seq %d, got %d (epoch %d); dropping its events and asking for a rebuild",
                    event.symbol, info.last_event_seq + 1, seq, epoch,
                )
                drop[event.symbol] = epoch
                result.gaps[event.symbol] = epoch
                result.dropped += 1
                continue
            info.last_event_seq = seq
            info.changed = True
            result.applied += 1
            _apply_event(event, info, orders, rows, result)

    _write(rows, markets, result)
    return result


def _apply_event(
    event: Event, info: _MarketInfo, orders: dict[int, _OrderRow], rows: _Rows, result: SettlementResult
) -> None:
    if isinstance(event, Trade):
        _apply_trade(event, info, orders, rows)
        info.last_trade_id = event.trade_id
        info.last_price = event.price * info.tick
        result.trades += 1
    elif isinstance(event, OrderUpdate | OrderCancelled | OrderExpired):
        _apply_order_state(event, info, orders, rows)
    elif isinstance(event, OrderAccepted):
        order = orders.get(event.order_id)
        if order is None:
            logger.error("%s: accepted order %d is not in the database", info.symbol, event.order_id)
            return
        if order.status == Order.Status.PENDING:
            order.status = Order.Status.NEW
        order.accepted_seq = event.seq
        rows.orders[order.pk] = order
    elif isinstance(event, BookLevel | BestBidAsk):
        if event.book_update_id > info.last_book_update_id:
            info.last_book_update_id = event.book_update_id
    elif isinstance(event, OrderRejected):
        _apply_rejected(event, orders, {info.market_id: info}, rows)
    elif isinstance(event, OrderAmended):
        # No API sends amends yet; when one does, settle the new lock here.
        logger.warning("%s: amend of order %d ignored (not supported by the DB side)", info.symbol, event.order_id)


def _apply_trade(event: Trade, info: _MarketInfo, orders: dict[int, _OrderRow], rows: _Rows) -> None:
    maker = orders.get(event.maker_order_id)
    taker = orders.get(event.taker_order_id)
    if maker is None or taker is None:
        logger.error("%s trade %d: order missing from the database, not settled: %r", info.symbol, event.trade_id, event)
        return
    price = event.price * info.tick
    quantity = event.quantity * info.lot
    notional = event.price * event.quantity * info.unit
    maker_fee = fill_fee(notional, maker.maker_fee_rate, info.quote_places)
    taker_fee = fill_fee(notional, taker.taker_fee_rate, info.quote_places)
    buyer_is_maker = event.taker_side == Order.Side.ASK
    if buyer_is_maker:
        buy, sell, buy_fee, sell_fee = maker, taker, maker_fee, taker_fee
    else:
        buy, sell, buy_fee, sell_fee = taker, maker, taker_fee, maker_fee
    when = ts_datetime(event.ts)
    rows.trades.append(
        (info.market_id, event.trade_id, price, quantity, notional, buy.pk, sell.pk, buy.user_id, sell.user_id,
         buyer_is_maker, when)
    )
    for order, order_fee, is_maker in ((maker, maker_fee, True), (taker, taker_fee, False)):
        rows.fills.append(
            (event.trade_id, info.market_id, order.pk, order.user_id, order.side, price, quantity, notional,
             order_fee, is_maker, when)
        )
        order.executed_quantity += quantity
        order.executed_quote_quantity += notional
        order.fee_paid += order_fee
        rows.orders[order.pk] = order
    buy.locked -= notional + buy_fee
    sell.locked -= quantity

    ref = f"trade:{info.symbol}:{event.trade_id}"
    base, quote = info.base_id, info.quote_id
    rows.ledger += [
        LedgerChange(buy.user_id, base, quantity, ZERO, Reason.TRADE, ref),
        LedgerChange(buy.user_id, quote, ZERO, -notional, Reason.TRADE, ref),
        LedgerChange(sell.user_id, base, ZERO, -quantity, Reason.TRADE, ref),
        LedgerChange(sell.user_id, quote, notional, ZERO, Reason.TRADE, ref),
    ]
    if buy_fee:
        rows.ledger.append(LedgerChange(buy.user_id, quote, ZERO, -buy_fee, Reason.FEE, ref))
    if sell_fee:
        rows.ledger.append(LedgerChange(sell.user_id, quote, -sell_fee, ZERO, Reason.FEE, ref))
    if buy_fee + sell_fee:
        rows.house_fees.append((quote, ref, buy_fee + sell_fee))


def _release(order: _OrderRow, info: _MarketInfo, rows: _Rows) -> None:
    """Give back what the finished order still locks: the unspent quote of a bid (better
    prices, an IOC/market remainder, a cancel) or the unsold base of an ask."""
    if order.locked:
        asset = info.quote_id if order.side == Order.Side.BID else info.base_id
        rows.ledger.append(
            LedgerChange(order.user_id, asset, order.locked, -order.locked, Reason.ORDER_RELEASE, f"order:{order.pk}")
        )
        order.locked = ZERO


def _apply_order_state(
    event: OrderUpdate | OrderCancelled | OrderExpired, info: _MarketInfo, orders: dict[int, _OrderRow], rows: _Rows
) -> None:
    order = orders.get(event.order_id)
    if order is None:
        logger.error("%s: order %d of %r is not in the database", info.symbol, event.order_id, event)
        return
    order.status = event.status
    if isinstance(event, OrderCancelled | OrderExpired):
        order.reason = event.reason
    rows.orders[order.pk] = order
    executed = event.executed_qty * info.lot
    executed_quote = event.executed_quote * info.unit
    if executed != order.executed_quantity or executed_quote != order.executed_quote_quantity:
        # The fills we settled disagree with the engine: money is at stake, say so loudly.
        logger.error(
            "%s order %d: engine says executed %s (quote %s), fills sum to %s (quote %s)",
            info.symbol, order.pk, executed, executed_quote, order.executed_quantity, order.executed_quote_quantity,
        )
    if order.status in _FINISHED:
        _release(order, info, rows)


def _apply_rejected(
    event: OrderRejected, orders: dict[int, _OrderRow], markets_by_id: Mapping[int, _MarketInfo], rows: _Rows
) -> None:
    if event.order_id is None:
        return
    order = orders.get(event.order_id)
    if order is None:
        return
    if event.request == REQ_PLACE:
        if order.status != Order.Status.PENDING:
            return
        info = markets_by_id.get(order.market_id)
        if info is None:
            logger.error("order %d rejected (%s) but its market is not loaded", order.pk, event.reason)
            return
        order.status = Order.Status.EXPIRED
        order.reason = event.reason
        _release(order, info, rows)
        rows.orders[order.pk] = order
    elif event.request == REQ_CANCEL:
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


def _copy(table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
    # COPY through the psycopg connection Django holds (same transaction); the fastest
    # way to insert many rows, and the trades table is a hypertable, which COPY supports.
    raw = connection.connection
    with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _write(rows: _Rows, markets: Mapping[str, _MarketInfo], result: SettlementResult) -> None:
    now = timezone.now()
    if rows.trades:
        _copy(
            "marketdata_trade",
            ("market_id", "trade_id", "price", "quantity", "quote_quantity", "buy_order_id", "sell_order_id",
             "buyer_id", "seller_id", "is_buyer_maker", "time"),
            rows.trades,
        )
        _copy(
            "trading_fill",
            ("trade_id", "market_id", "order_id", "user_id", "side", "price", "quantity", "quote_quantity", "fee",
             "is_maker", "created_at"),
            rows.fills,
        )
        # The candles of these trades, in the same transaction (so also exactly once).
        candles_apply(trades=[CandleTrade(t[0], t[1], t[2], t[3], t[4], t[10]) for t in rows.trades])
    if rows.orders:
        changed = list(rows.orders.values())
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
                    [o.pk for o in changed],
                    [o.status for o in changed],
                    [o.accepted_seq for o in changed],
                    [o.executed_quantity for o in changed],
                    [o.executed_quote_quantity for o in changed],
                    [o.fee_paid for o in changed],
                    [o.locked for o in changed],
                    [o.reason for o in changed],
                    [o.cancel_requested_at for o in changed],
                ],
            )
    if rows.house_fees:
        house_id = _house_user_id()
        rows.ledger += [
            LedgerChange(house_id, asset_id, amount, ZERO, Reason.FEE, ref) for asset_id, ref, amount in rows.house_fees
        ]
    if rows.ledger:
        ledger_post(changes=rows.ledger)
        result.balance_keys.update((c.user_id, c.asset_id) for c in rows.ledger)
    states = [info for info in markets.values() if info.changed]
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
