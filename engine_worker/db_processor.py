"""The DB processor: persists the engine's batches from the `db_processor` queue.

Shaped like Zulip's queue processors (STYLE.md 4): `setup()`, `consume(batches)`, `stop()`,
and `run()` to loop. It does not use RQ's worker, which forks per job: it peeks at up to
`batch_size` jobs, applies them all in ONE transaction through `settlement_apply`, and
removes them from the queue only after commit (ARCHITECTURE.md step 4). A crash before the
ack makes the next start apply the same jobs again, which changes nothing (event
sequences); a crash before commit loses nothing.

After commit: gaps are recorded in Redis (`bourse:dbp:drop:<symbol>` = engine epoch; that
market's queued events of that epoch or older are dropped) and a rebuild is asked of the
engine on `messages`; then each touched user gets their new balances on their Channels group.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from django.db import close_old_connections, connection, transaction
from redis import Redis

from engine_worker.faults import fault_point
from engine_worker.settlement import SettlementResult, settlement_apply
from engine_worker.transport import (
    DB_QUEUE,
    MESSAGES_QUEUE,
    ack_batches,
    get_queue,
    peek_batches,
    push_job,
    queue_length,
)
from engine_worker.worker import Publisher, send_groups
from marketdata.realtime import user_group
from marketdata.streams import publish_after_commit

logger = logging.getLogger("bourse.db_processor")

DROP_KEY_PREFIX = "bourse:dbp:drop:"
ENGINE_JOB = "engine_worker.jobs.engine_command"
# Events applied in one transaction at most (a job is never split): big enough for set-based
# writes to pay off, small enough that a backlog commits every second or so.
MAX_EVENTS_PER_TRANSACTION = 20_000
LOG_EVERY = 10.0  # seconds between progress lines
IDLE_MIN, IDLE_MAX = 0.02, 0.2  # polling backoff when the queue is empty
ERROR_BACKOFF = 1.0


def drop_key(symbol: str) -> str:
    return f"{DROP_KEY_PREFIX}{symbol}"


def dropped_epochs(redis: Redis, payloads: Sequence[dict[str, Any]]) -> dict[str, int]:
    """The recorded gap epoch of each market that has events in these batches."""
    symbols = sorted({row[1] for payload in payloads for row in payload["events"]})
    if not symbols:
        return {}
    values: list[bytes | None] = redis.mget([drop_key(s) for s in symbols])  # type: ignore[assignment]
    return {s: int(v) for s, v in zip(symbols, values, strict=True) if v is not None}


def process_batches(payloads: Sequence[dict[str, Any]], *, publisher: Publisher | None = None) -> SettlementResult:
    """Apply batches in one transaction, then record gaps, ask for rebuilds and publish.

    The one path for both the worker and the RQ job `db_apply_batch`. The caller removes
    the jobs from the queue only after this returns.
    """
    queue = get_queue(DB_QUEUE)
    redis = queue.connection
    drops = dropped_epochs(redis, payloads)
    with transaction.atomic():
        result = settlement_apply(batches=payloads, dropped_epochs=drops)
        fault_point("db.before_commit")
    fault_point("db.after_commit")
    if result.gaps:
        _record_gaps(redis, result.gaps, drops)
    if result.balance_keys:
        _publish_balances(result.balance_keys, publisher)
    if result.trades:
        # The ticker and kline streams, read from the candles just committed.
        publish_after_commit(payloads, publisher)
    return result


def _record_gaps(redis: Redis, gaps: dict[str, int], known: dict[str, int]) -> None:
    # Recorded before the ack: once the jobs are gone, only this key keeps the rest of the
    # market's old-epoch batches from being applied over the hole.
    pipe = redis.pipeline(transaction=False)
    for symbol, epoch in gaps.items():
        pipe.set(drop_key(symbol), max(epoch, known.get(symbol, epoch)))
    pipe.execute()
    messages = get_queue(MESSAGES_QUEUE)
    for symbol, epoch in sorted(gaps.items()):
        push_job(
            messages, ENGINE_JOB, {"kind": "rebuild", "reason": "gap", "symbol": symbol, "epoch": epoch},
            description=f"rebuild {symbol}",
        )
        logger.error("asked the engine to rebuild %s (gap, epoch %d)", symbol, epoch)


def _fmt(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def _publish_balances(keys: set[tuple[int, int]], publisher: Publisher | None) -> None:
    """`account.balanceUpdate` for each changed balance, read after commit (so current):
    one Channels send per user per batch (`stream.batch` when several assets changed)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                """
                SELECT b.user_id, a.symbol, b.available, b.locked
                FROM accounts_balance b JOIN accounts_asset a ON a.id = b.asset_id
                WHERE (b.user_id, b.asset_id) IN (SELECT * FROM unnest(%s::bigint[], %s::bigint[]))
                ORDER BY b.user_id, a.symbol
                """,
                [[k[0] for k in keys], [k[1] for k in keys]],
            )
            rows = cursor.fetchall()
        now_us = time.time_ns() // 1000
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for user_id, symbol, available, locked in rows:
            groups[user_group(user_id)].append({
                "stream": "account.balanceUpdate",
                "data": {"e": "balanceUpdate", "E": now_us, "a": symbol, "f": _fmt(available), "l": _fmt(locked)},
            })
        send_groups(groups, publisher)
    except Exception:
        # Already committed: a lost notification must not stop persistence.
        logger.exception("publishing balance updates failed")


def _within_budget(batches: list[tuple[str, Any]], budget: int) -> list[tuple[str, Any]]:
    """The leading jobs whose events fit `budget` (always at least one job)."""
    total = 0
    for index, (_job_id, payload) in enumerate(batches):
        total += len(payload["events"]) if payload is not None else 0
        if total > budget and index > 0:
            return batches[:index]
    return batches


class DbProcessor:
    """Drains `db_processor`: peek, apply in one transaction, commit, ack."""

    def __init__(self, *, batch_size: int = 50, linger_seconds: float = 0.0) -> None:
        self.batch_size = batch_size
        self.linger_seconds = linger_seconds
        self._queue_drained = False
        self._stopping = False
        self.publisher: Publisher | None = None
        self._applied = 0
        self._trades = 0
        self._jobs = 0
        self._lag_ms = 0.0
        self._last_log = 0.0
        self._events_per_job = 1.0

    def setup(self) -> None:
        gc.freeze()  # what start-up loaded (Django, models) is never collected: skip it in every pass
        self.queue = get_queue(DB_QUEUE)
        self.publisher = Publisher()
        self._last_log = time.monotonic()
        logger.info("DB processor started (queue length %d)", queue_length(self.queue))

    def stop(self) -> None:
        """Stop after the current transaction (signal-safe: only sets a flag)."""
        self._stopping = True

    def consume(self, batches: list[tuple[str, Any]]) -> SettlementResult:
        """Apply peeked jobs `(job id, payload or None)` and ack them after commit."""
        payloads = [payload for _job_id, payload in batches if payload is not None]
        result = process_batches(payloads, publisher=self.publisher) if payloads else SettlementResult()
        ack_batches(self.queue, [job_id for job_id, _payload in batches])
        self._jobs += len(batches)
        self._applied += result.applied
        self._trades += result.trades
        if result.last_ts:
            self._lag_ms = (time.time_ns() // 1000 - result.last_ts) / 1000
        return result

    def run_once(self) -> int:
        """Peek and consume one group of jobs; how many jobs were taken."""
        # No cyclic GC inside a group: decoding and applying it allocates millions of
        # (acyclic) lists, and the collector's passes over them tripled the decoding time.
        # Reference counting frees them; the collector runs between groups.
        gc.disable()
        try:
            # Peek about as many jobs as fit the event budget (from the recent job size), and
            # cut the group there: one huge transaction would hold every commit, and so the
            # latency of each order in it, behind the slowest part of a backlog.
            count = max(1, min(self.batch_size, int(MAX_EVENTS_PER_TRANSACTION / self._events_per_job)))
            peeked = peek_batches(self.queue, count)
            self._queue_drained = len(peeked) < count
            batches = _within_budget(peeked, MAX_EVENTS_PER_TRANSACTION)
            if batches:
                events = sum(len(payload["events"]) for _id, payload in batches if payload is not None)
                self._events_per_job = 0.8 * self._events_per_job + 0.2 * max(1.0, events / len(batches))
                self.consume(batches)
            return len(batches)
        finally:
            gc.enable()

    def run(self, *, drain_and_exit: bool = False) -> None:
        """Loop until `stop()`, or (`drain_and_exit`) until the queue is empty."""
        self.setup()
        try:
            self._loop(drain_and_exit)
        finally:
            self._log()
            if self.publisher is not None:
                self.publisher.close()
                self.publisher = None
            logger.info("DB processor stopped")

    def _loop(self, drain_and_exit: bool) -> None:
        idle = IDLE_MIN
        while not self._stopping:
            try:
                taken = self.run_once()
            except Exception:
                if drain_and_exit:
                    raise
                # Nothing was acked, so the same jobs come back; a dead connection is replaced.
                logger.exception("applying a batch failed; retrying in %.1f s", ERROR_BACKOFF)
                close_old_connections()
                time.sleep(ERROR_BACKOFF)
                continue
            self._maybe_log()
            if taken:
                idle = IDLE_MIN
                if self._queue_drained and self.linger_seconds > 0 and not drain_and_exit:
                    # Took all there was: a trickle, not a backlog. Let the engine's next
                    # jobs gather, so one transaction (and its candle upserts, balance
                    # reads, publishes) carries several of them instead of one each.
                    time.sleep(self.linger_seconds)
                continue
            if drain_and_exit:
                return
            time.sleep(idle)
            idle = min(idle * 2, IDLE_MAX)

    def _maybe_log(self) -> None:
        if time.monotonic() - self._last_log >= LOG_EVERY:
            self._log()

    def _log(self) -> None:
        logger.info(
            "applied %d events (%d trades) from %d jobs; queue %d; lag of the last batch %.0f ms",
            self._applied, self._trades, self._jobs, queue_length(self.queue), self._lag_ms,
        )
        self._applied = self._trades = self._jobs = 0
        self._last_log = time.monotonic()
