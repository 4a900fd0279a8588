"""ASGI entry point: HTTP through Django, WebSockets at /ws through Channels (served by daphne)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange_site.settings.local")
# A pooled database connection per request (see DB_POOL_MAX_SIZE in settings/base.py).
os.environ.setdefault("DB_POOL_MAX_SIZE", "8")
# What get_asgi_application() does, with a handler that enters the sync views in one hop.
django.setup(set_prefix=False)

from exchange_site.asgi_handler import SyncChainASGIHandler  # noqa: E402

django_asgi_app = SyncChainASGIHandler()

from channels.auth import AuthMiddleware  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import CookieMiddleware, SessionMiddleware  # noqa: E402

from exchange_site.routing import browser_origin_validator, websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": browser_origin_validator(
            CookieMiddleware(SessionMiddleware(AuthMiddleware(URLRouter(websocket_urlpatterns))))
        ),
    }
)
