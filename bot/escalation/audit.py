"""The safety net: every active escalation must have a pending step; a stuck one is re-queued."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import String, cast, exists, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import Core
from bot.engine import TimerRun
from bot.escalation.chain import (
    ACTIVE,
    AUDIT_TIMER,
    schedule_step,
)
from store.escalation_models import Escalation
from store.models import Timer
from store.queries import schedule_timer

log = logging.getLogger("ithelp.escalation")


class EscalationAudit:
    """Runs on a timer while escalations are active and re-queues any that lost its step timer."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.config = core.config
        self._audit_slot_seen = -1

    async def ensure(self, session: AsyncSession, now: datetime) -> None:
        every = self.config.escalation.audit_every
        slot = int(now.timestamp() // every.total_seconds()) + 1
        if slot == self._audit_slot_seen:
            return
        due = datetime.fromtimestamp(slot * every.total_seconds(), UTC)
        if await schedule_timer(session, kind=AUDIT_TIMER, due_at=due, now=now, dedup_key=f"esc-audit:{slot}"):
            session.info["audit_slot_inserted"] = slot
        elif session.info.get("audit_slot_inserted") != slot:
            # Already there and committed (an insert in flight elsewhere would have made ours wait for
            # it; our own, in a transaction shared by a group of breaches, may still roll back): the
            # rest of a breach storm's escalations in this slot need not ask again.
            self._audit_slot_seen = slot

    async def on_audit(self, run: TimerRun) -> None:
        remaining, _stuck = await self._audit(run.session, run.now)
        if remaining:
            await self.ensure(run.session, run.now)

    async def audit(self, now: datetime | None = None) -> int:
        """Re-queue active escalations with no pending step; returns how many were stuck."""
        async with self.core.db.transaction() as session:
            return (await self._audit(session, now or self.core.clock.now()))[1]

    async def _audit(self, session: AsyncSession, now: datetime) -> tuple[bool, int]:
        """Check every active escalation has a pending step timer; returns (any still active, re-queued)."""
        # One anti-join, not a lookup per escalation: a breach storm leaves thousands active at once.
        step_key = literal("esc:") + cast(Escalation.id, String) + literal(":") + Escalation.run_token
        query = select(Escalation).where(Escalation.status == ACTIVE, ~exists().where(
            Timer.dedup_key == step_key, Timer.done_at.is_(None))).order_by(Escalation.id)
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            # A step in progress holds its escalation: skip it, its own transaction schedules the next step.
            query = query.with_for_update(skip_locked=True, of=Escalation)
        stuck = (await session.execute(query)).scalars().all()
        for escalation in stuck:
            log.warning("escalation %s of ticket %s had no pending step; re-queued", escalation.id,
                        escalation.ticket_id)
            self.core.metrics.escalations_stuck.inc()
            due = escalation.next_step_at if escalation.next_step_at and escalation.next_step_at > now else now
            await schedule_step(session, escalation, due, now)
        active = await session.scalar(select(exists().where(Escalation.status == ACTIVE)))
        return bool(active), len(stuck)
