"""Trade retention: `drop_old_trades` drops whole TimescaleDB chunks past the retention."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from engine_worker.tests.factories import make_market
from exchange_site.db.base import timescaledb_installed
from marketdata.jobs import drop_old_trades
from marketdata.models import Candle, Trade
from trading.models import Market

pytestmark = pytest.mark.django_db


def _trades(market: Market, ages_in_days: list[float]) -> None:
    now = timezone.now()
    Trade.objects.bulk_create([
        Trade(
            market=market, trade_id=i + 1, price=Decimal("10"), quantity=Decimal("1"), quote_quantity=Decimal("10"),
            buy_order_id=1, sell_order_id=2, buyer_id=1, seller_id=2, is_buyer_maker=False,
            time=now - timedelta(days=age),
        )
        for i, age in enumerate(ages_in_days)
    ])
    # In production the trades were committed long before; inside the test's transaction
    # their deferred foreign-key checks are still pending, and PostgreSQL refuses to drop a
    # table with pending trigger events. Run the checks now.
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def test_trades_older_than_the_retention_are_dropped_and_recent_ones_stay(settings: Any) -> None:
    if not timescaledb_installed(connection):
        pytest.skip("drop_chunks needs TimescaleDB")
    settings.BOURSE_TRADE_RETENTION_DAYS = 365
    market = make_market("AAPL", "USD", tick="0.01", lot="1")
    _trades(market, [800, 400, 367, 300, 1, 0])
    Candle.objects.create(
        market=market, interval="1d", start=timezone.now() - timedelta(days=400), open=1, high=1, low=1, close=1,
        volume=1, quote_volume=1, trades=1, first_trade_id=2, last_trade_id=2,
    )

    assert drop_old_trades() == 3  # one-day chunks: 800, 400 and 367 days old
    ages = sorted((timezone.now() - t).days for t in Trade.objects.values_list("time", flat=True))
    assert ages == [0, 1, 300]
    assert Candle.objects.count() == 1, "charts keep their history"

    assert drop_old_trades() == 0


def test_zero_days_keeps_every_trade(settings: Any) -> None:
    settings.BOURSE_TRADE_RETENTION_DAYS = 0
    market = make_market("AAPL", "USD", tick="0.01", lot="1")
    _trades(market, [5000, 2])
    assert drop_old_trades() == 0
    assert Trade.objects.count() == 2
