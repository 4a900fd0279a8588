"""Fixtures shared by the DB processor and settlement tests: AAPL_USD and two funded traders."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.models import User
from accounts.tests.factories import fund, make_user
from engine_worker.tests.factories import make_market
from trading.models import Market


@pytest.fixture
def market() -> Market:
    return make_market("AAPL", "USD", tick="0.01", lot="1")


@pytest.fixture
def buyer(market: Market) -> User:
    user = make_user("buyer")
    fund(user, market.quote, Decimal("2000.00"))
    return user


@pytest.fixture
def seller(market: Market) -> User:
    user = make_user("seller")
    fund(user, market.base, Decimal("20"))
    return user
