"""Acceptance: concurrent requests from separate database connections cannot overdraw or double-credit.

Each thread gets its own Django connection (connections are per thread) and closes it at
the end; a Barrier releases them together so they really contend for the same rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from decimal import Decimal

import pytest

from accounts import services
from accounts.errors import InsufficientFunds, InvalidState
from accounts.ledger import ledger_check
from accounts.models import Balance, Deposit, LedgerEntry, User, Withdrawal
from accounts.tests.factories import fund, make_asset, make_staff, make_user
from tests.concurrency import run_together as concurrently

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 20


def run_together(action: Callable[[], object]) -> Counter[str]:
    """Run `action` in THREADS threads started at once; count outcomes by exception name."""
    results = concurrently(lambda _i: action(), THREADS)
    return Counter(type(r).__name__ if isinstance(r, Exception) else "ok" for r in results)


def test_concurrent_withdrawals_of_the_whole_balance_succeed_once() -> None:
    usd = make_asset("USD")
    user = make_user("whale")
    fund(user, usd, Decimal("1000.00"))

    outcomes = run_together(
        lambda: services.withdrawal_create(
            user=User.objects.get(pk=user.pk), asset=usd, quantity=Decimal("1000.00"), address="bank"
        )
    )

    assert outcomes == Counter({"ok": 1, InsufficientFunds.__name__: THREADS - 1})
    row = Balance.objects.get(user=user, asset=usd)
    assert (row.available, row.locked) == (Decimal(0), Decimal("1000.00"))
    assert Withdrawal.objects.filter(user=user).count() == 1
    assert ledger_check() == []


def test_concurrent_confirms_of_one_deposit_credit_once() -> None:
    usd = make_asset("USD")
    user = make_user("depositor")
    staff = make_staff("ops")
    deposit = services.deposit_create(user=user, asset=usd, quantity=Decimal("250.00"))

    outcomes = run_together(lambda: services.deposit_confirm(deposit_id=deposit.pk, staff=staff))

    assert outcomes == Counter({"ok": 1, InvalidState.__name__: THREADS - 1})
    row = Balance.objects.get(user=user, asset=usd)
    assert (row.available, row.locked) == (Decimal("250.00"), Decimal(0))
    assert Deposit.objects.get(pk=deposit.pk).status == Deposit.Status.CONFIRMED
    assert LedgerEntry.objects.filter(reference=f"deposit:{deposit.pk}").count() == 1
    assert ledger_check() == []


def test_concurrent_first_use_of_a_balance_creates_one_row() -> None:
    """Many allocations to a user with no balance row yet: one row, every credit counted."""
    usd = make_asset("USD")
    user = make_user("newcomer")
    staff = make_staff("ops2")

    outcomes = run_together(
        lambda: services.allocation_create(user=user, asset=usd, quantity=Decimal("1"), staff=staff)
    )

    assert outcomes == Counter({"ok": THREADS})
    assert Balance.objects.get(user=user, asset=usd).available == Decimal(THREADS)
    assert ledger_check() == []
