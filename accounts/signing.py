"""Ed25519 signatures of registered API keys: the checks REST and WebSocket share.

`accounts.api.authentication` (signed HTTP requests) and `marketdata.ws_auth` (signed
WebSocket subscriptions) differ only in what is signed and in how a refusal is reported;
the window, the key lookup and the verification live here once.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterable

from django.conf import settings
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from accounts.models import ApiKey

DEFAULT_WINDOW_MS = 5000


class SignatureError(Exception):
    """A refused signature. `unknown_key` tells "who are you" (unknown, revoked, disabled)
    apart from "that is not your signature" (malformed, stale, not matching)."""

    def __init__(self, message: str, *, unknown_key: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.unknown_key = unknown_key


class SignatureMismatch(SignatureError):
    """Well-formed, from an active key, but not a signature of what was sent."""


def is_ms(value: str) -> bool:
    # isascii() too: str.isdigit() accepts "²", which int() refuses.
    return value.isascii() and value.isdigit() and len(value) <= 16


def decode_b64(value: str, length: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"{what} is not valid base64.") from exc
    if len(raw) != length:
        raise SignatureError(f"{what} must be {length} bytes, base64-encoded.")
    return raw


def check_window(timestamp: str, window: str, *, now_ms: int | None = None, names: tuple[str, str] = ("timestamp", "window")) -> None:
    """Refuse a malformed window, or a timestamp further than it from the server's clock."""
    max_window = settings.BOURSE_MAX_SIGNATURE_WINDOW_MS
    if not is_ms(timestamp):
        raise SignatureError(f"{names[0]} must be a time in milliseconds.")
    if not is_ms(window) or not 0 < int(window) <= max_window:
        raise SignatureError(f"{names[1]} must be between 1 and {max_window} milliseconds.")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if abs(now_ms - int(timestamp)) > int(window):
        raise SignatureError(f"Timestamp {timestamp} is outside the {window} ms window (server time {now_ms}).")


def verify(public_key_b64: str, signature_b64: str, messages: Iterable[str], *, names: tuple[str, str] = ("API key", "Signature")) -> ApiKey:
    """The active API key (with its user) whose key signed one of `messages`.

    Several messages because clients spell escaped values differently (see
    accounts.api.authentication). Runs one query. Raises SignatureError.
    """
    verify_key = VerifyKey(decode_b64(public_key_b64, 32, names[0]))
    signature = decode_b64(signature_b64, 64, names[1])
    api_key = ApiKey.objects.select_related("user").filter(public_key=public_key_b64).first()
    if api_key is None:
        raise SignatureError("Unknown API key.", unknown_key=True)
    if api_key.revoked_at is not None:
        raise SignatureError("This API key has been revoked.", unknown_key=True)
    if not api_key.user.is_active:
        raise SignatureError("This account is disabled.", unknown_key=True)
    for message in messages:
        try:
            verify_key.verify(message.encode(), signature)
        except BadSignatureError:
            continue
        return api_key
    raise SignatureMismatch("Signature does not match.")
