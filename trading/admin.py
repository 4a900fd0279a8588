"""Admin for running the markets. Market writes go through `trading.services`, so every
change also reaches the running engine as a command on `messages`."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.errors import ServiceError
from trading import services
from trading.models import Fill, Market, MarketState, Order

FIXED_AFTER_CREATE = ("symbol", "base", "quote", "tick_size", "lot_size")


@admin.register(Market)
class MarketAdmin(admin.ModelAdmin):
    list_display = ("symbol", "status", "tick_size", "lot_size", "min_quantity", "min_notional",
                    "maker_fee_rate", "taker_fee_rate", "band_bps", "reference_price", "created_at")
    list_filter = ("status", "quote")
    search_fields = ("symbol",)
    actions = ("halt", "reopen", "close")
    fields = ("symbol", "base", "quote", "tick_size", "lot_size", "min_quantity", "min_notional", "max_quantity",
              "status", "maker_fee_rate", "taker_fee_rate", "band_bps", "reference_price")

    def get_readonly_fields(self, request: HttpRequest, obj: Market | None = None) -> tuple[str, ...]:
        # Tick and lot are fixed once a market exists (the engine's integers depend on them).
        return FIXED_AFTER_CREATE if obj is not None else ("symbol",)

    def save_model(self, request: HttpRequest, obj: Market, form: Any, change: bool) -> None:
        data = form.cleaned_data
        if not change:
            created = services.market_create(
                base=data["base"], quote=data["quote"], tick_size=data["tick_size"], lot_size=data["lot_size"],
                min_quantity=data["min_quantity"], min_notional=data["min_notional"], status=data["status"],
                maker_fee_rate=data["maker_fee_rate"], taker_fee_rate=data["taker_fee_rate"],
                band_bps=data["band_bps"], reference_price=data["reference_price"],
            )
            obj.pk = created.pk
            obj.symbol = created.symbol
            return
        changes = {name: data[name] for name in form.changed_data if name in services.MARKET_MUTABLE}
        if changes:
            services.market_update(market_id=obj.pk, **changes)

    def _set_status(self, request: HttpRequest, queryset: QuerySet[Market], status: str) -> None:
        for market in queryset:
            services.market_update(market_id=market.pk, status=status)
        self.message_user(request, f"{queryset.count()} market(s) set to {status}.")

    @admin.action(description="Halt: cancel only")
    def halt(self, request: HttpRequest, queryset: QuerySet[Market]) -> None:
        self._set_status(request, queryset, Market.Status.CANCEL_ONLY)

    @admin.action(description="Reopen for trading")
    def reopen(self, request: HttpRequest, queryset: QuerySet[Market]) -> None:
        self._set_status(request, queryset, Market.Status.OPEN)

    @admin.action(description="Close (nothing accepted, book kept)")
    def close(self, request: HttpRequest, queryset: QuerySet[Market]) -> None:
        self._set_status(request, queryset, Market.Status.CLOSED)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "market", "side", "order_type", "price", "quantity", "executed_quantity",
                    "status", "locked", "created_at")
    list_filter = ("status", "market", "side", "order_type")
    search_fields = ("=id", "user__username", "=client_id")
    list_select_related = ("user", "market")
    date_hierarchy = "created_at"
    actions = ("cancel_orders",)

    @admin.action(description="Cancel selected open orders")
    def cancel_orders(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        done = failed = 0
        for order in queryset.select_related("user", "market"):
            try:
                services.order_cancel(user=order.user, market=order.market, order_id=order.pk)
                done += 1
            except ServiceError:
                failed += 1
        self.message_user(request, f"Cancel requested for {done} order(s); {failed} not open.",
                          messages.SUCCESS if not failed else messages.WARNING)


@admin.register(Fill)
class FillAdmin(ReadOnlyAdmin):
    list_display = ("trade_id", "market", "user", "order", "side", "price", "quantity", "fee", "is_maker", "created_at")
    list_filter = ("market", "side", "is_maker")
    search_fields = ("user__username", "=order__id", "=trade_id")
    list_select_related = ("user", "market")


@admin.register(MarketState)
class MarketStateAdmin(ReadOnlyAdmin):
    list_display = ("market", "last_event_seq", "last_trade_id", "last_book_update_id", "last_price", "updated_at")
