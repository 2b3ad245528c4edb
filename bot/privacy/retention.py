"""Retention: old tickets' free text is redacted and long-inactive people anonymised, as engine timers.

Every replica's daily cron job (``retention.run_at`` in the default calendar's zone) enqueues one
``retention.text`` and one ``retention.people`` timer row for the local date (dedup keys per date, so N replicas
enqueue each once). A run works one batch (``retention.batch_size``) per transaction, inside the timer's own
transaction, records the batch in the privacy log, and while work remains enqueues its next round, due at once.
Batches claim their rows with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, and redacting or anonymising twice
changes nothing, so overlapping runs (yesterday's still going) never fight or double-count.

* **Text** (``text_after``): tickets resolved (or closed) longer ago than that, oldest first.
* **People** (``people_after``): people with no open ticket, no ticket of theirs changed and nothing done by
  them for that long. The scan walks people by id, carrying its position from round to round.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import exists, or_, select, union
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import Core, CronJob
from bot.durations import format_duration
from bot.engine import TimerRun
from bot.privacy.identity import anonymise_people
from bot.privacy.redaction import redact_tickets
from bot.tickets import CLOSED, OPEN_STATUSES, RESOLVED, TicketChange
from store.escalation_models import Escalation
from store.models import MessageRef, OutboxMessage, Person, Ticket, TicketEvent, Timer
from store.privacy_models import PrivacyLog
from store.queries import schedule_timer
from store.survey_models import Survey

log = logging.getLogger("ithelp.retention")

TEXT_TIMER = "retention.text"
PEOPLE_TIMER = "retention.people"
JOB_ID = "retention"
ACTOR = "retention"


class RetentionService:
    """Runs the ``retention:`` policy of ``app.yaml`` (nothing at all when it is unset)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.config = core.config
        self.policy = core.config.retention

    def cron_jobs(self) -> list[CronJob]:
        """The daily retention run, when a ``retention:`` policy is set."""
        return [CronJob(JOB_ID, self.policy.run_at, self._zone, self.enqueue_daily_run)] if self.policy.enabled else []

    async def enqueue_daily_run(self) -> bool:
        """The cron job: enqueue today's first round of each configured policy; True if this call added one."""
        desk = self.core
        async with desk.db.transaction() as session:
            now = desk.clock.now()
            day = now.astimezone(ZoneInfo(self._zone)).date().isoformat()
            added = False
            for kind, after in ((TEXT_TIMER, self.policy.text_after), (PEOPLE_TIMER, self.policy.people_after)):
                if after is not None:
                    added |= await _schedule_round(session, kind, day, 1, now, position=0)
            return added

    async def on_change(self, change: TicketChange) -> None:
        # A redacted ticket that is reopened collects new text: it is scanned again once it is resolved again.
        if change.event.kind == "reopened" and change.ticket.redacted_at is not None:
            change.ticket.redacted_at = None

    async def on_text(self, run: TimerRun) -> None:
        if self.policy.text_after is None:
            run.timer.done_at, run.timer.outcome = run.now, "skipped"
            return
        session, now, limit = run.session, run.now, self.policy.batch_size
        ids = await tickets_due_for_redaction(session, now - self.policy.text_after, limit)
        if ids:
            counts = await redact_tickets(session, ids, now)
            session.add(PrivacyLog(at=now, action="retention.redact_text", actor=ACTOR, subject=None, detail={
                "policy": f"text_after {format_duration(self.policy.text_after)}", "tickets": len(ids),
                "ticket_ids": ids, "rows": counts}))
            log.info("retention: redacted the text of %d tickets (%s)", len(ids), _describe(counts))
        if len(ids) == limit:
            await self._next_round(run, position=0)

    async def on_people(self, run: TimerRun) -> None:
        if self.policy.people_after is None:
            run.timer.done_at, run.timer.outcome = run.now, "skipped"
            return
        session, now, limit = run.session, run.now, self.policy.batch_size
        position = int(run.timer.payload.get("position", 0))
        window, people = await people_due_for_anonymising(session, now - self.policy.people_after, position, limit)
        if people:
            done = await anonymise_people(session, people, now, scope=retention_scope([p.id for p in people]))
            session.add(PrivacyLog(at=now, action="retention.anonymise_people", actor=ACTOR, subject=None, detail={
                "policy": f"people_after {format_duration(self.policy.people_after)}", "people": done.people,
                "rows": done.rows}))
            log.info("retention: anonymised %d people (%s)", done.people, _describe(done.rows))
        if len(window) == limit:
            await self._next_round(run, position=window[-1])

    async def _next_round(self, run: TimerRun, *, position: int) -> None:
        payload = run.timer.payload
        await _schedule_round(run.session, run.timer.kind, str(payload["date"]), int(payload.get("round", 1)) + 1,
                              run.now, position=position)
        self.core.wake()  # the engine runs it as soon as this batch commits, not a tick interval later

    @property
    def _zone(self) -> str:
        return self.config.calendars[self.config.default_calendar].timezone


async def _schedule_round(session: AsyncSession, kind: str, day: str, round_: int, now: datetime, *,
                          position: int) -> bool:
    return await schedule_timer(session, kind=kind, due_at=now, now=now,
                                payload={"date": day, "round": round_, "position": position},
                                dedup_key=f"{kind}:{day}:{round_}")


async def tickets_due_for_redaction(session: AsyncSession, cutoff: datetime, limit: int) -> list[int]:
    """Up to ``limit`` tickets resolved (or closed) before ``cutoff`` whose text is still there, oldest first."""
    query = (select(Ticket.id)
             .where(Ticket.redacted_at.is_(None), Ticket.resolved_at < cutoff, Ticket.status.in_((RESOLVED, CLOSED)),
                    or_(Ticket.closed_at.is_(None), Ticket.closed_at < cutoff))
             .order_by(Ticket.resolved_at, Ticket.id).limit(limit))
    if _is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    return list((await session.execute(query)).scalars())


async def people_due_for_anonymising(session: AsyncSession, cutoff: datetime, after: int,
                                     limit: int) -> tuple[list[int], list[Person]]:
    """The next ``limit`` not yet anonymised people after id ``after`` (the scan window), and those of them
    with nothing open and nothing done since ``cutoff`` (locked)."""
    window = list((await session.execute(select(Person.id).where(
        Person.id > after, Person.anonymised_at.is_(None)).order_by(Person.id).limit(limit))).scalars())
    if not window:
        return window, []
    involved = or_(Ticket.status.in_(OPEN_STATUSES), Ticket.updated_at >= cutoff)
    query = select(Person).where(
        Person.id.in_(window), Person.anonymised_at.is_(None), Person.updated_at < cutoff,
        ~exists().where(Ticket.requester_id == Person.id, involved),
        ~exists().where(Ticket.assignee_id == Person.id, involved),
        ~exists().where(TicketEvent.actor_id == Person.id, TicketEvent.at >= cutoff),
    ).order_by(Person.id)
    if _is_postgres(session):
        query = query.with_for_update(skip_locked=True, of=Person)
    return window, list((await session.execute(query)).scalars())


def retention_scope(person_ids: list[int]) -> dict[str, Any]:
    """Where a long-inactive person can be named in the large tables: the tickets they asked for, were
    assigned or acted on, and what hangs off those (messages and timers also when they belong to no ticket:
    digests, page summaries). The small tables (dedup marks, counters, conversation references) are searched
    whole."""
    involved = union(select(Ticket.id).where(Ticket.requester_id.in_(person_ids)),
                     select(Ticket.id).where(Ticket.assignee_id.in_(person_ids)),
                     select(TicketEvent.ticket_id).where(TicketEvent.actor_id.in_(person_ids)))
    return {
        "tickets": Ticket.id.in_(involved),
        "ticket_events": TicketEvent.ticket_id.in_(involved),
        "surveys": Survey.ticket_id.in_(involved),
        "escalations": or_(Escalation.ticket_id.in_(involved), Escalation.acknowledged_by_id.in_(person_ids)),
        "message_refs": MessageRef.ticket_id.in_(involved),
        "outbox": or_(OutboxMessage.ticket_id.in_(involved), OutboxMessage.ticket_id.is_(None)),
        "timers": or_(Timer.ticket_id.in_(involved), Timer.ticket_id.is_(None)),
    }


def _is_postgres(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "postgresql"


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {table}" for table, count in sorted(counts.items())) or "nothing else"

