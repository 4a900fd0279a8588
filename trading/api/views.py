"""Trading endpoints of the bot API: markets and assets, order entry, cancels, order and fill history.

Thin, as STYLE.md asks: parse (trading.api.parsing), one service or selector call,
serialize. Every business rule of order entry lives in trading.services; errors are
ServiceErrors shaped by exchange_site.api_errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from django.db.models import QuerySet
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api.base import BotAPIView, PublicAPIView, check_keys, query_int
from accounts.api.idempotency import idempotent
from accounts.errors import ServiceError
from trading import selectors, services
from trading.api import serializers
from trading.api.parsing import parse_client_id, parse_order, parse_order_id
from trading.models import Market, Order
from trading.services import OrderParams

# Backpack's defaults and caps for history pages.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Orders in one batch request: enough for a market maker's ladder, small enough that
# one request cannot hold a user's balance lock for long.
MAX_BATCH = 50


def _optional_market(request: Request) -> Market | None:
    symbol = request.query_params.get("symbol")
    return services.market_get(symbol) if symbol else None


def _page(request: Request, rows: QuerySet[Any]) -> QuerySet[Any]:
    offset = query_int(request, "offset", default=0)
    limit = query_int(request, "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    return rows[offset : offset + limit]


# The last millisecond of year 9999: later times do not fit a datetime.
_MAX_MS = 253_402_300_799_999


def _ms_param(request: Request, name: str) -> datetime | None:
    value = query_int(request, name, default=-1, minimum=-1, maximum=_MAX_MS)
    return None if value < 0 else datetime.fromtimestamp(value / 1000, tz=UTC)


def _cancel_params(request: Request, *, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> Mapping[str, Any]:
    """A cancel's parameters: the JSON body (as CCXT sends them) or else the query string."""
    data = request.data
    if not data:
        data = {key: request.query_params.getlist(key)[-1] for key in request.query_params}
    return check_keys(data, required=required, optional=optional)


def _error(exc: ServiceError) -> dict[str, str]:
    return {"code": exc.code, "message": exc.message}


# --- public ------------------------------------------------------------------------------


class AssetsView(PublicAPIView):
    def get(self, request: Request) -> Response:
        return Response([serializers.asset(row) for row in selectors.assets_active()])


class MarketsView(PublicAPIView):
    def get(self, request: Request) -> Response:
        return Response([serializers.market(row) for row in selectors.markets_all()])


class MarketView(PublicAPIView):
    def get(self, request: Request) -> Response:
        return Response(serializers.market(services.market_get(request.query_params.get("symbol"))))


class SecuritiesView(PublicAPIView):
    """Backpack's tokenized-stock metadata; CCXT asks on every market load. Bourse's markets are all plain spot."""

    def get(self, request: Request) -> Response:
        return Response([])


# --- orders ------------------------------------------------------------------------------


class OrderView(BotAPIView):
    instruction = {"GET": "orderQuery", "POST": "orderExecute", "DELETE": "orderCancel"}

    def get(self, request: Request) -> Response:
        query = request.query_params
        order = selectors.order_for(
            request.user,
            market=services.market_get(query.get("symbol")),
            order_id=parse_order_id(query.get("orderId") or None),
            client_id=parse_client_id(query.get("clientId") or None),
        )
        return Response(serializers.order(order))

    @idempotent
    def post(self, request: Request) -> Response:
        market, params = parse_order(request.data)
        order = services.order_place(user=request.user, market=market, params=params)
        return Response(serializers.order(order))

    def delete(self, request: Request) -> Response:
        params = _cancel_params(request, required=("symbol",), optional=("orderId", "clientId"))
        order = services.order_cancel(
            user=request.user,
            market=services.market_get(params["symbol"]),
            order_id=parse_order_id(params.get("orderId")),
            client_id=parse_client_id(params.get("clientId")),
        )
        return Response(serializers.order(order))


class OrdersView(BotAPIView):
    instruction = {"GET": "orderQueryAll", "POST": "orderExecute", "DELETE": "orderCancelAll"}

    def get(self, request: Request) -> Response:
        orders = selectors.open_orders_for(request.user, market=_optional_market(request))
        return Response([serializers.order(row) for row in orders])

    @idempotent
    def post(self, request: Request) -> Response:
        """A batch: each order stands or falls alone; the answer lists, in request order, the
        order object or its `{"code","message"}` error."""
        data = request.data
        if not isinstance(data, list) or not data:
            raise ServiceError("The body must be a non-empty JSON list of orders.")
        if len(data) > MAX_BATCH:
            raise ServiceError(f"At most {MAX_BATCH} orders per batch.")
        parsed: list[tuple[Market, OrderParams] | ServiceError] = []
        markets: dict[str, Market] = {}
        for item in data:
            try:
                parsed.append(parse_order(item, markets=markets))
            except ServiceError as exc:
                parsed.append(exc)
        placed = iter(
            services.orders_place_batch(
                user=request.user, requests=[item for item in parsed if not isinstance(item, ServiceError)]
            )
        )
        results: list[Order | ServiceError] = [
            item if isinstance(item, ServiceError) else next(placed) for item in parsed
        ]
        return Response(
            [_error(item) if isinstance(item, ServiceError) else serializers.order(item) for item in results]
        )

    def delete(self, request: Request) -> Response:
        params = _cancel_params(request, required=("symbol",))
        orders = services.order_cancel_all(user=request.user, market=services.market_get(params["symbol"]))
        return Response([serializers.order(row) for row in orders])


# --- history -----------------------------------------------------------------------------


class OrderHistoryView(BotAPIView):
    instruction = {"GET": "orderHistoryQueryAll"}

    def get(self, request: Request) -> Response:
        orders = selectors.order_history_for(
            request.user,
            market=_optional_market(request),
            order_id=parse_order_id(request.query_params.get("orderId") or None),
        )
        return Response([serializers.order(row) for row in _page(request, orders)])


class FillHistoryView(BotAPIView):
    instruction = {"GET": "fillHistoryQueryAll"}

    def get(self, request: Request) -> Response:
        start, end = _ms_param(request, "from"), _ms_param(request, "to")
        if start is not None and end is not None and start > end:
            raise ServiceError("from must not be after to.", code="INVALID_RANGE")
        fills = selectors.fills_for(
            request.user,
            market=_optional_market(request),
            order_id=parse_order_id(request.query_params.get("orderId") or None),
            start=start,
            end=end,
        )
        return Response([serializers.fill(row) for row in _page(request, fills)])
