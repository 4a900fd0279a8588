"""`manage.py bootstrap_markets`: demo markets and a funded market maker, when BOURSE_DEMO is on.

`bootstrap_exchange` calls it on every start (after the default assets exist), so it must
change nothing that already exists: a market staff created, edited or closed is left as it
is, and the market maker is funded once (a later start does not top it up again, whatever
it has traded since). With BOURSE_DEMO off (production's default) it does nothing.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from accounts.models import Asset, StaffAllocation, User
from accounts.services import allocation_create
from trading.models import Market
from trading.services import market_create

# (base, quote, reference price): tick 0.01, lot 1 share, min notional 1.00, band ±10%.
DEMO_MARKETS: list[tuple[str, str, Decimal]] = [
    ("AAPL", "USD", Decimal("190.00")),
    ("MSFT", "USD", Decimal("420.00")),
    ("TSLA", "USD", Decimal("250.00")),
]
DEMO_TICK = Decimal("0.01")
DEMO_LOT = Decimal("1")
DEMO_MIN_NOTIONAL = Decimal("1.00")
DEMO_BAND_BPS = 1000
MARKET_MAKER_USERNAME = "marketmaker"
SYSTEM_USERNAME = "system"
# What the market maker starts with: enough for years of a 5-level ladder on each market.
MARKET_MAKER_FUNDING: dict[str, Decimal] = {
    "USD": Decimal("10000000"),
    "AAPL": Decimal("10000"),
    "MSFT": Decimal("10000"),
    "TSLA": Decimal("10000"),
}
FUNDING_NOTE = "demo market maker funding"


def _login_less_user(username: str, *, staff: bool = False) -> User:
    """A user nobody logs in as (no usable password); created once, never changed after."""
    user, created = User.objects.get_or_create(username=username, defaults={"is_staff": staff})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


class Command(BaseCommand):
    help = "With BOURSE_DEMO on: create the demo markets and the funded `marketmaker` user, if absent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--force", action="store_true", help="Run even when BOURSE_DEMO is off.")

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        if not (settings.BOURSE_DEMO or options["force"]):
            self.stdout.write("bootstrap_markets: BOURSE_DEMO is off, no demo markets")
            return
        assets = {asset.symbol: asset for asset in Asset.objects.filter(is_active=True)}
        existing = set(Market.objects.values_list("symbol", flat=True))
        created: list[str] = []
        for base, quote, reference in DEMO_MARKETS:
            symbol = f"{base}_{quote}"
            if symbol in existing or base not in assets or quote not in assets:
                continue
            market_create(
                base=assets[base], quote=assets[quote], tick_size=DEMO_TICK, lot_size=DEMO_LOT,
                min_quantity=DEMO_LOT, min_notional=DEMO_MIN_NOTIONAL, band_bps=DEMO_BAND_BPS,
                reference_price=reference,
            )  # fmt: skip
            created.append(symbol)

        system = _login_less_user(SYSTEM_USERNAME, staff=True)
        if not system.is_staff or not system.is_active:
            self.stdout.write(f"bootstrap_markets: {SYSTEM_USERNAME!r} is not active staff, market maker not funded")
        else:
            maker = _login_less_user(MARKET_MAKER_USERNAME)
            funded = set(
                StaffAllocation.objects.filter(user=maker, staff=system, note=FUNDING_NOTE).values_list(
                    "asset__symbol", flat=True
                )
            )
            for symbol, quantity in MARKET_MAKER_FUNDING.items():
                if symbol in assets and symbol not in funded:
                    allocation_create(
                        user=maker, asset=assets[symbol], quantity=quantity, staff=system, note=FUNDING_NOTE
                    )
                    created.append(f"{quantity:f} {symbol} to {MARKET_MAKER_USERNAME}")
        self.stdout.write(f"bootstrap_markets: created {', '.join(created) if created else 'nothing new'}")
