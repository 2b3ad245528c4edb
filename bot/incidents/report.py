"""Incidents in ``ithelp report``: each incident of the period with how many it affected, how long until the
first update (time to acknowledge) and until it was resolved."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from store.db import Database
from store.incident_models import Incident, IncidentLink, incident_number


@dataclass(frozen=True)
class IncidentFigures:
    number: str
    title: str
    affected: int
    """Tickets the incident covers now (its anchor included)."""
    to_acknowledge_min: float | None
    """Minutes from declaring to the first update (or the resolution); None while neither happened."""
    to_resolve_min: float | None


async def incident_figures(db: Database, *, since: datetime, until: datetime) -> list[IncidentFigures]:
    """Incidents declared in [since, until), oldest first."""
    affected = (select(IncidentLink.incident_id, func.count().label("n"))
                .group_by(IncidentLink.incident_id).subquery())
    async with db.reading() as session:
        rows = (await session.execute(
            select(Incident, func.coalesce(affected.c.n, 0))
            .outerjoin(affected, affected.c.incident_id == Incident.id)
            .where(Incident.created_at >= since, Incident.created_at < until).order_by(Incident.id))).tuples().all()
    return [IncidentFigures(incident_number(i.id), i.title, int(n), _minutes(i.created_at, i.acknowledged_at),
                            _minutes(i.created_at, i.resolved_at)) for i, n in rows]


def render_incidents(figures: list[IncidentFigures]) -> str:
    """The report's incident table (empty when the period had none)."""
    if not figures:
        return ""
    lines = ["", "Incidents", f"{'incident':<10} {'affected':>8} {'to ack (min)':>12} {'to resolve (min)':>16}  title"]
    for f in figures:
        lines.append(f"{f.number:<10} {f.affected:>8} {_fmt(f.to_acknowledge_min):>12} {_fmt(f.to_resolve_min):>16}  "
                     f"{f.title[:60]}")
    return "\n".join(lines) + "\n"


def _minutes(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else (end - start).total_seconds() / 60


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"
