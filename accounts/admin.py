"""Django admin for running the exchange.

Money-changing models (Balance, LedgerEntry, Deposit, Withdrawal, StaffAllocation) cannot
be edited here: their change pages are view-only and every balance change goes through an
action or add form that calls a service, so it is made under the row lock and writes a
ledger entry naming the staff member (request.user).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from accounts import services
from accounts.errors import ServiceError
from accounts.ledger import fmt_amount
from accounts.models import (
    ApiKey,
    Asset,
    Balance,
    Deposit,
    IdempotencyRecord,
    LedgerEntry,
    StaffAllocation,
    User,
    Withdrawal,
)
from accounts.validation import parse_quantity

admin.site.site_header = "Bourse administration"
admin.site.site_title = "Bourse admin"
admin.site.index_title = "Exchange operations"


class ReadOnlyAdminMixin:
    """View-only: rows are written by services, never edited by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


def run_for_each(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Any],
    call: Callable[[Any], object],
    verb: str,
) -> None:
    """Call a service once per selected row (each in its own transaction) and report."""
    done, failed = 0, []
    for obj in queryset.order_by("pk"):
        try:
            call(obj)
            done += 1
        except ServiceError as exc:
            failed.append(f"#{obj.pk}: {exc.message}")
    if done:
        modeladmin.message_user(request, f"{verb} {done} {modeladmin.opts.verbose_name_plural}.", messages.SUCCESS)
    if failed:
        modeladmin.message_user(
            request, f"{len(failed)} failed: " + "; ".join(failed), messages.ERROR
        )


def amount(value: Decimal | None) -> str:
    return "" if value is None else fmt_amount(value)


# --- Users ------------------------------------------------------------------------------


class BalanceInline(admin.TabularInline):
    model = Balance
    fk_name = "user"
    fields = ["asset", "available_amount", "locked_amount", "total_amount", "updated_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ["asset__symbol"]

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Balance]:
        return super().get_queryset(request).select_related("asset")

    @admin.display(description="available")
    def available_amount(self, obj: Balance) -> str:
        return amount(obj.available)

    @admin.display(description="locked")
    def locked_amount(self, obj: Balance) -> str:
        return amount(obj.locked)

    @admin.display(description="total")
    def total_amount(self, obj: Balance) -> str:
        return amount(obj.total)


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    inlines = [BalanceInline]
    list_display = ["username", "email", "is_staff", "is_active", "date_joined", "last_login"]


# --- Assets -----------------------------------------------------------------------------


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    list_display = ["symbol", "name", "kind", "precision", "withdrawal_limit_24h", "is_active"]
    list_filter = ["kind", "is_active"]
    search_fields = ["symbol", "name"]

    def get_readonly_fields(self, request: HttpRequest, obj: Asset | None = None) -> list[str]:
        # Balances, orders and markets are counted in these units: changing them later
        # would silently re-denominate everything already held.
        return ["symbol", "precision", "kind", "created_at"] if obj else []

    def has_delete_permission(self, request: HttpRequest, obj: Asset | None = None) -> bool:
        # Deactivate instead; balances and the ledger refer to the asset for ever.
        return False


# --- Balances and the ledger ------------------------------------------------------------


@admin.register(Balance)
class BalanceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["user", "asset", "available_amount", "locked_amount", "total_amount", "updated_at"]
    list_filter = ["asset"]
    search_fields = ["user__username", "asset__symbol"]
    list_select_related = ["user", "asset"]
    ordering = ["asset__symbol", "user__username"]

    @admin.display(description="available", ordering="available")
    def available_amount(self, obj: Balance) -> str:
        return amount(obj.available)

    @admin.display(description="locked", ordering="locked")
    def locked_amount(self, obj: Balance) -> str:
        return amount(obj.locked)

    @admin.display(description="total")
    def total_amount(self, obj: Balance) -> str:
        return amount(obj.total)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "user", "asset", "reason", "available_change", "locked_change", "reference", "actor"]
    list_filter = ["reason", "asset", "created_at"]
    search_fields = ["user__username", "reference"]
    list_select_related = ["user", "asset", "actor"]
    date_hierarchy = "created_at"
    ordering = ["-created_at", "-id"]

    @admin.display(description="available Δ")
    def available_change(self, obj: LedgerEntry) -> str:
        return f"{obj.available_delta.normalize():+f}"

    @admin.display(description="locked Δ")
    def locked_change(self, obj: LedgerEntry) -> str:
        return f"{obj.locked_delta.normalize():+f}"


# --- Deposits and withdrawals -----------------------------------------------------------


@admin.register(Deposit)
class DepositAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "user", "asset", "quantity_amount", "status", "created_at", "decided_by", "decided_at"]
    list_filter = ["status", "asset"]
    search_fields = ["id", "user__username", "asset__symbol"]
    list_select_related = ["user", "asset", "decided_by"]
    actions = ["confirm_deposits", "reject_deposits"]

    @admin.display(description="quantity", ordering="quantity")
    def quantity_amount(self, obj: Deposit) -> str:
        return amount(obj.quantity)

    # Actions are shown although the model is read-only: they change state through services.
    @admin.action(description="Confirm selected deposits")
    def confirm_deposits(self, request: HttpRequest, queryset: QuerySet[Deposit]) -> None:
        run_for_each(
            self, request, queryset,
            lambda d: services.deposit_confirm(deposit_id=d.pk, staff=request.user),  # type: ignore[arg-type]
            "Confirmed",
        )

    @admin.action(description="Reject selected deposits")
    def reject_deposits(self, request: HttpRequest, queryset: QuerySet[Deposit]) -> None:
        run_for_each(
            self, request, queryset,
            lambda d: services.deposit_reject(deposit_id=d.pk, staff=request.user),  # type: ignore[arg-type]
            "Rejected",
        )


@admin.register(Withdrawal)
class WithdrawalAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id", "user", "asset", "quantity_amount", "address", "status", "created_at", "decided_by", "decided_at",
    ]
    list_filter = ["status", "asset"]
    search_fields = ["id", "user__username", "asset__symbol", "address"]
    list_select_related = ["user", "asset", "decided_by"]
    actions = ["complete_withdrawals", "reject_withdrawals"]

    @admin.display(description="quantity", ordering="quantity")
    def quantity_amount(self, obj: Withdrawal) -> str:
        return amount(obj.quantity)

    @admin.action(description="Complete selected withdrawals (funds leave)")
    def complete_withdrawals(self, request: HttpRequest, queryset: QuerySet[Withdrawal]) -> None:
        run_for_each(
            self, request, queryset,
            lambda w: services.withdrawal_complete(withdrawal_id=w.pk, staff=request.user),  # type: ignore[arg-type]
            "Completed",
        )

    @admin.action(description="Reject selected withdrawals (funds released)")
    def reject_withdrawals(self, request: HttpRequest, queryset: QuerySet[Withdrawal]) -> None:
        run_for_each(
            self, request, queryset,
            lambda w: services.withdrawal_reject(withdrawal_id=w.pk, staff=request.user),  # type: ignore[arg-type]
            "Rejected",
        )


# --- Staff allocations ------------------------------------------------------------------


class StaffAllocationForm(forms.ModelForm):
    quantity = forms.CharField(
        help_text="Decimal amount in the asset's units; negative takes funds back from available."
    )

    class Meta:
        model = StaffAllocation
        fields = ["user", "asset", "quantity", "note"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        asset = data.get("asset")
        raw = self.data.get("quantity")
        if asset is not None and raw is not None:
            try:
                data["quantity"] = parse_quantity(raw, asset=asset, allow_negative=True)
            except ServiceError as exc:
                self.add_error("quantity", exc.message)
        return data

    def _post_clean(self) -> None:
        # The model instance is never saved from this form (allocation_create does it), so
        # skip the model validation that would need `staff`.
        pass


@admin.register(StaffAllocation)
class StaffAllocationAdmin(admin.ModelAdmin):
    form = StaffAllocationForm
    list_display = ["id", "created_at", "user", "asset", "quantity_amount", "staff", "note"]
    list_filter = ["asset"]
    search_fields = ["user__username", "asset__symbol", "note", "staff__username"]
    list_select_related = ["user", "asset", "staff"]
    autocomplete_fields = ["user", "asset"]

    @admin.display(description="quantity", ordering="quantity")
    def quantity_amount(self, obj: StaffAllocation) -> str:
        return amount(obj.quantity)

    def get_fields(self, request: HttpRequest, obj: StaffAllocation | None = None) -> list[str]:
        if obj is None:
            return ["user", "asset", "quantity", "note"]
        return ["user", "asset", "quantity", "note", "staff", "created_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: StaffAllocation | None = None) -> list[str]:
        return self.get_fields(request, obj) if obj is not None else []

    def has_change_permission(self, request: HttpRequest, obj: StaffAllocation | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: StaffAllocation | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: StaffAllocation, form: Any, change: bool) -> None:
        # Never obj.save(): the service locks the balance, refuses an overdraft and writes
        # the ledger entry with the staff member as actor.
        created = services.allocation_create(
            user=form.cleaned_data["user"],
            asset=form.cleaned_data["asset"],
            quantity=form.cleaned_data["quantity"],
            staff=request.user,  # type: ignore[arg-type]
            note=form.cleaned_data.get("note", ""),
        )
        # The admin goes on to log and redirect to `obj`: make it the saved row.
        obj.__dict__.update(created.__dict__)

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().add_view(request, form_url, extra_context)
        except ServiceError as exc:
            # e.g. a claw-back larger than what is available; the admin's own transaction
            # has rolled back, so nothing was written.
            self.message_user(request, f"Allocation refused: {exc.message}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


# --- Credentials and idempotency --------------------------------------------------------


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "user", "label", "public_key", "created_at", "last_used_at", "revoked_at", "active"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["user__username", "label", "public_key"]
    list_select_related = ["user"]
    actions = ["revoke_keys"]

    @admin.display(boolean=True, description="active")
    def active(self, obj: ApiKey) -> bool:
        return obj.is_active

    @admin.action(description="Revoke selected API keys")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        run_for_each(
            self, request, queryset,
            lambda key: services.api_key_revoke(user=key.user, api_key_id=key.pk),
            "Revoked",
        )


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "user", "key", "response_status"]
    search_fields = ["user__username", "key"]
    list_select_related = ["user"]
    date_hierarchy = "created_at"
