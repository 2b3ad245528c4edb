"""Reading and writing which tickets an incident covers, inside the caller's transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import AppConfig
from bot.messages import TICKET_CARD
from bot.notifications import person_target, triage_targets
from bot.sla import FIRST_RESPONSE_TIMER, RESOLUTION_TIMER, UPDATE_DUE_TIMER, WARN_TIMER
from store.incident_models import INCIDENT_OPEN, Incident, IncidentLink
from store.models import Person, Ticket, TicketEvent
from store.queries import cancel_timers, enqueue_messages, outbox_row

COVERED_TIMERS = (FIRST_RESPONSE_TIMER, RESOLUTION_TIMER, WARN_TIMER, UPDATE_DUE_TIMER)
"""A linked ticket's own SLA timers: the incident's clock (its anchor ticket's) covers them."""


async def link_of(session: AsyncSession, ticket_id: int) -> IncidentLink | None:
    return await session.get(IncidentLink, ticket_id)


async def affected(session: AsyncSession, incident_id: int) -> int:
    """How many tickets the incident covers (its anchor included)."""
    return int(await session.scalar(select(func.count()).select_from(IncidentLink).where(
        IncidentLink.incident_id == incident_id)) or 0)


async def open_incidents(session: AsyncSession) -> list[Incident]:
    return list((await session.execute(select(Incident).where(Incident.status == INCIDENT_OPEN)
                                       .order_by(Incident.id))).scalars())


async def add_link(session: AsyncSession, ticket: Ticket, incident: Incident, *, via: str, actor: Person | None,
                   now: datetime) -> None:
    """Link ``ticket`` to ``incident``; its own SLA timers stop (unless it carries the incident's clock)."""
    session.add(IncidentLink(ticket_id=ticket.id, incident_id=incident.id, linked_at=now, via=via))
    session.add(TicketEvent(ticket_id=ticket.id, at=now, actor_id=actor.id if actor else None, kind="incident_linked",
                            payload={"incident_id": incident.id, "via": via}))
    if ticket.id != incident.anchor_ticket_id:
        await cancel_timers(session, ticket_id=ticket.id, kinds=COVERED_TIMERS, now=now)


async def remove_link(session: AsyncSession, link: IncidentLink, *, actor: Person | None, now: datetime) -> None:
    await session.delete(link)
    session.add(TicketEvent(ticket_id=link.ticket_id, at=now, actor_id=actor.id if actor else None,
                            kind="incident_unlinked", payload={"incident_id": link.incident_id}))


async def refresh_ticket_cards(session: AsyncSession, config: AppConfig, ticket: Ticket, *, why: str,
                               now: datetime) -> None:
    """Redraw the ticket's triage card and the requester's copy (linked / unlinked shows on them)."""
    requester = await session.get(Person, ticket.requester_id)
    targets = [(t, "triage") for t in triage_targets(config)]
    if requester is not None:
        targets.append((person_target(requester), "requester"))
    rows: list[dict[str, Any]] = [
        outbox_row(target=target, kind=TICKET_CARD, payload={"ticket_id": ticket.id, "audience": audience},
                   idempotency_key=f"card:{why}:{target}", now=now, ticket_id=ticket.id)
        for target, audience in targets]
    await enqueue_messages(session, rows)
