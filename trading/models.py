"""Markets, orders and fills.

A market trades a base asset against a quote asset in ticks (price steps) and lots
(quantity steps); the engine works in integers of those, the database in decimals.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q

from accounts.models import AMOUNT, ZERO, Asset

RATE = {"max_digits": 8, "decimal_places": 6}


class Market(models.Model):
    class Status(models.TextChoices):
        OPEN = "Open"
        LIMIT_ONLY = "LimitOnly"
        POST_ONLY = "PostOnly"
        CANCEL_ONLY = "CancelOnly"
        CLOSED = "Closed"

    symbol = models.CharField(max_length=33, unique=True, help_text="BASE_QUOTE, e.g. AAPL_USD.")
    base = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="base_markets")
    quote = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="quote_markets")
    tick_size = models.DecimalField(**AMOUNT, help_text="Price step, in the quote asset. Fixed once created.")
    lot_size = models.DecimalField(**AMOUNT, help_text="Quantity step, in the base asset. Fixed once created.")
    min_quantity = models.DecimalField(**AMOUNT, default=ZERO)
    min_notional = models.DecimalField(**AMOUNT, default=ZERO, help_text="Least price × quantity, in the quote asset.")
    max_quantity = models.DecimalField(**AMOUNT, null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    maker_fee_rate = models.DecimalField(**RATE, default=Decimal("0.001"))
    taker_fee_rate = models.DecimalField(**RATE, default=Decimal("0.002"))
    band_bps = models.PositiveIntegerField(
        default=0, help_text="Price band in basis points around the reference price; 0 = no band."
    )
    reference_price = models.DecimalField(
        **AMOUNT, null=True, blank=True, help_text="Band reference before the first trade (then the last trade)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["symbol"]
        constraints = [
            models.CheckConstraint(condition=Q(tick_size__gt=0), name="market_tick_gt_0"),
            models.CheckConstraint(condition=Q(lot_size__gt=0), name="market_lot_gt_0"),
            models.CheckConstraint(condition=Q(maker_fee_rate__gte=0, taker_fee_rate__gte=0), name="market_fees_gte_0"),
            models.CheckConstraint(condition=~Q(base=models.F("quote")), name="market_base_ne_quote"),
        ]

    def __str__(self) -> str:
        return self.symbol


class Order(models.Model):
    """An order as the bot API shows it. `Pending` is internal: accepted, not yet seen by the engine."""

    class Side(models.TextChoices):
        BID = "Bid"
        ASK = "Ask"

    class Type(models.TextChoices):
        LIMIT = "Limit"
        MARKET = "Market"

    class TimeInForce(models.TextChoices):
        GTC = "GTC"
        IOC = "IOC"
        FOK = "FOK"

    class SelfTradePrevention(models.TextChoices):
        REJECT_TAKER = "RejectTaker"
        REJECT_MAKER = "RejectMaker"
        REJECT_BOTH = "RejectBoth"

    class Status(models.TextChoices):
        PENDING = "Pending"
        NEW = "New"
        PARTIALLY_FILLED = "PartiallyFilled"
        FILLED = "Filled"
        CANCELLED = "Cancelled"
        EXPIRED = "Expired"

    OPEN_STATUSES = (Status.PENDING, Status.NEW, Status.PARTIALLY_FILLED)

    # No single-column indexes on the two keys: (user, -created_at) and (market, accepted_seq)
    # below lead with them and serve every look-up; each extra index is written per order.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders", db_index=False)
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="orders", db_index=False)
    client_id = models.BigIntegerField(null=True, blank=True)
    side = models.CharField(max_length=3, choices=Side.choices)
    order_type = models.CharField(max_length=6, choices=Type.choices)
    time_in_force = models.CharField(max_length=3, choices=TimeInForce.choices, default=TimeInForce.GTC)
    post_only = models.BooleanField(default=False)
    self_trade_prevention = models.CharField(
        max_length=12, choices=SelfTradePrevention.choices, default=SelfTradePrevention.REJECT_TAKER
    )
    price = models.DecimalField(**AMOUNT, null=True, blank=True)
    quantity = models.DecimalField(**AMOUNT, null=True, blank=True)
    quote_quantity = models.DecimalField(**AMOUNT, null=True, blank=True, help_text="Market buy by quote amount (fee included).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    executed_quantity = models.DecimalField(**AMOUNT, default=ZERO)
    executed_quote_quantity = models.DecimalField(**AMOUNT, default=ZERO)
    fee_paid = models.DecimalField(**AMOUNT, default=ZERO)
    locked = models.DecimalField(**AMOUNT, default=ZERO, help_text="Funds still locked for this order (quote for a bid, base for an ask).")
    maker_fee_rate = models.DecimalField(**RATE)
    taker_fee_rate = models.DecimalField(**RATE)
    engine_cap = models.BigIntegerField(
        null=True, blank=True, help_text="Quote cap handed to the engine, in tick × lot units (market buys)."
    )
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    requeued_at = models.DateTimeField(
        null=True, blank=True, help_text="When the sweep last re-sent this order's place or cancel to the engine."
    )
    accepted_seq = models.BigIntegerField(null=True, blank=True, help_text="Engine event sequence of acceptance: priority on rebuild.")
    reason = models.CharField(max_length=32, blank=True, help_text="Why it was cancelled, expired or rejected.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # A clientId names one open order of a user; retries cannot make a second one.
            models.UniqueConstraint(
                fields=["user", "client_id"],
                condition=Q(client_id__isnull=False, status__in=["Pending", "New", "PartiallyFilled"]),
                name="order_client_id_open_unique",
            ),
            models.CheckConstraint(condition=Q(locked__gte=0), name="order_locked_gte_0"),
            models.CheckConstraint(
                condition=Q(quantity__isnull=False) | Q(quote_quantity__isnull=False), name="order_has_size"
            ),
        ]
        indexes = [
            models.Index(fields=["status"], name="order_open_idx", condition=Q(status__in=["Pending", "New", "PartiallyFilled"])),
            models.Index(fields=["user", "-created_at"]),
            models.Index(fields=["market", "accepted_seq"]),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.side} {self.quantity} {self.market} @ {self.price} ({self.status})"

    @property
    def wire_status(self) -> str:
        return self.Status.NEW if self.status == self.Status.PENDING else self.status


class Fill(models.Model):
    """One side of a trade, as the owner of the order sees it (fills history, fees)."""

    trade_id = models.BigIntegerField()
    # `market` and `user` are the order's, copied so fill history reads one table, and not
    # indexed alone (the unique constraint and (user, -created_at) lead with them). None of
    # the three references is checked by the database: each check is a look-up per fill at
    # commit (the copies' were ~20 % of the DB processor's time in PostgreSQL, the order's
    # as much again), and settlement writes every fill from its order's row, which it has
    # just read and locked in the same transaction; orders are never deleted.
    # tests/pipeline.py checks each fill against its order.
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False)
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="fills", db_constraint=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="fills", db_index=False, db_constraint=False
    )
    side = models.CharField(max_length=3, choices=Order.Side.choices)
    price = models.DecimalField(**AMOUNT)
    quantity = models.DecimalField(**AMOUNT)
    quote_quantity = models.DecimalField(**AMOUNT)
    fee = models.DecimalField(**AMOUNT)
    is_maker = models.BooleanField()
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["market", "trade_id", "order"], name="fill_trade_order_unique"),
        ]
        indexes = [models.Index(fields=["user", "-created_at"])]

    def __str__(self) -> str:
        return f"fill {self.market_id}#{self.trade_id} order {self.order_id}: {self.quantity} @ {self.price}"


class MarketState(models.Model):
    """The engine counters persisted with each applied batch, so they never go backwards."""

    market = models.OneToOneField(Market, on_delete=models.CASCADE, primary_key=True, related_name="state")
    last_event_seq = models.BigIntegerField(default=0)
    last_trade_id = models.BigIntegerField(default=0)
    last_book_update_id = models.BigIntegerField(default=0)
    last_price = models.DecimalField(**AMOUNT, null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.market_id}: seq {self.last_event_seq}, trade {self.last_trade_id}"
