"""Plain factory functions for accounts tests (and other apps' tests that need users and money).

Money is only ever created through the services, so the ledger stays consistent and
`check_ledger` passes in any test that uses these.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

from accounts import services
from accounts.models import Asset, Balance, StaffAllocation, User

_counter = itertools.count(1)

_ASSET_NAMES = {"USD": "US Dollar", "AAPL": "Apple Inc.", "MSFT": "Microsoft Corp.", "EUR": "Euro"}


def make_user(username: str | None = None, **kw: Any) -> User:
    """A user with password "pw" (tests log in with it)."""
    username = username or f"user{next(_counter)}"
    password = kw.pop("password", "pw")
    return User.objects.create_user(username=username, password=password, **kw)


def make_staff(username: str | None = None, **kw: Any) -> User:
    kw.setdefault("is_staff", True)
    kw.setdefault("is_superuser", True)
    return make_user(username or f"staff{next(_counter)}", **kw)


def make_asset(symbol: str = "USD", precision: int = 2, kind: str = "cash", **kw: Any) -> Asset:
    """Get or create the asset (tests ask for "USD" many times)."""
    asset, _ = Asset.objects.get_or_create(
        symbol=symbol,
        defaults={"name": _ASSET_NAMES.get(symbol, symbol), "precision": precision, "kind": kind, **kw},
    )
    return asset


def _allocating_staff() -> User:
    staff = User.objects.filter(username="allocator").first()
    return staff or make_staff("allocator")


def fund(user: User, asset: Asset, quantity: Decimal | str | int) -> StaffAllocation:
    """Give the user `quantity` of `asset` by a staff allocation (writes a ledger entry)."""
    return services.allocation_create(
        user=user, asset=asset, quantity=Decimal(quantity), staff=_allocating_staff(), note="test funding"
    )


def balance_of(user: User, symbol: str) -> tuple[Decimal, Decimal]:
    """(available, locked) of the user's balance of `symbol`, zeros when there is none."""
    row = Balance.objects.filter(user=user, asset__symbol=symbol).first()
    return (row.available, row.locked) if row else (Decimal(0), Decimal(0))
