"""The SLA clock's automatic progress updates: what the requester is told when an update falls due, and how
many went out that day (``updates.max_per_ticket_per_day`` counts these and digest mentions)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.business_time import BusinessCalendar
from bot.engine import TimerRun
from bot.local_time import within_hours, zone_or_none
from bot.messages import NOTICE, notice_payload
from bot.notifications import person_target
from bot.sla_rules import AUTO_UPDATE
from bot.tickets import NEW, REOPENED
from bot.views import Moment, Notice, Span
from store.models import Person, Ticket, TicketEvent
from store.queries import enqueue_message

UPDATES_ANY_HOUR = frozenset({"P1"})
"""Priorities whose automatic updates go out even outside the requester's working hours."""


class UpdateHours:
    """When an automatic update may go out: within the requester's working hours (urgent priorities any hour)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], BusinessCalendar] = {}

    async def send_at(
        self, session: AsyncSession, ticket: Ticket, cal: BusinessCalendar, at: datetime,
    ) -> datetime:
        """``at``, or the next start of the requester's working hours when ``at`` falls outside them."""
        if ticket.priority in UPDATES_ANY_HOUR:
            return at
        requester = await session.get(Person, ticket.requester_id)
        return self.slot_for(ticket.priority, cal, zone_or_none(requester.timezone) if requester else None, at)

    def slot_for(self, priority: str, cal: BusinessCalendar, zone: ZoneInfo | None, at: datetime) -> datetime:
        """``at``, or the next start of working hours on ``cal`` in ``zone`` (urgent priorities: any hour)."""
        if priority in UPDATES_ANY_HOUR:
            return at
        hours = self.hours_for(cal, zone)
        return at if within_hours(hours, at) else hours.next_open(at)

    def hours_for(self, cal: BusinessCalendar, zone: ZoneInfo | None) -> BusinessCalendar:
        """The desk's weekly hours and holidays, but on the requester's wall clock."""
        if zone is None or zone.key == cal.tz.key:
            return cal
        key = (cal.name, zone.key)
        if key not in self._cache:
            self._cache[key] = dataclasses.replace(cal, tz=zone)
        return self._cache[key]


async def send_update(run: TimerRun, ticket: Ticket, requester: Person, zone: ZoneInfo, *,
                      nudge_assignee: bool) -> None:
    """The automatic progress update to the requester (what is new, where they are in the queue, the next target)
    and, with ``nudge_assignee``, a nudge to the assignee; both threaded under the ticket."""
    session, now = run.session, run.now
    since = ticket.last_requester_update_at or ticket.created_at
    assignee = await session.get(Person, ticket.assignee_id) if ticket.assignee_id else None
    event = TicketEvent(ticket_id=ticket.id, at=now, actor_id=None, kind=AUTO_UPDATE,
                        payload={"since": since.isoformat()})
    session.add(event)
    await session.flush()
    headline = (f"Update on {ticket.number}: still in progress with {assignee.display_name}." if assignee
                else f"Update on {ticket.number}: still waiting for an agent to pick it up.")
    label = "your time" if zone_or_none(requester.timezone) else None
    comments = await session.scalar(select(func.count()).select_from(TicketEvent).where(
        TicketEvent.ticket_id == ticket.id, TicketEvent.kind == "commented", TicketEvent.at > since,
        TicketEvent.actor_id == ticket.requester_id)) or 0
    last: tuple[Span, ...] = ("the last update (", Moment(since, zone.key, label=label), ")")
    lines: list[tuple[Span, ...]] = [
        (f"You added {_plural(comments, 'comment')} since ", *last, "; IT has them.") if comments
        else ("Nothing new since ", *last, ".")]
    if assignee is None:
        ahead = await session.scalar(select(func.count()).select_from(Ticket).where(
            Ticket.assignee_id.is_(None), Ticket.status.in_((NEW, REOPENED)), Ticket.id < ticket.id))
        lines.append((f"You are {_ordinal((ahead or 0) + 1)} in the queue.",))
    if ticket.first_response_at is None and ticket.first_response_due is not None:
        lines.append(("Next target: first response by ", Moment(ticket.first_response_due, zone.key, label=label),
                      "."))
    elif ticket.resolution_due is not None:
        lines.append(("Next target: resolution by ", Moment(ticket.resolution_due, zone.key, label=label), "."))
    body = tuple(span for index, line in enumerate(lines) for span in ((*(("\n",) if index else ()), *line)))
    requester_dm = person_target(requester)
    await enqueue_message(session, target=requester_dm, kind=NOTICE, ticket_id=ticket.id, now=now,
                          payload=notice_payload(Notice(ticket.id, ticket.number, headline, body, numbered=False),
                                                 thread="requester", event_id=event.id),
                          idempotency_key=f"notice:{event.id}:{requester_dm}")
    ticket.last_requester_update_at = now
    if assignee is not None and nudge_assignee:
        assignee_dm = person_target(assignee)
        nudge = Notice(ticket.id, ticket.number, f"{ticket.number} is due a progress update to "
                       f"{requester.display_name}.", "The bot sent an automatic update meanwhile; a word from "
                       "you is better.", numbered=False)
        await enqueue_message(session, target=assignee_dm, kind=NOTICE, ticket_id=ticket.id, now=now,
                              payload=notice_payload(nudge, thread="assignee", event_id=event.id),
                              idempotency_key=f"nudge:{event.id}:{assignee_dm}")



async def updates_sent_on_day(session: AsyncSession, ticket_id: int, now: datetime, zone: ZoneInfo) -> int:
    """Automatic updates and digest mentions that day: both count against ``max_per_ticket_per_day``."""
    day = now.astimezone(zone).date()
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    count = await session.scalar(select(func.count()).select_from(TicketEvent).where(
        TicketEvent.ticket_id == ticket_id, TicketEvent.kind.in_((AUTO_UPDATE, "digest_sent")), TicketEvent.at >= start,
        TicketEvent.at < end))
    return count or 0






def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
