"""Markets, orders and fills on the wire, in Backpack's shapes (BOT_API.md). Plain functions, no rules.

Where BOT_API.md and CCXT's `backpack` class disagree, CCXT wins, since bots use it:
market `createdAt` and fill `timestamp` are ISO-8601 strings (CCXT reads them with
`parse8601`), order `createdAt` is ms.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from accounts.api.serializers import timestamp
from accounts.models import Asset
from trading.models import Fill, Market, Order

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms(value: datetime) -> int:
    # Integer arithmetic: float seconds × 1000 can land a millisecond off.
    return (value - _EPOCH) // timedelta(milliseconds=1)


def decimal(value: Decimal | None) -> str | None:
    """A plain decimal string without the column's trailing zeros: "10.5", "100", never "1E+2"."""
    if value is None:
        return None
    return f"{value.normalize():f}"


def asset(row: Asset) -> dict[str, Any]:
    # `tokens` are Backpack's blockchains; Bourse moves money by (simulated) bank transfer.
    return {"symbol": row.symbol, "displayName": row.name, "tokens": []}


def market(row: Market) -> dict[str, Any]:
    # A quantity must be a positive whole number of lots, so the least order is at least a lot.
    min_quantity = max(row.min_quantity, row.lot_size)
    return {
        "symbol": row.symbol,
        "baseSymbol": row.base.symbol,
        "quoteSymbol": row.quote.symbol,
        "marketType": "SPOT",
        "orderBookState": row.status,
        "visible": True,
        "createdAt": timestamp(row.created_at),
        "filters": {
            "price": {"tickSize": decimal(row.tick_size), "minPrice": decimal(row.tick_size), "maxPrice": None},
            "quantity": {
                "stepSize": decimal(row.lot_size),
                "minQuantity": decimal(min_quantity),
                "maxQuantity": decimal(row.max_quantity),
            },
        },
    }


def order(row: Order) -> dict[str, Any]:
    return {
        "id": str(row.pk),
        "clientId": row.client_id,
        "symbol": row.market.symbol,
        "side": row.side,
        "orderType": row.order_type,
        "timeInForce": row.time_in_force,
        "price": decimal(row.price),
        "quantity": decimal(row.quantity),
        "quoteQuantity": decimal(row.quote_quantity),
        "executedQuantity": decimal(row.executed_quantity),
        "executedQuoteQuantity": decimal(row.executed_quote_quantity),
        "status": row.wire_status,
        "postOnly": row.post_only,
        "selfTradePrevention": row.self_trade_prevention,
        # Backpack's field for why an order ended early (Expired/Cancelled); null otherwise.
        "expiryReason": row.reason or None,
        "createdAt": ms(row.created_at),
    }


def fill(row: Fill) -> dict[str, Any]:
    return {
        "tradeId": row.trade_id,
        "orderId": str(row.order_id),
        "clientId": row.order.client_id,
        "symbol": row.market.symbol,
        "side": row.side,
        "price": decimal(row.price),
        "quantity": decimal(row.quantity),
        "quoteQuantity": decimal(row.quote_quantity),
        "fee": decimal(row.fee),
        # Fees are charged in the quote asset on both sides (ARCHITECTURE.md "Money").
        "feeSymbol": row.market.quote.symbol,
        "isMaker": row.is_maker,
        "timestamp": timestamp(row.created_at),
    }
