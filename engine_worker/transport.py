"""Reading and writing the django-rq queues `messages` and `db_processor` in bulk.

Both queues hold ordinary RQ jobs (JSON serializer), so django-rq's dashboard shows them
and a plain `rqworker` could run them; the engine and the DB processor consume them
without RQ's worker, which forks per job (~15 ms) — far too slow for an order flow.

- The engine pops up to N job ids at once (LPOP with a count) and reads their data in one
  pipeline. Popping before processing is safe because the database is the truth: a
  command lost in a crash is re-sent from the database on restart (ARCHITECTURE.md).
- The DB processor peeks at the head jobs, applies them in one transaction, and removes
  them only after commit; a batch applied twice changes nothing (event sequences).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import django_rq
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

MESSAGES_QUEUE = "messages"
DB_QUEUE = "db_processor"
DB_JOB = "engine_worker.jobs.db_apply_batch"


def get_queue(name: str) -> Queue:
    return django_rq.get_queue(name, serializer=JSONSerializer)


def _decode_job_data(raw: bytes) -> Any:
    # RQ stores zlib(serializer.dumps((func_name, instance, args, kwargs))).
    _func, _instance, args, _kwargs = json.loads(zlib.decompress(raw))
    return args[0]


def read_jobs(connection: Redis, job_ids: list[str]) -> list[Any]:
    """The first argument of each job, in order; a job whose hash is gone is skipped."""
    pipe = connection.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(Job.key_for(job_id), "data")
    return [_decode_job_data(raw) for raw in pipe.execute() if raw is not None]


def pop_messages(queue: Queue, max_count: int, block_seconds: float) -> list[Any]:
    """Take up to `max_count` commands off `messages`, waiting up to `block_seconds` for one."""
    connection = queue.connection
    ids = connection.lpop(queue.key, max_count)
    if not ids:
        if block_seconds <= 0:
            return []
        first = connection.blpop([queue.key], timeout=block_seconds)
        if first is None:
            return []
        ids = [first[1]] + (connection.lpop(queue.key, max_count - 1) or [])
    job_ids = [i.decode() if isinstance(i, bytes) else i for i in ids]
    payloads = read_jobs(connection, job_ids)
    connection.delete(*(Job.key_for(job_id) for job_id in job_ids))
    return payloads


def push_job(queue: Queue, func: str, payload: Any, *, description: str = "engine batch") -> None:
    # A fixed description: RQ's default is the call's repr, which for a batch of thousands
    # of events cost more than encoding the batch itself.
    queue.enqueue_many(
        [Queue.prepare_data(func, args=(payload,), result_ttl=0, failure_ttl=3600, description=description)]
    )


def peek_batches(queue: Queue, max_count: int) -> list[tuple[str, Any]]:
    """The head jobs of `queue` without removing them: (job id, payload or None if its
    hash is gone — the caller acks those too so they cannot block the queue)."""
    connection = queue.connection
    ids = [i.decode() if isinstance(i, bytes) else i for i in connection.lrange(queue.key, 0, max_count - 1)]
    if not ids:
        return []
    pipe = connection.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(Job.key_for(job_id), "data")
    return [
        (job_id, None if raw is None else _decode_job_data(raw))
        for job_id, raw in zip(ids, pipe.execute(), strict=True)
    ]


def ack_batches(queue: Queue, job_ids: list[str]) -> None:
    """Remove applied jobs from the head of `queue` (only ever called by its one consumer)."""
    if not job_ids:
        return
    pipe = queue.connection.pipeline(transaction=True)
    for job_id in job_ids:
        pipe.lrem(queue.key, 1, job_id)
    pipe.delete(*(Job.key_for(job_id) for job_id in job_ids))
    pipe.execute()


def queue_length(queue: Queue) -> int:
    return int(queue.connection.llen(queue.key))
