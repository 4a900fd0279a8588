"""Helpers for bot API tests: users with tokens and Ed25519 keys, and CCXT-signed requests.

Signed requests are produced by CCXT's own `backpack.sign()`, so the tests check Bourse
against the client bots actually use, not against our reading of it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import ccxt
from django.test import Client
from nacl.signing import SigningKey

from accounts import services
from accounts.models import ApiKey, User


@dataclass
class KeyPair:
    api_key: ApiKey
    signing_key: SigningKey

    @property
    def public_b64(self) -> str:
        return base64.b64encode(bytes(self.signing_key.verify_key)).decode()

    @property
    def seed_b64(self) -> str:
        return base64.b64encode(bytes(self.signing_key)).decode()


def register_key(user: User) -> KeyPair:
    signing_key = SigningKey.generate()
    public = base64.b64encode(bytes(signing_key.verify_key)).decode()
    return KeyPair(services.api_key_register(user=user, public_key=public, label="bot"), signing_key)


def ccxt_backpack(keys: KeyPair, base_url: str = "http://testserver", **options: Any) -> ccxt.backpack:
    """CCXT's backpack class pointed at Bourse, as BOT_API.md says bots configure it."""
    exchange = ccxt.backpack(
        {"apiKey": keys.public_b64, "secret": keys.seed_b64, "options": {"timeDifference": 0, **options}}
    )
    exchange.urls["api"] = {"public": base_url, "private": base_url}
    # Bourse's own endpoint, unknown to CCXT: bots add its instruction the same way.
    exchange.options["instructions"].setdefault("wapi/v1/capital/deposits", {})["POST"] = "deposit"
    return exchange


def ccxt_request(
    client: Client,
    keys: KeyPair,
    method: str,
    path: str,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    **options: Any,
) -> Any:
    """Send `params` to `path` signed by CCXT's backpack.sign(), through the Django test client."""
    signed = ccxt_backpack(keys, **options).sign(path.lstrip("/"), ["private"], method, params or {})
    url = signed["url"].removeprefix("http://testserver")
    all_headers = {**signed["headers"], **(headers or {})}
    if method == "GET":
        return client.get(url, headers=all_headers)
    return client.generic(method, url, signed["body"] or "", content_type="application/json", headers=all_headers)


def post_json(client: Client, path: str, body: Any, token: str, **headers: str) -> Any:
    """POST a JSON body with DRF token auth (`Authorization: Token <key>`)."""
    raw = body if isinstance(body, str) else json.dumps(body)
    return client.post(
        path, raw, content_type="application/json", headers={"Authorization": f"Token {token}", **headers}
    )


def get_json(client: Client, path: str, token: str) -> Any:
    return client.get(path, headers={"Authorization": f"Token {token}"})
