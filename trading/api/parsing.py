"""Bot API order requests on the wire → `OrderParams`, each field refused with its own error code.

Only the shape of each field is checked here (type, finite positive decimal, known enum
value). Whether the order fits its market — tick, lot, minimums, market status, funds —
is `trading.services.order_place`'s business, so pages and the API refuse alike.
"""

from __future__ import annotations

import functools
from decimal import Decimal

from accounts.api.base import check_keys
from accounts.errors import InvalidQuantity, ServiceError
from accounts.models import AMOUNT, Asset
from accounts.validation import parse_quantity
from trading.models import Market, Order
from trading.services import OrderParams, market_get

ORDER_REQUIRED = ("symbol", "side", "orderType")
ORDER_OPTIONAL = ("quantity", "quoteQuantity", "price", "timeInForce", "postOnly", "clientId", "selfTradePrevention")
# Backpack's clientId is a uint32.
MAX_CLIENT_ID = 2**32 - 1
# `Choices.values` builds a new list on every access; these are read for every order.
_SIDES = Order.Side.values
_TYPES = Order.Type.values
_TIMES_IN_FORCE = Order.TimeInForce.values
_STPS = Order.SelfTradePrevention.values
# Order ids are bigint primary keys; more digits than this cannot name one.
_MAX_ID_DIGITS = 19


def _choice(value: object, *, field: str, choices: list[str], default: str | None = None) -> str:
    if value is None and default is not None:
        return default
    if not isinstance(value, str) or value not in choices:
        raise ServiceError(f"{field} must be one of {', '.join(choices)}.", code="INVALID_ORDER")
    return value


def _amount(value: object, *, field: str, asset: Asset, code: str) -> Decimal | None:
    if value is None:
        return None
    try:
        return parse_quantity(value, asset=asset, field=field)
    except InvalidQuantity as exc:
        raise ServiceError(exc.message, code=code) from None


@functools.lru_cache(maxsize=256)
def _price_column(symbol: str) -> Asset:
    # One unsaved stand-in per quote symbol, not one per order: a model instance costs
    # ~20 µs to build, 50 times per batch. parse_quantity only reads it.
    return Asset(symbol=symbol, precision=AMOUNT["decimal_places"])


def _price(value: object, market: Market) -> Decimal | None:
    # A price is counted in ticks, which may be finer than the quote asset's smallest unit
    # (only tick × lot must be whole units), so it is read at the column's full precision;
    # order_place then checks it is a whole number of ticks.
    if value is None:
        return None
    return _amount(value, field="price", asset=_price_column(market.quote.symbol), code="INVALID_PRICE")


def parse_client_id(value: object) -> int | None:
    """A uint32 given as a JSON integer (or, from a query string, its digits)."""
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        value = int(value)
    # bool is an int subclass: `true` is not a client id.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CLIENT_ID:
        raise ServiceError(f"clientId must be an integer between 0 and {MAX_CLIENT_ID}.")
    return value


def parse_order_id(value: object) -> int | None:
    """An order id: the string CCXT sends back (`"42"`) or a JSON integer."""
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= _MAX_ID_DIGITS:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ServiceError("orderId must be an order id, e.g. \"42\".")


def parse_order(data: object, *, markets: dict[str, Market] | None = None) -> tuple[Market, OrderParams]:
    """One order body of `POST /api/v1/order(s)` → its market and parameters.

    `markets`, when given, memoizes the market look-up across the orders of one request (a
    batch names one or two markets fifty times); it lives for that request only, so a
    market's status change takes effect on the next one.

    Raises ServiceError with BOT_API.md's code for the first bad field: INVALID_CLIENT_REQUEST
    (shape, unknown key, clientId), INVALID_MARKET/INVALID_SYMBOL (symbol), INVALID_ORDER
    (enums, postOnly), INVALID_PRICE, INVALID_QUANTITY.
    """
    body = check_keys(data, required=ORDER_REQUIRED, optional=ORDER_OPTIONAL)
    symbol = body["symbol"]
    if markets is None:
        market = market_get(symbol)
    elif isinstance(symbol, str) and symbol in markets:
        market = markets[symbol]
    else:
        market = market_get(symbol)
        markets[market.symbol] = market
    side = _choice(body["side"], field="side", choices=_SIDES)
    order_type = _choice(body["orderType"], field="orderType", choices=_TYPES)
    time_in_force = _choice(
        body.get("timeInForce"), field="timeInForce", choices=_TIMES_IN_FORCE, default=Order.TimeInForce.GTC
    )
    stp = _choice(
        body.get("selfTradePrevention"),
        field="selfTradePrevention",
        choices=_STPS,
        default=Order.SelfTradePrevention.REJECT_TAKER,
    )
    post_only = body.get("postOnly", False)
    if post_only is None:
        post_only = False
    if not isinstance(post_only, bool):
        raise ServiceError("postOnly must be true or false.", code="INVALID_ORDER")
    return market, OrderParams(
        side=side,
        order_type=order_type,
        price=_price(body.get("price"), market),
        quantity=_amount(body.get("quantity"), field="quantity", asset=market.base, code="INVALID_QUANTITY"),
        quote_quantity=_amount(
            body.get("quoteQuantity"), field="quoteQuantity", asset=market.quote, code="INVALID_QUANTITY"
        ),
        time_in_force=time_in_force,
        post_only=post_only,
        client_id=parse_client_id(body.get("clientId")),
        self_trade_prevention=stp,
    )
