"""The sweep that re-sends orders whose push to the engine was lost."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from accounts.tests.factories import fund, make_user
from engine_worker import transport
from trading import messaging, services
from trading.jobs import sweep_unqueued_orders
from trading.tests.factories import make_market, place

pytestmark = pytest.mark.django_db


def _queued_kinds() -> list[str]:
    return [m["kind"] for m in transport.pop_messages(messaging.messages_queue(), 10_000, 0)]


def test_a_stale_pending_order_is_resent_once_per_interval(redis_conn: Any) -> None:
    market = make_market()
    user = make_user()
    fund(user, market.quote, Decimal("100"))
    order = place(user, market)
    _queued_kinds()  # the push after commit, and the market's own command

    assert sweep_unqueued_orders() == {"orders": 0, "cancels": 0}, "too young to be stale"
    assert services.orders_requeue_stale(older_than=timedelta(0)) == (1, 0)
    assert _queued_kinds() == ["place"]
    # The engine may just be behind: the next passes must not pile up duplicates.
    assert services.orders_requeue_stale(older_than=timedelta(0)) == (0, 0)
    assert _queued_kinds() == []
    assert services.orders_requeue_stale(older_than=timedelta(0), resend_after=timedelta(0)) == (1, 0)

    services.order_cancel(user=user, market=market, order_id=order.pk)
    _queued_kinds()
    order.refresh_from_db()
    assert order.cancel_requested_at is not None
    assert services.orders_requeue_stale(older_than=timedelta(0), resend_after=timedelta(0)) == (1, 1)
    assert _queued_kinds() == ["place", "cancel"], "the place goes before its cancel"
