"""Periodic jobs of the market-data app, run by the `default` RQ worker (exchange_site/cron.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import django_rq
from django.conf import settings
from django.db import connection
from django.utils import timezone

from exchange_site.db.base import timescaledb_installed
from marketdata.streams import publish_closed

logger = logging.getLogger(__name__)

# Up to when the ended candles have been published (a Unix time). Each run continues from
# there, so a late or skipped run neither loses nor repeats a bucket.
CLOSED_THROUGH_KEY = "bourse:md:closed_through"
# After a long outage, only the last hour is caught up: older closes are long stale, and a
# chart reading the klines endpoint has them anyway.
MAX_CATCH_UP = timedelta(hours=1)


def publish_closed_candles(now: datetime | None = None) -> int:
    """Publish, `X: true`, every market's candle of each bucket that ended since the last run
    (gap-filled at the previous close where nothing traded); how many frames."""
    now = now or timezone.now()
    redis = django_rq.get_connection("default")
    raw: bytes | None = redis.get(CLOSED_THROUGH_KEY)  # type: ignore[assignment]
    since = datetime.fromtimestamp(float(raw), UTC) if raw else now - timedelta(minutes=1)
    since = max(since, now - MAX_CATCH_UP)
    if since >= now:
        return 0
    frames = publish_closed(since, now)
    redis.set(CLOSED_THROUGH_KEY, repr(now.timestamp()))
    return frames


def _trades_hypertable() -> bool:
    if not timescaledb_installed(connection):
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = 'marketdata_trade'"
        )
        return cursor.fetchone() is not None


def drop_old_trades() -> int:
    """Drop the trade chunks wholly older than BOURSE_TRADE_RETENTION_DAYS; how many.

    Whole chunks (one day each), so trades up to a day past the limit may stay until the
    next run. Candles are kept: charts keep their history. Without TimescaleDB (the embedded
    PostgreSQL) this does nothing but log: deleting row by row from a large table is a job
    for an operator, not a timer. 0 days keeps every trade.
    """
    days = settings.BOURSE_TRADE_RETENTION_DAYS
    if days <= 0:
        return 0
    if not _trades_hypertable():
        logger.info("trade retention skipped: marketdata_trade is not a TimescaleDB hypertable here")
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT drop_chunks('marketdata_trade', older_than => now() - make_interval(days => %s))", [days]
        )
        dropped = len(cursor.fetchall())
    if dropped:
        logger.info("trade retention: dropped %d chunks older than %d days", dropped, days)
    return dropped
