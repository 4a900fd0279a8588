"""`manage.py check_ledger`: OK after money operations, names the asset and user after tampering."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from accounts import services
from accounts.ledger import ledger_check
from accounts.models import Asset, User
from accounts.tests.factories import fund, make_user

pytestmark = pytest.mark.django_db

D = Decimal


def run_check() -> tuple[str, str]:
    from io import StringIO

    out, err = StringIO(), StringIO()
    call_command("check_ledger", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def busy_ledger(funded_user: User, usd: Asset, aapl: Asset, staff: User) -> User:
    """Every kind of money movement, once."""
    deposit = services.deposit_create(user=funded_user, asset=usd, quantity=D("50"))
    services.deposit_confirm(deposit_id=deposit.pk, staff=staff)
    rejected = services.deposit_create(user=funded_user, asset=usd, quantity=D("70"))
    services.deposit_reject(deposit_id=rejected.pk, staff=staff)
    w1 = services.withdrawal_create(user=funded_user, asset=usd, quantity=D("100"), address="bank")
    services.withdrawal_complete(withdrawal_id=w1.pk, staff=staff)
    w2 = services.withdrawal_create(user=funded_user, asset=usd, quantity=D("30"), address="bank")
    services.withdrawal_reject(withdrawal_id=w2.pk, staff=staff)
    services.withdrawal_create(user=funded_user, asset=usd, quantity=D("20"), address="bank")  # stays Pending
    fund(funded_user, aapl, D("10"))
    services.allocation_create(user=funded_user, asset=aapl, quantity=D("-3"), staff=staff)
    house = services.house_user()
    services.ledger_post(changes=[
        services.LedgerChange(funded_user.pk, usd.pk, D("-1.25"), D("0"), "fee", "trade:X:1"),
        services.LedgerChange(house.pk, usd.pk, D("1.25"), D("0"), "fee", "trade:X:1"),
    ])
    return funded_user


def test_check_ledger_passes_after_money_operations(busy_ledger: User) -> None:
    out, err = run_check()
    assert "OK AAPL" in out and "OK USD" in out
    assert "Ledger OK" in out and err == ""
    assert ledger_check() == []


def test_check_ledger_passes_on_an_empty_exchange(usd: Asset) -> None:
    out, _ = run_check()
    assert "OK USD total 0" in out


def test_check_ledger_fails_after_raw_balance_update(busy_ledger: User, usd: Asset) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE accounts_balance SET available = available + 5 WHERE user_id = %s AND asset_id = %s",
            [busy_ledger.pk, usd.pk],
        )
    with pytest.raises(CommandError, match="mismatch"):
        run_check()
    problems = ledger_check()
    assert any(p.startswith("USD:") for p in problems)  # the per-asset total
    row = [p for p in problems if "alice" in p]
    assert row and "USD" in row[0] and "balance available 933.75, locked 20" in row[0]  # actual
    assert "ledger entries available 928.75, locked 20" in row[0]  # expected


def test_check_ledger_exit_status_and_output_name_the_problem(busy_ledger: User, aapl: Asset) -> None:
    with connection.cursor() as cursor:
        cursor.execute("UPDATE accounts_balance SET locked = locked + 1 WHERE asset_id = %s", [aapl.pk])
    out, err = "", ""
    with pytest.raises(CommandError) as exc:
        from io import StringIO

        o, e = StringIO(), StringIO()
        try:
            call_command("check_ledger", stdout=o, stderr=e)
        finally:
            out, err = o.getvalue(), e.getvalue()
    assert exc.value.returncode == 1
    assert "OK USD" in out and "OK AAPL" not in out
    assert "MISMATCH AAPL alice" in err


def test_check_ledger_catches_a_balance_moved_between_users(usd: Asset) -> None:
    """Totals still add up; only the per-row check sees it."""
    a, b = make_user("ann"), make_user("bob")
    fund(a, usd, D("10"))
    fund(b, usd, D("10"))
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE accounts_balance SET available = available + CASE WHEN user_id = %s THEN 3 ELSE -3 END "
            "WHERE user_id IN (%s, %s)",
            [a.pk, a.pk, b.pk],
        )
    problems = ledger_check()
    assert len(problems) == 2
    assert any("ann" in p for p in problems) and any("bob" in p for p in problems)


def test_check_ledger_catches_a_deleted_ledger_entry(funded_user: User) -> None:
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM accounts_ledgerentry WHERE user_id = %s", [funded_user.pk])
    assert any("alice" in p for p in ledger_check())


def test_check_ledger_catches_a_forged_deposit(funded_user: User, usd: Asset) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO accounts_deposit (user_id, asset_id, quantity, status, created_at) "
            "VALUES (%s, %s, 5, 'Confirmed', now())",
            [funded_user.pk, usd.pk],
        )
    problems = ledger_check()
    assert len(problems) == 1 and problems[0].startswith("USD: sum of balances 1000")
