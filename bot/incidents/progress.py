"""Scheduled progress updates for an outage come from the incident, not from each report.

A linked report's own update timer is cancelled (the incident's clock covers it), so without this the
people affected would hear nothing between agents' posts. The incident keeps one timer on its anchor ticket:
every ``update_every`` of its priority's SLA policy without an agent's update, each affected requester gets
one "still being worked on" notice, threaded under their own ticket, within their own working hours (urgent
priorities any hour). An agent's "Post update" starts the interval again, as a person's update does for a
ticket. The anchor's own requester is left to the anchor ticket's own update timer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.business_time import BusinessCalendar
from bot.calendars import calendar_for
from bot.core import Core
from bot.engine import TimerRun
from bot.local_time import zone_or_none
from bot.messages import NOTICE, notice_payload
from bot.sla_updates import UpdateHours
from bot.text import to_spans
from bot.tickets import OPEN_STATUSES
from bot.views import Moment, Notice, Span
from store.incident_models import INCIDENT_OPEN, Incident, IncidentLink
from store.models import Person, Ticket, TicketEvent, ticket_number
from store.queries import cancel_timers, enqueue_messages, outbox_row, schedule_timer

INCIDENT_UPDATE_TIMER = "incident.update_due"
AUTO_INCIDENT_UPDATE = "incident_auto_update"
"""The anchor ticket's event for each scheduled update an incident sent (its history and idempotency keys)."""


class IncidentProgress:
    """Arms the incident's update timer and, when it falls due, tells everyone affected where things stand."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._hours = UpdateHours()

    async def arm(self, session: AsyncSession, incident: Incident, now: datetime) -> None:
        """(Re)start the interval from ``now``: on declaring the incident and on every agent's update."""
        await cancel_timers(session, ticket_id=incident.anchor_ticket_id, kinds=(INCIDENT_UPDATE_TIMER,), now=now)
        policy = self.core.config.sla_policy(incident.priority)
        if policy is None or policy.update_every is None:
            return
        anchor = await session.get(Ticket, incident.anchor_ticket_id)
        due = policy.update_every.after(self._calendar(anchor), now)
        await schedule_timer(session, kind=INCIDENT_UPDATE_TIMER, due_at=due, now=now,
                             ticket_id=incident.anchor_ticket_id, payload={"incident_id": incident.id},
                             dedup_key=f"incident-update:{incident.id}:{due.isoformat()}")

    async def on_update_due(self, run: TimerRun) -> None:
        """Timer: send the scheduled update to every affected requester, then arm the next one."""
        session, now = run.session, run.now
        incident = await session.get(Incident, int(run.timer.payload["incident_id"]), with_for_update=True)
        if incident is None or incident.status != INCIDENT_OPEN:
            return
        anchor = await session.get(Ticket, incident.anchor_ticket_id)
        cal = self._calendar(anchor)
        event = TicketEvent(ticket_id=incident.anchor_ticket_id, at=now, actor_id=None, kind=AUTO_INCIDENT_UPDATE,
                            payload={"incident_id": incident.id})
        session.add(event)
        await session.flush()
        rows = (await session.execute(
            select(Ticket.id, Person)
            .join(IncidentLink, IncidentLink.ticket_id == Ticket.id)
            .join(Person, Person.id == Ticket.requester_id)
            .where(IncidentLink.incident_id == incident.id, Ticket.id != incident.anchor_ticket_id,
                   Ticket.status.in_(OPEN_STATUSES), Ticket.updates_muted.is_(False))
            .order_by(Ticket.id))).tuples().all()
        outbox: list[dict[str, Any]] = []
        for ticket_id, requester in rows:
            zone = zone_or_none(requester.timezone) or cal.tz
            target = f"{requester.platform}:user:{requester.platform_user_id}"
            outbox.append(outbox_row(
                target=target, kind=NOTICE, ticket_id=ticket_id, now=now,
                deliver_at=self._hours.slot_for(incident.priority, cal, zone_or_none(requester.timezone), now),
                payload=notice_payload(self._notice(incident, ticket_id, zone.key, requester), thread="requester",
                                       event_id=event.id),
                idempotency_key=f"incident-auto-update:{event.id}:{target}:{ticket_id}"))
        await enqueue_messages(session, outbox)
        await self.arm(session, incident, now)

    def _notice(self, incident: Incident, ticket_id: int, zone: str, requester: Person) -> Notice:
        label = "your time" if zone_or_none(requester.timezone) else None
        since: tuple[Span, ...] = (" (since ", Moment(incident.created_at, zone, label=label), ")")
        body: tuple[Span, ...] = ("IT is still working on it; you'll hear the moment it is fixed.",)
        if incident.latest_update:
            body = (*body, "\nLatest update: ", *to_spans(incident.latest_update))
        return Notice(ticket_id=ticket_id, number=ticket_number(ticket_id),
                      headline=(f"Update on {incident.number}: ", *to_spans(incident.title), *since),
                      body=body, numbered=False)

    def _calendar(self, anchor: Ticket | None) -> BusinessCalendar:
        return calendar_for(self.core.config, self.core.calendars, anchor.calendar if anchor else None)
