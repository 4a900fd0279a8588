"""Capital endpoints of the bot API (balances, deposits, withdrawals) and the public status/time.

Thin, as STYLE.md asks: parse, one service or selector call, serialize. Errors are raised
as ServiceError/DRF exceptions and shaped by exchange_site.api_errors.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from django.db.models import QuerySet
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import selectors, services
from accounts.api import serializers
from accounts.api.base import BotAPIView, PublicAPIView, body_object, query_int
from accounts.api.idempotency import idempotent
from accounts.errors import ServiceError
from accounts.validation import get_asset, parse_quantity

# Backpack's defaults and caps for history pages.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class StatusView(PublicAPIView):
    def get(self, request: Request) -> Response:
        return Response({"status": "Ok", "message": None})


class TimeView(PublicAPIView):
    def get(self, request: Request) -> Response:
        return Response(int(time.time() * 1000))


class CapitalView(BotAPIView):
    instruction = {"GET": "balanceQuery"}

    def get(self, request: Request) -> Response:
        return Response(serializers.balances(selectors.balances_for(request.user)))


def _page(request: Request, rows: QuerySet[Any]) -> QuerySet[Any]:
    """Apply `from`/`to` (ms, as CCXT sends `since`/`until`), then `offset` and `limit`."""
    start = query_int(request, "from", default=-1)
    # Backpack's deposits take `endTime`, its withdrawals `to`; accept either on both.
    end = query_int(request, "to", default=-1)
    if end < 0:
        end = query_int(request, "endTime", default=-1)
    if start >= 0:
        rows = rows.filter(created_at__gte=datetime.fromtimestamp(start / 1000, tz=UTC))
    if end >= 0:
        rows = rows.filter(created_at__lte=datetime.fromtimestamp(end / 1000, tz=UTC))
    offset = query_int(request, "offset", default=0)
    limit = query_int(request, "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    return rows[offset : offset + limit]


class DepositsView(BotAPIView):
    instruction = {"GET": "depositQueryAll", "POST": "deposit"}

    def get(self, request: Request) -> Response:
        rows = _page(request, selectors.deposits_for(request.user))
        return Response([serializers.deposit(row) for row in rows])

    @idempotent
    def post(self, request: Request) -> Response:
        body = body_object(request, required=("symbol", "quantity"))
        asset = get_asset(body["symbol"])
        quantity = parse_quantity(body["quantity"], asset=asset)
        deposit = services.deposit_create(user=request.user, asset=asset, quantity=quantity)
        return Response(serializers.deposit(deposit))


class WithdrawalsView(BotAPIView):
    instruction = {"GET": "withdrawalQueryAll", "POST": "withdraw"}

    def get(self, request: Request) -> Response:
        rows = _page(request, selectors.withdrawals_for(request.user))
        return Response([serializers.withdrawal(row) for row in rows])

    @idempotent
    def post(self, request: Request) -> Response:
        # CCXT's withdraw() always adds `blockchain` (its required network parameter);
        # Bourse has one rail, so it is accepted and not used.
        body = body_object(request, required=("symbol", "quantity", "address"), optional=("blockchain",))
        asset = get_asset(body["symbol"])
        quantity = parse_quantity(body["quantity"], asset=asset)
        if not isinstance(body["address"], str):
            raise ServiceError("address must be a string.")
        withdrawal = services.withdrawal_create(
            user=request.user, asset=asset, quantity=quantity, address=body["address"]
        )
        return Response(serializers.withdrawal(withdrawal))
