"""Django admin: staff run deposits, withdrawals and allocations through services only."""

from __future__ import annotations

import base64
from decimal import Decimal

import nacl.signing
import pytest
from django.test import Client
from django.urls import reverse

from accounts import services
from accounts.ledger import ledger_check
from accounts.models import Asset, Balance, Deposit, LedgerEntry, StaffAllocation, User, Withdrawal

pytestmark = pytest.mark.django_db

D = Decimal


@pytest.fixture
def admin_client_for(staff: User) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def action(client: Client, model: str, name: str, ids: list[int]) -> str:
    response = client.post(
        reverse(f"admin:accounts_{model}_changelist"),
        {"action": name, "_selected_action": [str(i) for i in ids]},
        follow=True,
    )
    assert response.status_code == 200
    return " | ".join(str(m) for m in response.context["messages"])


def test_confirm_action_credits_once(admin_client_for: Client, user: User, usd: Asset, staff: User) -> None:
    d1 = services.deposit_create(user=user, asset=usd, quantity=D("100"))
    d2 = services.deposit_create(user=user, asset=usd, quantity=D("5"))
    text = action(admin_client_for, "deposit", "confirm_deposits", [d1.pk, d2.pk])
    assert "Confirmed 2 deposits" in text
    # Clicked again (or a second staff member on a stale page): nothing more is credited.
    text = action(admin_client_for, "deposit", "confirm_deposits", [d1.pk])
    assert "1 failed" in text and f"#{d1.pk}" in text and "Confirmed" in text
    assert Balance.objects.get(user=user, asset=usd).available == D("105")
    assert LedgerEntry.objects.filter(reference=f"deposit:{d1.pk}").count() == 1
    assert LedgerEntry.objects.get(reference=f"deposit:{d1.pk}").actor == staff
    assert ledger_check() == []


def test_reject_deposit_action(admin_client_for: Client, user: User, usd: Asset) -> None:
    d = services.deposit_create(user=user, asset=usd, quantity=D("100"))
    assert "Rejected 1 deposit" in action(admin_client_for, "deposit", "reject_deposits", [d.pk])
    assert Deposit.objects.get(pk=d.pk).status == "Rejected"
    assert not Balance.objects.filter(user=user, asset=usd, available__gt=0).exists()


def test_withdrawal_actions(admin_client_for: Client, funded_user: User, usd: Asset) -> None:
    w1 = services.withdrawal_create(user=funded_user, asset=usd, quantity=D("100"), address="IBAN 1")
    w2 = services.withdrawal_create(user=funded_user, asset=usd, quantity=D("200"), address="IBAN 2")
    assert "Completed 1" in action(admin_client_for, "withdrawal", "complete_withdrawals", [w1.pk])
    assert "Rejected 1" in action(admin_client_for, "withdrawal", "reject_withdrawals", [w2.pk])
    text = action(admin_client_for, "withdrawal", "reject_withdrawals", [w1.pk])
    assert "1 failed" in text
    assert Withdrawal.objects.get(pk=w1.pk).status == "Completed"
    b = Balance.objects.get(user=funded_user, asset=usd)
    assert (b.available, b.locked) == (D("900"), D("0"))
    assert ledger_check() == []


def test_allocation_add_form_writes_ledger_entry_naming_staff(
    admin_client_for: Client, user: User, aapl: Asset, staff: User
) -> None:
    response = admin_client_for.post(
        reverse("admin:accounts_staffallocation_add"),
        {"user": user.pk, "asset": aapl.pk, "quantity": "10000", "note": "market maker inventory"},
    )
    assert response.status_code == 302, response.content[:2000]
    allocation = StaffAllocation.objects.get()
    assert (allocation.staff, allocation.quantity, allocation.note) == (staff, D(10000), "market maker inventory")
    entry = LedgerEntry.objects.get(reference=f"allocation:{allocation.pk}")
    assert (entry.actor, entry.reason, entry.available_delta) == (staff, "allocation", D(10000))
    assert Balance.objects.get(user=user, asset=aapl).available == D(10000)
    assert ledger_check() == []

    # Read-only afterwards: the change page shows it, a POST cannot change it.
    url = reverse("admin:accounts_staffallocation_change", args=[allocation.pk])
    assert admin_client_for.get(url).status_code == 200
    admin_client_for.post(url, {"user": user.pk, "asset": aapl.pk, "quantity": "99999", "note": "x"})
    assert StaffAllocation.objects.get().quantity == D(10000)


def test_allocation_form_refuses_bad_quantity_and_overdraft(
    admin_client_for: Client, funded_user: User, usd: Asset, aapl: Asset
) -> None:
    url = reverse("admin:accounts_staffallocation_add")
    response = admin_client_for.post(url, {"user": funded_user.pk, "asset": aapl.pk, "quantity": "1.5"})
    assert response.status_code == 200 and "decimal places" in response.content.decode()
    response = admin_client_for.post(
        url, {"user": funded_user.pk, "asset": usd.pk, "quantity": "-1000.01"}, follow=True
    )
    assert "Allocation refused" in response.content.decode()
    assert StaffAllocation.objects.count() == 1  # only the funding one
    assert Balance.objects.get(user=funded_user, asset=usd).available == D("1000")
    assert ledger_check() == []


def test_money_models_are_not_editable(admin_client_for: Client, funded_user: User, usd: Asset) -> None:
    balance = Balance.objects.get(user=funded_user, asset=usd)
    url = reverse("admin:accounts_balance_change", args=[balance.pk])
    page = admin_client_for.get(url)
    assert page.status_code == 200 and 'name="available"' not in page.content.decode()
    admin_client_for.post(url, {"user": funded_user.pk, "asset": usd.pk, "available": "9999999", "locked": "0"})
    assert Balance.objects.get(pk=balance.pk).available == D("1000")
    for model in ("balance", "ledgerentry", "deposit", "withdrawal"):
        assert admin_client_for.get(reverse(f"admin:accounts_{model}_add")).status_code == 403
    entry = LedgerEntry.objects.get(user=funded_user)
    assert admin_client_for.post(reverse("admin:accounts_ledgerentry_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    assert LedgerEntry.objects.filter(pk=entry.pk).exists()


def test_changelists_render_and_search(admin_client_for: Client, funded_user: User, usd: Asset, staff: User) -> None:
    d = services.deposit_create(user=funded_user, asset=usd, quantity=D("3"))
    services.withdrawal_create(user=funded_user, asset=usd, quantity=D("4"), address="bank")
    public = base64.b64encode(nacl.signing.SigningKey.generate().verify_key.encode()).decode()
    services.api_key_register(user=funded_user, public_key=public, label="bot")
    for model in ("user", "asset", "balance", "ledgerentry", "deposit", "withdrawal", "staffallocation",
                  "apikey", "idempotencyrecord"):
        response = admin_client_for.get(reverse(f"admin:accounts_{model}_changelist"))
        assert response.status_code == 200, model
    page = admin_client_for.get(reverse("admin:accounts_balance_changelist"), {"q": "alice"}).content.decode()
    assert "alice" in page and "1000" in page and "996" in page  # available after the withdrawal lock
    page = admin_client_for.get(reverse("admin:accounts_ledgerentry_changelist"),
                                {"reason__exact": "withdrawal_request"}).content.decode()
    assert "withdrawal:" in page
    page = admin_client_for.get(reverse("admin:accounts_deposit_changelist"), {"status__exact": "Pending"}).content.decode()
    assert f"Deposit #{d.pk}" in page or f">{d.pk}<" in page
    user_page = admin_client_for.get(reverse("admin:accounts_user_change", args=[funded_user.pk])).content.decode()
    assert "USD" in user_page and "996" in user_page  # balances inline


def test_api_key_revoke_action(admin_client_for: Client, user: User) -> None:
    public = base64.b64encode(nacl.signing.SigningKey.generate().verify_key.encode()).decode()
    key = services.api_key_register(user=user, public_key=public)
    assert "Revoked 1" in action(admin_client_for, "apikey", "revoke_keys", [key.pk])
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_non_staff_cannot_use_admin(funded_user: User) -> None:
    client = Client()
    client.force_login(funded_user)
    response = client.get(reverse("admin:accounts_deposit_changelist"))
    assert response.status_code == 302 and "/login/" in response["Location"]
