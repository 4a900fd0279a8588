from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from marketdata.models import Trade


@admin.register(Trade)
class TradeAdmin(admin.ModelAdmin):
    list_display = ("market", "trade_id", "price", "quantity", "quote_quantity", "is_buyer_maker", "time")
    list_filter = ("market",)
    search_fields = ("=trade_id",)
    list_select_related = ("market",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
