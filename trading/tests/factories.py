"""Plain factory functions for trading tests: markets through the service, orders and fills.

Markets and orders are made by `trading.services`, so funds are locked and the ledger stays
consistent. Fills are written directly: in production only the DB processor writes them,
and the API tests only need rows to read.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from accounts.models import User
from accounts.services import api_token_create
from accounts.tests.factories import fund, make_asset, make_user
from trading.models import Fill, Market, Order
from trading.services import OrderParams, market_create, order_place

_trade_ids = itertools.count(1)


def make_market(base: str = "AAPL", quote: str = "USD", **kw: Any) -> Market:
    """AAPL_USD by default: tick 0.01 USD, lot 1 share; `kw` goes to `market_create`."""
    base_asset = make_asset(base, precision=kw.pop("base_precision", 0), kind="stock")
    quote_asset = make_asset(quote, precision=kw.pop("quote_precision", 2), kind="cash")
    kw.setdefault("tick_size", Decimal("0.01"))
    kw.setdefault("lot_size", Decimal("1"))
    return market_create(base=base_asset, quote=quote_asset, **kw)


def make_racer() -> tuple[User, str]:
    """On a new AAPL_USD market, a user with 1000.00 USD and 100 AAPL, and their API token:
    the set-up of the tests where one user's requests race each other."""
    usd = make_asset("USD", precision=2, kind="cash")
    aapl = make_asset("AAPL", precision=0, kind="stock")
    make_market("AAPL", "USD")
    user = make_user("racer")
    fund(user, usd, Decimal("1000.00"))
    fund(user, aapl, Decimal("100"))
    return user, api_token_create(user=user)


def place(user: User, market: Market, **kw: Any) -> Order:
    """A limit bid of 1 @ 10.00 unless `kw` (OrderParams fields) says otherwise."""
    kw.setdefault("side", Order.Side.BID)
    kw.setdefault("order_type", Order.Type.LIMIT)
    if kw["order_type"] == Order.Type.LIMIT:
        kw.setdefault("price", Decimal("10.00"))
        kw.setdefault("quantity", Decimal("1"))
    return order_place(user=user, market=market, params=OrderParams(**kw))


def make_fill(
    order: Order,
    *,
    price: Decimal | str | None = None,
    quantity: Decimal | str | None = None,
    fee: Decimal | str = "0.02",
    is_maker: bool = False,
    created_at: datetime | None = None,
) -> Fill:
    price = Decimal(price) if price is not None else order.price or Decimal("10.00")
    quantity = Decimal(quantity) if quantity is not None else order.quantity or Decimal("1")
    return Fill.objects.create(
        trade_id=next(_trade_ids),
        market=order.market,
        order=order,
        user=order.user,
        side=order.side,
        price=price,
        quantity=quantity,
        quote_quantity=price * quantity,
        fee=Decimal(fee),
        is_maker=is_maker,
        created_at=created_at or timezone.now(),
    )
