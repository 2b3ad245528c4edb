"""Reading incidents back in the e2e tests (Slack and Teams alike)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from store.db import Database
from store.incident_models import Incident, IncidentLink, IncidentSuggestion

INCIDENTS = """
incidents:
  suggest_after: 3
  window: 15m
  similarity: 80
"""


async def incidents(db: Database) -> list[Incident]:
    async with db.transaction() as session:
        return list((await session.execute(select(Incident).order_by(Incident.id))).scalars())


async def links(db: Database) -> dict[int, int]:
    """ticket id -> incident id of every link."""
    async with db.transaction() as session:
        return {t: i for t, i in (await session.execute(select(IncidentLink.ticket_id, IncidentLink.incident_id)))}


async def suggestions(db: Database) -> list[IncidentSuggestion]:
    async with db.transaction() as session:
        return list((await session.execute(select(IncidentSuggestion).order_by(IncidentSuggestion.id))).scalars())


def slack_buttons(blocks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["action_id"], e.get("value") or "") for b in blocks if b["type"] == "actions" for e in b["elements"]]


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
