"""Every bot API failure is `{"code","message"}` with a 4xx/5xx; success never has a `code`."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from accounts import services
from accounts.models import Asset, Deposit, User

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(user: User) -> str:
    return services.api_token_create(user=user)


def _assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"code", "message"}
    assert body["code"] == code
    assert body["message"]
    return body


@pytest.mark.parametrize(
    "path", ["/api/v1/nope", "/wapi/v1/capital/nope", "/api/v1/capital/", "/api/v2/capital", "/wapi/"]
)
def test_unknown_api_urls(path: str) -> None:
    body = _assert_error(Client().get(path), 404, "RESOURCE_NOT_FOUND")
    assert path in body["message"]


def test_unknown_page_url_is_still_a_page() -> None:
    response = Client().get("/no-such-page")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def test_unauthenticated_is_401_with_a_challenge(usd: Asset) -> None:
    response = Client().post("/wapi/v1/capital/deposits", {}, content_type="application/json")
    _assert_error(response, 401, "UNAUTHORIZED")
    assert response["WWW-Authenticate"]


def test_malformed_json(token: str) -> None:
    response = Client().post(
        "/wapi/v1/capital/deposits",
        '{"symbol": "USD", "quantity": ',
        content_type="application/json",
        headers={"Authorization": f"Token {token}"},
    )
    body = _assert_error(response, 400, "INVALID_CLIENT_REQUEST")
    assert "Malformed JSON" in body["message"]
    assert not Deposit.objects.exists()


def test_wrong_content_type(token: str, usd: Asset) -> None:
    response = Client().post(
        "/wapi/v1/capital/deposits", {"symbol": "USD", "quantity": "1"}, headers={"Authorization": f"Token {token}"}
    )  # a form post
    _assert_error(response, 415, "INVALID_CLIENT_REQUEST")
    assert not Deposit.objects.exists()


def test_wrong_method(token: str) -> None:
    response = Client().delete("/api/v1/capital", headers={"Authorization": f"Token {token}"})
    _assert_error(response, 405, "INVALID_CLIENT_REQUEST")


def test_success_bodies_have_no_code_key(token: str, usd: Asset) -> None:
    client = Client()
    auth = {"Authorization": f"Token {token}"}
    services.deposit_create(user=User.objects.get(username="alice"), asset=usd, quantity=1)  # type: ignore[arg-type]
    for path in ["/api/v1/capital", "/wapi/v1/capital/deposits", "/wapi/v1/capital/withdrawals", "/api/v1/status"]:
        response = client.get(path, headers=auth)
        assert response.status_code == 200
        body = response.json()
        rows = body if isinstance(body, list) else [body]
        assert all("code" not in row for row in rows)
