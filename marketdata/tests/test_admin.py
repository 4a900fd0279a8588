"""Operators can browse trades and candles in admin, and cannot edit them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from accounts.tests.factories import make_staff
from marketdata.models import Candle, Trade
from trading.tests.factories import make_market

pytestmark = pytest.mark.django_db


def test_trades_and_candles_are_listed_read_only() -> None:
    market = make_market()
    now = timezone.now()
    Trade.objects.create(market=market, trade_id=1, price=Decimal("100.5"), quantity=Decimal(2),
                         quote_quantity=Decimal("201"), buy_order_id=1, sell_order_id=2, buyer_id=1, seller_id=2,
                         is_buyer_maker=False, time=now)
    Candle.objects.create(market=market, interval="1m", start=now.replace(second=0, microsecond=0),
                          open=Decimal("100.5"), high=Decimal("100.5"), low=Decimal("100.5"), close=Decimal("100.5"),
                          volume=Decimal(2), quote_volume=Decimal("201"), trades=1, first_trade_id=1, last_trade_id=1)
    client = Client()
    client.force_login(make_staff())
    trades = client.get("/admin/marketdata/trade/")
    assert trades.status_code == 200 and b"100.5" in trades.content
    candles = client.get("/admin/marketdata/candle/?interval__exact=1m")
    assert candles.status_code == 200 and b"AAPL_USD" in candles.content
    assert client.get("/admin/marketdata/trade/add/").status_code == 403
