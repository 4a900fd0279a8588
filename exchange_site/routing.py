"""WebSocket routes, and the Origin check in front of them.

Browsers always send `Origin` on a WebSocket handshake and carry the user's session
cookie with it, so a page on another site must not be able to open `/ws` as the user:
an Origin that is not one of ALLOWED_HOSTS is refused. Bots (CCXT, Backpack's clients)
send no Origin and authenticate each private subscription with a signature, so a
handshake without one is let through; Channels' AllowedHostsOriginValidator refuses it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import ParseResult

from channels.security.websocket import OriginValidator
from django.conf import settings
from django.urls import re_path

from marketdata.consumers import StreamConsumer

websocket_urlpatterns: list[Any] = [
    re_path(r"^ws/?$", StreamConsumer.as_asgi()),
]


class BrowserOriginValidator(OriginValidator):
    """AllowedHostsOriginValidator, except that a handshake without an Origin is allowed."""

    def valid_origin(self, parsed_origin: ParseResult | None) -> bool:
        if parsed_origin is None:
            return True
        return bool(self.validate_origin(parsed_origin))


def browser_origin_validator(application: Any) -> BrowserOriginValidator:
    allowed_hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return BrowserOriginValidator(application, allowed_hosts)
