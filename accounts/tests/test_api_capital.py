"""Bot API capital endpoints: balances, deposits, withdrawals, status and time."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from accounts import selectors, services
from accounts.models import Asset, Balance, Deposit, User, Withdrawal
from accounts.tests.api_helpers import ccxt_request, get_json, post_json, register_key
from accounts.tests.factories import fund, make_user

pytestmark = pytest.mark.django_db

DEPOSITS = "/wapi/v1/capital/deposits"
WITHDRAWALS = "/wapi/v1/capital/withdrawals"

# Amounts that must be refused on every endpoint that takes one, as (JSON value, why).
BAD_AMOUNTS = [
    pytest.param("0", id="zero"),
    pytest.param(0, id="zero-number"),
    pytest.param("-5", id="negative"),
    pytest.param(-5, id="negative-number"),
    pytest.param("NaN", id="nan"),
    pytest.param("Infinity", id="infinity"),
    pytest.param("-Infinity", id="minus-infinity"),
    pytest.param("1e400", id="1e400"),
    pytest.param("1.001", id="too-many-decimals"),
    pytest.param("ten", id="not-a-number"),
    pytest.param("", id="empty"),
    pytest.param(None, id="null"),
    pytest.param(True, id="bool"),
    pytest.param([1], id="list"),
    pytest.param({"v": 1}, id="object"),
    pytest.param("1" * 40, id="too-large"),
]


@pytest.fixture
def token(user: User) -> str:
    return services.api_token_create(user=user)


@pytest.fixture
def client() -> Client:
    return Client()


def _balance(user: User, asset: Asset) -> tuple[Decimal, Decimal]:
    row = Balance.objects.filter(user=user, asset=asset).first()
    return (row.available, row.locked) if row else (Decimal(0), Decimal(0))


# --- public ------------------------------------------------------------------------------


def test_status_is_public(client: Client) -> None:
    response = client.get("/api/v1/status")
    assert response.status_code == 200
    assert response.json() == {"status": "Ok", "message": None}


def test_time_is_server_ms(client: Client) -> None:
    before = int(time.time() * 1000)
    response = client.get("/api/v1/time")
    after = int(time.time() * 1000)
    assert response.status_code == 200
    assert before <= response.json() <= after


# --- balances ----------------------------------------------------------------------------


def test_capital_lists_every_active_asset_at_its_precision(
    client: Client, user: User, usd: Asset, aapl: Asset, token: str
) -> None:
    fund(user, usd, Decimal("100.5"))
    fund(user, aapl, 10)
    Asset.objects.create(symbol="OLD", name="Delisted", precision=2, kind="stock", is_active=False)
    response = get_json(client, "/api/v1/capital", token)
    assert response.status_code == 200
    assert response.json() == {
        "AAPL": {"available": "10", "locked": "0", "staked": "0"},
        "USD": {"available": "100.50", "locked": "0.00", "staked": "0"},
    }


def test_capital_shows_locked_funds(client: Client, funded_user: User, usd: Asset, token: str) -> None:
    services.withdrawal_create(user=funded_user, asset=usd, quantity=Decimal("250.25"), address="bank 1")
    body = get_json(client, "/api/v1/capital", token).json()
    assert body["USD"] == {"available": "749.75", "locked": "250.25", "staked": "0"}


def test_capital_needs_authentication(client: Client, usd: Asset) -> None:
    response = client.get("/api/v1/capital")
    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHORIZED"


def test_capital_with_wrong_token(client: Client, usd: Asset) -> None:
    response = get_json(client, "/api/v1/capital", "0" * 40)
    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHORIZED"


def test_capital_with_session_login(client: Client, user: User, usd: Asset) -> None:
    client.force_login(user)
    assert client.get("/api/v1/capital").json()["USD"]["available"] == "0.00"


def test_capital_signed_by_ccxt(client: Client, funded_user: User, usd: Asset) -> None:
    keys = register_key(funded_user)
    response = ccxt_request(client, keys, "GET", "/api/v1/capital")
    assert response.status_code == 200, response.content
    assert response.json()["USD"]["available"] == "1000.00"


# --- deposits ----------------------------------------------------------------------------


def test_deposit_is_pending_until_staff_confirm(
    client: Client, user: User, usd: Asset, staff: User, token: str
) -> None:
    response = post_json(client, DEPOSITS, {"symbol": "USD", "quantity": "150.5"}, token)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["symbol"] == "USD"
    assert body["quantity"] == "150.50"
    assert body["status"] == "Pending"
    assert body["createdAt"].endswith("Z")
    assert "code" not in body
    assert _balance(user, usd) == (0, 0)

    services.deposit_confirm(deposit_id=body["id"], staff=staff)
    assert get_json(client, "/api/v1/capital", token).json()["USD"]["available"] == "150.50"
    listed = get_json(client, DEPOSITS, token).json()
    assert [(row["id"], row["status"]) for row in listed] == [(body["id"], "Confirmed")]


def test_deposit_auto_confirmed_where_configured(
    client: Client, user: User, usd: Asset, token: str, settings: Any
) -> None:
    settings.BOURSE_AUTO_CONFIRM_DEPOSITS = True
    body = post_json(client, DEPOSITS, {"symbol": "USD", "quantity": "20"}, token).json()
    assert body["status"] == "Confirmed"
    assert _balance(user, usd) == (Decimal("20"), 0)


def test_deposit_accepts_json_numbers_exactly(client: Client, user: User, usd: Asset, token: str) -> None:
    # 0.1 + 0.2 style: as a float 1.15 would be 1.149999…; the parser reads it as Decimal.
    response = post_json(client, DEPOSITS, '{"symbol": "USD", "quantity": 1.15}', token)
    assert response.status_code == 200, response.content
    assert response.json()["quantity"] == "1.15"
    assert Deposit.objects.get().quantity == Decimal("1.15")
    response = post_json(client, DEPOSITS, '{"symbol": "USD", "quantity": 7}', token)
    assert response.json()["quantity"] == "7.00"


@pytest.mark.parametrize("quantity", BAD_AMOUNTS)
def test_deposit_refuses_bad_amounts(client: Client, user: User, usd: Asset, token: str, quantity: Any) -> None:
    response = post_json(client, DEPOSITS, {"symbol": "USD", "quantity": quantity}, token)
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"code", "message"}
    assert body["code"] == "INVALID_QUANTITY"
    assert not Deposit.objects.exists()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param('{"symbol": "USD", "quantity": NaN}', id="nan-literal"),
        pytest.param('{"symbol": "USD", "quantity": Infinity}', id="infinity-literal"),
        pytest.param('{"symbol": "USD", "quantity": 1e400}', id="1e400-number"),
        pytest.param('{"symbol": "USD", "quantity": 1.005}', id="too-many-decimals-number"),
    ],
)
def test_deposit_refuses_bad_json_numbers(client: Client, user: User, usd: Asset, token: str, raw: str) -> None:
    response = post_json(client, DEPOSITS, raw, token)
    assert response.status_code == 400
    assert response.json()["code"] in {"INVALID_QUANTITY", "INVALID_CLIENT_REQUEST"}
    assert not Deposit.objects.exists()


def test_deposit_of_shares_must_be_whole(client: Client, user: User, aapl: Asset, token: str) -> None:
    response = post_json(client, DEPOSITS, {"symbol": "AAPL", "quantity": "1.5"}, token)
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_QUANTITY"
    assert "decimal places" in response.json()["message"]
    assert post_json(client, DEPOSITS, {"symbol": "AAPL", "quantity": "3"}, token).json()["quantity"] == "3"


@pytest.mark.parametrize("symbol", ["BTC", "usd", "", None, 5, "X" * 40])
def test_deposit_refuses_unknown_assets(client: Client, user: User, usd: Asset, token: str, symbol: Any) -> None:
    response = post_json(client, DEPOSITS, {"symbol": symbol, "quantity": "1"}, token)
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_ASSET"
    assert not Deposit.objects.exists()


def test_deposit_refuses_inactive_asset(client: Client, user: User, token: str) -> None:
    Asset.objects.create(symbol="OLD", name="Delisted", precision=2, kind="stock", is_active=False)
    response = post_json(client, DEPOSITS, {"symbol": "OLD", "quantity": "1"}, token)
    assert response.json()["code"] == "INVALID_ASSET"
    assert not Deposit.objects.exists()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"symbol": "USD", "quantity": "1", "qty": "2"}, "Unknown field(s): qty"),
        ({"symbol": "USD"}, "Missing field(s): quantity"),
        ({}, "Missing field(s)"),
        ([{"symbol": "USD", "quantity": "1"}], "must be a JSON object"),
        ("12", "must be a JSON object"),
    ],
)
def test_deposit_refuses_malformed_bodies(
    client: Client, user: User, usd: Asset, token: str, body: Any, fragment: str
) -> None:
    response = post_json(client, DEPOSITS, body, token)
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_CLIENT_REQUEST"
    assert fragment in response.json()["message"]
    assert not Deposit.objects.exists()


def test_deposits_list_is_the_users_own_newest_first_with_paging(
    client: Client, user: User, usd: Asset, token: str, django_assert_max_num_queries: Any
) -> None:
    other = make_user("bob")
    services.deposit_create(user=other, asset=usd, quantity=Decimal("9"))
    ids = [services.deposit_create(user=user, asset=usd, quantity=Decimal(n)).pk for n in range(1, 6)]
    with django_assert_max_num_queries(3):  # token, user, deposits (assets joined)
        listed = get_json(client, DEPOSITS, token).json()
    assert [row["id"] for row in listed] == ids[::-1]
    assert listed[0] == {
        "id": ids[-1],
        "symbol": "USD",
        "quantity": "5.00",
        "status": "Pending",
        "createdAt": listed[0]["createdAt"],
    }
    page = get_json(client, f"{DEPOSITS}?limit=2&offset=1", token).json()
    assert [row["id"] for row in page] == ids[::-1][1:3]


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=x", "offset=-1", "from=abc"])
def test_deposits_list_refuses_bad_paging(client: Client, user: User, token: str, query: str) -> None:
    response = get_json(client, f"{DEPOSITS}?{query}", token)
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_CLIENT_REQUEST"


def test_deposits_list_filters_by_time(client: Client, user: User, usd: Asset, token: str) -> None:
    deposit = services.deposit_create(user=user, asset=usd, quantity=Decimal(1))
    created_ms = int(deposit.created_at.timestamp() * 1000)
    assert len(get_json(client, f"{DEPOSITS}?from={created_ms - 1000}", token).json()) == 1
    assert get_json(client, f"{DEPOSITS}?from={created_ms + 1000}", token).json() == []
    assert get_json(client, f"{DEPOSITS}?endTime={created_ms - 1000}", token).json() == []


def test_deposit_signed_by_ccxt(client: Client, user: User, usd: Asset) -> None:
    keys = register_key(user)
    response = ccxt_request(client, keys, "POST", DEPOSITS, {"symbol": "USD", "quantity": "12.34"})
    assert response.status_code == 200, response.content
    assert Deposit.objects.get().quantity == Decimal("12.34")
    listed = ccxt_request(client, keys, "GET", DEPOSITS, {"limit": 10, "offset": 0})
    assert listed.status_code == 200, listed.content
    assert [row["quantity"] for row in listed.json()] == ["12.34"]


# --- withdrawals -------------------------------------------------------------------------


def test_withdrawal_locks_funds(client: Client, funded_user: User, usd: Asset, token: str) -> None:
    response = post_json(client, WITHDRAWALS, {"symbol": "USD", "quantity": "100", "address": "DE89 3704"}, token)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["quantity"] == "100.00"
    assert body["address"] == "DE89 3704"
    assert body["status"] == "Pending"
    assert _balance(funded_user, usd) == (Decimal("900"), Decimal("100"))
    listed = get_json(client, WITHDRAWALS, token).json()
    assert [row["id"] for row in listed] == [body["id"]]
    assert listed[0]["address"] == "DE89 3704"


def test_withdrawal_accepts_ccxt_blockchain_field(client: Client, funded_user: User, usd: Asset, token: str) -> None:
    body = {"symbol": "USD", "quantity": "1", "address": "acct", "blockchain": "BANK"}
    assert post_json(client, WITHDRAWALS, body, token).status_code == 200


def test_withdrawal_refuses_more_than_available(client: Client, funded_user: User, usd: Asset, token: str) -> None:
    response = post_json(client, WITHDRAWALS, {"symbol": "USD", "quantity": "1000.01", "address": "a"}, token)
    assert response.status_code == 400
    assert response.json()["code"] == "INSUFFICIENT_FUNDS"
    assert not Withdrawal.objects.exists()
    assert _balance(funded_user, usd) == (Decimal("1000"), 0)


@pytest.mark.parametrize("quantity", BAD_AMOUNTS)
def test_withdrawal_refuses_bad_amounts(
    client: Client, funded_user: User, usd: Asset, token: str, quantity: Any
) -> None:
    response = post_json(client, WITHDRAWALS, {"symbol": "USD", "quantity": quantity, "address": "a"}, token)
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_QUANTITY"
    assert not Withdrawal.objects.exists()
    assert _balance(funded_user, usd) == (Decimal("1000"), 0)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"symbol": "BTC", "quantity": "1", "address": "a"}, "INVALID_ASSET"),
        ({"symbol": "USD", "quantity": "1", "address": ""}, "INVALID_CLIENT_REQUEST"),
        ({"symbol": "USD", "quantity": "1", "address": 12}, "INVALID_CLIENT_REQUEST"),
        ({"symbol": "USD", "quantity": "1", "address": "x" * 129}, "INVALID_CLIENT_REQUEST"),
        ({"symbol": "USD", "quantity": "1"}, "INVALID_CLIENT_REQUEST"),
        ({"symbol": "USD", "quantity": "1", "address": "a", "fee": "0"}, "INVALID_CLIENT_REQUEST"),
    ],
)
def test_withdrawal_refuses_bad_requests(
    client: Client, funded_user: User, usd: Asset, token: str, body: dict[str, Any], code: str
) -> None:
    response = post_json(client, WITHDRAWALS, body, token)
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert not Withdrawal.objects.exists()
    assert _balance(funded_user, usd) == (Decimal("1000"), 0)


def test_withdrawal_signed_by_ccxt(client: Client, funded_user: User, usd: Asset) -> None:
    keys = register_key(funded_user)
    # Spaces, "#" and "/" are escaped by CCXT in the signed string but not in the body.
    params = {"symbol": "USD", "quantity": "10", "address": "IBAN DE89 #1/2"}
    response = ccxt_request(client, keys, "POST", WITHDRAWALS, params)
    assert response.status_code == 200, response.content
    assert Withdrawal.objects.get().address == "IBAN DE89 #1/2"
    listed = ccxt_request(client, keys, "GET", WITHDRAWALS)
    assert [row["address"] for row in listed.json()] == ["IBAN DE89 #1/2"]


def test_users_do_not_see_each_others_history(client: Client, funded_user: User, usd: Asset) -> None:
    services.withdrawal_create(user=funded_user, asset=usd, quantity=Decimal(1), address="a")
    services.deposit_create(user=funded_user, asset=usd, quantity=Decimal(1))
    bob_token = services.api_token_create(user=make_user("bob"))
    assert get_json(client, WITHDRAWALS, bob_token).json() == []
    assert get_json(client, DEPOSITS, bob_token).json() == []
    assert len(selectors.withdrawals_for(funded_user)) == 1
