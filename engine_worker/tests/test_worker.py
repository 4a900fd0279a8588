"""The engine process around the core: queue in, one db_processor job out, depth in Redis,
publishing to Channels groups, and rebuild from the database."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from accounts.tests.factories import fund, make_asset, make_user
from engine_worker import codec, transport
from engine_worker.worker import EngineWorker
from marketdata.depth import depth_snapshot
from marketdata.tests.listeners import GroupListener
from trading import services
from trading.models import Order
from trading.services import OrderParams

pytestmark = pytest.mark.django_db(transaction=True)


def _market() -> Any:
    return services.market_create(
        base=make_asset("AAPL", precision=0, kind="stock"), quote=make_asset("USD", precision=2),
        tick_size=Decimal("0.01"), lot_size=Decimal("1"),
    )


def _db_batches() -> list[dict[str, Any]]:
    queue = transport.get_queue(transport.DB_QUEUE)
    return [payload for _, payload in transport.peek_batches(queue, 1000)]


def _drain(worker: EngineWorker) -> None:
    while batch := transport.pop_messages(worker.messages, 1000, 0):
        worker.consume(batch)


def test_orders_flow_from_the_queue_to_one_db_job_per_batch_and_depth_in_redis(redis_conn: Any) -> None:
    market = _market()
    worker = EngineWorker()
    worker.setup()
    _drain(worker)  # learns the market from its add_market command
    seller, buyer = make_user(), make_user()
    fund(seller, market.base, 10)
    fund(buyer, market.quote, Decimal("2000"))
    services.order_place(user=seller, market=market, params=OrderParams(side="Ask", order_type="Limit", price=Decimal("100.50"), quantity=Decimal("4")))
    services.order_place(user=buyer, market=market, params=OrderParams(side="Bid", order_type="Limit", price=Decimal("101"), quantity=Decimal("3")))
    services.order_place(user=buyer, market=market, params=OrderParams(side="Bid", order_type="Limit", price=Decimal("99"), quantity=Decimal("2")))

    batch = transport.pop_messages(worker.messages, 1000, 0)
    assert [m["kind"] for m in batch] == ["place", "place", "place"]
    worker.consume(batch)

    jobs = _db_batches()
    assert len(jobs) == 1, "a batch of commands becomes exactly one db_processor job"
    events = [codec.decode_event(row) for row in jobs[0]["events"]]
    trades = [e for e in events if type(e).__name__ == "Trade"]
    assert [(t.price, t.quantity) for t in trades] == [(10050, 3)], "fills at the maker's price"
    seqs = [e.seq for e in events if e.seq]
    assert seqs == list(range(1, len(seqs) + 1)), "event sequence is contiguous from 1"

    snapshot = depth_snapshot("AAPL_USD")
    assert snapshot is not None
    assert snapshot["asks"] == [["100.5", "1"]]
    assert snapshot["bids"] == [["99", "2"]]
    assert int(snapshot["lastUpdateId"]) == max(e.book_update_id for e in events if hasattr(e, "book_update_id"))


def test_publishes_one_message_per_group_per_batch(redis_conn: Any) -> None:
    market = _market()
    worker = EngineWorker()
    worker.setup()
    _drain(worker)
    listener = GroupListener("trade.AAPL_USD")
    seller, buyer = make_user(), make_user()
    fund(seller, market.base, 10)
    fund(buyer, market.quote, Decimal("5000"))
    services.order_place(user=seller, market=market, params=OrderParams(side="Ask", order_type="Limit", price=Decimal("100"), quantity=Decimal("5")))
    for _ in range(2):
        services.order_place(user=buyer, market=market, params=OrderParams(side="Bid", order_type="Limit", price=Decimal("100"), quantity=Decimal("2")))
    _drain(worker)
    message = listener.result(timeout=5)
    assert message["type"] == "stream.batch"
    assert [m["data"]["q"] for m in message["messages"]] == ["2", "2"]
    assert all(m["stream"] == "trade.AAPL_USD" and m["data"]["p"] == "100" for m in message["messages"])


def test_rebuild_restores_books_from_the_database_and_replays_pending(redis_conn: Any) -> None:
    market = _market()
    user = make_user()
    fund(user, market.quote, Decimal("1000"))
    order = services.order_place(user=user, market=market, params=OrderParams(side="Bid", order_type="Limit", price=Decimal("10"), quantity=Decimal("5")))
    # A stale duplicate of the same command sits on the queue from before the restart.
    services.orders_requeue_stale(older_than=__import__("datetime").timedelta(0))
    worker = EngineWorker()
    worker.setup()
    assert transport.queue_length(worker.messages) == 0, "commands queued before a rebuild are dropped"
    assert worker.engine.is_known(order.pk), "the pending order was replayed from the database"
    bids, asks, _ = worker.engine.depth("AAPL_USD", 10)
    assert bids == [(1000, 5)] and asks == []
    jobs = _db_batches()
    accepted = [codec.decode_event(r) for job in jobs for r in job["events"] if r[0] == "A"]
    assert [e.order_id for e in accepted] == [order.pk], "accepted exactly once"
    assert Order.objects.get(pk=order.pk).status == Order.Status.PENDING  # until the DB processor applies it
    assert json.loads(redis_conn.get("bourse:depth:AAPL_USD"))["bids"] == [["10", "5"]]
