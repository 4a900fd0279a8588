"""Signed requests (Ed25519), as Backpack Exchange defines them and BOT_API.md describes.

A bot registers an Ed25519 public key; each request carries `X-API-Key` (that key, base64),
`X-Timestamp` (ms), `X-Window` (ms) and `X-Signature` (base64) over

    instruction=<name>&<params sorted by key as k=v joined by &>&timestamp=<ts>&window=<window>

where the params are the query string for GET and the JSON body otherwise, and a list body
(batch order placement) repeats `instruction=<name>&<sorted item params>&` per item. The
instruction name belongs to the endpoint: each view declares it, e.g.
`instruction = {"GET": "balanceQuery"}`.

Clients disagree on escaping: CCXT percent-encodes values (Python `quote`, JS
`encodeURIComponent`), Backpack's own clients sign them raw. Each spelling is a different
message, so the signature is checked against every spelling the request's values have
(usually one, since identifiers and decimals need no escaping).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote, quote_plus

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.authentication import TokenAuthentication as DRFTokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.request import Request

from accounts.models import ApiKey
from accounts.signing import DEFAULT_WINDOW_MS, SignatureError, SignatureMismatch, check_window, verify
from exchange_site.db.prepared import prepared_cursor

# last_used_at is for people ("is this key still in use?"); a write per request would turn
# every read into a write, so it is refreshed at most this often.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class InvalidSignature(exceptions.AuthenticationFailed):
    """401 with BOT_API.md's `INVALID_SIGNATURE` code (see exchange_site.api_errors)."""

    api_code = "INVALID_SIGNATURE"


class Unauthorized(exceptions.AuthenticationFailed):
    api_code = "UNAUTHORIZED"


class _RawNumber(str):
    """A JSON number kept as the text the client sent, so it is signed exactly as written."""


def _js_encode(value: str) -> str:
    # JavaScript's encodeURIComponent: everything but A-Z a-z 0-9 - _ . ! ~ * ' ( ) is escaped.
    return quote(value, safe="-_.!~*'()")


def _py_encode(value: str) -> str:
    # CCXT (Python) builds the string with urllib's urlencode(quote_via=quote): "/" stays.
    return quote(value, safe="/")


_ENCODINGS: tuple[Callable[[str], str], ...] = (str, _py_encode, _js_encode, quote_plus)


def _wire_text(value: Any) -> str:
    """A parameter value as clients put it in the signed string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):  # includes _RawNumber
        return str(value)
    if isinstance(value, int | float):
        return str(value)
    # Nested objects are not part of any Bourse instruction; sign them as compact JSON so
    # the request still reaches the view, which rejects the field with a clear message.
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _query(items: Iterable[tuple[str, str]], encode: Callable[[str], str]) -> str:
    return "&".join(f"{encode(key)}={encode(value)}" for key, value in items)


def signing_payloads(instruction: str, params: dict[str, Any] | list[Any], timestamp: str, window: str) -> list[str]:
    """Every spelling of the signed string a client may have produced for these params."""
    return list(_iter_signing_payloads(instruction, params, timestamp, window))


def _iter_signing_payloads(
    instruction: str, params: dict[str, Any] | list[Any], timestamp: str, window: str
) -> Iterator[str]:
    # Lazily, most likely spelling first: a request is verified against the next spelling
    # only when the previous one failed (a batch's string is kilobytes to escape).
    tail = f"timestamp={timestamp}&window={window}"
    if isinstance(params, list):
        groups = [
            sorted((str(key), _wire_text(value)) for key, value in item.items()) if isinstance(item, dict) else []
            for item in params
        ]
    else:
        groups = [sorted((str(key), _wire_text(value)) for key, value in params.items())]
    seen: set[str] = set()
    for encode in _ENCODINGS:
        if isinstance(params, list) and params:
            payload = "".join(f"instruction={instruction}&{_query(group, encode)}&" for group in groups) + tail
        else:
            query = _query(groups[0], encode) if groups else ""
            payload = f"instruction={instruction}&" + (f"{query}&" if query else "") + tail
        if payload not in seen:
            seen.add(payload)
            yield payload


def _request_params(request: Request) -> dict[str, Any] | list[Any]:
    """The params a client signed: the query for GET, else the JSON body (or the query if empty)."""
    if request.method not in ("GET", "HEAD"):
        body = request.body
        if body.strip():
            try:
                parsed = json.loads(body, parse_float=_RawNumber, parse_int=_RawNumber)
            except ValueError as exc:
                raise exceptions.ParseError(f"Malformed JSON body: {exc}") from exc
            if isinstance(parsed, dict | list):
                return parsed
            raise exceptions.ParseError("The JSON body must be an object or a list.")
    # A repeated key is signed as CCXT's urlencode would sign the list's last value.
    return {key: request.query_params.getlist(key)[-1] for key in request.query_params}


def instruction_for(request: Request) -> str | None:
    view = (request.parser_context or {}).get("view")
    instructions: dict[str, str] = getattr(view, "instruction", None) or {}
    return instructions.get(request.method or "")


class SignedRequestAuthentication(BaseAuthentication):
    """Authenticates a request signed with a registered Ed25519 key; no `X-API-Key`, no opinion."""

    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        # META, not `request.headers`: building the headers mapping (for this one look-up on
        # every token or session request) cost ~6% of an order POST's CPU.
        public_key = request.META.get("HTTP_X_API_KEY")
        if not public_key:
            return None
        signature_b64 = request.headers.get("X-Signature")
        timestamp = request.headers.get("X-Timestamp")
        window = request.headers.get("X-Window") or str(DEFAULT_WINDOW_MS)
        if not signature_b64 or not timestamp:
            raise InvalidSignature("Signed requests need X-Signature and X-Timestamp headers.")
        try:
            check_window(timestamp, window, names=("X-Timestamp", "X-Window"))
        except SignatureError as exc:
            raise InvalidSignature(exc.message) from exc

        instruction = instruction_for(request)
        view = (request.parser_context or {}).get("view")
        if instruction is None and view is not None and not hasattr(view, (request.method or "").lower()):
            # Say "wrong method" rather than "bad signature" for a method the endpoint lacks.
            raise exceptions.MethodNotAllowed(request.method or "")
        if instruction is None:
            raise InvalidSignature(f"{request.method} {request.path} does not accept signed requests.")

        params = _request_params(request)
        try:
            api_key = verify(
                public_key, signature_b64, _iter_signing_payloads(instruction, params, timestamp, window),
                names=("X-API-Key", "X-Signature"),
            )
        except SignatureMismatch as exc:
            raise InvalidSignature(f"Signature does not match the request (instruction {instruction}).") from exc
        except SignatureError as exc:
            raise (Unauthorized if exc.unknown_key else InvalidSignature)(exc.message) from exc
        self._touch(api_key)
        return api_key.user, api_key

    def authenticate_header(self, request: Request) -> str:
        # Any value makes DRF answer 401 rather than 403 to an unauthenticated request.
        return 'X-API-Key realm="api"'

    @staticmethod
    def _touch(api_key: ApiKey) -> None:
        now = timezone.now()
        cutoff = now - LAST_USED_RESOLUTION
        if api_key.last_used_at is not None and api_key.last_used_at >= cutoff:
            return
        # Conditional so concurrent requests write the row once, not once each.
        ApiKey.objects.filter(pk=api_key.pk).exclude(last_used_at__gte=cutoff).update(last_used_at=now)
        api_key.last_used_at = now


@functools.cache
def _token_sql() -> tuple[str, list[str], list[str]]:
    user_model = get_user_model()
    token_fields = [f.attname for f in Token._meta.concrete_fields]
    user_fields = [f.attname for f in user_model._meta.concrete_fields]
    quote = connection.ops.quote_name
    columns = [f"t.{quote(f.column)}" for f in Token._meta.concrete_fields] + [
        f"u.{quote(f.column)}" for f in user_model._meta.concrete_fields
    ]
    sql = (
        f"SELECT {', '.join(columns)} FROM {quote(Token._meta.db_table)} t "
        f"JOIN {quote(user_model._meta.db_table)} u ON u.{quote(user_model._meta.pk.column)} = t.user_id "
        "WHERE t.key = %s"
    )
    return sql, token_fields, user_fields


class TokenAuthentication(DRFTokenAuthentication):
    """DRF's token authentication, answering the same, with the look-up in one hand-written query.

    Every token-authenticated API request runs it; building DRF's
    `select_related("user").get(key=...)` (the join, in Django 5.2) cost more CPU than the
    database's answer. None of these fields has a database converter, so `from_db` is exact.
    """

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        sql, token_fields, user_fields = _token_sql()
        with prepared_cursor() as cursor:
            cursor.execute(sql, [key])
            row = cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        token = Token.from_db(connection.alias, token_fields, row[: len(token_fields)])
        user = get_user_model().from_db(connection.alias, user_fields, row[len(token_fields) :])
        token.user = user
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return user, token
