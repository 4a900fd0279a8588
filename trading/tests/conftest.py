"""Fixtures for trading tests: the usual assets, a market, funded users with API tokens."""

from __future__ import annotations

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.models import Asset, User
from accounts.tests.factories import fund, make_asset, make_user
from trading.models import Market
from trading.tests.factories import make_market


@pytest.fixture
def usd(db: None) -> Asset:
    return make_asset("USD", precision=2, kind="cash")


@pytest.fixture
def aapl(db: None) -> Asset:
    return make_asset("AAPL", precision=0, kind="stock")


@pytest.fixture
def market(usd: Asset, aapl: Asset) -> Market:
    """AAPL_USD: tick 0.01, lot 1, min quantity 1, min notional 1.00, fees 0.1% / 0.2%."""
    return make_market("AAPL", "USD", min_quantity=Decimal("1"), min_notional=Decimal("1.00"))


@pytest.fixture
def user(db: None) -> User:
    return make_user("alice")


@pytest.fixture
def funded_user(user: User, usd: Asset, aapl: Asset) -> User:
    """alice with 1000.00 USD and 100 AAPL available."""
    fund(user, usd, Decimal("1000.00"))
    fund(user, aapl, Decimal("100"))
    return user


@pytest.fixture
def api(funded_user: User) -> APIClient:
    """A DRF client authenticated as alice with her token (`Authorization: Token …`)."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {account_services.api_token_create(user=funded_user)}")
    return client
