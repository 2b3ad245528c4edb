"""Schema migrations with Alembic, run on our own async engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect

from store.db import Database

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _upgrade(sync_connection: Any, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = sync_connection
    command.upgrade(config, revision)


async def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to run on every start."""
    async with db.engine.begin() as conn:
        if db.is_postgres:
            # Serialise concurrent upgrades from replicas starting together.
            await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242001)")
        await conn.run_sync(_upgrade, revision)


def _table_names(sync_connection: Any) -> list[str]:
    return list(inspect(sync_connection).get_table_names())


async def table_names(db: Database) -> list[str]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(_table_names)
