"""Alembic environment: runs on the connection ithelp hands it (see store.migrate)."""

from __future__ import annotations

from alembic import context

import store.conversation_models
import store.escalation_models
import store.incident_models
import store.nps_models
import store.privacy_models
import store.survey_models  # noqa: F401  (register their tables on Base.metadata)
from store.knowledge import is_search_object
from store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `ithelp db upgrade`, which supplies the connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    # The full-text structures (FTS5 table, GIN expression index) are made by hand in 0011, not by models.
    include_name=lambda name, type_, parents: not is_search_object(name),
)
with context.begin_transaction():
    context.run_migrations()
