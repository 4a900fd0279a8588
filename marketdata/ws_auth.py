"""Ed25519 authentication of WebSocket subscriptions (BOT_API.md "WebSocket").

A bot subscribing to a private stream adds `"signature": [apiKey, signature, timestamp,
window]`, all as Backpack's clients send them: the base64 public key it registered, the
base64 signature of `instruction=subscribe&timestamp=<ts>&window=<window>`, the time in
ms and the window in ms (default 5000, at most `BOURSE_MAX_SIGNATURE_WINDOW_MS`).

The window, key lookup and verification are `accounts.signing`'s, shared with signed REST
requests; only the message and the way a refusal is reported are this module's.
"""

from __future__ import annotations

from typing import Any

from accounts.models import ApiKey
from accounts.signing import DEFAULT_WINDOW_MS, SignatureError, SignatureMismatch, check_window, verify

SUBSCRIBE_INSTRUCTION = "subscribe"


class SignatureRejected(Exception):
    """The subscription's signature does not authenticate anyone; the message says why."""


def verify_subscription(signature: Any, *, now_ms: int | None = None) -> ApiKey:
    """The API key behind a SUBSCRIBE message's `signature` field.

    Precondition: none; any client-supplied value is checked here. Runs a query: call it
    through `database_sync_to_async` from a consumer. Raises SignatureRejected.
    """
    if not isinstance(signature, list) or len(signature) not in (3, 4):
        raise SignatureRejected('"signature" must be [apiKey, signature, timestamp, window].')
    api_key_b64, signature_b64, timestamp = signature[0], signature[1], str(signature[2])
    window = str(signature[3]) if len(signature) == 4 and signature[3] is not None else str(DEFAULT_WINDOW_MS)
    if not isinstance(api_key_b64, str) or not isinstance(signature_b64, str):
        raise SignatureRejected("The API key and signature must be base64 strings.")
    message = f"instruction={SUBSCRIBE_INSTRUCTION}&timestamp={timestamp}&window={window}"
    try:
        check_window(timestamp, window, now_ms=now_ms, names=("The timestamp", "The window"))
        return verify(api_key_b64, signature_b64, [message])
    except SignatureMismatch as exc:
        raise SignatureRejected("Signature does not match instruction=subscribe&timestamp=…&window=….") from exc
    except SignatureError as exc:
        raise SignatureRejected(exc.message) from exc
