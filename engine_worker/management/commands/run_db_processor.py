"""`python manage.py run_db_processor`: persist the engine's batches (queue `db_processor`)."""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from engine_worker.db_processor import DbProcessor

logger = logging.getLogger("bourse.db_processor")

# Persistence may lag the engine a little (the live pages and private streams show the
# engine's events at once); a transaction per engine batch cost more than the batch.
DEFAULT_LINGER_MS = 20.0


class Command(BaseCommand):
    help = "Run the DB processor: apply engine batches to the database in one transaction each, exactly once."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--batch-size", type=int, default=50, help="Most queued batches applied in one transaction.")
        parser.add_argument("--once", action="store_true", help="Drain the queue, then exit (tests, maintenance).")
        parser.add_argument(
            "--linger-ms", type=float, default=DEFAULT_LINGER_MS,
            help="After applying all that was queued, wait this long so the next transaction gathers more jobs.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1 or options["linger_ms"] < 0:
            raise CommandError("--batch-size must be at least 1 and --linger-ms not negative")
        worker = DbProcessor(batch_size=options["batch_size"], linger_seconds=options["linger_ms"] / 1000)

        def stop(signum: int, frame: FrameType | None) -> None:
            logger.info("signal %d: stopping after the current transaction", signum)
            worker.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        worker.run(drain_and_exit=options["once"])
