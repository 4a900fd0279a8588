"""RQ job functions named by the queue payloads (STYLE.md 2: thin edges).

Both queues hold ordinary RQ jobs so django-rq's dashboard shows them, but neither is
meant for RQ's forking worker: `db_processor` is drained by `manage.py run_db_processor`
and `messages` by `manage.py run_engine`. `db_apply_batch` is still correct under a plain
`rqworker db_processor` (one job = one transaction, applied exactly once).
"""

from __future__ import annotations

from typing import Any

from engine_worker.db_processor import process_batches


def db_apply_batch(payload: dict[str, Any]) -> int:
    """Apply one engine batch (`{"epoch", "events"}`); returns the number of events applied."""
    return process_batches([payload]).applied


def engine_command(message: dict[str, Any] | list[dict[str, Any]]) -> None:
    """Never run: the engine keeps its books in one process's memory. A job's argument is one
    command, or the list of one request's commands."""
    raise RuntimeError(
        "`messages` is consumed by `manage.py run_engine` (the matching engine keeps its order books in "
        "memory); do not run an RQ worker on it. Message: " + repr(message)[:200]
    )
