"""Ed25519 signed requests (Backpack's scheme), checked against CCXT's own signing code."""

from __future__ import annotations

import base64
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests
from django.test import Client
from django.utils import timezone
from nacl.signing import SigningKey

from accounts import services
from accounts.api.authentication import signing_payloads
from accounts.models import ApiKey, Asset, Deposit, User, Withdrawal
from accounts.tests.api_helpers import KeyPair, ccxt_backpack, ccxt_request, register_key
from accounts.tests.factories import fund

pytestmark = pytest.mark.django_db

CAPITAL = "/api/v1/capital"
WITHDRAWALS = "/wapi/v1/capital/withdrawals"


@pytest.fixture
def keys(user: User, usd: Asset) -> KeyPair:
    fund(user, usd, Decimal("500"))
    return register_key(user)


def _sign(signing_key: SigningKey, payload: str) -> str:
    return base64.b64encode(signing_key.sign(payload.encode()).signature).decode()


def _raw_headers(keys: KeyPair, payload: str, timestamp: int, window: int = 5000) -> dict[str, str]:
    """Headers as Backpack's own clients build them: values signed without percent-encoding."""
    return {
        "X-API-Key": keys.public_b64,
        "X-Signature": _sign(keys.signing_key, payload),
        "X-Timestamp": str(timestamp),
        "X-Window": str(window),
    }


def _now_ms() -> int:
    return int(time.time() * 1000)


# --- the signed string -------------------------------------------------------------------


def test_payload_matches_ccxt_for_a_get_with_params() -> None:
    import ccxt

    params = {"offset": "0", "limit": "10", "from": "1"}
    ccxt_query = ccxt.backpack.urlencode(ccxt.backpack.keysort(params))
    expected = f"instruction=depositQueryAll&{ccxt_query}&timestamp=123&window=5000"
    assert expected == "instruction=depositQueryAll&from=1&limit=10&offset=0&timestamp=123&window=5000"
    assert signing_payloads("depositQueryAll", params, "123", "5000")[0] == expected


def test_payload_without_params_and_with_booleans() -> None:
    assert signing_payloads("balanceQuery", {}, "1", "60000") == ["instruction=balanceQuery&timestamp=1&window=60000"]
    assert signing_payloads("orderExecute", {"postOnly": True, "a": False}, "1", "5")[0] == (
        "instruction=orderExecute&a=false&postOnly=true&timestamp=1&window=5"
    )


def test_batch_payload_matches_ccxt_generate_batch_payload() -> None:
    import ccxt

    orders = [
        {"symbol": "AAPL_USD", "side": "Bid", "price": "10.5", "quantity": "2", "postOnly": True},
        {"symbol": "AAPL_USD", "side": "Ask", "quantity": "1", "orderType": "Market"},
    ]
    expected = ccxt.backpack().generate_batch_payload(orders, "99", "5000", "orderExecute")
    assert expected in signing_payloads("orderExecute", orders, "99", "5000")


def test_payload_offers_raw_and_percent_encoded_spellings() -> None:
    payloads = signing_payloads("withdraw", {"address": "a b/c"}, "1", "5")
    assert "instruction=withdraw&address=a b/c&timestamp=1&window=5" in payloads  # Backpack clients
    assert "instruction=withdraw&address=a%20b/c&timestamp=1&window=5" in payloads  # CCXT (Python)
    assert "instruction=withdraw&address=a%20b%2Fc&timestamp=1&window=5" in payloads  # encodeURIComponent


# --- accepted ----------------------------------------------------------------------------


def test_ccxt_signed_get(client: Client, keys: KeyPair) -> None:
    response = ccxt_request(client, keys, "GET", CAPITAL)
    assert response.status_code == 200, response.content
    assert response.json()["USD"]["available"] == "500.00"


def test_raw_signed_post_with_characters_clients_escape(client: Client, keys: KeyPair) -> None:
    ts = _now_ms()
    body = {"address": "IBAN DE89 #1/2", "quantity": "5", "symbol": "USD"}
    payload = f"instruction=withdraw&address=IBAN DE89 #1/2&quantity=5&symbol=USD&timestamp={ts}&window=5000"
    response = client.post(WITHDRAWALS, body, content_type="application/json", headers=_raw_headers(keys, payload, ts))
    assert response.status_code == 200, response.content
    assert Withdrawal.objects.get().address == "IBAN DE89 #1/2"


def test_json_number_is_signed_as_written(client: Client, keys: KeyPair) -> None:
    ts = _now_ms()
    raw = '{"symbol": "USD", "quantity": 1.50}'
    payload = f"instruction=deposit&quantity=1.50&symbol=USD&timestamp={ts}&window=5000"
    response = client.post(
        "/wapi/v1/capital/deposits", raw, content_type="application/json", headers=_raw_headers(keys, payload, ts)
    )
    assert response.status_code == 200, response.content
    assert Deposit.objects.get().quantity == Decimal("1.5")


def test_default_window_when_header_missing(client: Client, keys: KeyPair) -> None:
    ts = _now_ms()
    headers = _raw_headers(keys, f"instruction=balanceQuery&timestamp={ts}&window=5000", ts)
    del headers["X-Window"]
    assert client.get(CAPITAL, headers=headers).status_code == 200


def test_last_used_at_is_recorded_at_most_once_a_minute(
    client: Client, keys: KeyPair, django_assert_num_queries: Any
) -> None:
    assert ccxt_request(client, keys, "GET", CAPITAL).status_code == 200
    first = ApiKey.objects.get().last_used_at
    assert first is not None
    assert ccxt_request(client, keys, "GET", CAPITAL).status_code == 200
    assert ApiKey.objects.get().last_used_at == first
    ApiKey.objects.update(last_used_at=timezone.now() - timedelta(minutes=2))
    assert ccxt_request(client, keys, "GET", CAPITAL).status_code == 200
    assert ApiKey.objects.get().last_used_at > first


# --- refused -----------------------------------------------------------------------------


def _assert_refused(response: Any, code: str, fragment: str) -> None:
    assert response.status_code == 401, response.content
    body = response.json()
    assert body["code"] == code
    assert fragment in body["message"]


def test_bad_signature(client: Client, keys: KeyPair) -> None:
    ts = _now_ms()
    headers = _raw_headers(keys, f"instruction=balanceQuery&timestamp={ts}&window=5000", ts)
    headers["X-Signature"] = _sign(SigningKey.generate(), f"instruction=balanceQuery&timestamp={ts}&window=5000")
    _assert_refused(client.get(CAPITAL, headers=headers), "INVALID_SIGNATURE", "Signature does not match")


def test_signature_for_another_instruction(client: Client, keys: KeyPair) -> None:
    ts = _now_ms()
    headers = _raw_headers(keys, f"instruction=depositQueryAll&timestamp={ts}&window=5000", ts)
    _assert_refused(client.get(CAPITAL, headers=headers), "INVALID_SIGNATURE", "balanceQuery")


def test_tampered_body(client: Client, keys: KeyPair) -> None:
    ts = _now_ms()
    payload = f"instruction=withdraw&address=a&quantity=5&symbol=USD&timestamp={ts}&window=5000"
    body = {"address": "a", "quantity": "500", "symbol": "USD"}
    response = client.post(WITHDRAWALS, body, content_type="application/json", headers=_raw_headers(keys, payload, ts))
    _assert_refused(response, "INVALID_SIGNATURE", "Signature does not match")
    assert not Withdrawal.objects.exists()


@pytest.mark.parametrize("age_ms", [6000, -6000])
def test_timestamp_outside_window(client: Client, keys: KeyPair, age_ms: int) -> None:
    ts = _now_ms() - age_ms
    headers = _raw_headers(keys, f"instruction=balanceQuery&timestamp={ts}&window=5000", ts)
    _assert_refused(client.get(CAPITAL, headers=headers), "INVALID_SIGNATURE", "outside the 5000 ms window")


def test_expired_ccxt_request(client: Client, keys: KeyPair) -> None:
    # CCXT subtracts timeDifference from its clock: a client whose clock runs 10 s slow.
    response = ccxt_request(client, keys, "GET", CAPITAL, timeDifference=10_000)
    _assert_refused(response, "INVALID_SIGNATURE", "outside")
    assert ccxt_request(client, keys, "GET", CAPITAL, timeDifference=10_000, recvWindow="20000").status_code == 200


@pytest.mark.parametrize("window", ["0", "60001", "abc", "\u00b2"])
def test_window_out_of_range(client: Client, keys: KeyPair, window: str) -> None:
    ts = _now_ms()
    headers = _raw_headers(keys, f"instruction=balanceQuery&timestamp={ts}&window={window}", ts)
    headers["X-Window"] = window
    _assert_refused(client.get(CAPITAL, headers=headers), "INVALID_SIGNATURE", "X-Window")


def test_revoked_key(client: Client, user: User, keys: KeyPair) -> None:
    services.api_key_revoke(user=user, api_key_id=keys.api_key.pk)
    _assert_refused(ccxt_request(client, keys, "GET", CAPITAL), "UNAUTHORIZED", "revoked")


def test_unknown_key(client: Client, keys: KeyPair) -> None:
    stranger = KeyPair(keys.api_key, SigningKey.generate())
    _assert_refused(ccxt_request(client, stranger, "GET", CAPITAL), "UNAUTHORIZED", "Unknown API key")


def test_disabled_user(client: Client, user: User, keys: KeyPair) -> None:
    User.objects.filter(pk=user.pk).update(is_active=False)
    _assert_refused(ccxt_request(client, keys, "GET", CAPITAL), "UNAUTHORIZED", "disabled")


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({"X-Timestamp": "1"}, "need X-Signature"),
        ({"X-Signature": "AAAA", "X-Timestamp": "now"}, "X-Timestamp"),
        ({"X-Signature": "not base64!", "X-Timestamp": "NOW"}, "X-Signature"),
    ],
)
def test_malformed_headers(client: Client, keys: KeyPair, headers: dict[str, str], fragment: str) -> None:
    headers = {"X-API-Key": keys.public_b64, **headers}
    if headers.get("X-Timestamp") == "NOW":
        headers["X-Timestamp"] = str(_now_ms())
    _assert_refused(client.get(CAPITAL, headers=headers), "INVALID_SIGNATURE", fragment)


def test_signed_request_to_method_the_endpoint_lacks(client: Client, keys: KeyPair) -> None:
    response = ccxt_request(client, keys, "DELETE", CAPITAL)
    assert response.status_code == 405
    assert response.json()["code"] == "INVALID_CLIENT_REQUEST"


# --- over real HTTP, with CCXT doing the request ---------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_ccxt_over_http(live_server: Any, usd: Asset, user: User) -> None:
    fund(user, usd, Decimal("300"))
    keys = register_key(user)
    exchange = ccxt_backpack(keys, base_url=live_server.url)

    assert exchange.privateGetApiV1Capital()["USD"] == {"available": "300.00", "locked": "0.00", "staked": "0"}
    withdrawal = exchange.privatePostWapiV1CapitalWithdrawals(
        {"symbol": "USD", "quantity": "20", "address": "bank/acct 7", "blockchain": "BANK"}
    )
    assert withdrawal["status"] == "Pending"
    # Bourse's own endpoint: CCXT has no method for it, its generic request() signs it.
    deposit = exchange.request("wapi/v1/capital/deposits", ["private"], "POST", {"symbol": "USD", "quantity": "5"})
    assert deposit["quantity"] == "5.00"
    assert [row["id"] for row in exchange.privateGetWapiV1CapitalDeposits({"limit": 5})] == [deposit["id"]]
    assert exchange.parse_transaction(withdrawal)["addressTo"] == "bank/acct 7"

    # CCXT turns Bourse's error body into its own exception classes.
    import ccxt

    with pytest.raises(ccxt.InsufficientFunds):
        exchange.privatePostWapiV1CapitalWithdrawals({"symbol": "USD", "quantity": "1000", "address": "a"})
    revoked = register_key(user)
    services.api_key_revoke(user=user, api_key_id=revoked.api_key.pk)
    with pytest.raises(ccxt.AuthenticationError):
        ccxt_backpack(revoked, base_url=live_server.url).privateGetApiV1Capital()
    # And the public endpoints answer plain HTTP clients.
    assert requests.get(f"{live_server.url}/api/v1/status", timeout=5).json() == {"status": "Ok", "message": None}
