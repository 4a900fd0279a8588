"""`python manage.py run_engine`: the long-running matching engine (books in memory)."""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand

from engine_worker.worker import EngineWorker

logger = logging.getLogger("bourse.engine")


class Command(BaseCommand):
    help = "Run the matching engine: drain `messages` in batches, match, persist via `db_processor`, publish."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--batch-size", type=int, default=2000, help="Most commands taken off the queue at once.")

    def handle(self, *args: Any, **options: Any) -> None:
        worker = EngineWorker(batch_size=options["batch_size"])

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
