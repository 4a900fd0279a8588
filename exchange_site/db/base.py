"""PostgreSQL backend that uses TimescaleDB where the server has it, and plain tables where not.

django-timescaledb's backend turns models with a `TimescaleDateTimeField` into hypertables
and enables the extension. The embedded PostgreSQL of the default run has no TimescaleDB,
so here both steps are taken only when the extension is available; nothing else in
Bourse depends on it (ARCHITECTURE.md, "Embedded defaults").
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg_pool import ConnectionPool
from timescale.db.backends.postgresql.base import DatabaseWrapper as TimescaleDatabaseWrapper
from timescale.db.backends.postgresql.schema import TimescaleSchemaEditor

from exchange_site.db.pool import check_if_doubtful

logger = logging.getLogger(__name__)


def timescaledb_available(connection: Any) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        return cursor.fetchone() is not None


def timescaledb_installed(connection: Any) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
        return cursor.fetchone() is not None


class SchemaEditor(TimescaleSchemaEditor):
    def _create_hypertable(self, model: Any, field: Any, should_migrate: bool = False) -> None:
        if timescaledb_installed(self.connection):
            super()._create_hypertable(model, field, should_migrate)
        else:
            logger.info("TimescaleDB not installed: %s stays a plain table", model._meta.db_table)

    def _set_chunk_time_interval(self, model: Any, field: Any) -> None:
        if timescaledb_installed(self.connection):
            super()._set_chunk_time_interval(model, field)


class DatabaseWrapper(TimescaleDatabaseWrapper):
    SchemaEditorClass = SchemaEditor

    @property
    def pool(self) -> ConnectionPool | None:
        """Django's pool; with `CONN_HEALTH_CHECKS` its check is the one of exchange_site/db/pool.py,
        which skips the round trip Django's makes on every request unless a connection is in doubt."""
        pool: ConnectionPool | None = super().pool
        if pool is not None and pool._check is ConnectionPool.check_connection:
            pool._check = check_if_doubtful
        return pool

    def prepare_database(self) -> None:
        # Skip the parent's unconditional CREATE EXTENSION, which fails where it is absent.
        super(TimescaleDatabaseWrapper, self).prepare_database()
        if timescaledb_available(self):
            with self.cursor() as cursor:
                cursor.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
