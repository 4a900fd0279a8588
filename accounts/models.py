"""Users, assets, balances and the append-only ledger that every balance change writes.

Amounts are DecimalField(32, 16) everywhere (see ARCHITECTURE.md "Money"); an asset's
`precision` says how many of those decimals it actually uses.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import Q

AMOUNT = {"max_digits": 32, "decimal_places": 16}
ZERO = Decimal("0")


class User(AbstractUser):
    """The exchange's user. Custom from the first migration so it can grow without pain."""

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"


class Asset(models.Model):
    class Kind(models.TextChoices):
        CASH = "cash", "Cash"
        STOCK = "stock", "Stock"

    symbol = models.CharField(max_length=16, unique=True, help_text="Upper case, e.g. USD or AAPL.")
    name = models.CharField(max_length=100)
    precision = models.PositiveSmallIntegerField(
        help_text="Decimal places the asset is counted in (USD 2, a share 0); at most 16."
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    withdrawal_limit_24h = models.DecimalField(
        **AMOUNT, null=True, blank=True,
        help_text="Most one user may withdraw over any rolling 24 hours; empty uses the site default.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["symbol"]
        constraints = [
            models.CheckConstraint(condition=Q(precision__lte=16), name="asset_precision_lte_16"),
            models.CheckConstraint(condition=Q(symbol__regex=r"^[A-Z0-9]{1,16}$"), name="asset_symbol_upper"),
        ]

    def __str__(self) -> str:
        return self.symbol


class Balance(models.Model):
    """What a user holds of one asset. Only `accounts.services` changes it, under a row lock."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="balances")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="balances")
    available = models.DecimalField(**AMOUNT, default=ZERO)
    locked = models.DecimalField(**AMOUNT, default=ZERO)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "asset"], name="balance_user_asset_unique"),
            # The last line of defence: a bug above can fail a transaction, never overdraw.
            models.CheckConstraint(condition=Q(available__gte=0), name="balance_available_gte_0"),
            models.CheckConstraint(condition=Q(locked__gte=0), name="balance_locked_gte_0"),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.asset}: {self.available} + {self.locked} locked"

    @property
    def total(self) -> Decimal:
        return self.available + self.locked


class LedgerEntry(models.Model):
    """One balance change. Append-only: rows are inserted by services and never updated."""

    class Reason(models.TextChoices):
        DEPOSIT = "deposit", "Deposit confirmed"
        WITHDRAWAL_REQUEST = "withdrawal_request", "Withdrawal requested (funds locked)"
        WITHDRAWAL_COMPLETE = "withdrawal_complete", "Withdrawal completed"
        WITHDRAWAL_RELEASE = "withdrawal_release", "Withdrawal rejected or cancelled (funds released)"
        ALLOCATION = "allocation", "Staff allocation"
        ORDER_LOCK = "order_lock", "Order placed (funds locked)"
        ORDER_RELEASE = "order_release", "Order funds released"
        TRADE = "trade", "Trade settlement"
        FEE = "fee", "Trading fee"

    # (user, asset) below serves look-ups by user; a second index on user alone would only
    # cost a write per entry, and settlement writes thousands a second.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="ledger_entries", db_index=False
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="ledger_entries")
    available_delta = models.DecimalField(**AMOUNT, default=ZERO)
    locked_delta = models.DecimalField(**AMOUNT, default=ZERO)
    reason = models.CharField(max_length=24, choices=Reason.choices)
    reference = models.CharField(max_length=64, blank=True, help_text="What caused it, e.g. deposit:12 or trade:AAPL_USD:7.")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
        help_text="Who caused it: the user, or the staff member for an admin action; empty for the engine.",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["user", "asset"]), models.Index(fields=["reference"])]

    def __str__(self) -> str:
        return f"{self.reason} {self.asset} {self.available_delta:+}/{self.locked_delta:+} ({self.reference})"


class Deposit(models.Model):
    """A simulated bank transfer in; credited only when confirmed."""

    class Status(models.TextChoices):
        PENDING = "Pending"
        CONFIRMED = "Confirmed"
        REJECTED = "Rejected"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="deposits")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="deposits")
    quantity = models.DecimalField(**AMOUNT)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.CheckConstraint(condition=Q(quantity__gt=0), name="deposit_quantity_gt_0")]

    def __str__(self) -> str:
        return f"Deposit #{self.pk} {self.quantity} {self.asset} ({self.status})"


class Withdrawal(models.Model):
    """A transfer out: funds are locked on request and leave when staff complete it."""

    class Status(models.TextChoices):
        PENDING = "Pending"
        COMPLETED = "Completed"
        REJECTED = "Rejected"
        CANCELLED = "Cancelled"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="withdrawals")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="withdrawals")
    quantity = models.DecimalField(**AMOUNT)
    address = models.CharField(max_length=128, help_text="Destination label, e.g. a bank account.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.CheckConstraint(condition=Q(quantity__gt=0), name="withdrawal_quantity_gt_0")]

    def __str__(self) -> str:
        return f"Withdrawal #{self.pk} {self.quantity} {self.asset} ({self.status})"


class StaffAllocation(models.Model):
    """Staff giving (or, negative, taking back) an asset, e.g. 10,000 AAPL to a market maker."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="allocations")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="allocations")
    quantity = models.DecimalField(**AMOUNT)
    staff = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.CheckConstraint(condition=~Q(quantity=0), name="allocation_quantity_nonzero")]

    def __str__(self) -> str:
        return f"Allocation #{self.pk} {self.quantity} {self.asset} to {self.user}"


class ApiKey(models.Model):
    """An Ed25519 public key a user registered for signed requests (the client keeps the seed)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    public_key = models.CharField(max_length=64, unique=True, help_text="Base64 of the 32 raw key bytes.")
    label = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.label or 'key'} {self.public_key[:10]}…"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class IdempotencyRecord(models.Model):
    """The first answer to a POST sent with an `Idempotency-Key`, replayed for repeats."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=128)
    request_hash = models.CharField(max_length=64, help_text="sha256 of method, path and body.")
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_user_key_unique")]

    def __str__(self) -> str:
        return f"{self.key} ({self.response_status or 'in progress'})"
