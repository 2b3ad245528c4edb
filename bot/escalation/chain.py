"""An escalation's state machine without I/O: the chain snapshot, its paging window, its steps and end."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import EscalationChain
from store.escalation_models import Escalation
from store.models import Ticket, TicketEvent
from store.queries import schedule_timer

STEP_TIMER = "escalation.step"
AUDIT_TIMER = "escalation.audit"
SUMMARY_TIMER = "escalation.summary"
ACTIVE, ACKNOWLEDGED, FINISHED = "active", "acknowledged", "finished"
TRIGGERS = ("warn", "breach", "first_response", "update", "resolution")
METRIC_LABELS = {"first_response": "first response", "resolution": "resolution", "update": "update"}
PAGER_PREFIXES = ("pagerduty", "opsgenie", "webhook")
_AUDIT_GRACE = timedelta(seconds=30)


def new_token() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Snapshot:
    """The chain as copied onto the escalation when it started."""

    levels: list[tuple[list[str], timedelta]]
    repeat: int
    window: tuple[time, time] | None
    zone: ZoneInfo

    @classmethod
    def load(cls, data: dict[str, Any]) -> Snapshot:
        window = data.get("only_between")
        return cls(
            levels=[(list(level["notify"]), timedelta(seconds=float(level["wait"]))) for level in data["levels"]],
            repeat=int(data.get("repeat", 0)),
            window=(time.fromisoformat(window[0]), time.fromisoformat(window[1])) if window else None,
            zone=ZoneInfo(data.get("zone") or "UTC"),
        )

    def next_open(self, now: datetime) -> datetime:
        """``now`` if inside the paging window (or there is none), else when the window next opens (UTC)."""
        if self.window is None:
            return now
        start, end = self.window
        local = now.astimezone(self.zone)
        clock = local.time().replace(tzinfo=None)
        inside = (start <= clock < end) if start < end else (clock >= start or clock < end)
        if inside or start == end:
            return now
        opening = datetime.combine(local.date(), start, tzinfo=self.zone)
        if opening <= local:
            opening = datetime.combine(local.date() + timedelta(days=1), start, tzinfo=self.zone)
        return max(now, opening.astimezone(UTC))


def snapshot_chain(chain: EscalationChain, zone: str) -> dict[str, Any]:
    """A JSON copy of ``chain`` (waits in seconds, window as HH:MM) with the zone it is read in."""
    return {
        "levels": [{"notify": list(level.notify), "wait": level.wait.total_seconds()} for level in chain.levels],
        "repeat": chain.repeat,
        "only_between": [chain.only_between[0].isoformat("minutes"), chain.only_between[1].isoformat("minutes")]
        if chain.only_between else None,
        "calendar": chain.calendar,
        "zone": zone,
    }


async def schedule_step(session: AsyncSession, escalation: Escalation, due: datetime, now: datetime) -> None:
    """Arm the escalation's next step at ``due`` under a fresh run token (older step timers go stale)."""
    escalation.run_token = new_token()
    escalation.next_step_at = due
    await schedule_timer(session, kind=STEP_TIMER, due_at=due, now=now, ticket_id=escalation.ticket_id,
                         payload={"escalation_id": escalation.id, "token": escalation.run_token},
                         dedup_key=f"esc:{escalation.id}:{escalation.run_token}")


def finish(session: AsyncSession, escalation: Escalation, now: datetime, reason: str, *,
           status: str = FINISHED) -> None:
    """End the escalation (no step may page after this) and record why."""
    escalation.status = status
    escalation.active_key = str(escalation.id)
    escalation.run_token = new_token()
    escalation.next_step_at = None
    escalation.finished_at = now
    escalation.finish_reason = reason
    session.add(TicketEvent(ticket_id=escalation.ticket_id, at=now, kind=f"escalation_{status}",
                            payload={"escalation_id": escalation.id, "reason": reason}))


def page_role(escalation: Escalation) -> str:
    """The message_refs role of this escalation's chat page to one target (fits the 32-character column)."""
    return f"page:{escalation.id}"


def due_of(ticket: Ticket, metric: str | None) -> datetime | None:
    """When the ticket's ``metric`` target is (was) due."""
    return {"first_response": ticket.first_response_due, "resolution": ticket.resolution_due,
            "update": ticket.next_update_due}.get(metric or "")
