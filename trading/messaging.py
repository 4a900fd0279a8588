"""Commands for the engine on the django-rq queue `messages`, as JSON (STYLE.md 7).

Each command is one RQ job calling `engine_worker.jobs.engine_command(message)`; the engine
does not run RQ jobs but drains the queue's jobs in batches and decodes their argument.
Pushes happen after commit (STYLE.md 5): an order is on the queue only once it is in the
database, and a lost push is recovered by the sweep.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from rq import Queue

from trading.models import Market, Order

MESSAGES_QUEUE = "messages"
ENGINE_JOB = "engine_worker.jobs.engine_command"


def now_us() -> int:
    return time.time_ns() // 1000


def messages_queue() -> Queue:
    from engine_worker.transport import get_queue

    return get_queue(MESSAGES_QUEUE)


# Commands per job on `messages`: a batch request's orders (at most 50) travel as one job,
# and longer lists (cancel-all, the sweep) are cut so no job is much bigger than that.
COMMANDS_PER_JOB = 50


def enqueue(messages: Iterable[dict[str, Any]]) -> None:
    """Push messages now, in order, in one round trip: one job for a single command, one job
    per `COMMANDS_PER_JOB` for more (the engine reads both, `engine_worker.transport`)."""
    batch = list(messages)
    if not batch:
        return
    from engine_worker.transport import push_jobs

    # One job (one Redis hash, written here and read and deleted by the engine) per request
    # rather than per order: for a batch of 50 that was 50 of each. A short description
    # instead of RQ's default repr of the call (costly); the dashboard needs the kind and ids.
    chunks = [batch[start : start + COMMANDS_PER_JOB] for start in range(0, len(batch), COMMANDS_PER_JOB)]
    push_jobs(
        messages_queue(), ENGINE_JOB, [chunk[0] if len(chunk) == 1 else chunk for chunk in chunks],
        [_describe(chunk) for chunk in chunks],
    )


def _describe(chunk: list[dict[str, Any]]) -> str:
    def one(m: dict[str, Any]) -> str:
        return f"{m.get('kind')} {m.get('symbol', '')} {m.get('order_id', '')}".strip()

    return one(chunk[0]) if len(chunk) == 1 else f"{len(chunk)} commands: {one(chunk[0])} … {one(chunk[-1])}"


def enqueue_on_commit(messages: Iterable[dict[str, Any]]) -> None:
    batch = list(messages)
    transaction.on_commit(lambda: enqueue(batch))


def place_message(order: Order, *, price_ticks: int | None, quantity_lots: int | None) -> dict[str, Any]:
    return {
        "kind": "place",
        "order_id": order.pk,
        "user_id": order.user_id,
        "symbol": order.market.symbol,
        "side": order.side,
        "type": order.order_type,
        "price": price_ticks,
        "quantity": quantity_lots,
        "quote_cap": order.engine_cap,
        "tif": order.time_in_force,
        "post_only": order.post_only,
        "stp": order.self_trade_prevention,
        "client_id": order.client_id,
        "ts": now_us(),
    }


def cancel_message(order: Order) -> dict[str, Any]:
    return {"kind": "cancel", "order_id": order.pk, "user_id": order.user_id, "symbol": order.market.symbol, "ts": now_us()}


def market_message(market: Market, *, created: bool, with_reference: bool = True) -> dict[str, Any]:
    """A market's configuration, in the engine's integers (ppm fees, ticks).

    The band reference is sent only when staff set it: after the first trade the engine's
    reference is the last trade, and a routine fee change must not re-anchor the band.
    """
    reference = None
    if with_reference and market.reference_price is not None:
        reference = int(market.reference_price / market.tick_size)
    return {
        "kind": "add_market" if created else "update_market",
        "symbol": market.symbol,
        "status": market.status,
        "maker_fee_ppm": int(market.maker_fee_rate * 1_000_000),
        "taker_fee_ppm": int(market.taker_fee_rate * 1_000_000),
        "band_bps": market.band_bps,
        "reference_price": reference,
        "ts": now_us(),
    }
