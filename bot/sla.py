"""The SLA clock: first-response, resolution and progress-update targets counted in business time.

Targets run on the ticket's business calendar and only while the ticket is with IT: the clock stops
while it waits on the requester and while it is resolved, and picks up the budget that was left when
it starts again. This clock is the one SLA truth: its rules live in ``bot.sla_rules``, and every target
that stops leaves a verdict event (``sla_met``/``sla_missed`` with the time taken and the budget in force),
every warning and breach a mark, and the per-ticket report facts (``bot.report_facts``) change in the same
transaction. Reports, the weekly summary and cards read those; nothing re-derives them.

Rules chosen here:

* **Targets in working days.** ``d``/``w`` count the calendar's working days (``bot.durations``); a ticket's
  budget is the business time from its opening to that many working days later (``sla_rules.budgets``).
* **Budgets, not fixed instants.** A due time is "the instant the running business time since opening
  reaches the target". Pausing freezes it; resuming re-counts the remaining budget from now; a priority
  change re-counts every unmet target from the opening with the new policy and calendar. Reopening a
  resolved ticket resumes the resolution clock with the budget that was left at resolution; if none
  was left the ticket stays breached (it is never breached twice).
* **First response** is met by a claim, a public agent comment or a resolution (whichever comes first).
* **Warnings** fire at ``warn_at`` of the first-response and resolution budgets, at most once each.
  Progress updates get no warning: the bot covers a missed one itself.
* **Progress updates.** When ``update_every`` of business time passes without a requester-visible
  message, the update target is breached (once per due time) and the bot sends one automatic update to
  the requester and nudges the assignee. Not while waiting on the requester, not when muted, not
  outside the requester's working hours (the ticket calendar's hours and holidays read in the
  requester's zone; closing time itself still counts) unless the priority is P1, and at most
  ``updates.max_per_ticket_per_day`` per requester-local day (the nudge is skipped with the update).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import report_facts
from bot.business_time import BusinessCalendar
from bot.calendars import calendar_for
from bot.config import AppConfig, SlaPolicy
from bot.engine import TimerRun
from bot.local_time import zone_or_none
from bot.notifications import CARD, triage_targets
from bot.report_facts import change_facts
from bot.sla_locks import (
    LockedTicket,
    Mark,
    add_event,
    cancel_unlocked,
    is_current,
    load_events,
    lock_tickets_of,
    locked_ticket,
    marks_of,
)
from bot.sla_rules import (
    AUTO_UPDATE,
    FIRST_RESPONSE,
    RESOLUTION,
    RUNNING,
    SLA_BREACHED,
    SLA_MISSED,
    SLA_WARNING,
    UPDATE,
    Budgets,
    SlaOutcome,
    answers,
    budgets,
    business,
    deadline,
    running_spans,
    sla_outcomes,
    stop_verdict,
)
from bot.sla_updates import UPDATES_ANY_HOUR, UpdateHours, send_update, updates_sent_on_day
from bot.sla_wording import acknowledgement, sla_lines
from bot.tickets import WAITING, TicketChange
from store.models import Ticket, TicketEvent, Timer
from store.queries import enqueue_message, schedule_timers, timer_row

__all__ = ["AUTO_UPDATE", "UPDATES_ANY_HOUR", "SlaClock", "SlaOutcome", "acknowledgement", "lock_tickets_of",
           "sla_lines", "sla_outcomes"]

FIRST_RESPONSE_TIMER = "sla.first_response"
RESOLUTION_TIMER = "sla.resolution"
UPDATE_DUE_TIMER = "sla.update_due"
WARN_TIMER = "sla.warn"
TIMER_KINDS = (FIRST_RESPONSE_TIMER, RESOLUTION_TIMER, UPDATE_DUE_TIMER, WARN_TIMER)


Level = Literal["warn", "breach"]
BreachHook = Callable[[TimerRun, Ticket, str, Level], Awaitable[None]]

_RUNNING = RUNNING
_VISIBLE_KINDS = frozenset({"opened", "claimed", "unassigned", "status_changed", "priority_changed", "resolved",
                            "reopened", "closed"})


class SlaClock:
    """Keeps every ticket's SLA targets, their timers and the automatic progress updates."""

    def __init__(self, config: AppConfig, calendars: dict[str, BusinessCalendar]) -> None:
        self.config = config
        self.calendars = calendars
        self.on_breach: list[BreachHook] = []
        """Called inside the timer's transaction after a warning or breach is recorded (escalation)."""
        self._updates = UpdateHours()

    def calendar(self, name: str) -> BusinessCalendar:
        """A ticket's calendar by name (the default calendar if the name is no longer configured)."""
        return calendar_for(self.config, self.calendars, name)

    def initial_targets(self, priority: str, calendar: str, opened_at: datetime,
                        ) -> tuple[datetime | None, datetime | None, datetime | None]:
        """A new ticket's first-response, resolution and next-update due times (what ``on_change``
        computes for its "opened" event), without touching the database."""
        policy = self.config.sla_policy(priority)
        if policy is None:
            return None, None, None
        cal = self.calendar(calendar)
        update_due = policy.update_every.after(cal, opened_at) if policy.update_every is not None else None
        return policy.first_response.after(cal, opened_at), policy.resolution.after(cal, opened_at), update_due

    # -- ticket changes -----------------------------------------------------------------------------
    async def on_change(self, change: TicketChange) -> None:
        session, ticket, event, now = change.session, change.ticket, change.event, change.now
        cal = self.calendar(ticket.calendar)
        policy = self.config.sla_policy(ticket.priority)
        left_waiting = change.previous_status == WAITING and ticket.status != WAITING
        payload = dict(event.payload)
        if left_waiting and ticket.paused_since is not None:
            paused = cal.between(ticket.paused_since, now).total_seconds()
            ticket.paused_seconds += paused
            ticket.paused_since = None
            payload["paused_business_seconds"] = paused
        elif ticket.status == WAITING and ticket.paused_since is None:
            ticket.paused_since = now
        budget = None if policy is None else budgets(policy, cal, ticket.created_at)
        if event.kind in ("opened", "priority_changed"):
            # Stamped so reports know the targets in force without reading today's config.
            payload["sla_targets"] = None if budget is None else budget.stamp()
        if payload != event.payload:
            event.payload = payload
        if event.kind == "resolved" and ticket.first_response_at is None:
            # The resolution note is the requester's first answer from IT.
            ticket.first_response_at = now
        if _tells_requester(event):
            ticket.last_requester_update_at = now

        events = await load_events(session, ticket.id)
        if event.kind == "reopened":
            # Resolved until now, the clock stood still: count it with the waits, so a card's "took" for the
            # next resolution is the running time the clock judges by.
            resolved = max((e.at for e in events if e.kind == "resolved"), default=None)
            ticket.paused_seconds += cal.between(resolved, now).total_seconds() if resolved else 0.0
        facts = change_facts(event.kind, event.actor_id, now, event.payload)
        if policy is None or budget is None:
            ticket.first_response_due = ticket.resolution_due = ticket.next_update_due = None
        else:
            facts |= await self._recount(change, events, cal, policy, budget, left_waiting=left_waiting)
        if event.kind == "opened":
            await report_facts.note_opened(session, ticket.id, ticket.created_at, ticket.priority, ticket.category, now)
        await report_facts.note(session, ticket.id, now, facts)
        await self._sync_timers(session, ticket, f"v{ticket.version}", now, new_ticket=event.kind == "opened")

    async def _recount(self, change: TicketChange, events: list[TicketEvent], cal: BusinessCalendar,
                       policy: SlaPolicy, budget: Budgets, *, left_waiting: bool) -> dict[str, Any]:
        # The ticket's due times after this change, and the verdicts of the targets it stopped (as report facts).
        session, ticket, event, now = change.session, change.ticket, change.event, change.now
        answered_now = answers(event.kind, event.payload) and not any(
            answers(e.kind, e.payload) for e in events if e.id < event.id)
        spans = running_spans(events, ticket.created_at, now)
        moving = ticket.status in _RUNNING or left_waiting
        facts: dict[str, Any] = {}
        if ticket.first_response_at is None or answered_now:
            if moving or answered_now:
                ticket.first_response_due = deadline(cal, spans, budget.first_response, now)
            if answered_now:
                facts |= await self._record_outcome(session, ticket, FIRST_RESPONSE, spans, cal, budget, now)
        if moving:
            ticket.resolution_due = deadline(cal, spans, budget.resolution, now)
        if event.kind == "resolved":
            facts |= await self._record_outcome(session, ticket, RESOLUTION, spans, cal, budget, now)
        if policy.update_every is None or ticket.status not in _RUNNING or ticket.updates_muted:
            ticket.next_update_due = None
        elif _tells_requester(event) or ticket.next_update_due is None:
            ticket.next_update_due = policy.update_every.after(cal, now)
        return facts

    async def _record_outcome(
        self, session: AsyncSession, ticket: Ticket, metric: str, spans: list[tuple[datetime, datetime]],
        cal: BusinessCalendar, budget: Budgets, now: datetime,
    ) -> dict[str, Any]:
        # The target stopped: stamp its verdict with what it took and what it allowed, so every reader (reports,
        # the weekly summary, cards) takes the clock's word instead of re-deriving it.
        target, elapsed = budget.of(metric), business(cal, spans)
        verdict = stop_verdict(elapsed, target)
        if verdict == SLA_MISSED:
            # Missed before the breach timer ran (a lagging tick): the breach still belongs in history.
            due = ticket.first_response_due if metric == FIRST_RESPONSE else ticket.resolution_due
            await self._mark(session, ticket, SLA_BREACHED, metric, due, now)
        await add_event(session, ticket, verdict, now, {
            "metric": metric, "elapsed_seconds": elapsed.total_seconds(), "target_seconds": target.total_seconds(),
        })
        return report_facts.verdict_facts(metric, verdict, elapsed.total_seconds())

    # -- timers -------------------------------------------------------------------------------------
    async def _sync_timers(
        self, session: AsyncSession, ticket: Ticket, generation: str, now: datetime, *, running: int | None = None,
        new_ticket: bool = False,
    ) -> None:
        # Make the ticket's pending SLA timers exactly the ones its targets call for, touching only what
        # differs. `generation` keeps a re-schedule's dedup keys apart from earlier ones; `running` is the
        # timer whose handler is calling, which the engine marks done itself. A ticket being opened has no
        # SLA marks and no timers yet: nothing to read.
        wanted: dict[tuple[str, datetime, str, str], dict[str, Any]] = {}
        policy = self.config.sla_policy(ticket.priority)
        if policy is not None and ticket.status in _RUNNING:
            cal = self.calendar(ticket.calendar)
            budget = budgets(policy, cal, ticket.created_at)
            marks = set() if new_ticket else marks_of(
                await load_events(session, ticket.id, (SLA_WARNING, SLA_BREACHED)))
            targets = (
                (FIRST_RESPONSE, FIRST_RESPONSE_TIMER, None if ticket.first_response_at else ticket.first_response_due,
                 budget.first_response),
                (RESOLUTION, RESOLUTION_TIMER, ticket.resolution_due, budget.resolution),
            )
            for metric, kind, due, target in targets:
                if due is None or (SLA_BREACHED, metric, "") in marks:
                    continue
                _want(wanted, kind, due, metric, due)
                if policy.warn_at is not None and due > now and (SLA_WARNING, metric, "") not in marks:
                    used = target - cal.between(now, due)
                    _want(wanted, WARN_TIMER, cal.add(now, max(target * policy.warn_at - used, timedelta(0))),
                          metric, due)
            if ticket.next_update_due is not None and not ticket.updates_muted:
                send_at = await self._updates.send_at(session, ticket, cal, max(ticket.next_update_due, now))
                _want(wanted, UPDATE_DUE_TIMER, send_at, UPDATE, ticket.next_update_due)
        if not new_ticket:
            pending = await session.execute(select(Timer.id, Timer.kind, Timer.due_at, Timer.payload).where(
                Timer.ticket_id == ticket.id, Timer.kind.in_(TIMER_KINDS), Timer.done_at.is_(None)))
            stale = [timer_id for timer_id, kind, due_at, payload in pending if timer_id != running
                     and wanted.pop((kind, due_at, payload.get("metric", ""), payload.get("due", "")), None) is None]
            if stale:
                await cancel_unlocked(session, stale, now)
        await schedule_timers(session, [
            timer_row(kind=kind, due_at=due_at, now=now, ticket_id=ticket.id, payload=payload,
                      dedup_key=f"sla:{ticket.id}:{kind}:{metric}:{generation}:{int(due_at.timestamp())}")
            for (kind, due_at, metric, _), payload in wanted.items()])

    async def on_first_response_due(self, run: TimerRun) -> None:
        await self._on_target_timer(run, FIRST_RESPONSE, "breach")

    async def on_resolution_due(self, run: TimerRun) -> None:
        await self._on_target_timer(run, RESOLUTION, "breach")

    async def on_warn(self, run: TimerRun) -> None:
        await self._on_target_timer(run, str(run.timer.payload.get("metric")), "warn")

    async def _on_target_timer(self, run: TimerRun, metric: str, level: Level) -> None:
        # `locked` holds the requester for the session's identity map, where an escalation page looks it up.
        locked = run.prepared if isinstance(run.prepared, LockedTicket) else await locked_ticket(run)
        if locked is None:
            return
        ticket = locked.ticket
        if ticket.status not in _RUNNING:
            return
        if metric == FIRST_RESPONSE and ticket.first_response_at is not None:
            return
        due = ticket.first_response_due if metric == FIRST_RESPONSE else ticket.resolution_due
        if is_current(run.timer, due):
            await self.record_breach(run, ticket, metric, due, level, marks=locked.marks)

    async def record_breach(self, run: TimerRun, ticket: Ticket, metric: str, due: datetime | None, level: Level,
                        *, marks: set[Mark] | None = None) -> None:
        # The breach event and the hooks' rows (an escalation's events) go out in one flush, not one
        # statement at a time ahead of every query the hooks make: a breach storm runs this thousands of times.
        with run.session.no_autoflush:
            event = await self._mark(run.session, ticket, SLA_WARNING if level == "warn" else SLA_BREACHED, metric,
                                     due, run.now, flush=False, marks=marks)
            if event is None:
                return
            if level == "breach":
                await report_facts.note(run.session, ticket.id, run.now, report_facts.breached_facts(metric))
            for hook in self.on_breach:
                await hook(run, ticket, metric, level)
        targets = triage_targets(self.config)
        if targets:
            await run.session.flush()  # the triage card is keyed on the event's id
        for target in targets:
            await enqueue_message(run.session, target=target, kind=CARD, ticket_id=ticket.id, now=run.now,
                                  payload={"ticket_id": ticket.id, "event_id": event.id, "audience": "triage"},
                                  idempotency_key=f"card:{event.id}:{target}")

    async def _mark(
        self, session: AsyncSession, ticket: Ticket, kind: str, metric: str, due: datetime | None, now: datetime,
        *, flush: bool = True, marks: set[Mark] | None = None,
    ) -> TicketEvent | None:
        # None when a warning/breach already stands for this target: timers may run twice, history may not.
        # `marks`: the ticket's warnings and breaches, when the caller read them under the ticket's lock.
        due_text = due.isoformat() if due is not None else None
        if marks is None:
            marks = marks_of(await load_events(session, ticket.id, (SLA_WARNING, SLA_BREACHED)))
        own = (kind, metric, (due_text or "") if metric == UPDATE else "")
        if own in marks or (kind == SLA_WARNING and (SLA_BREACHED, metric, "") in marks):
            return None
        return await add_event(session, ticket, kind, now, {"metric": metric, "due": due_text}, flush=flush)

    # -- progress updates ---------------------------------------------------------------------------
    async def on_update_due(self, run: TimerRun) -> None:
        session, now = run.session, run.now
        locked = await locked_ticket(run)
        if locked is None:
            return
        ticket, requester = locked.ticket, locked.requester
        if ticket.status not in _RUNNING or ticket.updates_muted or not is_current(run.timer, ticket.next_update_due):
            return
        policy = self.config.sla_policy(ticket.priority)
        if policy is None or policy.update_every is None:
            return
        cal = self.calendar(ticket.calendar)
        if await self._updates.send_at(session, ticket, cal, now) > now:
            await self._sync_timers(session, ticket, f"t{run.timer.id}", now, running=run.timer.id)
            return
        await self.record_breach(run, ticket, UPDATE, ticket.next_update_due, "breach")
        zone = zone_or_none(requester.timezone) or cal.tz
        if await updates_sent_on_day(session, ticket.id, now, zone) < self.config.updates.max_per_ticket_per_day:
            await send_update(run, ticket, requester, zone, nudge_assignee=self.config.updates.nudge_assignee)
        ticket.next_update_due = policy.update_every.after(cal, now)
        await self._sync_timers(session, ticket, f"t{run.timer.id}", now, running=run.timer.id)


# -- helpers ----------------------------------------------------------------------------------------
def _tells_requester(event: TicketEvent) -> bool:
    # Mirrors what bot.notifications tells the requester (the ack card counts for "opened").
    return event.kind in _VISIBLE_KINDS or (event.kind == "commented" and event.payload.get("role") == "agent")


def _want(wanted: dict[tuple[str, datetime, str, str], dict[str, Any]], kind: str, at: datetime, metric: str,
          due: datetime) -> None:
    wanted[(kind, at, metric, due.isoformat())] = {"metric": metric, "due": due.isoformat()}


