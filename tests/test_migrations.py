"""Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import store.conversation_models
import store.escalation_models
import store.knowledge
import store.nps_models
import store.report_models
import store.survey_models
from store.migrate import table_names
from store.models import Base


async def test_upgraded_database_matches_the_models(db: Any) -> None:
    async with db.engine.connect() as conn:
        differences = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync, opts={
                "include_name": lambda name, type_, parents: not store.knowledge.is_search_object(name)}),
                Base.metadata))
    assert differences == []
    assert {"tickets", "ticket_events", "timers", "outbox", "message_refs", "conversation_refs", "inbound_dedup",
            "people", "escalations", "surveys"} <= set(await table_names(db))
