"""Reads for the trading pages and the bot API: markets, assets, orders and fills. Nothing here writes.

Every list joins what its serializer shows (`select_related`), so the number of queries
does not grow with the number of rows.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from accounts.errors import NotFound, ServiceError
from accounts.models import Asset, User
from trading.models import Fill, Market, Order


def assets_active() -> QuerySet[Asset]:
    return Asset.objects.filter(is_active=True).order_by("symbol")


def markets_all() -> QuerySet[Market]:
    return Market.objects.select_related("base", "quote").order_by("symbol")


def _orders_for(user: User) -> QuerySet[Order]:
    return Order.objects.filter(user=user).select_related("market")


def open_orders_for(user: User, *, market: Market | None = None) -> QuerySet[Order]:
    """The user's open orders (not yet seen by the engine included), oldest first."""
    orders = _orders_for(user).filter(status__in=Order.OPEN_STATUSES)
    if market is not None:
        orders = orders.filter(market=market)
    return orders.order_by("created_at", "pk")


def order_history_for(
    user: User, *, market: Market | None = None, order_id: int | None = None
) -> QuerySet[Order]:
    """Every order of the user, in any status, newest first."""
    orders = _orders_for(user)
    if market is not None:
        orders = orders.filter(market=market)
    if order_id is not None:
        orders = orders.filter(pk=order_id)
    return orders.order_by("-created_at", "-pk")


def order_for(user: User, *, market: Market, order_id: int | None = None, client_id: int | None = None) -> Order:
    """One order of the user in `market`, open or not; NotFound if it is not theirs.

    By `client_id`, the open order with that id wins: a clientId names one open order, but
    may have been reused by earlier, finished orders.
    """
    orders = _orders_for(user).filter(market=market)
    if order_id is not None:
        order = orders.filter(pk=order_id).first()
    elif client_id is not None:
        order = (
            orders.filter(client_id=client_id, status__in=Order.OPEN_STATUSES).first()
            or orders.filter(client_id=client_id).order_by("-created_at", "-pk").first()
        )
    else:
        raise ServiceError("orderId or clientId is required")
    if order is None:
        raise NotFound("Order not found")
    return order


def fills_for(
    user: User,
    *,
    market: Market | None = None,
    order_id: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> QuerySet[Fill]:
    """The user's fills, newest first; `start`/`end` bound the fill time, both inclusive."""
    fills = Fill.objects.filter(user=user).select_related("market__quote", "order")
    if market is not None:
        fills = fills.filter(market=market)
    if order_id is not None:
        fills = fills.filter(order_id=order_id)
    if start is not None:
        fills = fills.filter(created_at__gte=start)
    if end is not None:
        fills = fills.filter(created_at__lte=end)
    return fills.order_by("-created_at", "-pk")
