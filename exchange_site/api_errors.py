"""Errors on the bot API, as BOT_API.md says: `{"code": "...", "message": "..."}` with a 4xx/5xx.

Services raise `accounts.errors.ServiceError` subclasses (plain Python, no DRF); views let
them propagate and this handler turns them, and DRF's own exceptions, into that shape.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response

from accounts.errors import ServiceError

logger = logging.getLogger(__name__)

_DRF_CODES: dict[type[exceptions.APIException], tuple[str, int]] = {
    exceptions.NotAuthenticated: ("UNAUTHORIZED", status.HTTP_401_UNAUTHORIZED),
    exceptions.AuthenticationFailed: ("UNAUTHORIZED", status.HTTP_401_UNAUTHORIZED),
    exceptions.PermissionDenied: ("FORBIDDEN", status.HTTP_403_FORBIDDEN),
    exceptions.NotFound: ("RESOURCE_NOT_FOUND", status.HTTP_404_NOT_FOUND),
    exceptions.MethodNotAllowed: ("INVALID_CLIENT_REQUEST", status.HTTP_405_METHOD_NOT_ALLOWED),
    exceptions.ParseError: ("INVALID_CLIENT_REQUEST", status.HTTP_400_BAD_REQUEST),
    exceptions.UnsupportedMediaType: ("INVALID_CLIENT_REQUEST", status.HTTP_415_UNSUPPORTED_MEDIA_TYPE),
    exceptions.Throttled: ("TOO_MANY_REQUESTS", status.HTTP_429_TOO_MANY_REQUESTS),
    exceptions.ValidationError: ("INVALID_CLIENT_REQUEST", status.HTTP_400_BAD_REQUEST),
}


def error_response(code: str, message: str, http_status: int) -> Response:
    return Response({"code": code, "message": message}, status=http_status)


def _message(detail: Any) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {_message(value)}" for key, value in detail.items())
    if isinstance(detail, list):
        return "; ".join(_message(item) for item in detail)
    return str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        return error_response(exc.code, exc.message, exc.http_status)
    if isinstance(exc, Http404):
        return error_response("RESOURCE_NOT_FOUND", "Not found.", status.HTTP_404_NOT_FOUND)
    if isinstance(exc, PermissionDenied):
        return error_response("FORBIDDEN", "Forbidden.", status.HTTP_403_FORBIDDEN)
    if isinstance(exc, ValidationError):
        return error_response("INVALID_CLIENT_REQUEST", _message(exc.messages), status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, exceptions.APIException):
        code, http_status = next(
            (mapped for cls, mapped in _DRF_CODES.items() if isinstance(exc, cls)),
            ("SERVER_ERROR" if exc.status_code >= 500 else "INVALID_CLIENT_REQUEST", exc.status_code),
        )
        # A subclass may name a more precise code, e.g. INVALID_SIGNATURE for a 401.
        code = getattr(exc, "api_code", code)
        response = error_response(code, _message(exc.detail), http_status)
        if getattr(exc, "auth_header", None):
            response["WWW-Authenticate"] = exc.auth_header
        if isinstance(exc, exceptions.Throttled) and exc.wait:
            response["Retry-After"] = str(int(exc.wait))
        return response
    logger.exception("unhandled API error", exc_info=exc)
    return error_response("SERVER_ERROR", "Internal server error.", status.HTTP_500_INTERNAL_SERVER_ERROR)


# Django's own error views, for what never reaches a DRF view (an unknown URL, a crash in
# middleware). Bots get BOT_API.md's shape under the API prefixes; people get the pages.
_API_PREFIXES = ("/api/", "/wapi/")


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(_API_PREFIXES)


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            {"code": "RESOURCE_NOT_FOUND", "message": f"No endpoint {request.method} {request.path}."}, status=404
        )
    return defaults.page_not_found(request, exception or Http404())


def handler500(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"code": "SERVER_ERROR", "message": "Internal server error."}, status=500)
    return defaults.server_error(request)
