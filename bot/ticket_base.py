"""The ticket service's shared machinery: one locked, evented change at a time, subscribers, snapshots, reads."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.config import AppConfig
from bot.messages import NOTICE, TEXT, notice_payload, text_payload
from bot.people import AgentRoster, PersonRef, upsert_person
from bot.ticket_types import (
    DEDUP_TTL,
    OPEN_STATUSES,
    STATUS_LABELS,
    TRANSITIONS,
    IllegalTransition,
    InitialTargets,
    NotAllowed,
    Subscriber,
    TicketChange,
    TicketNotFound,
    TicketSnapshot,
    _Known,
    _Unchanged,
)
from bot.views import Message, Notice
from store.db import Database
from store.intake import IntakeWriter, PeopleWriter
from store.models import Person, Ticket, TicketEvent, ticket_number
from store.queries import enqueue_message, mark_seen

log = logging.getLogger("ithelp.tickets")


class TicketBase:
    """The ticket service's shared machinery: one locked, evented change at a time, subscribers, snapshots, reads."""

    def __init__(self, db: Database, clock: Clock, config: AppConfig, roster: AgentRoster, *,
                 initial_targets: InitialTargets | None = None) -> None:
        """``initial_targets`` (the SLA clock's) lets the fast intake path stamp and quote a new ticket's
        targets before its setup runs."""
        self.db = db
        self.clock = clock
        self.config = config
        self.roster = roster
        self._subscribers: list[Subscriber] = []
        self.initial_targets = initial_targets
        # Who we have already stored, exactly as the platform last described them: the intake path
        # skips the people round trips for them. Rows are never deleted, so a cached id stays valid.
        self._known_people: dict[PersonRef, _Known] = {}
        self._people_erased_as_of: datetime | None = None
        self._intake = IntakeWriter(db)
        self._people = PeopleWriter(db)

    def subscribe(self, subscriber: Subscriber) -> None:
        """Run ``subscriber`` inside the transaction of every ticket change, in registration order."""
        self._subscribers.append(subscriber)

    async def record_person(self, session: AsyncSession, ref: PersonRef) -> Person:
        """The stored row of ``ref``, inserted or refreshed (name, zone, agent flag) on the way."""
        return await upsert_person(session, ref, is_agent=self.roster.is_agent(ref.address), now=self.clock.now())

    def is_agent(self, ref: PersonRef) -> bool:
        return self.roster.is_agent(ref.address)

    async def tell(self, person: PersonRef, view: Notice | Message, *, key: str) -> bool:
        """Owe ``person`` a direct message outside any ticket change (e.g. an answer the platform refused in the
        turn): the outbox delivers it with retries. ``key`` makes a repeat a no-op; True if newly owed."""
        target = f"{person.platform}:user:{person.user_id}"
        if isinstance(view, Notice):
            kind, payload, ticket_id = NOTICE, notice_payload(view), view.ticket_id
        else:
            kind, payload, ticket_id = TEXT, text_payload(view), None
        async with self.db.transaction() as session:
            return await enqueue_message(session, target=target, kind=kind, payload=payload, ticket_id=ticket_id,
                                         idempotency_key=key[:200], now=self.clock.now())

    async def first_sighting(self, source: str, key: str) -> bool:
        """True the first time (``source``, ``key``) is seen within the dedup window: lets an edge stay silent
        on a repeat of something it already answered (a retried reaction, the same person reacting twice)."""
        async with self.db.transaction() as session:
            return await mark_seen(session, source=source, key=key, expires_at=self.clock.now() + DEDUP_TTL)

    async def get(self, ticket_id: int) -> TicketSnapshot:
        async with self.db.reading() as session:
            return await self._snapshot(session, await self._load(session, ticket_id, lock=False))

    async def tickets_of(self, person: PersonRef, *, open_only: bool = False, limit: int = 20) -> list[TicketSnapshot]:
        async with self.db.reading() as session:
            owner = (await session.execute(select(Person).where(
                Person.platform == person.platform, Person.platform_user_id == person.user_id))).scalar_one_or_none()
            if owner is None:
                return []
            query = select(Ticket).where(Ticket.requester_id == owner.id)
            if open_only:
                query = query.where(Ticket.status.in_(OPEN_STATUSES))
            rows = (await session.execute(query.order_by(Ticket.id.desc()).limit(limit))).scalars().all()
            return [await self._snapshot(session, row) for row in rows]

    def _require_agent(self, person: PersonRef, what: str) -> None:
        if not self.roster.is_agent(person.address):
            raise NotAllowed(f"Only IT agents can {what}.")

    @staticmethod
    def _check(ticket: Ticket, target: str) -> None:
        if target not in TRANSITIONS.get(ticket.status, frozenset()):
            raise IllegalTransition(
                f"{ticket.number} is {STATUS_LABELS[ticket.status]}; it can't become "
                f"{STATUS_LABELS.get(target, target)} from there."
            )

    @staticmethod
    def _auto_assign(ticket: Ticket, actor: Person) -> None:
        # An agent who works an unclaimed ticket (starts it, resolves it) owns it.
        if ticket.assignee_id is None:
            ticket.assignee_id = actor.id

    async def _first_response(self, ticket: Ticket, now: datetime) -> None:
        if ticket.first_response_at is None:
            ticket.first_response_at = now

    async def _load(self, session: AsyncSession, ticket_id: int, *, lock: bool) -> Ticket:
        query = select(Ticket).where(Ticket.id == ticket_id)
        if lock:
            query = query.with_for_update()
        ticket = (await session.execute(query)).scalar_one_or_none()
        if ticket is None:
            raise TicketNotFound(f"There is no ticket {ticket_number(ticket_id)}.")
        if lock and ticket.setup_pending:
            # A change reached a fast-intake ticket before the engine set it up: do it now, under the lock.
            ticket.setup_pending = False
            await self._emit_opened(session, ticket)
        return ticket

    async def _emit_opened(self, session: AsyncSession, ticket: Ticket) -> None:
        requester = await session.get(Person, ticket.requester_id)
        payload: dict[str, Any] = {"summary": ticket.summary, "priority": ticket.priority, "category": ticket.category,
                                   "origin": ticket.origin_platform}
        # Dated when the person asked, not when setup ran: SLA clocks and reports count from there.
        await self._emit(session, ticket, "opened", requester, payload, previous_status=None, at=ticket.created_at)

    async def _change(
        self,
        ticket_id: int,
        actor_ref: PersonRef | None,
        change: Callable[[AsyncSession, Ticket, Any], Awaitable[tuple[str, dict[str, Any]]]],
    ) -> TicketSnapshot:
        async with self.db.transaction() as session:
            ticket = await self._load(session, ticket_id, lock=True)
            actor = await self.record_person(session, actor_ref) if actor_ref else None
            previous = ticket.status
            try:
                kind, payload = await change(session, ticket, actor)
            except _Unchanged:
                return await self._snapshot(session, ticket)
            ticket.updated_at = self.clock.now()
            ticket.version += 1
            await self._emit(session, ticket, kind, actor, payload, previous_status=previous)
            return await self._snapshot(session, ticket)

    async def _emit(
        self, session: AsyncSession, ticket: Ticket, kind: str, actor: Person | None, payload: dict[str, Any],
        *, previous_status: str | None, at: datetime | None = None,
    ) -> TicketEvent:
        now = at or self.clock.now()
        if previous_status is not None and previous_status != ticket.status:
            payload = {**payload, "from_status": previous_status, "to_status": ticket.status}
        event = TicketEvent(ticket_id=ticket.id, at=now, actor_id=actor.id if actor else None, kind=kind,
                            payload=payload)
        session.add(event)
        await session.flush()
        requester = await session.get(Person, ticket.requester_id)
        assert requester is not None
        assignee = await session.get(Person, ticket.assignee_id) if ticket.assignee_id else None
        change = TicketChange(session=session, now=now, ticket=ticket, event=event, actor=actor,
                              requester=requester, assignee=assignee, previous_status=previous_status,
                              config=self.config)
        for subscriber in self._subscribers:
            await subscriber(change)
        await session.flush()
        return event

    async def _snapshot(self, session: AsyncSession, ticket: Ticket) -> TicketSnapshot:
        requester = await session.get(Person, ticket.requester_id)
        assert requester is not None
        assignee = await session.get(Person, ticket.assignee_id) if ticket.assignee_id else None
        return TicketSnapshot(
            id=ticket.id, number=ticket.number, summary=ticket.summary, status=ticket.status,
            priority=ticket.priority, category=ticket.category, requester_address=requester.address,
            requester_name=requester.display_name, requester_timezone=requester.timezone,
            assignee_address=assignee.address if assignee else None,
            assignee_name=assignee.display_name if assignee else None, created_at=ticket.created_at,
            first_response_due=ticket.first_response_due, resolution_due=ticket.resolution_due,
            next_update_due=ticket.next_update_due, calendar=ticket.calendar,
        )

    def _calendar_for(self, priority: str) -> str:
        policy = self.config.sla_policy(priority)
        return policy.calendar if policy and policy.calendar else self.config.default_calendar


__all__ = ["TicketBase"]
