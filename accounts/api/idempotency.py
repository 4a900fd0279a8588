"""`Idempotency-Key` on POST endpoints: a retried request gets the first answer, not a second effect.

Claim, work and answer happen in ONE transaction. The claim is
`INSERT … ON CONFLICT (user_id, key) DO NOTHING RETURNING id`: a concurrent request with the
same key blocks on that INSERT until the first transaction ends, then either finds the
committed record (and replays it) or, if the first rolled back, claims the key itself. So
ten simultaneous retries produce one effect and ten identical answers, without a lock
table or polling.

What is stored: 2xx and 4xx answers (a refusal is an answer — a retry must not succeed
where the first attempt was refused, or vice versa, without the client noticing). A 5xx
rolls the whole transaction back, claim included, so the client may retry.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.errors import ServiceError
from accounts.models import IdempotencyRecord

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 128

Handler = Callable[..., Response]


def _ttl() -> timedelta:
    return timedelta(hours=settings.BOURSE_IDEMPOTENCY_TTL_HOURS)


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH or not all(" " <= char <= "~" for char in key):
        raise ServiceError(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.")


def request_fingerprint(request: Request) -> str:
    """sha256 of method, path with query, and the body in canonical form (sorted keys, compact).

    Canonical rather than raw bytes, so a retry that reorders keys or spacing is still the
    same request; numbers and numeric strings hash alike since both mean the same amount.
    """
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    text = "\n".join([request.method or "", request.get_full_path(), body])
    return hashlib.sha256(text.encode()).hexdigest()


def _claim(user_id: int, key: str, request_hash: str) -> int | None:
    meta = IdempotencyRecord._meta
    qn = connection.ops.quote_name
    columns = ", ".join(qn(meta.get_field(name).column) for name in ("user", "key", "request_hash", "created_at"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES (%s, %s, %s, %s) "  # noqa: S608 - identifiers from the model
            f"ON CONFLICT ({qn(meta.get_field('user').column)}, {qn(meta.get_field('key').column)}) "
            "DO NOTHING RETURNING id",
            [user_id, key, request_hash, timezone.now()],
        )
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def _replay(user_id: int, key: str, request_hash: str) -> Response:
    record = IdempotencyRecord.objects.filter(user_id=user_id, key=key).first()
    if record is None or record.response_status is None:
        # Not reachable while claim and answer share a transaction; kept so a future
        # change that splits them fails safe instead of replaying an empty answer.
        raise ServiceError(f"A request with this {HEADER} is still in progress.", http_status=409)
    if record.request_hash != request_hash:
        raise ServiceError(f"{HEADER} reused with a different request.")
    response = Response(record.response_body, status=record.response_status)
    response["Idempotent-Replayed"] = "true"
    return response


def idempotent(handler: Handler) -> Handler:
    """Decorate an APIView's `post` so an `Idempotency-Key` header makes it safe to retry."""

    @functools.wraps(handler)
    def wrapper(view: APIView, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.headers.get(HEADER)
        if key is None or not request.user.is_authenticated:
            return handler(view, request, *args, **kwargs)
        _check_key(key)
        request_hash = request_fingerprint(request)
        user_id = request.user.pk
        with transaction.atomic():
            # An expired record no longer protects anything; a key reused after the TTL is new.
            IdempotencyRecord.objects.filter(user_id=user_id, key=key, created_at__lt=timezone.now() - _ttl()).delete()
            record_id = _claim(user_id, key, request_hash)
            if record_id is None:
                return _replay(user_id, key, request_hash)
            try:
                # A savepoint, so a refused request's partial writes go and its answer stays.
                with transaction.atomic():
                    response = handler(view, request, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - turned into the API's answer, as DRF would
                response = view.handle_exception(exc)
            if response.status_code >= 500:
                transaction.set_rollback(True)
                return response
            records = IdempotencyRecord.objects.filter(pk=record_id)
            records.update(response_status=response.status_code, response_body=response.data)
            # jsonb reorders object keys; answer with the stored body so the first answer
            # and every replay are byte for byte the same.
            response.data = records.values_list("response_body", flat=True).get()
        return response

    return wrapper


def idempotency_records_purge(*, now: datetime | None = None) -> int:
    """Delete records older than settings.BOURSE_IDEMPOTENCY_TTL_HOURS; returns how many."""
    cutoff = (now or timezone.now()) - _ttl()
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted
