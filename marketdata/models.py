"""Market data persisted by the DB processor: trades (a TimescaleDB hypertable where present)."""

from __future__ import annotations

from django.db import models
from timescale.db.models.fields import TimescaleDateTimeField

from accounts.models import AMOUNT


class Trade(models.Model):
    """One match. A hypertable on `time`: django-timescaledb drops the primary key when it
    converts the table, so uniqueness rests on (market, trade_id, time)."""

    market = models.ForeignKey("trading.Market", on_delete=models.PROTECT, related_name="trades")
    trade_id = models.BigIntegerField()
    price = models.DecimalField(**AMOUNT)
    quantity = models.DecimalField(**AMOUNT)
    quote_quantity = models.DecimalField(**AMOUNT)
    buy_order_id = models.BigIntegerField()
    sell_order_id = models.BigIntegerField()
    buyer_id = models.BigIntegerField()
    seller_id = models.BigIntegerField()
    is_buyer_maker = models.BooleanField()
    time = TimescaleDateTimeField(interval="1 day")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["market", "trade_id", "time"], name="trade_market_id_time_unique"),
        ]
        indexes = [models.Index(fields=["market", "-time"], name="trade_market_time_idx")]

    def __str__(self) -> str:
        return f"{self.market_id}#{self.trade_id} {self.quantity} @ {self.price}"
