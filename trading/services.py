"""Writes for markets and orders: validation against the market, fund locking, queueing.

Order entry (ARCHITECTURE.md "The flow of one order", step 1): validate, then in ONE
transaction lock the user's balance row, move funds from available to locked, insert the
order as `Pending`; only after commit is it pushed on `messages`. An acknowledged order is
in the database; the engine settles nothing here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.db.models.base import ModelState
from django.utils import timezone

from accounts.errors import InsufficientFunds, InvalidState, NotFound, ServiceError
from accounts.models import Asset, LedgerEntry, User
from accounts.services import balances_lock
from exchange_site.db.arrays import array_literal, array_literal_quoted
from exchange_site.db.prepared import prepared_cursor
from trading import messaging
from trading.models import Market, Order
from trading.money import bid_lock, engine_quote_cap, quantize_up, steps

# A market buy by quantity locks the cost of walking the book's snapshot plus this
# margin, since the book may move before the engine sees the order; the rest is released.
MARKET_BUY_BUFFER = Decimal("0.05")
# `Choices.values` builds a new list on every access; order entry checks four per order.
_SIDES = frozenset(Order.Side.values)
_TYPES = frozenset(Order.Type.values)
_TIMES_IN_FORCE = frozenset(Order.TimeInForce.values)
_STPS = frozenset(Order.SelfTradePrevention.values)
SWEEP_AFTER = timedelta(seconds=5)
SWEEP_RESEND_AFTER = timedelta(seconds=30)
SWEEP_LIMIT = 20_000


@dataclass(frozen=True, slots=True)
class OrderParams:
    """An order request after parsing: typed, but not yet checked against its market."""

    side: str
    order_type: str
    price: Decimal | None = None
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    time_in_force: str = Order.TimeInForce.GTC
    post_only: bool = False
    client_id: int | None = None
    self_trade_prevention: str = Order.SelfTradePrevention.REJECT_TAKER


# --- markets ------------------------------------------------------------------------------


def _check_market_units(*, base: Asset, quote: Asset, tick_size: Decimal, lot_size: Decimal) -> None:
    if base.pk == quote.pk:
        raise ServiceError("Base and quote must differ", code="INVALID_MARKET")
    if tick_size <= 0 or lot_size <= 0:
        raise ServiceError("Tick and lot sizes must be positive", code="INVALID_MARKET")
    smallest_quote = Decimal(1).scaleb(-quote.precision)
    if (tick_size * lot_size) % smallest_quote != 0:
        raise ServiceError(
            f"tick × lot ({(tick_size * lot_size).normalize():f}) must be a whole number of "
            f"{quote.symbol}'s smallest unit ({smallest_quote})",
            code="INVALID_MARKET",
        )
    if lot_size % Decimal(1).scaleb(-base.precision) != 0:
        raise ServiceError(f"lot size must be a whole number of {base.symbol}'s smallest unit", code="INVALID_MARKET")


@transaction.atomic
def market_create(
    *,
    base: Asset,
    quote: Asset,
    tick_size: Decimal,
    lot_size: Decimal,
    min_quantity: Decimal = Decimal(0),
    min_notional: Decimal = Decimal(0),
    status: str = Market.Status.OPEN,
    maker_fee_rate: Decimal = Decimal("0.001"),
    taker_fee_rate: Decimal = Decimal("0.002"),
    band_bps: int = 0,
    reference_price: Decimal | None = None,
) -> Market:
    """Create a market and tell the engine. Tick and lot are fixed from here on."""
    _check_market_units(base=base, quote=quote, tick_size=tick_size, lot_size=lot_size)
    market = Market.objects.create(
        symbol=f"{base.symbol}_{quote.symbol}", base=base, quote=quote, tick_size=tick_size, lot_size=lot_size,
        min_quantity=min_quantity, min_notional=min_notional, status=status, maker_fee_rate=maker_fee_rate,
        taker_fee_rate=taker_fee_rate, band_bps=band_bps, reference_price=reference_price,
    )
    messaging.enqueue_on_commit([messaging.market_message(market, created=True)])
    return market


MARKET_MUTABLE = frozenset(
    {"status", "maker_fee_rate", "taker_fee_rate", "band_bps", "reference_price", "min_quantity", "min_notional", "max_quantity"}
)


@transaction.atomic
def market_update(*, market_id: int, **changes: Any) -> Market:
    """Change what may change on a market (not tick, lot or assets) and tell the engine."""
    fixed = set(changes) - MARKET_MUTABLE
    if fixed:
        raise ServiceError(f"Cannot change {', '.join(sorted(fixed))} of an existing market", code="INVALID_MARKET")
    market = Market.objects.select_for_update().get(pk=market_id)
    for name, value in changes.items():
        setattr(market, name, value)
    market.save()
    messaging.enqueue_on_commit(
        [messaging.market_message(market, created=False, with_reference="reference_price" in changes)]
    )
    return market


_MARKET_COLUMNS = [f.attname for f in Market._meta.concrete_fields]
_ASSET_COLUMNS = [f.attname for f in Asset._meta.concrete_fields]


@functools.cache
def _market_sql() -> str:
    def columns(alias: str, model: type[Market] | type[Asset]) -> str:
        return ", ".join(f"{alias}.{connection.ops.quote_name(f.column)}" for f in model._meta.concrete_fields)

    market, asset = Market._meta.db_table, Asset._meta.db_table
    return (
        f"SELECT {columns('m', Market)}, {columns('b', Asset)}, {columns('q', Asset)} FROM {market} m "
        f"JOIN {asset} b ON b.id = m.base_id JOIN {asset} q ON q.id = m.quote_id WHERE m.symbol = %s"
    )


def market_get(symbol: object) -> Market:
    """The market with its base and quote assets, read fresh (a status change applies at once).

    One hand-written query rather than `select_related("base", "quote").get(...)`: it runs
    for every order request, and building that ORM query (its two joins especially, in
    Django 5.2) cost more CPU than the database's answer — ~1 ms of ~8 per order POST.
    None of these fields has a database converter, so `from_db` on the raw row is exact.
    """
    if not isinstance(symbol, str) or not symbol:
        raise ServiceError("symbol is required", code="INVALID_SYMBOL")
    with prepared_cursor() as cursor:
        cursor.execute(_market_sql(), [symbol])
        row = cursor.fetchone()
    if row is None:
        raise ServiceError(f"Unknown market {symbol[:40]!r}", code="INVALID_MARKET")
    n_market, n_asset = len(_MARKET_COLUMNS), len(_ASSET_COLUMNS)
    market = Market.from_db(connection.alias, _MARKET_COLUMNS, row[:n_market])
    market.base = Asset.from_db(connection.alias, _ASSET_COLUMNS, row[n_market : n_market + n_asset])
    market.quote = Asset.from_db(connection.alias, _ASSET_COLUMNS, row[n_market + n_asset :])
    return market


# --- orders -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Sized:
    price_ticks: int | None
    quantity_lots: int | None
    lock_asset: Asset
    lock_amount: Decimal
    engine_cap: int | None


def _depth_asks(market: Market) -> list[tuple[Decimal, Decimal]]:
    """The ask side of the engine's latest L2 snapshot in Redis (never a scan of orders)."""
    from marketdata.depth import depth_snapshot  # deferred: marketdata imports trading

    snapshot = depth_snapshot(market.symbol)
    return [(Decimal(p), Decimal(q)) for p, q in snapshot.get("asks", [])] if snapshot else []


def _market_buy_cost(market: Market, quantity: Decimal) -> Decimal:
    asks = _depth_asks(market)
    if not asks:
        raise ServiceError("No liquidity: the book has no asks", code="INVALID_ORDER")
    remaining, cost = quantity, Decimal(0)
    for price, size in asks:
        take = min(size, remaining)
        cost += take * price
        remaining -= take
        if remaining <= 0:
            break
    if remaining > 0:
        # Deeper than the snapshot shows: price the rest at its worst level.
        cost += remaining * asks[-1][0]
    return cost * (1 + MARKET_BUY_BUFFER)


def _size_order(market: Market, params: OrderParams) -> _Sized:
    """Check the order against the market and work out what it locks (ARCHITECTURE "Money")."""
    quote_places = market.quote.precision
    unit = market.tick_size * market.lot_size
    if params.side not in _SIDES:
        raise ServiceError("side must be Bid or Ask", code="INVALID_ORDER")
    if params.order_type not in _TYPES:
        raise ServiceError("orderType must be Limit or Market", code="INVALID_ORDER")
    if params.time_in_force not in _TIMES_IN_FORCE:
        raise ServiceError("timeInForce must be GTC, IOC or FOK", code="INVALID_ORDER")
    if params.self_trade_prevention not in _STPS:
        raise ServiceError("selfTradePrevention must be RejectTaker, RejectMaker or RejectBoth", code="INVALID_ORDER")

    status = market.status
    if status in (Market.Status.CANCEL_ONLY, Market.Status.CLOSED):
        raise ServiceError(f"{market.symbol} is {status}: no new orders", code="TRADING_PAUSED")
    if params.order_type == Order.Type.MARKET and status != Market.Status.OPEN:
        raise ServiceError(f"{market.symbol} is {status}: no market orders", code="INVALID_ORDER")
    if status == Market.Status.POST_ONLY and not params.post_only:
        raise ServiceError(f"{market.symbol} is PostOnly: only post-only limit orders", code="INVALID_ORDER")

    lots = None
    if params.quantity is not None:
        if params.quantity <= 0:
            raise ServiceError("quantity must be positive", code="INVALID_QUANTITY")
        lots = steps(params.quantity, market.lot_size, field="quantity", code="INVALID_QUANTITY")
        if params.quantity < market.min_quantity:
            raise ServiceError(f"quantity is below the minimum {market.min_quantity.normalize():f}", code="INVALID_QUANTITY")
        if market.max_quantity is not None and params.quantity > market.max_quantity:
            raise ServiceError(f"quantity is above the maximum {market.max_quantity.normalize():f}", code="INVALID_QUANTITY")

    if params.order_type == Order.Type.LIMIT:
        if params.price is None:
            raise ServiceError("price is required for a limit order", code="INVALID_PRICE")
        if params.price <= 0:
            raise ServiceError("price must be positive", code="INVALID_PRICE")
        if params.quantity is None or lots is None:
            raise ServiceError("quantity is required for a limit order", code="INVALID_QUANTITY")
        if params.quote_quantity is not None:
            raise ServiceError("quoteQuantity is only for market orders", code="INVALID_ORDER")
        ticks = steps(params.price, market.tick_size, field="price", code="INVALID_PRICE")
        notional = params.price * params.quantity
        if notional < market.min_notional:
            raise ServiceError(f"notional {notional.normalize():f} is below the minimum {market.min_notional.normalize():f}", code="INVALID_ORDER")
        if params.side == Order.Side.BID:
            return _Sized(ticks, lots, market.quote, bid_lock(notional, market.taker_fee_rate, quote_places), None)
        return _Sized(ticks, lots, market.base, params.quantity, None)

    # Market orders never rest: post-only makes no sense and time in force is IOC.
    if params.price is not None:
        raise ServiceError("price is not allowed on a market order", code="INVALID_PRICE")
    if params.post_only:
        raise ServiceError("a market order cannot be post-only", code="INVALID_ORDER")
    if params.side == Order.Side.ASK:
        if params.quantity is None or lots is None or params.quote_quantity is not None:
            raise ServiceError("a market sell needs quantity (and no quoteQuantity)", code="INVALID_QUANTITY")
        return _Sized(None, lots, market.base, params.quantity, None)
    if params.quote_quantity is not None:
        if params.quote_quantity <= 0:
            raise ServiceError("quoteQuantity must be positive", code="INVALID_QUANTITY")
        if params.quote_quantity != params.quote_quantity.quantize(Decimal(1).scaleb(-quote_places)) :
            raise ServiceError(f"quoteQuantity has more than {quote_places} decimal places", code="INVALID_QUANTITY")
        if params.quote_quantity < market.min_notional:
            raise ServiceError("quoteQuantity is below the minimum notional", code="INVALID_ORDER")
        cap = engine_quote_cap(params.quote_quantity, market.taker_fee_rate, unit)
        if cap <= 0:
            raise ServiceError("quoteQuantity is too small to buy anything", code="INVALID_QUANTITY")
        return _Sized(None, lots, market.quote, params.quote_quantity, cap)
    if params.quantity is None or lots is None:
        raise ServiceError("a market buy needs quantity or quoteQuantity", code="INVALID_QUANTITY")
    lock = quantize_up(_market_buy_cost(market, params.quantity) * (1 + market.taker_fee_rate), quote_places)
    return _Sized(None, lots, market.quote, lock, engine_quote_cap(lock, market.taker_fee_rate, unit))


def _same_request(order: Order, params: OrderParams) -> bool:
    return (
        order.side == params.side and order.order_type == params.order_type and order.price == params.price
        and order.quantity == params.quantity and order.quote_quantity == params.quote_quantity
        and order.time_in_force == params.time_in_force and order.post_only == params.post_only
    )


def _existing_by_client_id(user: User, client_id: int, market: Market, params: OrderParams) -> Order | None:
    order = Order.objects.filter(user=user, client_id=client_id, status__in=Order.OPEN_STATUSES).first()
    if order is None:
        return None
    if order.market_id != market.pk or not _same_request(order, params):
        raise ServiceError(f"clientId {client_id} is in use by open order {order.pk}", code="INVALID_CLIENT_REQUEST")
    return order


def order_place(*, user: User, market: Market, params: OrderParams) -> Order:
    """Accept an order: validated, funds locked, `Pending` in the database, queued after commit.

    Idempotent by `client_id` among the user's open orders: the same request again returns
    the order already placed; a different request with that id is refused.
    """
    if params.client_id is not None:
        existing = _existing_by_client_id(user, params.client_id, market, params)
        if existing is not None:
            return existing
    try:
        return _order_place(user=user, market=market, params=params)
    except IntegrityError as exc:
        # Two requests with one clientId raced: the unique index let one through.
        if params.client_id is None or "order_client_id_open_unique" not in str(exc):
            raise
        existing = _existing_by_client_id(user, params.client_id, market, params)
        if existing is None:
            raise
        return existing


@functools.cache
def _order_defaults() -> dict[str, Any]:
    """Every concrete Order field's default, by attribute name (all are constants)."""
    defaults = {}
    for field in Order._meta.concrete_fields:
        if field.has_default() and callable(field.default):
            raise TypeError(f"Order.{field.name} has a callable default; build orders with Order(...)")
        defaults[field.attname] = field.get_default()
    return defaults


_ORDER_USER = Order._meta.get_field("user")
_ORDER_MARKET = Order._meta.get_field("market")


def _new_order(user: User, market: Market, params: OrderParams, sized: _Sized) -> Order:
    """The unsaved order for a validated request: fee rates of the market now are fixed on it.

    Built as Django builds an instance (every field's attribute in the instance's dict, a
    fresh `ModelState`, the user and market cached as if assigned), without `Model.__init__`
    and its signals, which no receiver in Bourse listens to: `Order(...)` and the two
    assignments cost ~15 µs an order, this ~2; a batch of 50 pays it 50 times. Fields not set
    here keep their model default; a misspelt name would add a stray attribute instead,
    which test_batch_place and test_api_orders catch by checking every stored field.
    """
    order = Order.__new__(Order)
    attributes = order.__dict__
    attributes.update(_order_defaults())
    attributes.update(
        user_id=user.pk, market_id=market.pk, client_id=params.client_id, side=params.side,
        order_type=params.order_type,
        time_in_force=params.time_in_force if params.order_type == Order.Type.LIMIT else Order.TimeInForce.IOC,
        post_only=params.post_only, self_trade_prevention=params.self_trade_prevention, price=params.price,
        quantity=params.quantity, quote_quantity=params.quote_quantity, locked=sized.lock_amount,
        maker_fee_rate=market.maker_fee_rate, taker_fee_rate=market.taker_fee_rate, engine_cap=sized.engine_cap,
    )
    order._state = ModelState()
    _ORDER_USER.set_cached_value(order, user)
    _ORDER_MARKET.set_cached_value(order, market)
    return order


def _order_place(*, user: User, market: Market, params: OrderParams) -> Order:
    sized = _size_order(market, params)
    order = _new_order(user, market, params, sized)
    _order_lock_and_insert(order, sized.lock_asset)
    messaging.enqueue_on_commit(
        [messaging.place_message(order, price_ticks=sized.price_ticks, quantity_lots=sized.quantity_lots)]
    )
    return order


@functools.cache
def _order_place_sql() -> str:
    """Lock the funds, insert the order and write its ledger entry: ONE prepared statement.

    The balance row is changed only if it has the funds (`available >= amount`, re-checked
    by PostgreSQL on the row as it is once a concurrent change to it commits), and the
    order and its `order_lock` entry are inserted only from the changed row: so either
    all three happen or none, in one round trip, whether or not the caller holds a
    transaction. Every placeholder is cast to its column's type (server-side binding).
    """
    quote = connection.ops.quote_name
    fields = [f for f in Order._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(quote(f.column) for f in fields)
    values = ", ".join(f"%({f.attname})s::{f.db_type(connection)}" for f in fields)
    return f"""
        WITH locked AS (
            UPDATE accounts_balance
            SET available = available - %(locked)s::numeric, locked = locked + %(locked)s::numeric,
                updated_at = %(created_at)s::timestamptz
            WHERE user_id = %(user_id)s::bigint AND asset_id = %(asset_id)s::bigint
                AND available >= %(locked)s::numeric
            RETURNING id
        ), placed AS (
            INSERT INTO {quote(Order._meta.db_table)} ({columns}) SELECT {values} FROM locked
            RETURNING {quote(Order._meta.pk.column)}
        ), entry AS (
            INSERT INTO accounts_ledgerentry
                (user_id, asset_id, available_delta, locked_delta, reason, reference, actor_id, created_at)
            SELECT %(user_id)s::bigint, %(asset_id)s::bigint, -%(locked)s::numeric, %(locked)s::numeric,
                '{LedgerEntry.Reason.ORDER_LOCK.value}', 'order:' || placed.id, %(user_id)s::bigint,
                %(created_at)s::timestamptz
            FROM placed
        )
        SELECT id FROM placed
    """


def _order_lock_and_insert(order: Order, asset: Asset) -> None:
    """Move the order's `locked` amount of `asset` from the user's available to locked, insert it and
    its ledger entry (one statement, see `_order_place_sql`); sets the order's id and
    timestamps. Raises InsufficientFunds, having written nothing, if the funds are not there.

    Hand-written rather than `Order.objects.create` plus `balance_change`: that was eight
    round trips and as many statements parsed and planned per order POST (with the token
    and market look-ups); the ORM's INSERT of 25 fields alone was the largest CPU cost of
    an order POST. Every concrete field is written from the instance, so its Python
    defaults apply.
    """
    order.created_at = order.updated_at = timezone.now()
    values = {f.attname: getattr(order, f.attname) for f in Order._meta.concrete_fields if not f.primary_key}
    values["asset_id"] = asset.pk
    with prepared_cursor() as cursor:
        cursor.execute(_order_place_sql(), values)
        row = cursor.fetchone()
        if row is None:
            cursor.execute(
                "SELECT available FROM accounts_balance WHERE user_id = %s::bigint AND asset_id = %s::bigint",
                [order.user_id, asset.pk],
            )
            balance = cursor.fetchone()
            raise _insufficient(asset, balance[0] if balance else Decimal(0), order.locked)
    order.pk = row[0]
    order._state.adding = False
    order._state.db = connection.alias


def orders_place_batch(*, user: User, requests: list[tuple[Market, OrderParams]]) -> list[Order | ServiceError]:
    """Place several orders in ONE transaction; each stands or falls alone, like Backpack's batch.

    Set-based: every order is checked against its market first; then the user's balance
    rows are locked once, the orders are walked in request order against the available
    amounts (one that does not fit gets INSUFFICIENT_FUNDS and the rest go on), the accepted
    ones are inserted with their ledger entries and balance changes in one statement, and
    their commands queued, in request order, after commit. The answer lists, per request,
    the order or its error. `clientId` behaves as in `order_place`: the same request again
    (within the batch, or as an open order) answers with that order, a different one with
    that id is refused.
    """
    for attempt in range(2):
        try:
            return _orders_place_batch(user=user, requests=requests)
        except IntegrityError as exc:
            # A concurrent request took one of the batch's clientIds between our look-up and
            # our insert (the unique index waited for it to commit); once more sees its order.
            if attempt or "order_client_id_open_unique" not in str(exc):
                raise
    raise AssertionError("unreachable")


@functools.cache
def _orders_place_sql() -> str:
    """Insert a batch's accepted orders, their `order_lock` entries and the balance changes:
    ONE prepared statement over arrays (one element per order, request order).

    Each order gets its id from the sequence in the materialized `batch` CTE, so the three
    writes agree on it; the answer is the ids in request order. The balances are moved by
    the sums per asset (the caller has locked the rows and checked each order fits, in
    request order). Every placeholder is cast to its column's type (server-side binding).
    """
    quote = connection.ops.quote_name
    table = Order._meta.db_table
    fields = [f for f in Order._meta.concrete_fields if not f.primary_key]
    arrays = ", ".join(f"%({f.attname})s::{f.db_type(connection)}[]" for f in fields)
    names = ", ".join(f.attname for f in fields)
    columns = ", ".join(quote(f.column) for f in fields)
    return f"""
        WITH batch AS MATERIALIZED (
            SELECT nextval(pg_get_serial_sequence('{table}', 'id')) AS id, v.*
            FROM unnest({arrays}, %(lock_asset_id)s::bigint[]) WITH ORDINALITY AS v({names}, lock_asset_id, ord)
        ), placed AS (
            INSERT INTO {quote(table)} ({quote(Order._meta.pk.column)}, {columns}) SELECT id, {names} FROM batch
        ), entries AS (
            INSERT INTO accounts_ledgerentry
                (user_id, asset_id, available_delta, locked_delta, reason, reference, actor_id, created_at)
            SELECT user_id, lock_asset_id, -locked, locked, '{LedgerEntry.Reason.ORDER_LOCK.value}', 'order:' || id,
                user_id, created_at
            FROM batch
        ), moved AS (
            UPDATE accounts_balance AS b
            SET available = b.available - s.amount, locked = b.locked + s.amount, updated_at = s.at
            FROM (SELECT user_id, lock_asset_id, sum(locked) AS amount, max(created_at) AS at
                  FROM batch GROUP BY user_id, lock_asset_id) AS s
            WHERE b.user_id = s.user_id AND b.asset_id = s.lock_asset_id
            RETURNING b.id
        )
        SELECT id, (SELECT count(*) FROM moved) FROM batch ORDER BY ord
    """


@functools.cache
def _order_array_literals() -> list[tuple[str, Callable[[list[Any]], str]]]:
    """Each non-key Order field with the way its values are written in an array literal."""
    quoted = ("CharField", "TextField", "DateTimeField")
    return [
        (f.attname, array_literal_quoted if f.get_internal_type() in quoted else array_literal)
        for f in Order._meta.concrete_fields
        if not f.primary_key
    ]


def _orders_insert(orders: list[tuple[Order, Asset]]) -> None:
    """Insert new orders, each locking its `lock_amount` (`order.locked`) of its asset: the
    orders, one `order_lock` ledger entry each, and the balances moved from available to
    locked, in one statement (`_orders_place_sql`). Sets their ids (in list order) and
    timestamps. The caller holds the balance rows' locks and has checked the funds.

    One prepared statement over arrays (given as array literals, exchange_site/db/arrays.py),
    rather than the sequence, a COPY of the orders, the balance UPDATE and a COPY of the
    entries: four round trips and their Python (the COPY text of 25 fields × 50 orders was
    the largest CPU cost of a batch request).
    Every concrete field is written from the instance, so its Python defaults apply.
    """
    now = timezone.now()
    for order, _ in orders:
        order.created_at = order.updated_at = now
    values = {
        name: literal([getattr(order, name) for order, _ in orders]) for name, literal in _order_array_literals()
    }
    values["lock_asset_id"] = array_literal(asset.pk for _, asset in orders)
    with prepared_cursor() as cursor:
        cursor.execute(_orders_place_sql(), values)
        rows = cursor.fetchall()
    balances = {(order.user_id, asset.pk) for order, asset in orders}
    if rows[0][1] != len(balances):
        # Only a caller that did not lock (so create) the balance rows gets here; raising
        # rolls its transaction back, orders and entries with it.
        raise RuntimeError(f"{len(balances)} balance rows to move, {rows[0][1]} found")
    for (order, _), (pk, _) in zip(orders, rows, strict=True):
        order.pk = pk
        order._state.adding = False
        order._state.db = connection.alias


def _same_client_id(order: Order, market: Market, params: OrderParams) -> Order:
    """The order already holding this request's clientId, if the request is the same; else refused."""
    if order.market_id != market.pk or not _same_request(order, params):
        holder = f"open order {order.pk}" if order.pk else "an earlier order of this batch"
        raise ServiceError(f"clientId {params.client_id} is in use by {holder}", code="INVALID_CLIENT_REQUEST")
    return order


def _insufficient(asset: Asset, available: Decimal, needed: Decimal) -> InsufficientFunds:
    places = Decimal(1).scaleb(-asset.precision)
    return InsufficientFunds(
        f"Insufficient {asset.symbol}: {available.quantize(places):f} available, {needed.quantize(places):f} needed"
    )


@transaction.atomic
def _orders_place_batch(*, user: User, requests: list[tuple[Market, OrderParams]]) -> list[Order | ServiceError]:
    results: list[Order | ServiceError | None] = [None] * len(requests)
    # clientIds first, as order_place does: a retried request answers with its order even
    # if it would no longer be accepted. A concurrent request that takes one of these ids
    # after this look-up makes our insert fail on the unique index (orders_place_batch
    # then runs again and finds its order).
    client_ids = {params.client_id for _, params in requests if params.client_id is not None}
    open_by_client_id: dict[int, Order] = {}
    if client_ids:
        open_by_client_id = {
            order.client_id: order  # type: ignore[misc]  # filtered on client_id
            for order in Order.objects.select_related("market").filter(
                user=user, client_id__in=client_ids, status__in=Order.OPEN_STATUSES
            )
        }
    sized: list[tuple[int, _Sized]] = []
    for index, (market, params) in enumerate(requests):
        try:
            existing = open_by_client_id.get(params.client_id) if params.client_id is not None else None
            if existing is not None:
                results[index] = _same_client_id(existing, market, params)
            else:
                sized.append((index, _size_order(market, params)))
        except ServiceError as exc:
            results[index] = exc
    if not sized:
        return results  # type: ignore[return-value]  # every entry is set

    balances = balances_lock(keys={(user.pk, item.lock_asset.pk) for _, item in sized})
    available = {key: balance.available for key, balance in balances.items()}
    placed_by_client_id: dict[int, Order] = {}
    accepted: list[tuple[int, Order, _Sized]] = []
    for index, item in sized:
        market, params = requests[index]
        if params.client_id is not None and params.client_id in placed_by_client_id:
            try:
                results[index] = _same_client_id(placed_by_client_id[params.client_id], market, params)
            except ServiceError as exc:
                results[index] = exc
            continue
        key = (user.pk, item.lock_asset.pk)
        if available[key] < item.lock_amount:
            results[index] = _insufficient(item.lock_asset, available[key], item.lock_amount)
            continue
        available[key] -= item.lock_amount
        order = _new_order(user, market, params, item)
        accepted.append((index, order, item))
        if params.client_id is not None:
            # A later request with this id in the same batch answers with this order.
            placed_by_client_id[params.client_id] = order
    if accepted:
        _orders_insert([(order, item.lock_asset) for _, order, item in accepted])
        messaging.enqueue_on_commit(
            [
                messaging.place_message(order, price_ticks=item.price_ticks, quantity_lots=item.quantity_lots)
                for _, order, item in accepted
            ]
        )
        for index, order, _ in accepted:
            results[index] = order
    return results  # type: ignore[return-value]  # every entry is set


def _open_order_for_update(*, user: User, market: Market, order_id: int | None, client_id: int | None) -> Order:
    if order_id is None and client_id is None:
        raise ServiceError("orderId or clientId is required", code="INVALID_CLIENT_REQUEST")
    orders = Order.objects.select_for_update().select_related("market").filter(user=user, market=market)
    if order_id is not None:
        order = orders.filter(pk=order_id).first()
    else:
        order = orders.filter(client_id=client_id, status__in=Order.OPEN_STATUSES).first()
    if order is None:
        raise NotFound("Order not found")
    if order.status not in Order.OPEN_STATUSES:
        raise InvalidState(f"Order {order.pk} is already {order.status}", code="INVALID_ORDER")
    return order


@transaction.atomic
def order_cancel(*, user: User, market: Market, order_id: int | None = None, client_id: int | None = None) -> Order:
    """Ask the engine to cancel an open order: written on the order first, then queued."""
    order = _open_order_for_update(user=user, market=market, order_id=order_id, client_id=client_id)
    if market.status == Market.Status.CLOSED:
        raise ServiceError(f"{market.symbol} is Closed: cancels are not accepted", code="TRADING_PAUSED")
    if order.cancel_requested_at is None:
        order.cancel_requested_at = timezone.now()
        order.save(update_fields=["cancel_requested_at", "updated_at"])
    messaging.enqueue_on_commit([messaging.cancel_message(order)])
    return order


@transaction.atomic
def order_cancel_all(*, user: User, market: Market | None = None) -> list[Order]:
    """Ask the engine to cancel every open order of the user (in one market, or all)."""
    orders = Order.objects.select_for_update().select_related("market").filter(user=user, status__in=Order.OPEN_STATUSES)
    if market is not None:
        orders = orders.filter(market=market)
    orders = orders.exclude(market__status=Market.Status.CLOSED)
    result = list(orders.order_by("pk"))
    now = timezone.now()
    to_mark = [order.pk for order in result if order.cancel_requested_at is None]
    Order.objects.filter(pk__in=to_mark).update(cancel_requested_at=now, updated_at=now)
    for order in result:
        order.cancel_requested_at = order.cancel_requested_at or now
    messaging.enqueue_on_commit([messaging.cancel_message(order) for order in result])
    return result


def orders_requeue_stale(
    *, older_than: timedelta = SWEEP_AFTER, resend_after: timedelta = SWEEP_RESEND_AFTER, limit: int = SWEEP_LIMIT
) -> tuple[int, int]:
    """The sweep: re-queue orders still `Pending` and cancels still requested after a while.

    A web process may die between commit and push; the engine ignores the duplicates this
    makes. An order is re-sent at most once per `resend_after`: while the engine is down or
    behind, re-sending every backlogged order on every pass would only grow its queue.
    Returns (orders re-queued, cancels re-queued).
    """
    now = timezone.now()
    cutoff = now - older_than
    not_recently = Q(requeued_at__isnull=True) | Q(requeued_at__lt=now - resend_after)
    pending = list(
        Order.objects.select_related("market")
        .filter(not_recently, status=Order.Status.PENDING, created_at__lt=cutoff)
        .order_by("pk")[:limit]
    )
    cancels = list(
        Order.objects.select_related("market")
        .filter(not_recently, status__in=Order.OPEN_STATUSES, cancel_requested_at__lt=cutoff)
        .order_by("pk")[:limit]
    )
    if not pending and not cancels:
        return 0, 0
    Order.objects.filter(pk__in=[o.pk for o in pending] + [o.pk for o in cancels]).update(requeued_at=now)
    messages = [place_message_for(order) for order in pending] + [messaging.cancel_message(o) for o in cancels]
    messaging.enqueue(messages)
    return len(pending), len(cancels)


def place_message_for(order: Order) -> dict[str, Any]:
    """The engine command for a stored order (re-queue and rebuild)."""
    market = order.market
    ticks = int(order.price / market.tick_size) if order.price is not None else None
    lots = int(order.quantity / market.lot_size) if order.quantity is not None else None
    return messaging.place_message(order, price_ticks=ticks, quantity_lots=lots)

