"""The rows an SLA timer works on: its ticket locked with its requester, the ticket's SLA marks and events.

Statements are built once: a statement built per call spends more CPU on construction and cache keys than
the database spends running it, and a breach storm runs these many times a minute.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.engine import TimerRun
from bot.sla_rules import SLA_BREACHED, SLA_WARNING, UPDATE
from store.models import Person, Ticket, TicketEvent, Timer

Mark = tuple[str, str, str]


def marks_of(events: Iterable[TicketEvent]) -> set[Mark]:
    # A first-response/resolution target is warned/breached once per ticket; each update due once.
    return {(e.kind, e.payload.get("metric", ""),
             (e.payload.get("due") or "") if e.payload.get("metric") == UPDATE else "") for e in events}


def is_current(timer: Timer, due: datetime | None) -> bool:
    # A timer from before a re-schedule that slipped past cancellation carries an old due time.
    stamped = timer.payload.get("due")
    return due is not None and stamped is not None and datetime.fromisoformat(stamped) == due


# The requester comes along with the ticket (pages and updates name them), in the same round trip.
_WITH_REQUESTER = select(Ticket, Person).join(Person, Person.id == Ticket.requester_id).with_for_update(of=Ticket)
_TICKET_LOCKED_WITH_REQUESTER = _WITH_REQUESTER.where(Ticket.id == bindparam("ticket_id"))
_TICKETS_LOCKED_WITH_REQUESTERS = (
    _WITH_REQUESTER.where(Ticket.id.in_(bindparam("ticket_ids", expanding=True))).order_by(Ticket.id))
_EVENTS = select(TicketEvent).where(TicketEvent.ticket_id == bindparam("ticket_id")).order_by(TicketEvent.id)
_EVENTS_OF_KINDS = _EVENTS.where(TicketEvent.kind.in_(bindparam("kinds", expanding=True)))
_MARKS_OF_TICKETS = select(TicketEvent).where(TicketEvent.ticket_id.in_(bindparam("ticket_ids", expanding=True)),
                                              TicketEvent.kind.in_((SLA_WARNING, SLA_BREACHED)))


@dataclass(frozen=True)
class LockedTicket:
    """A timer's ticket, locked, with its requester and (when read with it) its SLA marks.

    The caller keeps it referenced: the session's identity map holds objects weakly, and a
    `session.get(Person, …)` later in the transaction only skips its query while the object lives."""

    ticket: Ticket
    requester: Person
    marks: set[Mark] | None = None


async def locked_ticket(run: TimerRun) -> LockedTicket | None:
    if run.timer.ticket_id is None:
        return None
    row = (await run.session.execute(_TICKET_LOCKED_WITH_REQUESTER, {"ticket_id": run.timer.ticket_id})).first()
    return LockedTicket(row[0], row[1]) if row is not None else None


async def lock_tickets_of(session: AsyncSession, timers: Sequence[Timer]) -> dict[int, LockedTicket]:
    # A group of breach timers (one per ticket): every ticket locked in one statement, in id order,
    # then their marks in one more, instead of two statements per breach.
    ticket_ids = sorted({timer.ticket_id for timer in timers if timer.ticket_id is not None})
    locked = {ticket.id: (ticket, person) for ticket, person in
              (await session.execute(_TICKETS_LOCKED_WITH_REQUESTERS, {"ticket_ids": ticket_ids})).tuples()}
    events: dict[int, list[TicketEvent]] = {}
    for event in (await session.execute(_MARKS_OF_TICKETS, {"ticket_ids": ticket_ids})).scalars():
        events.setdefault(event.ticket_id, []).append(event)
    return {timer.id: LockedTicket(*locked[timer.ticket_id], marks=marks_of(events.get(timer.ticket_id, ())))
            for timer in timers if timer.ticket_id in locked}


async def load_events(session: AsyncSession, ticket_id: int, kinds: Sequence[str] = ()) -> list[TicketEvent]:
    if kinds:
        result = await session.execute(_EVENTS_OF_KINDS, {"ticket_id": ticket_id, "kinds": list(kinds)})
    else:
        result = await session.execute(_EVENTS, {"ticket_id": ticket_id})
    return list(result.scalars())


async def cancel_unlocked(session: AsyncSession, timer_ids: list[int], now: datetime) -> None:
    # A timer another replica is running holds its row lock while it waits for the ticket we hold:
    # waiting for that row would deadlock. Skip it; its handler finds its due time stale and does nothing.
    unlocked = select(Timer.id).where(Timer.id.in_(timer_ids), Timer.done_at.is_(None))
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        unlocked = unlocked.with_for_update(skip_locked=True)
    await session.execute(update(Timer).where(Timer.id.in_(unlocked.scalar_subquery()))
                          .values(done_at=now, outcome="cancelled").execution_options(synchronize_session=False))


async def add_event(session: AsyncSession, ticket: Ticket, kind: str, now: datetime,
                     payload: dict[str, Any], *, flush: bool = True) -> TicketEvent:
    # flush=False: the caller needs no id yet, and the row can share a later flush with others.
    event = TicketEvent(ticket_id=ticket.id, at=now, actor_id=None, kind=kind, payload=payload)
    session.add(event)
    if flush:
        await session.flush()
    return event


__all__ = ["LockedTicket", "Mark", "add_event", "cancel_unlocked", "is_current", "load_events", "lock_tickets_of",
           "locked_ticket", "marks_of"]
