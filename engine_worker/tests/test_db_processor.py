"""The DB processor worker: the `db_processor` queue in, one transaction per group of jobs,
ack after commit, gaps turned into rebuild requests, balance updates to the users' groups,
and crashes at either side of the commit losing nothing and applying nothing twice."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from accounts.ledger import ledger_check
from accounts.models import User
from accounts.tests.factories import balance_of as bal
from accounts.tests.factories import fund
from engine_worker import jobs, transport
from engine_worker.db_processor import DbProcessor, drop_key
from engine_worker.tests.factories import EngineRun, make_market, place
from marketdata.models import Trade
from marketdata.realtime import user_group
from marketdata.tests.listeners import GroupListener
from trading.models import Market, MarketState, Order

pytestmark = pytest.mark.django_db

D = Decimal
ROOT = Path(__file__).resolve().parents[2]


def db_queue() -> Any:
    return transport.get_queue(transport.DB_QUEUE)


def push(*payloads: dict[str, Any]) -> None:
    for payload in payloads:
        transport.push_job(db_queue(), transport.DB_JOB, payload)



def test_run_once_applies_every_queued_batch_and_empties_the_queue(
    market: Market, buyer: User, seller: User
) -> None:
    run = EngineRun(market)
    ask = place(seller, market, "Ask", "100.00", "10")
    bid = place(buyer, market, "Bid", "100.00", "10")
    push(run.batch(ask), run.batch(bid))
    # A job whose hash expired is acked too, so it cannot block the queue.
    transport.push_job(db_queue(), transport.DB_JOB, {"epoch": 1, "events": []})
    ghost = db_queue().connection.lrange(db_queue().key, -1, -1)[0].decode()
    db_queue().connection.delete(f"rq:job:{ghost}")

    call_command("run_db_processor", "--once", "--batch-size", "2")

    assert transport.queue_length(db_queue()) == 0
    assert bal(buyer, "USD") == (D("998.00"), D(0))
    assert bal(seller, "USD") == (D("999.00"), D(0))
    assert Trade.objects.count() == 1
    assert set(Order.objects.values_list("status", flat=True)) == {"Filled"}
    assert ledger_check() == []


def test_gap_drops_the_market_asks_for_a_rebuild_and_newer_epochs_apply(
    market: Market, buyer: User, seller: User
) -> None:
    other = make_market("MSFT", "USD")
    fund(seller, other.base, D("5"))
    run = EngineRun(market, other)
    first = run.batch(place(seller, market, "Ask", "100.00", "5"), epoch=1)
    run.batch(place(seller, market, "Ask", "101.00", "5"), epoch=1)  # lost by the transport
    msft_ask = place(seller, other, "Ask", "50.00", "5")
    stranded = place(buyer, market, "Bid", "100.00", "2")
    third = run.batch(msft_ask, stranded, epoch=1)
    worker = DbProcessor()
    worker.setup()
    push(first, third)

    worker.run_once()

    assert transport.queue_length(db_queue()) == 0
    assert MarketState.objects.get(market=market).last_event_seq == 3  # the first batch only
    msft_ask.refresh_from_db()
    stranded.refresh_from_db()
    assert msft_ask.status == "New"  # other markets go on
    assert stranded.status == "Pending" and Trade.objects.count() == 0
    assert db_queue().connection.get(drop_key("AAPL_USD")) == b"1"
    messages = transport.pop_messages(transport.get_queue(transport.MESSAGES_QUEUE), 100, 0)
    assert messages == [{"kind": "rebuild", "reason": "gap", "symbol": "AAPL_USD", "epoch": 1}]

    # A later batch of the old engine run is dropped too, in a later transaction.
    push(run.batch(place(buyer, market, "Bid", "99.00", "1"), epoch=1))
    worker.run_once()
    assert MarketState.objects.get(market=market).last_event_seq == 3

    # The rebuilt engine (next epoch) continues the counters from the database.
    state = MarketState.objects.get(market=market)
    rebuilt = EngineRun(market)
    rebuilt.engine.set_counters(
        market.symbol, trade_id=state.last_trade_id, event_seq=state.last_event_seq,
        book_update_id=state.last_book_update_id,
    )
    resting = Order.objects.get(status="New", market=market)
    rebuilt.engine.load_resting(
        market.symbol, order_id=resting.pk, user_id=resting.user_id, side="Ask", price=10000, quantity=5,
        executed_qty=0, executed_quote=0, self_trade_prevention="RejectTaker", post_only=False, client_id=None,
    )
    push(rebuilt.batch(stranded, epoch=2))
    worker.run_once()

    stranded.refresh_from_db()
    assert stranded.status == "Filled"
    # 2000.00 - 200.40 (2 @ 100.00 + fee) - 99.20 still locked by the dropped 1 @ 99.00 bid.
    assert bal(buyer, "USD") == (D("1700.40"), D("99.20"))
    assert ledger_check() == []
    worker.publisher.close()  # type: ignore[union-attr]


def test_db_apply_batch_job_applies_exactly_once(market: Market, buyer: User, seller: User) -> None:
    run = EngineRun(market)
    payload = run.batch(place(seller, market, "Ask", "100.00", "10"), place(buyer, market, "Bid", "100.00", "10"))

    assert jobs.db_apply_batch(payload) == len(payload["events"])
    assert jobs.db_apply_batch(payload) == 0

    assert bal(buyer, "AAPL") == (D(10), D(0))
    assert Trade.objects.count() == 1


def test_engine_command_refuses_to_run_under_rq() -> None:
    with pytest.raises(RuntimeError, match="run_engine"):
        jobs.engine_command({"kind": "place"})


@pytest.mark.django_db(transaction=True)
def test_each_user_gets_one_balance_update_per_batch(market: Market, buyer: User, seller: User) -> None:
    run = EngineRun(market)
    push(run.batch(place(seller, market, "Ask", "100.00", "10"), place(buyer, market, "Bid", "100.00", "4")))
    listener = GroupListener(user_group(buyer.pk))

    call_command("run_db_processor", "--once")

    message = listener.result()
    assert message["type"] == "stream.batch"
    data = {m["data"]["a"]: m["data"] for m in message["messages"]}
    assert {m["stream"] for m in message["messages"]} == {"account.balanceUpdate"}
    assert (data["USD"]["e"], data["USD"]["f"], data["USD"]["l"]) == ("balanceUpdate", "1599.2", "0")
    assert (data["AAPL"]["f"], data["AAPL"]["l"]) == ("4", "0")
    assert isinstance(data["USD"]["E"], int)


def _run_processor(fault: str | None) -> subprocess.CompletedProcess[bytes]:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "exchange_site.settings.test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
    }
    env.pop("BOURSE_FAULT", None)
    if fault:
        env["BOURSE_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "manage.py", "run_db_processor", "--once"], cwd=ROOT, env=env, capture_output=True, timeout=60,
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_crash_either_side_of_the_commit_loses_nothing_and_applies_nothing_twice(
    market: Market, buyer: User, seller: User
) -> None:
    run = EngineRun(market)
    push(run.batch(place(seller, market, "Ask", "100.00", "10"), place(buyer, market, "Bid", "100.00", "10")))

    killed = _run_processor("db.before_commit")
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert Trade.objects.count() == 0 and transport.queue_length(db_queue()) == 1

    killed = _run_processor("db.after_commit")
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert Trade.objects.count() == 1 and transport.queue_length(db_queue()) == 1  # committed, not acked

    call_command("run_db_processor", "--once")  # applies the same batch again: a no-op

    assert transport.queue_length(db_queue()) == 0
    assert Trade.objects.count() == 1
    assert bal(buyer, "USD") == (D("998.00"), D(0))
    assert bal(seller, "USD") == (D("999.00"), D(0))
    assert ledger_check() == []
