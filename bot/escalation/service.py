"""Starts, steps and acknowledges escalations; ends them when the ticket is claimed, resolved or closed."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import EscalationChain
from bot.core import Core
from bot.engine import TimerRun
from bot.escalation.audit import EscalationAudit
from bot.escalation.chain import (
    ACKNOWLEDGED,
    ACTIVE,
    METRIC_LABELS,
    TRIGGERS,
    Snapshot,
    due_of,
    finish,
    new_token,
    schedule_step,
    snapshot_chain,
)
from bot.escalation.paging import Paging
from bot.notifications import CARD, triage_targets
from bot.people import PersonRef
from bot.tickets import AlreadyClaimed, IllegalTransition, NotAllowed, TicketChange, TicketNotFound
from bot.views import Moment, Text
from store.escalation_models import ACTIVE_KEY, Escalation
from store.models import Person, Ticket, TicketEvent
from store.queries import enqueue_message, insert_if_absent

log = logging.getLogger("ithelp.escalation")


class EscalationService:
    """Starts, steps, acknowledges and audits escalations; see the module docstring."""

    def __init__(self, core: Core, paging: Paging, audit: EscalationAudit) -> None:
        self.core = core
        self.config = core.config
        self.calendars = core.calendars
        self.paging = paging
        self.auditor = audit

    def chain_for(self, priority: str, trigger: str) -> str | None:
        triggers = self.config.escalation.policies.get(priority)
        if triggers is None or trigger not in TRIGGERS:
            return None
        name: str | None = getattr(triggers, trigger)
        return name if name in self.config.escalation.chains else None

    async def on_breach(self, run: TimerRun, ticket: Ticket, metric: str, level: Literal["warn", "breach"]) -> None:
        """SLA hook: a warning starts the ``warn`` chain; a breach the metric's own chain, else ``breach``."""
        if level == "warn":
            await self.start(run.session, ticket, "warn", run.now, metric=metric)
            return
        trigger = metric if self.chain_for(ticket.priority, metric) else "breach"
        await self.start(run.session, ticket, trigger, run.now, metric=metric)

    async def start(self, session: AsyncSession, ticket: Ticket, trigger: str, now: datetime, *,
                    metric: str | None = None) -> bool:
        """Start the chain the ticket's priority names for ``trigger`` and page its first level.

        Runs in the caller's transaction. False when no chain applies, the ticket is closed, or an
        escalation for this ticket and trigger is already running.
        """
        chain_name = self.chain_for(ticket.priority, trigger)
        if chain_name is None or not ticket.is_open:
            return False
        chain = self.config.escalation.chains[chain_name]
        zone = self._zone_for(chain)
        metric = metric or (trigger if trigger in METRIC_LABELS else None)
        breached_at = due_of(ticket, metric) or now
        escalation = await insert_if_absent(session, Escalation, {
            "ticket_id": ticket.id, "trigger": trigger, "metric": metric, "chain_name": chain_name,
            "chain": snapshot_chain(chain, zone), "status": ACTIVE, "active_key": ACTIVE_KEY, "level": 0, "loop": 0,
            "pages": 0, "run_token": new_token(), "next_step_at": now, "breached_at": min(breached_at, now),
            "paged_pagers": {"targets": []}, "started_at": now,
        }, ("ticket_id", "trigger", "active_key"))
        if escalation is None:
            return False
        session.add(TicketEvent(ticket_id=ticket.id, at=now, kind="escalation_started",
                                payload={"escalation_id": escalation.id, "trigger": trigger, "chain": chain_name,
                                         "metric": metric}))
        await self._step(session, escalation, ticket, now)
        await self.auditor.ensure(session, now)
        return True

    def _zone_for(self, chain: EscalationChain) -> str:
        name = chain.calendar or self.config.default_calendar
        calendar = self.calendars.get(name)
        if calendar is not None:
            return calendar.tz.key
        spec = self.config.calendars.get(name)
        return spec.timezone if spec is not None else "UTC"

    # -- stepping -----------------------------------------------------------------------------------
    async def on_step(self, run: TimerRun) -> None:
        escalation_id = run.timer.payload.get("escalation_id")
        token = run.timer.payload.get("token")
        ticket = (await run.session.execute(
            select(Ticket).where(Ticket.id == run.timer.ticket_id).with_for_update())).scalar_one_or_none()
        escalation = (await run.session.execute(
            select(Escalation).where(Escalation.id == escalation_id).with_for_update())).scalar_one_or_none()
        if ticket is None or escalation is None or escalation.status != ACTIVE or escalation.run_token != token:
            run.timer.outcome = "stale"
            run.timer.done_at = run.now
            return
        await self._step(run.session, escalation, ticket, run.now)

    async def _step(self, session: AsyncSession, escalation: Escalation, ticket: Ticket, now: datetime) -> None:
        """Page the pending level (or wait for the window, or finish); the rows are locked by the caller."""
        if not ticket.is_open:
            finish(session, escalation, now, "ticket_closed")
            return
        chain = Snapshot.load(escalation.chain)
        if escalation.loop > chain.repeat:  # every level of every loop was paged and waited out
            finish(session, escalation, now, "exhausted")
            return
        opens = chain.next_open(now)
        if opens > now:  # outside the paging window: delay this level, never skip it
            await schedule_step(session, escalation, opens, now)
            return
        await self.paging.page(session, escalation, ticket, chain, now)
        wait = chain.levels[escalation.level][1]
        escalation.level += 1
        if escalation.level >= len(chain.levels):
            escalation.level = 0
            escalation.loop += 1
        await schedule_step(session, escalation, now + wait, now)

    # -- paging -------------------------------------------------------------------------------------
    # -- acknowledging and ending -------------------------------------------------------------------
    async def acknowledge(self, ticket_id: int, person: PersonRef, *, claim: bool = False,
                          where: str | None = None) -> str:
        """Someone pressed Acknowledge (or Claim) on a page: stop paging and say so.

        Agents may, and so may whoever this ticket's escalations paged: the person themselves, or anyone in a
        paged channel when ``where`` (the target the click came from, e.g. ``slack:channel:C1``) names it. Only
        agents can claim: a paged non-agent's Claim acknowledges. Anyone else gets ``NotAllowed``."""
        desk = self.core
        agent = desk.roster.is_agent(person.address)
        if claim and agent:
            try:
                snapshot = await desk.tickets.claim(ticket_id, person)
            except (AlreadyClaimed, IllegalTransition) as exc:
                said = await self.acknowledge(ticket_id, person)
                return f"{exc} {said}"
            return f"You claimed {snapshot.number}; paging stopped."
        async with desk.db.transaction() as session:
            now = desk.clock.now()
            ticket = (await session.execute(
                select(Ticket).where(Ticket.id == ticket_id).with_for_update())).scalar_one_or_none()
            if ticket is None:
                raise TicketNotFound(f"There is no ticket IT-{ticket_id}.")
            if not agent and not await self._was_paged(session, ticket_id, person, where):
                raise NotAllowed(f"Only IT agents and the people paged about {ticket.number} can acknowledge "
                                 "its pages.")
            actor = await desk.tickets.record_person(session, person)
            running = await self._active(session, ticket_id)
            if not running:
                last = (await session.execute(select(Escalation).where(
                    Escalation.ticket_id == ticket_id, Escalation.acknowledged_at.is_not(None))
                    .order_by(Escalation.id.desc()).limit(1))).scalar_one_or_none()
                if last is not None and last.acknowledged_at is not None:
                    return (f"{ticket.number} was already acknowledged by {last.acknowledged_by} at "
                            f"{self._local(last, last.acknowledged_at)}.")
                return f"Nothing to acknowledge: {ticket.number} isn't escalating."
            await self._acknowledge_all(session, ticket, running, actor, now)
            if claim:
                return (f"Acknowledged {ticket.number}; paging stopped. Only IT agents can claim tickets, so it "
                        "stays in the queue for them.")
            return f"Acknowledged {ticket.number}; paging stopped."

    @staticmethod
    async def _was_paged(session: AsyncSession, ticket_id: int, person: PersonRef, where: str | None) -> bool:
        """Whether an escalation of this ticket paged ``person`` directly, or the channel ``where`` names."""
        mine = {f"{person.platform}:user:{person.user_id}", *([where] if where else [])}
        paged = (await session.execute(select(TicketEvent.payload).where(
            TicketEvent.ticket_id == ticket_id, TicketEvent.kind == "escalation_paged"))).scalars()
        return any(mine.intersection(payload.get("targets") or ()) for payload in paged)

    async def _active(self, session: AsyncSession, ticket_id: int) -> list[Escalation]:
        return list((await session.execute(select(Escalation).where(
            Escalation.ticket_id == ticket_id, Escalation.status == ACTIVE)
            .order_by(Escalation.id).with_for_update())).scalars())

    async def _acknowledge_all(self, session: AsyncSession, ticket: Ticket, running: list[Escalation],
                               actor: Person, now: datetime) -> None:
        for escalation in running:
            escalation.acknowledged_by_id = actor.id
            escalation.acknowledged_by = actor.display_name
            escalation.acknowledged_at = now
            finish(session, escalation, now, "acknowledged", status=ACKNOWLEDGED)
            for target in escalation.paged_pagers.get("targets", []):
                await self.paging.pager_message(session, ticket, target, "acknowledge",
                                          f"esc:{escalation.id}:ack:{target}", now)
            await self.paging.tell_paged(session, ticket, escalation, now,
                                   f"✅ {ticket.number} acknowledged by {actor.display_name} — paging stopped.")
        await self._refresh_cards(session, ticket, now, running[-1].id)

    async def _refresh_cards(self, session: AsyncSession, ticket: Ticket, now: datetime, escalation_id: int) -> None:
        event = TicketEvent(ticket_id=ticket.id, at=now, kind="escalation_card", payload={})
        session.add(event)
        await session.flush()
        for target in triage_targets(self.config):
            await enqueue_message(session, target=target, kind=CARD, ticket_id=ticket.id, now=now,
                                  payload={"ticket_id": ticket.id, "event_id": event.id, "audience": "triage"},
                                  idempotency_key=f"card:{event.id}:{target}")

    async def on_change(self, change: TicketChange) -> None:
        """Claiming acknowledges (by the claimer); resolving or closing ends escalations and their alerts."""
        kind, session, ticket, now = change.event.kind, change.session, change.ticket, change.now
        if kind == "claimed" and change.actor is not None:
            running = await self._active(session, ticket.id)
            if running:
                await self._acknowledge_all(session, ticket, running, change.actor, now)
        elif kind in ("resolved", "closed"):
            for escalation in await self._active(session, ticket.id):
                finish(session, escalation, now, kind)
                await self.paging.tell_paged(session, ticket, escalation, now,
                                       f"✅ {ticket.number} was {kind} — paging stopped.")
            open_alerts = (await session.execute(select(Escalation).where(
                Escalation.ticket_id == ticket.id, Escalation.pagers_closed_at.is_(None))
                .with_for_update())).scalars().all()
            for escalation in open_alerts:
                escalation.pagers_closed_at = now
                for target in escalation.paged_pagers.get("targets", []):
                    await self.paging.pager_message(session, ticket, target, "resolve",
                                              f"esc:{escalation.id}:resolve:{target}", now)

    # -- reading ------------------------------------------------------------------------------------
    async def escalation_state(self, session: AsyncSession, ticket_id: int) -> Text | None:
        """A line for the triage card: "Escalated: level 2 of 3, paging Bob" / "Acknowledged by Alice 10:05"."""
        latest = (await session.execute(select(Escalation).where(Escalation.ticket_id == ticket_id)
                                        .order_by(Escalation.id.desc()).limit(1))).scalar_one_or_none()
        if latest is None:
            return None
        chain = Snapshot.load(latest.chain)
        if latest.status == ACTIVE:
            if latest.pages == 0:
                opens = latest.next_step_at or latest.started_at
                return ("Escalation waiting for its paging window (opens ", self._moment(latest, opens), ")")
            paged_level = (latest.level - 1) % len(chain.levels)
            ticket = await session.get(Ticket, ticket_id)
            names = [await self.paging.name(session, t) for t in
                     (await self.paging.expand(session, ticket, chain.levels[paged_level][0]) if ticket else [])]
            who = f", paging {', '.join(names)}" if names else ""
            return f"Escalated: level {paged_level + 1} of {len(chain.levels)}{who}"
        if latest.status == ACKNOWLEDGED and latest.acknowledged_at is not None:
            return (f"Acknowledged by {latest.acknowledged_by} ", self._moment(latest, latest.acknowledged_at))
        return None

    @staticmethod
    def _moment(escalation: Escalation, at: datetime) -> Moment:
        return Moment(at, escalation.chain.get("zone") or "UTC")

    @staticmethod
    def _local(escalation: Escalation, at: datetime | None) -> str:
        if at is None:
            return "?"
        return at.astimezone(ZoneInfo(escalation.chain.get("zone") or "UTC")).strftime("%H:%M")

    # -- auditing -----------------------------------------------------------------------------------

    async def audit(self, now: datetime | None = None) -> int:
        """Re-queue active escalations with no pending step; returns how many were stuck."""
        return await self.auditor.audit(now)
