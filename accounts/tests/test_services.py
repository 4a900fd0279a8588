"""Services: deposits, withdrawals, limits, allocations, credentials, parsing; the ledger after each."""

from __future__ import annotations

import base64
from datetime import timedelta
from decimal import Decimal

import nacl.signing
import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.authtoken.models import Token

from accounts import selectors, services
from accounts.errors import (
    InsufficientFunds,
    InvalidAsset,
    InvalidQuantity,
    InvalidState,
    LimitExceeded,
    NotFound,
    ServiceError,
)
from accounts.ledger import ledger_check
from accounts.models import Asset, Balance, Deposit, LedgerEntry, User, Withdrawal
from accounts.tests.factories import fund, make_asset, make_user
from accounts.validation import get_asset, parse_quantity

pytestmark = pytest.mark.django_db

D = Decimal


def balance(user: User, asset: Asset) -> tuple[Decimal, Decimal]:
    row = Balance.objects.filter(user=user, asset=asset).first()
    return (row.available, row.locked) if row else (D(0), D(0))


@pytest.fixture(autouse=True)
def _ledger_consistent_after_each_test() -> object:
    yield
    assert ledger_check() == []


# --- parse_quantity / get_asset ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("0", "zero"),
        ("0.00", "zero"),
        ("-1", "positive"),
        ("NaN", "finite"),
        ("nan", "finite"),
        ("Infinity", "finite"),
        ("-inf", "finite"),
        ("1e400", "too large"),
        ("10000000000000000", "too large"),
        ("1.001", "decimal places"),
        ("1e-3", "decimal places"),
        ("abc", "not a number"),
        ("1,5", "not a number"),
        ("", "required"),
        ("   ", "required"),
        (None, "decimal string"),
        (1.5, "decimal string"),
        (True, "decimal string"),
        ([1], "decimal string"),
        ("1" * 500, "too long"),
    ],
)
def test_parse_quantity_refuses(usd: Asset, value: object, fragment: str) -> None:
    with pytest.raises(InvalidQuantity) as err:
        parse_quantity(value, asset=usd, field="price")
    assert fragment in err.value.message
    assert "price" in err.value.message
    assert err.value.code == "INVALID_QUANTITY"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", D("1.00")),
        (" 12.5 ", D("12.50")),
        ("1.50", D("1.50")),
        ("1.000", D("1.00")),  # trailing zeros are not extra precision
        (7, D("7.00")),
        (D("0.01"), D("0.01")),
        ("1E+2", D("100.00")),
        ("9999999999999999.99", D("9999999999999999.99")),
    ],
)
def test_parse_quantity_accepts(usd: Asset, value: object, expected: Decimal) -> None:
    result = parse_quantity(value, asset=usd)
    assert result == expected
    assert str(result) == str(expected)


def test_parse_quantity_full_column_precision_does_not_round() -> None:
    asset = Asset(symbol="X", name="x", precision=16, kind="cash")
    assert parse_quantity("9999999999999999.1234567890123456", asset=asset) == D("9999999999999999.1234567890123456")


def test_parse_quantity_negative_only_when_allowed(aapl: Asset) -> None:
    assert parse_quantity("-5", asset=aapl, allow_negative=True) == D(-5)
    with pytest.raises(InvalidQuantity):
        parse_quantity("0", asset=aapl, allow_negative=True)
    with pytest.raises(InvalidQuantity, match="decimal places"):
        parse_quantity("1.5", asset=aapl)


def test_get_asset(usd: Asset) -> None:
    assert get_asset(" USD ") == usd
    for symbol in ("usd", "EUR", "", None, 5, "X" * 40):
        with pytest.raises(InvalidAsset):
            get_asset(symbol)
    with pytest.raises(InvalidAsset, match="Unknown asset 'EUR'"):
        get_asset("EUR")
    Asset.objects.filter(pk=usd.pk).update(is_active=False)
    with pytest.raises(InvalidAsset):
        get_asset("USD")


# --- deposits ---------------------------------------------------------------------------


def test_deposit_confirm_credits_once(user: User, usd: Asset, staff: User) -> None:
    deposit = services.deposit_create(user=user, asset=usd, quantity=D("250.00"))
    assert deposit.status == Deposit.Status.PENDING
    assert balance(user, usd) == (D(0), D(0))

    services.deposit_confirm(deposit_id=deposit.pk, staff=staff)
    deposit.refresh_from_db()
    assert deposit.status == Deposit.Status.CONFIRMED
    assert deposit.decided_by == staff and deposit.decided_at is not None
    assert balance(user, usd) == (D("250.00"), D(0))
    entry = LedgerEntry.objects.get(reference=f"deposit:{deposit.pk}")
    assert (entry.reason, entry.available_delta, entry.actor) == ("deposit", D("250.00"), staff)

    with pytest.raises(InvalidState):
        services.deposit_confirm(deposit_id=deposit.pk, staff=staff)
    with pytest.raises(InvalidState):
        services.deposit_reject(deposit_id=deposit.pk, staff=staff)
    assert balance(user, usd) == (D("250.00"), D(0))


def test_deposit_reject(user: User, usd: Asset, staff: User) -> None:
    deposit = services.deposit_create(user=user, asset=usd, quantity=D("10"))
    services.deposit_reject(deposit_id=deposit.pk, staff=staff)
    assert Deposit.objects.get(pk=deposit.pk).status == Deposit.Status.REJECTED
    with pytest.raises(InvalidState):
        services.deposit_confirm(deposit_id=deposit.pk, staff=staff)
    assert balance(user, usd) == (D(0), D(0))
    assert not LedgerEntry.objects.filter(user=user).exists()


def test_deposit_decisions_need_staff_and_an_existing_deposit(user: User, usd: Asset) -> None:
    deposit = services.deposit_create(user=user, asset=usd, quantity=D("10"))
    with pytest.raises(ServiceError) as err:
        services.deposit_confirm(deposit_id=deposit.pk, staff=user)
    assert err.value.code == "FORBIDDEN"
    with pytest.raises(NotFound):
        services.deposit_confirm(deposit_id=deposit.pk + 999, staff=make_user(is_staff=True))
    assert balance(user, usd) == (D(0), D(0))


def test_deposit_auto_confirm_setting(user: User, usd: Asset, settings: object) -> None:
    settings.BOURSE_AUTO_CONFIRM_DEPOSITS = True  # type: ignore[attr-defined]
    deposit = services.deposit_create(user=user, asset=usd, quantity=D("5.5"))
    assert deposit.status == Deposit.Status.CONFIRMED
    assert balance(user, usd) == (D("5.50"), D(0))
    assert LedgerEntry.objects.get(reference=f"deposit:{deposit.pk}").actor == user


def test_deposit_validates_quantity_and_asset(user: User, usd: Asset) -> None:
    with pytest.raises(InvalidQuantity):
        services.deposit_create(user=user, asset=usd, quantity=D("0.001"))
    Asset.objects.filter(pk=usd.pk).update(is_active=False)
    usd.refresh_from_db()
    with pytest.raises(InvalidAsset):
        services.deposit_create(user=user, asset=usd, quantity=D("1"))
    assert not Deposit.objects.exists()


# --- withdrawals ------------------------------------------------------------------------


def test_withdrawal_complete(funded_user: User, usd: Asset, staff: User) -> None:
    w = services.withdrawal_create(user=funded_user, asset=usd, quantity=D("400"), address="DE89 3704")
    assert w.status == Withdrawal.Status.PENDING and w.address == "DE89 3704"
    assert balance(funded_user, usd) == (D("600.00"), D("400.00"))

    services.withdrawal_complete(withdrawal_id=w.pk, staff=staff)
    assert Withdrawal.objects.get(pk=w.pk).status == Withdrawal.Status.COMPLETED
    assert balance(funded_user, usd) == (D("600.00"), D(0))
    reasons = list(
        LedgerEntry.objects.filter(reference=f"withdrawal:{w.pk}").order_by("id").values_list("reason", flat=True)
    )
    assert reasons == ["withdrawal_request", "withdrawal_complete"]
    for action in (services.withdrawal_complete, services.withdrawal_reject):
        with pytest.raises(InvalidState):
            action(withdrawal_id=w.pk, staff=staff)
    with pytest.raises(InvalidState):
        services.withdrawal_cancel(withdrawal_id=w.pk, user=funded_user)
    assert balance(funded_user, usd) == (D("600.00"), D(0))


def test_withdrawal_reject_and_cancel_release_funds(funded_user: User, usd: Asset, staff: User) -> None:
    w1 = services.withdrawal_create(user=funded_user, asset=usd, quantity=D("100"), address="a")
    w2 = services.withdrawal_create(user=funded_user, asset=usd, quantity=D("200"), address="b")
    assert balance(funded_user, usd) == (D("700.00"), D("300.00"))
    services.withdrawal_reject(withdrawal_id=w1.pk, staff=staff)
    assert balance(funded_user, usd) == (D("800.00"), D("200.00"))

    with pytest.raises(NotFound):  # not the owner
        services.withdrawal_cancel(withdrawal_id=w2.pk, user=make_user())
    services.withdrawal_cancel(withdrawal_id=w2.pk, user=funded_user)
    assert Withdrawal.objects.get(pk=w2.pk).status == Withdrawal.Status.CANCELLED
    assert balance(funded_user, usd) == (D("1000.00"), D(0))
    with pytest.raises(InvalidState):
        services.withdrawal_complete(withdrawal_id=w2.pk, staff=staff)


def test_withdrawal_insufficient_funds(funded_user: User, usd: Asset) -> None:
    with pytest.raises(InsufficientFunds) as err:
        services.withdrawal_create(user=funded_user, asset=usd, quantity=D("1000.01"), address="x")
    assert err.value.code == "INSUFFICIENT_FUNDS"
    with pytest.raises(InsufficientFunds):
        services.withdrawal_create(user=make_user(), asset=usd, quantity=D("1"), address="x")
    assert not Withdrawal.objects.exists()
    assert balance(funded_user, usd) == (D("1000.00"), D(0))


@pytest.mark.parametrize("address", ["", "   ", "x" * 129, "bad\nline", "tab\there", None])
def test_withdrawal_address_validated(funded_user: User, usd: Asset, address: object) -> None:
    with pytest.raises(ServiceError, match="address"):
        services.withdrawal_create(user=funded_user, asset=usd, quantity=D("1"), address=address)  # type: ignore[arg-type]
    assert not Withdrawal.objects.exists()


def test_withdrawal_limit_default_setting(funded_user: User, usd: Asset, settings: object, staff: User) -> None:
    settings.BOURSE_DEFAULT_WITHDRAWAL_LIMIT_24H = D("300")  # type: ignore[attr-defined]
    w1 = services.withdrawal_create(user=funded_user, asset=usd, quantity=D("200"), address="a")
    services.withdrawal_complete(withdrawal_id=w1.pk, staff=staff)  # completed ones still count
    services.withdrawal_create(user=funded_user, asset=usd, quantity=D("100"), address="a")
    with pytest.raises(LimitExceeded, match="300"):
        services.withdrawal_create(user=funded_user, asset=usd, quantity=D("0.01"), address="a")
    # Another user has a limit of their own.
    other = make_user()
    fund(other, usd, D("500"))
    services.withdrawal_create(user=other, asset=usd, quantity=D("300"), address="a")


def test_withdrawal_limit_per_asset_and_rejected_ones_do_not_count(funded_user: User, aapl: Asset, staff: User) -> None:
    Asset.objects.filter(pk=aapl.pk).update(withdrawal_limit_24h=D("10"))
    aapl.refresh_from_db()
    fund(funded_user, aapl, D("100"))
    w = services.withdrawal_create(user=funded_user, asset=aapl, quantity=D("10"), address="broker")
    with pytest.raises(LimitExceeded):
        services.withdrawal_create(user=funded_user, asset=aapl, quantity=D("1"), address="broker")
    services.withdrawal_reject(withdrawal_id=w.pk, staff=staff)
    services.withdrawal_create(user=funded_user, asset=aapl, quantity=D("10"), address="broker")
    assert balance(funded_user, aapl) == (D(90), D(10))


def test_withdrawal_limit_is_a_rolling_24_hours(funded_user: User, usd: Asset, settings: object) -> None:
    settings.BOURSE_DEFAULT_WITHDRAWAL_LIMIT_24H = D("100")  # type: ignore[attr-defined]
    old = services.withdrawal_create(user=funded_user, asset=usd, quantity=D("100"), address="a")
    with pytest.raises(LimitExceeded):
        services.withdrawal_create(user=funded_user, asset=usd, quantity=D("1"), address="a")
    Withdrawal.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=23, minutes=59))
    with pytest.raises(LimitExceeded):
        services.withdrawal_create(user=funded_user, asset=usd, quantity=D("1"), address="a")
    Withdrawal.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=24, minutes=1))
    services.withdrawal_create(user=funded_user, asset=usd, quantity=D("100"), address="a")


# --- allocations ------------------------------------------------------------------------


def test_allocation_and_claw_back(user: User, aapl: Asset, staff: User) -> None:
    allocation = services.allocation_create(user=user, asset=aapl, quantity=D("10000"), staff=staff, note="MM inventory")
    assert balance(user, aapl) == (D(10000), D(0))
    entry = LedgerEntry.objects.get(reference=f"allocation:{allocation.pk}")
    assert (entry.reason, entry.actor, entry.available_delta) == ("allocation", staff, D(10000))

    services.allocation_create(user=user, asset=aapl, quantity=D("-4000"), staff=staff)
    assert balance(user, aapl) == (D(6000), D(0))
    with pytest.raises(InsufficientFunds):
        services.allocation_create(user=user, asset=aapl, quantity=D("-6001"), staff=staff)
    with pytest.raises(ServiceError):
        services.allocation_create(user=user, asset=aapl, quantity=D("5"), staff=user)
    with pytest.raises(InvalidQuantity):
        services.allocation_create(user=user, asset=aapl, quantity=D("0.5"), staff=staff)
    assert balance(user, aapl) == (D(6000), D(0))


def test_locked_funds_cannot_be_clawed_back(funded_user: User, usd: Asset, staff: User) -> None:
    services.withdrawal_create(user=funded_user, asset=usd, quantity=D("900"), address="a")
    with pytest.raises(InsufficientFunds):
        services.allocation_create(user=funded_user, asset=usd, quantity=D("-101"), staff=staff)


# --- balance_change / ledger_post -------------------------------------------------------


def test_balance_change_refuses_overdraft(funded_user: User, usd: Asset) -> None:
    with pytest.raises(InsufficientFunds):
        services.balance_change(
            user_id=funded_user.pk, asset_id=usd.pk, available_delta=D("-1000.01"), locked_delta=D("0"),
            reason="withdrawal_request", reference="x",
        )
    b = services.balance_change(
        user_id=funded_user.pk, asset_id=usd.pk, available_delta=D("-600"), locked_delta=D("600"),
        reason="order_lock", reference="order:1", actor_id=funded_user.pk,
    )
    assert (b.available, b.locked) == (D("400.00"), D("600.00"))
    with pytest.raises(InsufficientFunds):
        services.balance_change(
            user_id=funded_user.pk, asset_id=usd.pk, available_delta=D("0"), locked_delta=D("-601"),
            reason="order_release", reference="order:1",
        )
    assert balance(funded_user, usd) == (D("400.00"), D("600.00"))


def test_balances_lock_creates_missing_rows_once(user: User, usd: Asset, aapl: Asset) -> None:
    rows = services.balances_lock(keys=[(user.pk, usd.pk), (user.pk, aapl.pk), (user.pk, usd.pk)])
    assert set(rows) == {(user.pk, usd.pk), (user.pk, aapl.pk)}
    again = services.balances_lock(keys=[(user.pk, usd.pk)])
    assert again[(user.pk, usd.pk)].pk == rows[(user.pk, usd.pk)].pk
    assert Balance.objects.filter(user=user).count() == 2
    assert services.balances_lock(keys=[]) == {}


def test_ledger_post_settles_a_trade(usd: Asset, aapl: Asset) -> None:
    buyer, seller, house = make_user(), make_user(), services.house_user()
    fund(buyer, usd, D("1000"))
    fund(seller, aapl, D("10"))
    services.balance_change(user_id=buyer.pk, asset_id=usd.pk, available_delta=D("-502"), locked_delta=D("502"),
                            reason="order_lock", reference="order:1")
    services.balance_change(user_id=seller.pk, asset_id=aapl.pk, available_delta=D("-5"), locked_delta=D("5"),
                            reason="order_lock", reference="order:2")
    change = services.LedgerChange
    services.ledger_post(changes=[
        change(buyer.pk, usd.pk, D("0"), D("-500"), "trade", "trade:AAPL_USD:1"),
        change(buyer.pk, usd.pk, D("0"), D("-1"), "fee", "trade:AAPL_USD:1"),
        change(buyer.pk, aapl.pk, D("5"), D("0"), "trade", "trade:AAPL_USD:1"),
        change(seller.pk, aapl.pk, D("0"), D("-5"), "trade", "trade:AAPL_USD:1"),
        change(seller.pk, usd.pk, D("500"), D("0"), "trade", "trade:AAPL_USD:1"),
        change(seller.pk, usd.pk, D("-0.5"), D("0"), "fee", "trade:AAPL_USD:1"),
        change(house.pk, usd.pk, D("1.5"), D("0"), "fee", "trade:AAPL_USD:1"),
    ])
    assert balance(buyer, usd) == (D("498.00"), D("1.00"))
    assert balance(buyer, aapl) == (D(5), D(0))
    assert balance(seller, usd) == (D("499.50"), D(0))
    assert balance(seller, aapl) == (D(5), D(0))
    assert balance(house, usd) == (D("1.50"), D(0))
    assert LedgerEntry.objects.filter(reference="trade:AAPL_USD:1").count() == 7


def test_ledger_post_refuses_a_negative_result_and_writes_nothing(usd: Asset) -> None:
    a, b = make_user("a1"), make_user("b1")
    fund(a, usd, D("10"))
    before = LedgerEntry.objects.count()
    with pytest.raises(InsufficientFunds, match=f"user {b.pk}"):
        services.ledger_post(changes=[
            services.LedgerChange(a.pk, usd.pk, D("5"), D("0"), "trade", "t"),
            services.LedgerChange(b.pk, usd.pk, D("-5"), D("0"), "trade", "t"),
        ])
    assert LedgerEntry.objects.count() == before
    assert balance(a, usd) == (D("10.00"), D(0))


def test_ledger_post_is_set_based(usd: Asset, django_assert_max_num_queries: object) -> None:
    users = [make_user() for _ in range(30)]
    changes = [services.LedgerChange(u.pk, usd.pk, D("1"), D("0"), "allocation", "bulk") for u in users]
    # A fixed number of statements (lock, insert missing rows, lock again, update, COPY) for 30 rows.
    with django_assert_max_num_queries(10):  # type: ignore[operator]
        services.ledger_post(changes=changes)
    assert all(balance(u, usd) == (D("1.00"), D(0)) for u in users)
    # Not reachable through allocations: undo it so the ledger invariant holds at teardown.
    services.ledger_post(changes=[services.LedgerChange(u.pk, usd.pk, D("-1"), D("0"), "allocation", "undo")
                                 for u in users])


def test_house_user(settings: object) -> None:
    house = services.house_user()
    assert house.username == "house" and not house.has_usable_password()
    assert services.house_user().pk == house.pk


# --- credentials and assets -------------------------------------------------------------


def test_api_token_create_replaces_and_revoke(user: User) -> None:
    first = services.api_token_create(user=user)
    second = services.api_token_create(user=user)
    assert first != second
    assert list(Token.objects.filter(user=user).values_list("key", flat=True)) == [second]
    services.api_token_revoke(user=user)
    assert not Token.objects.filter(user=user).exists()


def test_api_key_register_and_revoke(user: User) -> None:
    public = base64.b64encode(nacl.signing.SigningKey.generate().verify_key.encode()).decode()
    key = services.api_key_register(user=user, public_key=public, label="bot 1")
    assert key.public_key == public and key.is_active
    with pytest.raises(ServiceError, match="already registered"):
        services.api_key_register(user=make_user(), public_key=public)
    with pytest.raises(NotFound):
        services.api_key_revoke(user=make_user(), api_key_id=key.pk)
    revoked = services.api_key_revoke(user=user, api_key_id=key.pk)
    assert revoked.revoked_at is not None and not revoked.is_active


@pytest.mark.parametrize(
    "public_key",
    [
        "",
        "not base64!",
        base64.b64encode(b"\x01" * 31).decode(),
        base64.b64encode(b"\x00" * 32).decode(),  # small-order point
        base64.b64encode(b"\xff" * 32).decode(),  # not a point on the curve
    ],
)
def test_api_key_register_refuses_bad_keys(user: User, public_key: str) -> None:
    with pytest.raises(ServiceError):
        services.api_key_register(user=user, public_key=public_key)


def test_asset_create() -> None:
    asset = services.asset_create(symbol="MSFT", name="Microsoft", precision=0, kind="stock",
                                  withdrawal_limit_24h=D("50"))
    assert asset.pk and asset.withdrawal_limit_24h == D(50)
    with pytest.raises(InvalidAsset):
        services.asset_create(symbol="MSFT", name="again", precision=0, kind="stock")
    for kwargs in (
        {"symbol": "msft2"}, {"precision": 17}, {"kind": "bond"}, {"name": ""},
        {"withdrawal_limit_24h": D("0.5")},
    ):
        args = {"symbol": "NEW", "name": "New", "precision": 0, "kind": "stock", **kwargs}
        with pytest.raises(ServiceError):
            services.asset_create(**args)  # type: ignore[arg-type]
    assert not Asset.objects.filter(symbol="NEW").exists()


# --- selectors --------------------------------------------------------------------------


def test_balances_for_lists_every_active_asset(funded_user: User, usd: Asset, aapl: Asset,
                                               django_assert_num_queries: object) -> None:
    make_asset("OLD", precision=0, kind="stock", is_active=False)
    with django_assert_num_queries(2):  # type: ignore[operator]
        rows = selectors.balances_for(funded_user)
        summary = [(b.asset.symbol, b.available, b.total) for b in rows]
    assert summary == [("AAPL", D(0), D(0)), ("USD", D("1000.00"), D("1000.00"))]
    assert [d.pk for d in selectors.deposits_for(funded_user)] == []
    assert selectors.ledger_for(funded_user).count() == 1
    assert selectors.withdrawals_for(funded_user).count() == 0


def test_raw_tamper_is_caught_by_teardown_check(funded_user: User, usd: Asset) -> None:
    """Guards the autouse check itself: a tampered balance must show up in ledger_check."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE accounts_balance SET available = available + 1 WHERE user_id = %s", [funded_user.pk])
    problems = ledger_check()
    assert problems and "USD" in problems[0]
    with connection.cursor() as cursor:
        cursor.execute("UPDATE accounts_balance SET available = available - 1 WHERE user_id = %s", [funded_user.pk])
