"""One voice: an incident's updates reach every affected requester, threaded under their own ticket, and its
resolution resolves every linked ticket once.

Updates are queued in the outbox in the transaction that records them, one row per requester with its own
idempotency key, on the requester's own ticket lane, so each person gets each update exactly once and in
order, at whatever rate the platform allows.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from bot.core import Core
from bot.incidents.service import IncidentService
from bot.messages import NOTICE, notice_payload
from bot.people import PersonRef
from bot.text import to_spans
from bot.tickets import OPEN_STATUSES, NotAllowed, TicketError
from bot.views import Notice
from store.incident_models import INCIDENT_OPEN, INCIDENT_RESOLVED, Incident, IncidentLink
from store.models import Person, Ticket, TicketEvent, ticket_number
from store.queries import enqueue_messages, outbox_row

log = logging.getLogger("ithelp.incidents")


class IncidentUpdates:
    """"Post update" and "Resolve incident" from the incident card."""

    def __init__(self, core: Core, incidents: IncidentService) -> None:
        self.core = core
        self.incidents = incidents

    async def number_of(self, incident_id: int) -> str:
        """The open incident's number (for a form's title); refuses one that is over."""
        async with self.core.db.reading() as session:
            incident = await session.get(Incident, incident_id)
        if incident is None or incident.status != INCIDENT_OPEN:
            raise NotAllowed("That incident is over.")
        return incident.number

    async def post_update(self, incident_id: int, agent: PersonRef, text: str) -> int:
        """Send ``text`` (neutral) to everyone affected and the status channel; how many requesters it reaches."""
        self._require_agent(agent)
        if not text.strip():
            raise NotAllowed("Please write the update everyone affected will read.")
        now = self.core.clock.now()
        async with self.core.db.transaction() as session:
            actor = await self.core.tickets.record_person(session, agent)
            incident = await session.get(Incident, incident_id, with_for_update=True)
            if incident is None or incident.status != INCIDENT_OPEN:
                raise NotAllowed("That incident is over.")
            incident.latest_update = text
            incident.acknowledged_at = incident.acknowledged_at or now
            event = TicketEvent(ticket_id=incident.anchor_ticket_id, at=now, actor_id=actor.id,
                                kind="incident_update", payload={"incident_id": incident.id, "text": text})
            session.add(event)
            await session.flush()
            rows = (await session.execute(
                select(Ticket.id, Person.platform, Person.platform_user_id)
                .join(IncidentLink, IncidentLink.ticket_id == Ticket.id)
                .join(Person, Person.id == Ticket.requester_id)
                .where(IncidentLink.incident_id == incident.id).order_by(Ticket.id))).tuples().all()
            headline = (f"Update on {incident.number}: ", *to_spans(incident.title))
            outbox: list[dict[str, Any]] = []
            for ticket_id, platform, user_id in rows:
                view = Notice(ticket_id=ticket_id, number=ticket_number(ticket_id), headline=headline, body=text,
                              author=actor.display_name)
                target = f"{platform}:user:{user_id}"
                outbox.append(outbox_row(
                    target=target, kind=NOTICE, ticket_id=ticket_id, now=now,
                    payload=notice_payload(view, thread="requester", event_id=event.id),
                    idempotency_key=f"incident-update:{event.id}:{target}:{ticket_id}"))
            if channel := self.core.config.incidents.status_channel:
                view = Notice(ticket_id=incident.anchor_ticket_id, number=incident.number, headline=headline,
                              body=text)
                outbox.append(outbox_row(
                    target=f"slack:channel:{channel}", kind=NOTICE, ticket_id=incident.anchor_ticket_id, now=now,
                    payload=notice_payload(view, event_id=event.id),
                    idempotency_key=f"incident-update:{event.id}:status"))
            await enqueue_messages(session, outbox)
            await self.incidents.refresh_incident(session, incident, now)
            await self.incidents.progress.arm(session, incident, now)  # the next scheduled update counts from this one
        self.core.wake()
        return len(rows)

    async def resolve(self, incident_id: int, agent: PersonRef, note: str) -> int:
        """Resolve the incident and every ticket it covers, each with ``note``; how many tickets were resolved.

        The incident is closed first, so no new report links to it while its tickets are being resolved.
        """
        self._require_agent(agent)
        if not note.strip():
            raise NotAllowed("Please say what fixed it, so everyone affected knows.")
        now = self.core.clock.now()
        async with self.core.db.transaction() as session:
            incident = await session.get(Incident, incident_id, with_for_update=True)
            if incident is None or incident.status != INCIDENT_OPEN:
                raise NotAllowed("That incident is already resolved.")
            incident.status, incident.resolved_at, incident.latest_update = INCIDENT_RESOLVED, now, note
            incident.acknowledged_at = incident.acknowledged_at or now
            ticket_ids = list((await session.execute(
                select(Ticket.id).join(IncidentLink, IncidentLink.ticket_id == Ticket.id)
                .where(IncidentLink.incident_id == incident.id, Ticket.status.in_(OPEN_STATUSES))
                .order_by(Ticket.id))).scalars())
            await self.incidents.refresh_incident(session, incident, now)
        resolved = 0
        for ticket_id in ticket_ids:
            try:
                await self.core.tickets.resolve(ticket_id, agent, note)
                resolved += 1
            except TicketError as exc:  # resolved by hand meanwhile: nothing more to do for it
                log.info("incident %s: ticket %s not resolved: %s", incident_id, ticket_id, exc)
        self.core.wake()
        return resolved

    def _require_agent(self, person: PersonRef) -> None:
        if not self.core.tickets.is_agent(person):
            raise NotAllowed("Only IT agents can post incident updates or resolve incidents.")
