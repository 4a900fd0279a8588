"""The queues' jobs, written by `transport.push_jobs` rather than RQ's `enqueue_many`:
still RQ jobs that RQ itself (and so django-rq's dashboard) loads, read back in order, and
jobs RQ wrote (zlib-compressed) still read by the engine and the DB processor."""

from __future__ import annotations

from typing import Any

import pytest
from rq import Queue
from rq.job import Job, JobStatus

from engine_worker import transport
from trading import messaging

pytestmark = pytest.mark.django_db


def test_pushed_jobs_are_rq_jobs_that_rq_loads(redis_conn: Any) -> None:
    messages = [{"kind": "place", "symbol": "AAPL_USD", "order_id": i, "ts": 10 + i} for i in range(3)]
    for message in messages:
        messaging.enqueue([message])  # single-order requests: one job each
    queue = messaging.messages_queue()

    assert len(queue) == 3
    jobs = [Job.fetch(job_id, connection=queue.connection, serializer=queue.serializer) for job_id in queue.job_ids]
    assert [list(job.args) for job in jobs] == [[m] for m in messages]
    assert {job.func_name for job in jobs} == {messaging.ENGINE_JOB}
    assert [job.description for job in jobs] == ["place AAPL_USD 0", "place AAPL_USD 1", "place AAPL_USD 2"]
    assert all(job.get_status() == JobStatus.QUEUED and job.origin == "messages" for job in jobs)
    assert jobs[0].result_ttl == 0 and jobs[0].failure_ttl == 3600
    # The dashboard lists a queue's jobs through `Queue.get_jobs`.
    assert [job.id for job in queue.get_jobs()] == [job.id for job in jobs]

    assert transport.pop_messages(queue, 10, 0) == messages
    assert len(queue) == 0
    assert not any(queue.connection.exists(Job.key_for(job.id)) for job in jobs)


def test_a_requests_commands_travel_as_one_job_and_come_out_in_order(redis_conn: Any) -> None:
    batch = [{"kind": "place", "symbol": "AAPL_USD", "order_id": i, "ts": 1} for i in range(120)]
    messaging.enqueue([{"kind": "cancel", "symbol": "AAPL_USD", "order_id": 999, "ts": 0}])
    messaging.enqueue(batch)  # e.g. a sweep: cut into jobs of COMMANDS_PER_JOB
    queue = messaging.messages_queue()

    jobs = queue.get_jobs()
    assert [len(job.args[0]) if isinstance(job.args[0], list) else 1 for job in jobs] == [1, 50, 50, 20]
    assert jobs[1].description == "50 commands: place AAPL_USD 0 … place AAPL_USD 49"

    # Jobs, not commands, are counted when popping; the commands keep their order.
    commands, taken = transport.pop_commands(queue, 2, 0)
    assert taken == 2 and [m["order_id"] for m in commands] == [999, *range(50)]
    assert [m["order_id"] for m in transport.pop_messages(queue, 10, 0)] == list(range(50, 120))
    assert len(queue) == 0


def test_jobs_written_by_rq_itself_are_still_read(redis_conn: Any) -> None:
    queue = transport.get_queue(transport.DB_QUEUE)
    payload = {"epoch": 3, "events": [["L", "AAPL_USD", 1, 5, "Bid", 100, 2, 1]]}
    queue.enqueue_many([Queue.prepare_data(transport.DB_JOB, args=(payload,), result_ttl=0)])  # zlib data
    transport.push_job(queue, transport.DB_JOB, {"epoch": 3, "events": []})  # plain JSON data

    batches = transport.peek_batches(queue, 10)

    assert [p for _job_id, p in batches] == [payload, {"epoch": 3, "events": []}]
    transport.ack_batches(queue, [job_id for job_id, _p in batches])
    assert len(queue) == 0
