"""`python manage.py run_engine`: the long-running matching engine (books in memory)."""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from engine_worker.worker import EngineWorker

logger = logging.getLogger("bourse.engine")

# Enough to gather a few commands per batch under a steady trickle; small next to the
# ~100 ms a person notices, and the first command after a quiet spell does not wait.
DEFAULT_LINGER_MS = 5.0


class Command(BaseCommand):
    help = "Run the matching engine: drain `messages` in batches, match, persist via `db_processor`, publish."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--batch-size", type=int, default=2000, help="Most commands taken off the queue at once.")
        parser.add_argument(
            "--linger-ms", type=float, default=DEFAULT_LINGER_MS,
            help="After a batch smaller than --batch-size, wait this long so the next one gathers more commands.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1 or options["linger_ms"] < 0:
            raise CommandError("--batch-size must be at least 1 and --linger-ms not negative")
        worker = EngineWorker(batch_size=options["batch_size"], linger_seconds=options["linger_ms"] / 1000)

        def stop(signum: int, frame: FrameType | None) -> None:
            logger.info("signal %d: stopping after the current batch", signum)
            worker.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            worker.run()
        finally:
            worker.close()
        logger.info("engine stopped")
