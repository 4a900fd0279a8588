"""The ASGI handler daphne serves (exchange_site/asgi_handler.py), driven through the real
ASGI application with Channels' HttpCommunicator: what a client gets back, and that each
request is started and finished once (finishing is what returns its database connection).

Transactional: the handler runs the view in a thread of its own, on its own connection.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from django.core import signals

from accounts.services import api_token_create
from accounts.tests.factories import balance_of, fund, make_user
from exchange_site.asgi import application
from trading.models import Order
from trading.tests.factories import make_market

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def lifecycle() -> Iterator[list[str]]:
    """The request_started / request_finished signals, in the order they fire."""
    seen: list[str] = []

    def started(**kwargs: Any) -> None:
        seen.append("started")

    def finished(**kwargs: Any) -> None:
        seen.append("finished")

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    yield seen
    signals.request_started.disconnect(started)
    signals.request_finished.disconnect(finished)


def call(
    method: str, path: str, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None,
    *, host: bytes = b"127.0.0.1", query: bytes = b"",
) -> dict[str, Any]:
    """One request through the application, as daphne would send it; the whole answer."""
    scope = {
        "type": "http", "http_version": "1.1", "method": method, "scheme": "http", "path": path,
        "raw_path": path.encode(), "query_string": query, "root_path": "",
        "headers": [(b"host", host), (b"content-length", str(len(body)).encode()), *(headers or [])],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }

    async def go() -> dict[str, Any]:
        app = ApplicationCommunicator(application, scope)
        await app.send_input({"type": "http.request", "body": body})
        start = await app.receive_output(10)
        assert start["type"] == "http.response.start"
        answer = {"status": start["status"], "headers": start["headers"], "body": b""}
        while True:
            message = await app.receive_output(10)
            assert message["type"] == "http.response.body"
            answer["body"] += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await app.wait(10)
        return answer

    return async_to_sync(go)()


def test_an_order_posted_over_asgi_is_placed_and_answered(lifecycle: list[str]) -> None:
    market = make_market()
    user = make_user("asgi")
    fund(user, market.quote, Decimal("1000.00"))
    token = api_token_create(user=user)
    body = {"symbol": "AAPL_USD", "side": "Bid", "orderType": "Limit", "price": "100.00", "quantity": "3"}

    response = call(
        "POST", "/api/v1/order", json.dumps(body).encode(),
        [(b"authorization", f"Token {token}".encode()), (b"content-type", b"application/json")],
    )

    assert response["status"] == 200, response["body"][:300]
    answer = json.loads(response["body"])
    assert answer["status"] == "New" and answer["price"] == "100" and answer["quantity"] == "3"
    order = Order.objects.get(pk=int(answer["id"]))
    assert order.user == user and order.status == Order.Status.PENDING
    assert balance_of(user, "USD") == (Decimal("699.40"), Decimal("300.60"))  # 300 + 0.2 % taker fee locked
    assert (b"Content-Type", b"application/json") in response["headers"]
    assert lifecycle == ["started", "finished"]


def test_refusals_and_errors_are_answered_and_finished(lifecycle: list[str]) -> None:
    # Wrong credentials: the API's own error shape.
    response = call("GET", "/api/v1/capital", headers=[(b"authorization", b"Token not-a-token")])
    assert response["status"] == 401
    assert set(json.loads(response["body"])) == {"code", "message"}
    # A host the site does not serve: Django's 400, still through the middleware chain.
    assert call("GET", "/api/v1/status", host=b"evil.example")["status"] == 400
    # A query string that is not UTF-8 never becomes a request: 400 without a view.
    assert call("GET", "/api/v1/status", query=b"a=\xff")["status"] == 400
    assert call("GET", "/no/such/page")["status"] == 404
    assert lifecycle == ["started", "finished"] * 4


def test_a_static_file_streams_whole_then_finishes(lifecycle: list[str]) -> None:
    expected = (Path(settings.BASE_DIR) / "static/css/bourse.css").read_bytes()
    response = call("GET", "/static/css/bourse.css")
    assert response["status"] == 200
    assert response["body"] == expected
    assert lifecycle == ["started", "finished"]
