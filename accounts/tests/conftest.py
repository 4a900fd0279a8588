"""Fixtures for accounts tests: the usual assets and users."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.models import Asset, User
from accounts.tests.factories import fund, make_asset, make_staff, make_user


@pytest.fixture
def usd(db: None) -> Asset:
    return make_asset("USD", precision=2, kind="cash")


@pytest.fixture
def aapl(db: None) -> Asset:
    return make_asset("AAPL", precision=0, kind="stock")


@pytest.fixture
def user(db: None) -> User:
    return make_user("alice")


@pytest.fixture
def staff(db: None) -> User:
    return make_staff("admin")


@pytest.fixture
def funded_user(user: User, usd: Asset) -> User:
    """alice with 1000.00 USD available."""
    fund(user, usd, Decimal("1000.00"))
    return user
