"""WebSocket routes. The /ws consumer arrives with the order pipeline (marketdata/consumers.py)."""

from django.urls import re_path  # noqa: F401

websocket_urlpatterns: list = []
