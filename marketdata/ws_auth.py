"""Ed25519 authentication of WebSocket subscriptions (BOT_API.md "WebSocket").

A bot subscribing to a private stream adds `"signature": [apiKey, signature, timestamp,
window]`, all as Backpack's clients send them: the base64 public key it registered, the
base64 signature of `instruction=subscribe&timestamp=<ts>&window=<window>`, the time in
ms and the window in ms (default 5000, at most `BOURSE_MAX_SIGNATURE_WINDOW_MS`).

The REST check (`accounts.api.authentication`) is bound to a DRF request, so the few lines
it shares with this one (decode, look up the key, verify) are repeated here rather than
pulled out of a module another engineer owns.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from django.conf import settings
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from accounts.models import ApiKey

DEFAULT_WINDOW_MS = 5000
SUBSCRIBE_INSTRUCTION = "subscribe"


class SignatureRejected(Exception):
    """The subscription's signature does not authenticate anyone; the message says why."""


def _is_ms(value: str) -> bool:
    # isascii() too: str.isdigit() accepts "²", which int() refuses.
    return value.isascii() and value.isdigit() and len(value) <= 16


def _decode_b64(value: str, length: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureRejected(f"{what} is not valid base64.") from exc
    if len(raw) != length:
        raise SignatureRejected(f"{what} must be {length} bytes, base64-encoded.")
    return raw


def verify_signature(api_key_b64: str, signature_b64: str, message: str) -> ApiKey:
    """The active API key (with its user) whose key signed `message`.

    Runs queries: call it through `database_sync_to_async` from a consumer.
    Raises SignatureRejected for a malformed, unknown, revoked or non-matching key.
    """
    verify_key = VerifyKey(_decode_b64(api_key_b64, 32, "API key"))
    signature = _decode_b64(signature_b64, 64, "Signature")
    api_key = ApiKey.objects.select_related("user").filter(public_key=api_key_b64).first()
    if api_key is None:
        raise SignatureRejected("Unknown API key.")
    if not api_key.is_active:
        raise SignatureRejected("This API key has been revoked.")
    if not api_key.user.is_active:
        raise SignatureRejected("This account is disabled.")
    try:
        verify_key.verify(message.encode(), signature)
    except BadSignatureError as exc:
        raise SignatureRejected("Signature does not match instruction=subscribe&timestamp=…&window=….") from exc
    return api_key


def verify_subscription(signature: Any, *, now_ms: int | None = None) -> ApiKey:
    """The API key behind a SUBSCRIBE message's `signature` field.

    Precondition: none; any client-supplied value is checked here. Raises SignatureRejected.
    """
    if not isinstance(signature, list) or len(signature) not in (3, 4):
        raise SignatureRejected('"signature" must be [apiKey, signature, timestamp, window].')
    api_key_b64, signature_b64, timestamp = signature[0], signature[1], str(signature[2])
    window = str(signature[3]) if len(signature) == 4 and signature[3] is not None else str(DEFAULT_WINDOW_MS)
    if not isinstance(api_key_b64, str) or not isinstance(signature_b64, str):
        raise SignatureRejected("The API key and signature must be base64 strings.")
    max_window = settings.BOURSE_MAX_SIGNATURE_WINDOW_MS
    if not _is_ms(timestamp):
        raise SignatureRejected("The timestamp must be a time in milliseconds.")
    if not _is_ms(window) or not 0 < int(window) <= max_window:
        raise SignatureRejected(f"The window must be between 1 and {max_window} milliseconds.")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if abs(now_ms - int(timestamp)) > int(window):
        raise SignatureRejected(f"Timestamp {timestamp} is outside the {window} ms window (server time {now_ms}).")
    message = f"instruction={SUBSCRIBE_INSTRUCTION}&timestamp={timestamp}&window={window}"
    return verify_signature(api_key_b64, signature_b64, message)
