"""Scheduled digests: a requester's open tickets at set local times, and the agents' morning triage digest.

**Requester digests.** ``updates.digest_times`` are wall-clock times on the requester's clock (their
``Person.timezone``, else the default calendar's zone). A *slot* is one of those times on one local day.
A slot counts for a ticket when the ticket's calendar (its hours and holidays read on the requester's
clock, as the SLA clock does) is open then (closing time itself counts), or at any hour for P1.

Deadlines are timer rows, nothing polls: each requester with a running ticket has a pending
``digest.requester`` timer at their next slot (dedup key ``digest:<person id>:<slot>``, so every
ticket of theirs that asks for the same slot shares the row). The first one is scheduled by a ticket
subscriber when a ticket starts running (opened, reopened, back from waiting on the requester, updates
unmuted, priority changed); each timer schedules the next slot while the person still has running,
unmuted tickets. When it fires it picks the person's tickets that are with IT (not waiting on them,
not resolved), not muted, open on the requester's clock at the slot, have had no requester-visible
update (``Ticket.last_requester_update_at``, kept by the SLA clock) since the ticket's previous slot,
and have had fewer than ``updates.max_per_ticket_per_day`` proactive messages (digests plus automatic
updates) that requester-local day. If any remain it sends ONE message listing them, each with a
"Mute updates" button (muting one ticket leaves the others in), and writes a ``digest_sent`` event per
listed ticket. A slot whose timer runs more than ``STALE_AFTER`` late (the engine was down) is skipped.
The digest is a summary, not a progress update: it does not move ``last_requester_update_at``.

**Triage digest.** At ``updates.triage_digest_time`` in the default calendar's zone, every replica's cron
job enqueues one ``digest.triage`` timer row (dedup key per local date, so N replicas enqueue it once).
On a business day of the default calendar it posts one message to each triage target listing unclaimed
tickets and tickets whose first-response or resolution target falls by today's closing time
(already breached ones included). Nothing is posted when both lists are empty.

Delivery: outbox kind ``digest`` with the neutral view (``bot.views.Digest``), a top-level message; the row
carries the first listed ticket's id.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.business_time import BusinessCalendar
from bot.calendars import calendar_for
from bot.core import Core, CronJob
from bot.engine import TimerRun
from bot.local_time import within_hours, zone_or_none
from bot.messages import DIGEST, digest_payload
from bot.notifications import person_target, triage_targets
from bot.routing import Action
from bot.sla import AUTO_UPDATE, UPDATES_ANY_HOUR
from bot.text import to_plain
from bot.tickets import (
    CLAIMED,
    IN_PROGRESS,
    NEW,
    REOPENED,
    REQUESTER_STATUS_LABELS,
    STATUS_LABELS,
    WAITING,
    TicketChange,
)
from bot.views import CardAction, Digest, DigestLine, DigestSection, Moment, Span
from store.models import Person, Ticket, TicketEvent
from store.queries import enqueue_message, schedule_timer

log = logging.getLogger("ithelp.digests")

REQUESTER_TIMER = "digest.requester"
TRIAGE_TIMER = "digest.triage"
TRIAGE_JOB_ID = "digest.triage"
DIGEST_SENT = "digest_sent"
STALE_AFTER = timedelta(hours=1)
"""A slot whose timer runs later than this (the engine was down) is skipped, not sent late."""
SEARCH_DAYS = 31
"""How far ahead (and back) to look for a slot in which a ticket's calendar is open."""
MAX_LISTED = 20
"""Tickets listed per section; the rest are counted (Block Kit allows 50 blocks a message)."""

# Statuses in which the ticket is with IT (the SLA clock's running set): the only ones digested.
_RUNNING = frozenset({NEW, CLAIMED, IN_PROGRESS, REOPENED})
# Events after which a ticket may newly ask for a digest slot.
_SCHEDULE_ON = frozenset({"opened", "reopened", "updates_unmuted", "priority_changed"})


# -- the service --------------------------------------------------------------------------------------
class Digests:
    """Requester digests at their local slots and the morning triage digest, all driven by timer rows."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.config = core.config
        self.calendars = core.calendars
        self._rezoned: dict[tuple[str, str], BusinessCalendar] = {}

    def cron_jobs(self) -> list[CronJob]:
        """The morning triage digest, when ``updates.triage_digest_time`` is set."""
        at = self.config.updates.triage_digest_time
        if at is None:
            return []
        return [CronJob(TRIAGE_JOB_ID, at, self.default_calendar.tz.key, self.enqueue_triage_digest)]

    @property
    def default_calendar(self) -> BusinessCalendar:
        return calendar_for(self.config, self.calendars, self.config.default_calendar)

    # -- requester digests ---------------------------------------------------------------------------
    async def on_change(self, change: TicketChange) -> None:
        ticket = change.ticket
        if ticket.status not in _RUNNING or ticket.updates_muted or not self.config.updates.digest_times:
            return
        if change.event.kind not in _SCHEDULE_ON and change.previous_status != WAITING:
            return
        await self._schedule_next(change.session, change.requester, [ticket], after=change.now, now=change.now)

    async def _schedule_next(self, session: AsyncSession, person: Person, tickets: Sequence[Ticket], *,
                             after: datetime, now: datetime) -> datetime | None:
        zone = self._slot_zone(person)
        known = zone_or_none(person.timezone) is not None
        slot = next((at for at in self._slots(zone, after, forward=True)
                     if any(self._counts_at(t, known, zone, at) for t in tickets)), None)
        if slot is not None:
            await schedule_timer(session, kind=REQUESTER_TIMER, due_at=slot, now=now,
                                 payload={"person_id": person.id, "slot": slot.isoformat()},
                                 dedup_key=f"digest:{person.id}:{slot.isoformat()}")
        return slot

    async def on_requester_slot(self, run: TimerRun) -> None:
        session, now, timer = run.session, run.now, run.timer
        person = await session.get(Person, int(timer.payload["person_id"]))
        if person is None:
            return
        slot = timer.due_at
        tickets = list((await session.execute(select(Ticket).where(
            Ticket.requester_id == person.id, Ticket.status.in_(_RUNNING), Ticket.updates_muted.is_(False),
        ).order_by(Ticket.id))).scalars())
        if now - slot <= STALE_AFTER:
            chosen = [t for t in tickets if await self._due_digest(session, t, person, slot, now)]
            if chosen:
                await self._send_requester_digest(session, person, chosen, slot, now)
        else:
            timer.done_at, timer.outcome = now, "skipped"
            log.warning("digest slot %s for person %s ran %s late; skipped", slot.isoformat(), person.id, now - slot)
        if tickets and self.config.updates.digest_times:
            # Late but within STALE_AFTER of a later slot (a long outage): that slot still goes out now.
            await self._schedule_next(session, person, tickets, after=max(slot, now - STALE_AFTER), now=now)

    async def _due_digest(self, session: AsyncSession, ticket: Ticket, person: Person, slot: datetime,
                          now: datetime) -> bool:
        zone = self._slot_zone(person)
        known = zone_or_none(person.timezone) is not None
        if not (self._counts_at(ticket, known, zone, slot) and self._counts_at(ticket, known, zone, now)):
            return False
        previous = next((at for at in self._slots(zone, slot, forward=False)
                         if self._counts_at(ticket, known, zone, at)), slot - timedelta(days=SEARCH_DAYS))
        last_heard = ticket.last_requester_update_at or ticket.created_at
        if last_heard > previous:
            return False
        sent = await _proactive_on_day(session, ticket.id, now, zone_or_none(person.timezone) or
                                       self.calendar(ticket.calendar).tz)
        return sent < self.config.updates.max_per_ticket_per_day

    async def _send_requester_digest(self, session: AsyncSession, person: Person, tickets: list[Ticket],
                                     slot: datetime, now: datetime) -> None:
        listed = tickets[:MAX_LISTED]
        names = await _names(session, [t.assignee_id for t in listed])
        zone = zone_or_none(person.timezone)
        lines = []
        for ticket in listed:
            who = f"with {names[ticket.assignee_id]}" if ticket.assignee_id in names else (
                "waiting for an agent to pick it up")
            detail: list[Span] = [f"{REQUESTER_STATUS_LABELS.get(ticket.status, ticket.status).capitalize()} · {who}"]
            target = _next_target(ticket, (zone or self.calendar(ticket.calendar).tz).key)
            if target:
                detail.extend((" · ", *target))
            lines.append(DigestLine(ticket.id, ticket.number, to_plain(ticket.summary), tuple(detail),
                                    CardAction(Action.MUTE, "Mute updates", str(ticket.id))))
        count = len(tickets)
        view = Digest(
            title=f"Your open IT ticket{'s' if count > 1 else ''}: where things stand",
            intro=("No news since the last digest, so here is a quick update." if count == 1
                   else f"No news on {count} of your tickets since the last digest, so here is a quick update."),
            sections=(DigestSection(None, tuple(lines), more=count - len(listed)),),
            footer="“Mute updates” stops these digests and automatic updates for that ticket only.",
        )
        key = f"digest:{person.id}:{slot.isoformat()}"
        if not await enqueue_message(session, target=person_target(person), kind=DIGEST, payload=digest_payload(view),
                                     idempotency_key=key, now=now, ticket_id=listed[0].id):
            return
        for ticket in listed:
            session.add(TicketEvent(ticket_id=ticket.id, at=now, actor_id=None, kind=DIGEST_SENT,
                                    payload={"slot": slot.isoformat(), "digest": key}))
        await session.flush()

    # -- triage digest -------------------------------------------------------------------------------
    async def enqueue_triage_digest(self) -> bool:
        """The cron job: enqueue today's ``digest.triage`` timer; True if this call added it.

        Every replica runs it; the dedup key (the default calendar's local date) keeps one row.
        """
        desk = self.core
        async with desk.db.transaction() as session:
            now = desk.clock.now()
            day = self.default_calendar.local(now).date()
            return await schedule_timer(session, kind=TRIAGE_TIMER, due_at=now, now=now,
                                        payload={"date": day.isoformat()}, dedup_key=f"digest-triage:{day.isoformat()}")

    async def on_triage_digest(self, run: TimerRun) -> None:
        session, now = run.session, run.now
        cal = self.default_calendar
        day = date.fromisoformat(str(run.timer.payload["date"]))
        if cal.local(now).date() != day or not cal.is_business_day(day):
            run.timer.done_at, run.timer.outcome = now, "skipped"
            return
        hours = cal.working_hours_on(day)
        end = max(b for _, b in hours) if hours else datetime.combine(day + timedelta(days=1), time(0),
                                                                       tzinfo=cal.tz).astimezone(UTC)
        unclaimed_filter = and_(Ticket.assignee_id.is_(None), Ticket.status.in_((NEW, REOPENED)))
        breaching_filter = and_(Ticket.status.in_(_RUNNING), or_(
            and_(Ticket.first_response_at.is_(None), Ticket.first_response_due <= end), Ticket.resolution_due <= end))
        unclaimed = await _tickets(session, unclaimed_filter)
        breaching = await _tickets(session, breaching_filter)
        breaching.sort(key=lambda t: (_earliest_due(t, end) or end, t.id))
        unclaimed_count = await _count(session, unclaimed_filter)
        breaching_count = await _count(session, breaching_filter)
        if not unclaimed_count and not breaching_count:
            return
        names = await _names(session, [t.assignee_id for t in breaching[:MAX_LISTED]])
        zone = cal.tz.key

        def unclaimed_line(t: Ticket) -> DigestLine:
            return _unclaimed_line(t, end, zone, now)

        def breaching_line(t: Ticket) -> DigestLine:
            return _breaching_line(t, end, zone, now, names)

        sections = []
        if unclaimed_count:
            shown = unclaimed[:MAX_LISTED]
            sections.append(DigestSection(f"Unclaimed ({unclaimed_count})", tuple(map(unclaimed_line, shown)),
                                          more=unclaimed_count - len(shown)))
        if breaching_count:
            sections.append(DigestSection(f"Breaching today ({breaching_count})",
                                          tuple(map(breaching_line, breaching[:MAX_LISTED])),
                                          more=breaching_count - min(len(breaching), MAX_LISTED)))
        view = Digest(
            title=f"Morning triage — {day:%a} {day.day} {day:%b}",
            intro=(f"{unclaimed_count} unclaimed, {breaching_count} with a target before ", Moment(end, zone), "."),
            sections=tuple(sections),
        )
        first = (unclaimed or breaching)[0]
        for target in triage_targets(self.config):
            await enqueue_message(session, target=target, kind=DIGEST, payload=digest_payload(view), now=now,
                                  ticket_id=first.id,
                                  idempotency_key=f"digest-triage:{day.isoformat()}:{target}",
                                  ordering_key=f"{target}#digest")

    # -- calendars and slots -------------------------------------------------------------------------
    def calendar(self, name: str) -> BusinessCalendar:
        return calendar_for(self.config, self.calendars, name)

    def _slot_zone(self, person: Person) -> ZoneInfo:
        return zone_or_none(person.timezone) or self.default_calendar.tz

    def _counts_at(self, ticket: Ticket, zone_known: bool, zone: ZoneInfo, at: datetime) -> bool:
        # Whether `at` is within the ticket's hours on the requester's clock (any hour for P1).
        if ticket.priority in UPDATES_ANY_HOUR:
            return True
        cal = self.calendar(ticket.calendar)
        return within_hours(self._on_clock(cal, zone) if zone_known else cal, at)

    def _on_clock(self, cal: BusinessCalendar, zone: ZoneInfo) -> BusinessCalendar:
        if zone.key == cal.tz.key:
            return cal
        key = (cal.name, zone.key)
        if key not in self._rezoned:
            self._rezoned[key] = dataclasses.replace(cal, tz=zone)
        return self._rezoned[key]

    def _slots(self, zone: ZoneInfo, start: datetime, *, forward: bool) -> Iterator[datetime]:
        """Configured local times strictly after (or before) ``start``, nearest first, for SEARCH_DAYS days."""
        times = sorted(set(self.config.updates.digest_times), reverse=not forward)
        day = start.astimezone(zone).date()
        step = timedelta(days=1 if forward else -1)
        for offset in range(SEARCH_DAYS + 1):
            for t in times:
                at = datetime.combine(day + offset * step, t, tzinfo=zone).astimezone(UTC)
                if (at > start) if forward else (at < start):
                    yield at


# -- helpers ------------------------------------------------------------------------------------------
async def _tickets(session: AsyncSession, where: Any) -> list[Ticket]:
    return list((await session.execute(select(Ticket).where(where).order_by(Ticket.id).limit(MAX_LISTED * 5)))
                .scalars())


async def _count(session: AsyncSession, where: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(Ticket).where(where)) or 0)


async def _names(session: AsyncSession, ids: Sequence[int | None]) -> dict[int | None, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = await session.execute(select(Person.id, Person.display_name).where(Person.id.in_(wanted)))
    return {person_id: name for person_id, name in rows.tuples()}


async def _proactive_on_day(session: AsyncSession, ticket_id: int, now: datetime, zone: ZoneInfo) -> int:
    # Digests and automatic updates the ticket's requester got on their local day of `now`.
    day = now.astimezone(zone).date()
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return int(await session.scalar(select(func.count()).select_from(TicketEvent).where(
        TicketEvent.ticket_id == ticket_id, TicketEvent.kind.in_((DIGEST_SENT, AUTO_UPDATE)),
        TicketEvent.at >= start, TicketEvent.at < end)) or 0)


def _next_target(ticket: Ticket, zone: str) -> tuple[Span, ...] | None:
    if ticket.first_response_at is None and ticket.first_response_due is not None:
        return ("first response by ", Moment(ticket.first_response_due, zone))
    if ticket.resolution_due is not None:
        return ("resolution by ", Moment(ticket.resolution_due, zone))
    return None


def _earliest_due(ticket: Ticket, end: datetime) -> datetime | None:
    dues = [d for d in ((ticket.first_response_due if ticket.first_response_at is None else None),
                        ticket.resolution_due) if d is not None and d <= end]
    return min(dues, default=None)


def _due_text(ticket: Ticket, due: datetime, zone: str, now: datetime) -> tuple[Span, ...]:
    what = "first response" if ticket.first_response_at is None and due == ticket.first_response_due else "resolution"
    if due <= now:
        return (f"{what} breached — was due ", Moment(due, zone))
    return (f"{what} due ", Moment(due, zone))


def _unclaimed_line(t: Ticket, end: datetime, zone: str, now: datetime) -> DigestLine:
    """An unclaimed ticket in the morning triage digest, with a Claim button."""
    detail: list[Span] = [f"{t.priority} · {STATUS_LABELS.get(t.status, t.status)} · waiting since ",
                          Moment(t.created_at, zone)]
    due = _earliest_due(t, end)
    if due is not None:
        detail.extend((" · ", *_due_text(t, due, zone, now)))
    return DigestLine(t.id, t.number, to_plain(t.summary), tuple(detail),
                      CardAction(Action.CLAIM, "Claim", str(t.id), style="primary"))


def _breaching_line(t: Ticket, end: datetime, zone: str, now: datetime, names: dict[int | None, str]) -> DigestLine:
    """A ticket with a target before the day ends, its owner named (or a Claim button when it has none)."""
    owner = names.get(t.assignee_id) if t.assignee_id else None
    due = _earliest_due(t, end)
    detail: list[Span] = [" · ".join((t.priority, STATUS_LABELS.get(t.status, t.status), owner or "unclaimed"))]
    if due is not None:
        detail.extend((" · ", *_due_text(t, due, zone, now)))
    action = None if owner else CardAction(Action.CLAIM, "Claim", str(t.id), style="primary")
    return DigestLine(t.id, t.number, to_plain(t.summary), tuple(detail), action)
