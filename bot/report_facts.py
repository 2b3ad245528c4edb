"""Keeps ``report_facts`` (``store.report_models``): the SLA clock (and the survey service, for its two events)
notes each fact in the transaction of the change or verdict that made it, so reports read one row per ticket
(``surveys.report_aggregate``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.sla_rules import MET, MISSED, SLA_MET
from store.queries import upsert_insert
from store.report_models import ReportFacts

_FACTS = ReportFacts.__table__


def change_facts(kind: str, actor_id: int | None, now: datetime, payload: dict[str, Any]) -> dict[str, Any]:
    """The facts a ticket event changes (besides the SLA verdicts)."""
    if kind == "priority_changed" and payload.get("to"):
        return {"priority": payload["to"]}
    if kind == "survey_sent":
        return {"survey_sent_at": now}
    if kind == "survey_answered":
        return {"survey_answer": payload.get("answer")}
    if kind == "claimed":
        return {"claimer_id": actor_id}
    if kind == "resolved":
        return {"resolved_at": now, "resolver_id": actor_id}
    if kind == "reopened":
        return {"reopened_at": func.coalesce(ReportFacts.reopened_at, now)}
    return {}


def verdict_facts(metric: str, verdict_kind: str, elapsed_seconds: float) -> dict[str, Any]:
    """A target stopped: its verdict and the business seconds it took."""
    return {metric: MET if verdict_kind == SLA_MET else MISSED, f"{metric}_seconds": elapsed_seconds}


def breached_facts(metric: str) -> dict[str, Any]:
    """A running target ran out: the first response counts as missed from now (until its stop says how late)."""
    return {metric: func.coalesce(getattr(ReportFacts, metric), MISSED)} if metric == "first_response" else {}


async def note_opened(session: AsyncSession, ticket_id: int, opened_at: datetime, priority: str,
                      category: str | None, now: datetime) -> None:
    """The ticket's row, once (an opening written twice by racing replicas stays one row)."""
    statement = upsert_insert(session)(_FACTS).values(ticket_id=ticket_id, opened_at=opened_at, priority=priority,
                                                      category=category, changed_at=now)
    await session.execute(statement.on_conflict_do_nothing(index_elements=["ticket_id"]))


async def note(session: AsyncSession, ticket_id: int, now: datetime, values: dict[str, Any]) -> None:
    """Change a ticket's facts (a ticket opened before the table existed has no row: its reports replay events)."""
    if values:
        await session.execute(update(ReportFacts).where(ReportFacts.ticket_id == ticket_id)
                              .values(**values, changed_at=now).execution_options(synchronize_session=False))
