from __future__ import annotations

from django.contrib import admin

from marketdata.models import Candle, Trade
from trading.admin import ReadOnlyAdmin


@admin.register(Trade)
class TradeAdmin(ReadOnlyAdmin):
    list_display = ("market", "trade_id", "price", "quantity", "quote_quantity", "is_buyer_maker", "time")
    list_filter = ("market",)
    search_fields = ("=trade_id",)
    list_select_related = ("market",)


@admin.register(Candle)
class CandleAdmin(ReadOnlyAdmin):
    list_display = ("market", "interval", "start", "open", "high", "low", "close", "volume", "trades")
    list_filter = ("market", "interval")
    list_select_related = ("market",)
