"""Market data persisted by the DB processor: trades (a TimescaleDB hypertable where present)."""

from __future__ import annotations

from django.db import models
from timescale.db.models.fields import TimescaleDateTimeField

from accounts.models import AMOUNT


class Trade(models.Model):
    """One match. A hypertable on `time`: django-timescaledb drops the primary key when it
    converts the table, so uniqueness rests on (market, trade_id, time)."""

    # Not indexed alone: both indexes below lead with it, and trades are written thousands a
    # second. Not checked by the database either: the check locks the market's row at every
    # commit that writes trades, and settlement writes them for a market it has just read
    # in the same transaction (markets are never deleted).
    market = models.ForeignKey(
        "trading.Market", on_delete=models.PROTECT, related_name="trades", db_index=False, db_constraint=False
    )
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


class Candle(models.Model):
    """One OHLCV bucket of one market at one interval, maintained by the DB processor
    (`marketdata.candles.candles_apply`) in the transaction that inserts the trades.

    `start` is the bucket start in UTC (see `marketdata.candles` for the alignment). A
    hypertable on `start` where TimescaleDB is installed; as for `Trade`, the primary key is
    then dropped, so uniqueness rests on (market, interval, start), which includes the time
    column, and the upsert's ON CONFLICT targets exactly that.
    """

    class Interval(models.TextChoices):
        M1 = "1m"
        M3 = "3m"
        M5 = "5m"
        M15 = "15m"
        M30 = "30m"
        H1 = "1h"
        H2 = "2h"
        H4 = "4h"
        H6 = "6h"
        H8 = "8h"
        H12 = "12h"
        D1 = "1d"
        D3 = "3d"
        W1 = "1w"
        MONTH1 = "1month"

    market = models.ForeignKey("trading.Market", on_delete=models.PROTECT, related_name="candles")
    interval = models.CharField(max_length=8, choices=Interval.choices)
    start = TimescaleDateTimeField(interval="30 days")
    open = models.DecimalField(**AMOUNT)
    high = models.DecimalField(**AMOUNT)
    low = models.DecimalField(**AMOUNT)
    close = models.DecimalField(**AMOUNT)
    volume = models.DecimalField(**AMOUNT)  # base
    quote_volume = models.DecimalField(**AMOUNT)
    trades = models.BigIntegerField()
    first_trade_id = models.BigIntegerField()  # decides `open` when batches meet in one bucket
    last_trade_id = models.BigIntegerField()  # decides `close`

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["market", "interval", "start"], name="candle_market_interval_start_unique"),
        ]
        # The read path: a market's candles of one interval, newest first.
        indexes = [models.Index(fields=["market", "interval", "-start"], name="candle_read_idx")]

    def __str__(self) -> str:
        return f"{self.market_id} {self.interval} {self.start:%Y-%m-%d %H:%M} c={self.close}"
