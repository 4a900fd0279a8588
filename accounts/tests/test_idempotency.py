"""`Idempotency-Key`: a retried POST gets the first answer and changes nothing more."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts import services
from accounts.api.idempotency import idempotency_records_purge
from accounts.models import Asset, Balance, Deposit, IdempotencyRecord, User, Withdrawal
from accounts.tests.api_helpers import ccxt_request, post_json, register_key
from accounts.tests.factories import make_user
from tests.concurrency import run_together

pytestmark = pytest.mark.django_db

DEPOSITS = "/wapi/v1/capital/deposits"
WITHDRAWALS = "/wapi/v1/capital/withdrawals"


@pytest.fixture
def token(user: User) -> str:
    return services.api_token_create(user=user)


def test_same_key_twice_makes_one_deposit(user: User, usd: Asset, token: str) -> None:
    client = Client()
    body = {"symbol": "USD", "quantity": "10"}
    first = post_json(client, DEPOSITS, body, token, **{"Idempotency-Key": "dep-1"})
    second = post_json(client, DEPOSITS, body, token, **{"Idempotency-Key": "dep-1"})
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert second["Idempotent-Replayed"] == "true"
    assert Deposit.objects.count() == 1


def test_same_key_with_reordered_body_is_the_same_request(user: User, usd: Asset, token: str) -> None:
    client = Client()
    post_json(client, DEPOSITS, '{"symbol": "USD", "quantity": "10"}', token, **{"Idempotency-Key": "k"})
    again = post_json(client, DEPOSITS, '{"quantity":"10","symbol":"USD"}', token, **{"Idempotency-Key": "k"})
    assert again.status_code == 200
    assert Deposit.objects.count() == 1


def test_same_key_different_body_is_refused(user: User, usd: Asset, token: str) -> None:
    client = Client()
    post_json(client, DEPOSITS, {"symbol": "USD", "quantity": "10"}, token, **{"Idempotency-Key": "k"})
    response = post_json(client, DEPOSITS, {"symbol": "USD", "quantity": "11"}, token, **{"Idempotency-Key": "k"})
    assert response.status_code == 400
    assert response.json() == {
        "code": "INVALID_CLIENT_REQUEST",
        "message": "Idempotency-Key reused with a different request.",
    }
    # Same key on another endpoint is a different request too.
    response = post_json(
        client, WITHDRAWALS, {"symbol": "USD", "quantity": "10", "address": "a"}, token, **{"Idempotency-Key": "k"}
    )
    assert response.json()["code"] == "INVALID_CLIENT_REQUEST"
    assert Deposit.objects.count() == 1
    assert not Withdrawal.objects.exists()


def test_keys_belong_to_one_user(user: User, usd: Asset, token: str) -> None:
    bob_token = services.api_token_create(user=make_user("bob"))
    client = Client()
    body = {"symbol": "USD", "quantity": "10"}
    post_json(client, DEPOSITS, body, token, **{"Idempotency-Key": "shared"})
    response = post_json(client, DEPOSITS, body, bob_token, **{"Idempotency-Key": "shared"})
    assert response.status_code == 200
    assert "Idempotent-Replayed" not in response
    assert Deposit.objects.count() == 2


def test_without_a_key_each_post_counts(user: User, usd: Asset, token: str) -> None:
    client = Client()
    for _ in range(2):
        post_json(client, DEPOSITS, {"symbol": "USD", "quantity": "10"}, token)
    assert Deposit.objects.count() == 2


def test_a_refusal_is_replayed_too(funded_user: User, usd: Asset, token: str) -> None:
    """A withdrawal refused for funds stays refused under its key, even once funds arrive."""
    client = Client()
    body = {"symbol": "USD", "quantity": "1500", "address": "a"}
    first = post_json(client, WITHDRAWALS, body, token, **{"Idempotency-Key": "w"})
    assert first.json()["code"] == "INSUFFICIENT_FUNDS"
    services.allocation_create(user=funded_user, asset=usd, quantity=Decimal(1000), staff=make_user("s", is_staff=True))
    second = post_json(client, WITHDRAWALS, body, token, **{"Idempotency-Key": "w"})
    assert (second.status_code, second.json()) == (first.status_code, first.json())
    assert not Withdrawal.objects.exists()
    assert post_json(client, WITHDRAWALS, body, token, **{"Idempotency-Key": "w2"}).status_code == 200


@pytest.mark.parametrize("key", ["x" * 129, "caf\u00e9", "tab\there", ""])
def test_bad_keys_are_refused(user: User, usd: Asset, token: str, key: str) -> None:
    response = Client().post(
        DEPOSITS,
        {"symbol": "USD", "quantity": "1"},
        content_type="application/json",
        headers={"Authorization": f"Token {token}", "Idempotency-Key": key},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_CLIENT_REQUEST"
    assert not Deposit.objects.exists()


def test_longest_key_is_accepted(user: User, usd: Asset, token: str) -> None:
    response = post_json(
        Client(), DEPOSITS, {"symbol": "USD", "quantity": "1"}, token, **{"Idempotency-Key": "k" * 128}
    )
    assert response.status_code == 200


def test_signed_requests_are_idempotent_too(user: User, usd: Asset) -> None:
    keys = register_key(user)
    client = Client()
    body = {"symbol": "USD", "quantity": "3"}
    # Each CCXT call signs afresh (a new timestamp); the key still identifies the retry.
    first = ccxt_request(client, keys, "POST", DEPOSITS, body, headers={"Idempotency-Key": "bot-7"})
    second = ccxt_request(client, keys, "POST", DEPOSITS, body, headers={"Idempotency-Key": "bot-7"})
    assert first.status_code == 200, first.content
    assert first.json() == second.json()
    assert Deposit.objects.count() == 1


def test_expired_records_are_purged_and_their_keys_free(user: User, usd: Asset, token: str, settings: Any) -> None:
    client = Client()
    body = {"symbol": "USD", "quantity": "1"}
    post_json(client, DEPOSITS, body, token, **{"Idempotency-Key": "old"})
    post_json(client, DEPOSITS, body, token, **{"Idempotency-Key": "new"})
    IdempotencyRecord.objects.filter(key="old").update(
        created_at=timezone.now() - timedelta(hours=settings.BOURSE_IDEMPOTENCY_TTL_HOURS + 1)
    )
    # A key past its TTL is a new request, purged or not.
    assert "Idempotent-Replayed" not in post_json(client, DEPOSITS, body, token, **{"Idempotency-Key": "old"})
    assert Deposit.objects.count() == 3
    IdempotencyRecord.objects.update(
        created_at=timezone.now() - timedelta(hours=settings.BOURSE_IDEMPOTENCY_TTL_HOURS + 1)
    )
    assert idempotency_records_purge() == 2
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_retries_credit_once(usd: Asset, user: User, settings: Any) -> None:
    settings.BOURSE_AUTO_CONFIRM_DEPOSITS = True
    token = services.api_token_create(user=user)

    def retry(_i: int) -> tuple[int, bytes]:
        # One client per thread; Django gives each thread its own DB connection.
        response = post_json(
            Client(), DEPOSITS, {"symbol": "USD", "quantity": "25.5"}, token, **{"Idempotency-Key": "burst"}
        )
        return response.status_code, response.content

    answers = run_together(retry, 10)
    assert not [a for a in answers if isinstance(a, Exception)], answers
    assert len(answers) == 10
    assert len(set(answers)) == 1, answers
    assert answers[0][0] == 200
    assert Deposit.objects.count() == 1
    assert Balance.objects.get(user=user, asset=usd).available == Decimal("25.5")

    # Ten at once with a different body than the stored one: all refused, nothing credited.
    def conflicting(_i: int) -> int:
        return post_json(
            Client(), DEPOSITS, {"symbol": "USD", "quantity": "99"}, token, **{"Idempotency-Key": "burst"}
        ).status_code

    different = run_together(conflicting, 10)
    assert different == [400] * 10
    assert Balance.objects.get(user=user, asset=usd).available == Decimal("25.5")
