"""Periodic jobs of the trading app, run by the `default` RQ worker (see exchange_site/cron.py)."""

from __future__ import annotations

import logging

from trading import services

logger = logging.getLogger(__name__)


def sweep_unqueued_orders() -> dict[str, int]:
    """Re-queue orders still `Pending` and cancels still requested after a few seconds."""
    orders, cancels = services.orders_requeue_stale()
    if orders or cancels:
        logger.warning("sweep re-queued %d orders and %d cancels", orders, cancels)
    return {"orders": orders, "cancels": cancels}
