"""The trader-facing pages, through Django's test client: what a person sees and can do."""

from __future__ import annotations

import base64
import re
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from nacl.signing import SigningKey
from rest_framework.authentication import TokenAuthentication
from rest_framework.test import APIRequestFactory

from accounts import services
from accounts.models import ApiKey, Asset, Balance, Deposit, LedgerEntry, User, Withdrawal
from accounts.tests.factories import fund, make_user

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def client_alice(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


def _available(user: User, asset: Asset) -> Decimal:
    balance = Balance.objects.filter(user=user, asset=asset).first()
    return balance.available if balance else Decimal(0)


# --- Access -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["accounts:account", "accounts:api_keys"])
def test_pages_require_login(client: Client, name: str) -> None:
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:login"))


@pytest.mark.parametrize(
    "name", ["accounts:deposit", "accounts:withdraw", "accounts:api_token_create", "accounts:api_key_register"]
)
def test_posts_require_login_and_change_nothing(client: Client, usd: Asset, name: str) -> None:
    response = client.post(reverse(name), {"asset": "USD", "quantity": "10", "address": "x", "public_key": "x"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:login"))
    assert not Deposit.objects.exists() and not Withdrawal.objects.exists()


def test_landing_page_invites_to_sign_up_and_shows_members_the_markets(client: Client, user: User) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert reverse("accounts:signup") in response.content.decode()
    client.force_login(user)
    response = client.get("/")
    assert response.status_code == 200
    assert reverse("accounts:signup") not in response.content.decode()
    assert 'id="markets-table"' in response.content.decode()


# --- Sign-up, log in, log out -------------------------------------------------------------


def test_sign_up_creates_the_user_and_logs_them_in(client: Client, usd: Asset) -> None:
    response = client.post(
        reverse("accounts:signup"),
        {"username": "bob", "email": "", "password1": "trade-all-day-42", "password2": "trade-all-day-42"},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:account")
    bob = User.objects.get(username="bob")
    assert bob.check_password("trade-all-day-42")
    page = client.get(reverse("accounts:account"))
    assert page.status_code == 200
    assert page.context["user"] == bob
    assert "Welcome to Bourse, bob" in page.content.decode()


def test_sign_up_with_mismatched_passwords_shows_the_error(client: Client) -> None:
    response = client.post(
        reverse("accounts:signup"),
        {"username": "bob", "password1": "trade-all-day-42", "password2": "something-else-42"},
    )
    assert response.status_code == 200
    assert "didn’t match" in response.content.decode() or "didn't match" in response.content.decode()
    assert not User.objects.filter(username="bob").exists()


def test_log_in_and_log_out(client: Client, user: User) -> None:
    response = client.post(reverse("accounts:login"), {"username": "alice", "password": "pw"})
    assert response["Location"] == reverse("accounts:account")
    assert client.get(reverse("accounts:account")).status_code == 200
    # Logging out is a POST (the header's form); a GET is refused.
    assert client.get(reverse("accounts:logout")).status_code == 405
    response = client.post(reverse("accounts:logout"))
    assert response["Location"] == reverse("accounts:login")
    assert client.get(reverse("accounts:account")).status_code == 302


def test_header_shows_admin_link_to_staff_only(client: Client, user: User, staff: User) -> None:
    client.force_login(user)
    assert reverse("admin:index") not in client.get(reverse("accounts:account")).content.decode()
    client.force_login(staff)
    assert reverse("admin:index") in client.get(reverse("accounts:account")).content.decode()


# --- Account page -------------------------------------------------------------------------


def test_account_page_shows_every_active_asset_balance(
    client_alice: Client, funded_user: User, usd: Asset, aapl: Asset
) -> None:
    services.withdrawal_create(user=funded_user, asset=usd, quantity=Decimal("250.5"), address="bank")
    response = client_alice.get(reverse("accounts:account"))
    assert response.status_code == 200
    html = response.content.decode()
    usd_row = re.search(r'<tr data-asset="USD">(.*?)</tr>', html, re.S)
    assert usd_row is not None
    # available, locked, total at USD's two decimal places
    assert re.findall(r'class="num[^"]*">([^<]+)<', usd_row.group(1)) == ["749.50", "250.50", "1,000.00"]
    aapl_row = re.search(r'<tr data-asset="AAPL">(.*?)</tr>', html, re.S)
    assert aapl_row is not None and re.findall(r'class="num[^"]*">([^<]+)<', aapl_row.group(1)) == ["0", "0", "0"]
    # The ledger lists the allocation and the withdrawal lock.
    assert "Staff allocation" in html and "Withdrawal requested (funds locked)" in html


def test_account_page_loads_only_local_scripts(client_alice: Client) -> None:
    html = client_alice.get(reverse("accounts:account")).content.decode()
    sources = re.findall(r'<script[^>]+src="([^"]+)"', html)
    assert "/static/vendor/htmx/htmx.min.js" in sources
    assert all(src.startswith("/static/") for src in sources), sources
    assert "X-CSRFToken" in html  # HTMX posts carry the CSRF token


def test_deposit_form_creates_a_pending_deposit_shown_in_history(client_alice: Client, user: User, usd: Asset) -> None:
    response = client_alice.post(reverse("accounts:deposit"), {"asset": "USD", "quantity": "150.25"})
    assert response.status_code == 302 and response["Location"] == reverse("accounts:account")
    deposit = Deposit.objects.get(user=user)
    assert (deposit.asset, deposit.quantity, deposit.status) == (usd, Decimal("150.25"), Deposit.Status.PENDING)
    assert _available(user, usd) == 0  # nothing credited before staff confirm
    page = client_alice.get(reverse("accounts:account")).content.decode()
    row = re.search(rf'<tr data-id="{deposit.pk}">(.*?)</tr>', page, re.S)
    assert row is not None and "150.25" in row.group(1) and "Pending" in row.group(1)
    assert "Deposit of 150.25 USD requested" in page


def test_deposit_is_credited_at_once_where_the_demo_setting_says_so(
    client_alice: Client, user: User, usd: Asset, settings: object
) -> None:
    settings.BOURSE_AUTO_CONFIRM_DEPOSITS = True  # type: ignore[attr-defined]
    response = client_alice.post(reverse("accounts:deposit"), {"asset": "USD", "quantity": "20"}, **HTMX)
    assert "Deposit of 20.00 USD confirmed and credited." in response.content.decode()
    assert _available(user, usd) == Decimal("20")


def test_deposit_with_a_bad_quantity_shows_the_error_and_creates_nothing(client_alice: Client, usd: Asset) -> None:
    response = client_alice.post(reverse("accounts:deposit"), {"asset": "USD", "quantity": "1.005"})
    assert response.status_code == 422
    assert "Invalid quantity: quantity has more than 2 decimal places for USD" in response.content.decode()
    assert not Deposit.objects.exists()


def test_withdraw_with_insufficient_funds_shows_the_error_and_changes_nothing(
    client_alice: Client, funded_user: User, usd: Asset
) -> None:
    entries = LedgerEntry.objects.count()
    response = client_alice.post(
        reverse("accounts:withdraw"), {"asset": "USD", "quantity": "1000.01", "address": "DE89 0001"}, **HTMX
    )
    assert response.status_code == 422
    html = response.content.decode()
    assert "Insufficient funds:" in html
    # The form keeps what the user typed so they can correct it.
    assert 'value="1000.01"' in html and 'value="DE89 0001"' in html
    assert not Withdrawal.objects.exists()
    assert LedgerEntry.objects.count() == entries
    balance = Balance.objects.get(user=funded_user, asset=usd)
    assert (balance.available, balance.locked) == (Decimal("1000"), Decimal("0"))


def test_withdraw_locks_the_funds_and_cancel_releases_them(client_alice: Client, funded_user: User, usd: Asset) -> None:
    response = client_alice.post(
        reverse("accounts:withdraw"), {"asset": "USD", "quantity": "400", "address": "DE89 0001"}
    )
    assert response.status_code == 302
    withdrawal = Withdrawal.objects.get(user=funded_user)
    balance = Balance.objects.get(user=funded_user, asset=usd)
    assert (balance.available, balance.locked) == (Decimal("600"), Decimal("400"))
    cancel_url = reverse("accounts:withdrawal_cancel", args=[withdrawal.pk])
    assert cancel_url in client_alice.get(reverse("accounts:account")).content.decode()

    response = client_alice.post(cancel_url, **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Withdrawal cancelled: 400.00 USD is available again." in html
    assert cancel_url not in html  # no cancel button on a cancelled withdrawal
    balance.refresh_from_db()
    assert (balance.available, balance.locked) == (Decimal("1000"), Decimal("0"))

    # A second cancel is refused inline and changes nothing.
    response = client_alice.post(cancel_url, **HTMX)
    assert response.status_code == 422
    assert "is Cancelled, not Pending" in response.content.decode()


def test_cannot_cancel_someone_elses_withdrawal(client_alice: Client, usd: Asset) -> None:
    bob = make_user("bob")
    fund(bob, usd, "50")
    withdrawal = services.withdrawal_create(user=bob, asset=usd, quantity=Decimal("50"), address="x")
    response = client_alice.post(reverse("accounts:withdrawal_cancel", args=[withdrawal.pk]), follow=True)
    assert "Not found" in response.content.decode()
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.PENDING


def test_htmx_request_gets_only_the_funds_fragment(client_alice: Client, user: User, usd: Asset) -> None:
    response = client_alice.post(reverse("accounts:deposit"), {"asset": "USD", "quantity": "75"}, **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="funds"')
    assert "<html" not in html and "topbar" not in html
    assert "Deposit of 75.00 USD requested" in html
    assert re.search(r'<table class="table" id="deposit-history">.*?75\.00.*?Pending', html, re.S)
    assert "HX-Request" in response["Vary"]
    assert Deposit.objects.filter(user=user, quantity=Decimal("75")).count() == 1


# --- API keys page ------------------------------------------------------------------------


def test_token_is_shown_once_and_authenticates(client_alice: Client, user: User) -> None:
    response = client_alice.post(reverse("accounts:api_token_create"))
    assert response["Location"] == reverse("accounts:api_keys")
    page = client_alice.get(reverse("accounts:api_keys"))
    assert "no-cache" in page["Cache-Control"] or "no-store" in page["Cache-Control"]
    match = re.search(r'<code id="new-token">([0-9a-f]{40})</code>', page.content.decode())
    assert match is not None
    key = match.group(1)
    # DRF's token authentication accepts it as this user.
    request = APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Token {key}")
    authenticated = TokenAuthentication().authenticate(request)
    assert authenticated is not None and authenticated[0] == user
    # Never shown again.
    again = client_alice.get(reverse("accounts:api_keys")).content.decode()
    assert key not in again and "A token is active" in again


def test_replacing_the_token_invalidates_the_old_one_and_revoke_removes_it(client_alice: Client, user: User) -> None:
    old = services.api_token_create(user=user)
    client_alice.post(reverse("accounts:api_token_create"))
    new = re.search(r'id="new-token">(\w+)<', client_alice.get(reverse("accounts:api_keys")).content.decode())
    assert new is not None and new.group(1) != old
    request = APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Token {old}")
    with pytest.raises(Exception, match="Invalid token"):
        TokenAuthentication().authenticate(request)

    client_alice.post(reverse("accounts:api_token_revoke"))
    page = client_alice.get(reverse("accounts:api_keys")).content.decode()
    assert "No token" in page


def test_register_and_revoke_an_ed25519_key(client_alice: Client, user: User) -> None:
    public_key = base64.b64encode(SigningKey.generate().verify_key.encode()).decode()
    response = client_alice.post(reverse("accounts:api_key_register"), {"public_key": public_key, "label": "maker"})
    assert response.status_code == 302
    key = ApiKey.objects.get(user=user)
    assert (key.public_key, key.label, key.is_active) == (public_key, "maker", True)
    page = client_alice.get(reverse("accounts:api_keys")).content.decode()
    assert public_key in page
    revoke_url = reverse("accounts:api_key_revoke", args=[key.pk])
    assert revoke_url in page

    client_alice.post(revoke_url)
    key.refresh_from_db()
    assert not key.is_active
    assert public_key not in client_alice.get(reverse("accounts:api_keys")).content.decode()


@pytest.mark.parametrize(
    ("public_key", "message"),
    [
        ("not base64!", "public_key must be base64"),
        (base64.b64encode(b"\x01" * 16).decode(), "32 bytes"),
    ],
)
def test_key_registration_rejects_a_bad_key(client_alice: Client, public_key: str, message: str) -> None:
    response = client_alice.post(reverse("accounts:api_key_register"), {"public_key": public_key, "label": "x"})
    assert response.status_code == 422
    assert message in response.content.decode()
    assert not ApiKey.objects.exists()
