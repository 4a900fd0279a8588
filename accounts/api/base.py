"""What every bot API view shares: the JSON parser, body checks and the instruction map.

Other apps' API views (trading, marketdata) build on `BotAPIView` so that parsing, errors
and signed requests behave the same on every endpoint.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Collection, Mapping
from decimal import Decimal
from typing import IO, Any, ClassVar

from django.conf import settings
from rest_framework import exceptions
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.views import APIView

from accounts.errors import ServiceError


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


class DecimalJSONParser(JSONParser):
    """JSON with every non-integer number read as an exact Decimal.

    Clients send amounts as strings, but some send `1.5` as a JSON number; reading it as a
    float would turn it into 1.4999…, so the parser never makes a float. `NaN` and
    `Infinity` literals are refused as malformed JSON.
    """

    def parse(
        self, stream: IO[bytes], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            decoded = codecs.getreader(encoding)(stream)
            return json.load(decoded, parse_float=Decimal, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise exceptions.ParseError(f"Malformed JSON body: {exc}") from exc


class BotAPIView(APIView):
    """An endpoint of the bot API.

    `instruction` maps an HTTP method to the Backpack instruction name a signed request for
    it is signed with (see accounts.api.authentication); a method missing from it cannot
    be called with a signature.
    """

    instruction: ClassVar[dict[str, str]] = {}
    parser_classes = [DecimalJSONParser]


class PublicAPIView(BotAPIView):
    """An endpoint anyone may call: no authentication is even attempted."""

    authentication_classes: ClassVar[list[Any]] = []
    permission_classes: ClassVar[list[Any]] = []


def check_keys(
    data: object, *, required: Collection[str], optional: Collection[str] = (),
    not_object: str = "Expected a JSON object.",
) -> dict[str, Any]:
    """A JSON object with no unknown and no missing keys (INVALID_CLIENT_REQUEST otherwise).

    Unknown keys are refused rather than ignored: a misspelt `quantity` silently dropped
    would be worse than an error.
    """
    if not isinstance(data, Mapping):
        raise ServiceError(not_object)
    unknown = sorted(str(key) for key in set(data) - set(required) - set(optional))
    if unknown:
        raise ServiceError(f"Unknown field(s): {', '.join(unknown)}.")
    missing = [key for key in required if key not in data]
    if missing:
        raise ServiceError(f"Missing field(s): {', '.join(missing)}.")
    return dict(data)


def body_object(
    request: Request, *, required: Collection[str], optional: Collection[str] = ()
) -> dict[str, Any]:
    """The JSON object body, refusing unknown and missing keys."""
    return check_keys(
        request.data, required=required, optional=optional, not_object="The request body must be a JSON object."
    )


def query_int(request: Request, name: str, *, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ServiceError(f"{name} must be an integer.") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ServiceError(f"{name} must be {bound}.")
    return value
