"""The ticket lifecycle: one platform-neutral state machine every adapter drives.

Each change runs in one transaction that locks the ticket, checks the transition, writes a
``TicketEvent`` and lets subscribers (notifications, SLA clock, escalation, surveys) add the outbox
and timer rows the change implies — so a change and its consequences commit or vanish together.
The one exception is a ticket opened from chat (``defer_setup``): its row commits first so the person
is answered at once, flagged ``setup_pending``; its opening is then written exactly once, by whichever
replica's engine claims the flag first, or by the next change to the ticket.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.config import AppConfig
from bot.messages import NOTICE, TEXT, notice_payload, text_payload
from bot.people import AgentRoster, PersonRef, upsert_person
from bot.text import without_controls
from bot.views import Message, Notice
from store.db import Database
from store.intake import IntakeWriter, PeopleWriter
from store.models import Person, Ticket, TicketEvent, ticket_number
from store.queries import claim_pending_setup, enqueue_message, mark_seen

NEW, CLAIMED, IN_PROGRESS, WAITING, RESOLVED, CLOSED, REOPENED = (
    "new", "claimed", "in_progress", "waiting_on_requester", "resolved", "closed", "reopened",
)
OPEN_STATUSES = (NEW, CLAIMED, IN_PROGRESS, WAITING, REOPENED)
STATUS_LABELS = {
    NEW: "new", CLAIMED: "claimed", IN_PROGRESS: "in progress", WAITING: "waiting on the requester",
    RESOLVED: "resolved", CLOSED: "closed", REOPENED: "reopened",
}
"""How agents (and the audit trail) read a status."""
REQUESTER_STATUS_LABELS = {**STATUS_LABELS, WAITING: "waiting on you"}
"""How the requester reads their own ticket's status."""
TRANSITIONS: dict[str, frozenset[str]] = {
    NEW: frozenset({CLAIMED, IN_PROGRESS, WAITING, RESOLVED}),
    CLAIMED: frozenset({IN_PROGRESS, WAITING, RESOLVED, NEW}),
    IN_PROGRESS: frozenset({WAITING, RESOLVED, NEW}),
    WAITING: frozenset({IN_PROGRESS, RESOLVED, NEW}),
    RESOLVED: frozenset({CLOSED, REOPENED}),
    REOPENED: frozenset({CLAIMED, IN_PROGRESS, WAITING, RESOLVED}),
    CLOSED: frozenset({REOPENED}),
}
MAX_SUMMARY = 300
MAX_DESCRIPTION = 40_000
DEDUP_TTL = timedelta(days=2)


class TicketError(Exception):
    """A request the desk can't carry out; ``str()`` is a sentence to show the person as is."""


class TicketNotFound(TicketError):
    pass


class IllegalTransition(TicketError):
    pass


class NotAllowed(TicketError):
    pass


class AlreadyClaimed(TicketError):
    def __init__(self, number: str, owner: str) -> None:
        super().__init__(f"{number} is already claimed by {owner}.")
        self.owner = owner


class InvalidInput(TicketError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Origin:
    """Where a ticket came from, so replies can go back there and cards can link to it."""

    platform: str
    conversation: str | None = None
    thread: str | None = None
    link: str | None = None


@dataclass(frozen=True)
class TicketSnapshot:
    """A detached, read-only view of a ticket after a change (safe to use outside the session)."""

    id: int
    number: str
    summary: str
    status: str
    priority: str
    category: str | None
    requester_address: str
    requester_name: str
    requester_timezone: str | None
    assignee_address: str | None
    assignee_name: str | None
    created_at: datetime
    first_response_due: datetime | None
    resolution_due: datetime | None
    next_update_due: datetime | None
    calendar: str

    @property
    def status_label(self) -> str:
        return STATUS_LABELS.get(self.status, self.status)

    @property
    def requester_status_label(self) -> str:
        return REQUESTER_STATUS_LABELS.get(self.status, self.status)


@dataclass
class TicketChange:
    """What subscribers see: the change, inside its transaction."""

    session: AsyncSession
    now: datetime
    ticket: Ticket
    event: TicketEvent
    actor: Person | None
    requester: Person
    assignee: Person | None
    previous_status: str | None
    config: AppConfig
    extra: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[TicketChange], Awaitable[None]]
# (priority, calendar, opened at) -> (first response due, resolution due, next update due) of a new ticket.
InitialTargets = Callable[[str, str, datetime], tuple[datetime | None, datetime | None, datetime | None]]
_KNOWN_PEOPLE_LIMIT = 50_000
_LOCK_CONFLICTS = ("40P01", "40001")  # PostgreSQL: deadlock detected, serialization failure
log = logging.getLogger("ithelp.tickets")
_Known = tuple[bool, int, str, str | None]  # is agent, person id, display name, time zone


@dataclass(frozen=True)
class OpenResult:
    ticket: TicketSnapshot
    created: bool


class TicketService:
    """Open, claim, move, comment on, resolve, reopen and close tickets."""

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

    # -- people -------------------------------------------------------------------------------------
    async def record_person(self, session: AsyncSession, ref: PersonRef) -> Person:
        """The stored row of ``ref``, inserted or refreshed (name, zone, agent flag) on the way."""
        return await upsert_person(session, ref, is_agent=self.roster.is_agent(ref.address), now=self.clock.now())

    def is_agent(self, ref: PersonRef) -> bool:
        return self.roster.is_agent(ref.address)

    # -- intake -------------------------------------------------------------------------------------
    async def open(
        self,
        requester: PersonRef,
        summary: str,
        *,
        origin: Origin,
        description: str = "",
        category: str | None = None,
        priority: str | None = None,
        dedup: tuple[str, str] | None = None,
        defer_setup: bool = False,
    ) -> OpenResult:
        """Open a ticket. ``dedup`` = (source, event id): a repeat of the same inbound event opens nothing.

        With ``defer_setup`` only the ticket row is written before returning (a few statements, so a
        chat platform's 3-second ack is never at risk); its "opened" event, SLA timers and cards follow
        from :meth:`finish_setup`, which the engine runs straight after and any replica resumes.
        """
        summary, description = _clean_intake(summary, description)
        priority = priority or self.config.default_priority
        if priority not in self.config.priorities:
            raise InvalidInput(f"{priority} is not a priority here; use {', '.join(self.config.priorities)}.",
                               field="priority")
        if defer_setup:
            known = self._known(requester) or await self._store_person(requester)
            snapshot = await self._open_pending(requester, known, summary, description, category, priority, origin,
                                                dedup)
            if snapshot is not None:
                return OpenResult(snapshot, created=True)
            async with self.db.reading() as session:  # a repeat: the ticket the first one opened
                return await self._repeat(session, dedup)
        async with self.db.transaction() as session:
            now = self.clock.now()
            if dedup is not None and not await mark_seen(
                session, source=dedup[0], key=dedup[1], expires_at=now + DEDUP_TTL
            ):
                return await self._repeat(session, dedup)
            return OpenResult(await self._insert_and_set_up(session, requester, summary, description, category,
                                                            priority, origin, dedup, now), True)

    async def open_in(self, session: AsyncSession, requester: PersonRef, summary: str, *, origin: Origin,
                      dedup: tuple[str, str], description: str = "", category: str | None = None,
                      priority: str | None = None) -> TicketSnapshot:
        """Open a ticket inside the caller's transaction (a held request filed by its timer or by a click);
        ``dedup`` becomes its intake key, and a priority no longer configured falls back to the default."""
        summary, description = _clean_intake(summary, description)
        priority = priority if priority in self.config.priorities else self.config.default_priority
        return await self._insert_and_set_up(session, requester, summary, description, category, priority, origin,
                                             dedup, self.clock.now())

    async def _repeat(self, session: AsyncSession, dedup: tuple[str, str] | None) -> OpenResult:
        existing = await self._ticket_for_dedup(session, dedup) if dedup is not None else None
        if existing is None:
            raise TicketError("That request was already handled.")
        return OpenResult(existing, created=False)

    async def _insert_and_set_up(
        self, session: AsyncSession, requester: PersonRef, summary: str, description: str, category: str | None,
        priority: str, origin: Origin, dedup: tuple[str, str] | None, now: datetime,
    ) -> TicketSnapshot:
        person = await self.record_person(session, requester)
        ticket = Ticket(
            requester_id=person.id, origin_platform=origin.platform,
            origin_conversation=origin.conversation, origin_thread=origin.thread,
            origin_link=origin.link, summary=summary, description=description, category=category,
            priority=priority, status=NEW, calendar=self._calendar_for(priority),
            created_at=now, updated_at=now, paused_seconds=0.0, updates_muted=False,
            reopen_count=0, version=1, intake_key=f"{dedup[0]}:{dedup[1]}" if dedup else None,
        )
        session.add(ticket)
        await session.flush()
        await self._emit_opened(session, ticket)
        return await self._snapshot(session, ticket)

    async def _open_pending(
        self, requester: PersonRef, known: _Known, summary: str, description: str, category: str | None,
        priority: str, origin: Origin, dedup: tuple[str, str] | None,
    ) -> TicketSnapshot | None:
        # The hot path: one row in the next group commit. None when ``dedup`` says it's a repeat.
        now = self.clock.now()
        values = self._pending_row(known, summary, description, category, priority, origin, dedup, now)
        marker = None if dedup is None else {"source": dedup[0], "key": dedup[1], "expires_at": now + DEDUP_TTL}
        ticket_id = await self._intake.write(values, marker)
        if ticket_id is None:
            return None
        return self._pending_snapshot(ticket_id, values, requester, known)

    async def _store_person(self, requester: PersonRef) -> _Known:
        # Someone new: their row goes in with the others arriving now (a shared transaction, store/intake.py).
        # Someone stored before (described differently, or not in our cache): read and update, on their own.
        is_agent, now = self.roster.is_agent(requester.address), self.clock.now()
        name = requester.display_name or requester.user_id
        person_id = await self._people.write({
            "platform": requester.platform, "platform_user_id": requester.user_id, "display_name": name,
            "timezone": requester.timezone, "email": requester.email, "is_agent": is_agent, "created_at": now,
            "updated_at": now})
        if person_id is not None:
            known: _Known = (is_agent, person_id, name, requester.timezone)
        else:
            async with self.db.transaction() as session:
                person = await self.record_person(session, requester)
                await session.flush()
                known = (person.is_agent, person.id, person.display_name, person.timezone)
        self._remember(requester, known)
        return known

    def _pending_row(self, known: _Known, summary: str, description: str, category: str | None, priority: str,
                     origin: Origin, dedup: tuple[str, str] | None, now: datetime) -> dict[str, Any]:
        calendar = self._calendar_for(priority)
        first_due, resolution_due, update_due = (
            self.initial_targets(priority, calendar, now) if self.initial_targets else (None, None, None))
        return {
            "requester_id": known[1], "origin_platform": origin.platform, "origin_conversation": origin.conversation,
            "origin_thread": origin.thread, "origin_link": origin.link, "summary": summary,
            "description": description, "category": category, "priority": priority, "status": NEW,
            "calendar": calendar, "created_at": now, "updated_at": now, "paused_seconds": 0.0,
            "updates_muted": False, "reopen_count": 0, "version": 1, "setup_pending": True,
            "intake_key": f"{dedup[0]}:{dedup[1]}" if dedup else None, "first_response_due": first_due,
            "resolution_due": resolution_due, "next_update_due": update_due,
        }

    @staticmethod
    def _pending_snapshot(ticket_id: int, row: dict[str, Any], requester: PersonRef, known: _Known) -> TicketSnapshot:
        return TicketSnapshot(
            id=ticket_id, number=ticket_number(ticket_id), summary=row["summary"], status=row["status"],
            priority=row["priority"], category=row["category"], requester_address=requester.address,
            requester_name=known[2], requester_timezone=known[3], assignee_address=None, assignee_name=None,
            created_at=row["created_at"], first_response_due=row["first_response_due"],
            resolution_due=row["resolution_due"], next_update_due=row["next_update_due"], calendar=row["calendar"],
        )

    async def _forget_erased_people(self) -> None:
        # Erasure and retention (another process, often) give an erased person's row a pseudonymous id;
        # a cached id would file their next ticket under that row. The engine runs this on every tick, so
        # the cache outlives an erasure by one tick at most.
        async with self.db.reading() as session:
            latest = await session.scalar(select(func.max(Person.anonymised_at)))
        if latest != self._people_erased_as_of:
            self._people_erased_as_of = latest
            self._known_people.clear()

    def _known(self, ref: PersonRef) -> _Known | None:
        known = self._known_people.get(ref)
        return known if known is not None and known[0] == self.roster.is_agent(ref.address) else None

    def _remember(self, ref: PersonRef, known: _Known) -> None:
        # Called only after the commit: a rolled-back insert must not leave a phantom id behind.
        if len(self._known_people) >= _KNOWN_PEOPLE_LIMIT:
            self._known_people.clear()
        self._known_people[ref] = known

    async def finish_setup(self, limit: int = 50) -> int:
        """Write the "opened" consequences of fast-intake tickets (this replica's or a crashed one's).

        Each ticket is set up exactly once: the claim flips ``setup_pending`` in the same transaction
        that writes the event, timers and outbox rows. Returns how many tickets were set up.
        """
        try:
            await self._forget_erased_people()
            return await self._finish_setup(limit)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) not in _LOCK_CONFLICTS:
                raise
            # Another replica's setup touched the same rows first; ours rolled back whole and the
            # tickets are still pending, so the next pass (here or there) sets them up.
            log.warning("setting up new tickets collided with another replica (%s); will retry", exc.orig)
            return 0

    async def _finish_setup(self, limit: int) -> int:
        async with self.db.transaction() as session:
            ids = await claim_pending_setup(session, limit=limit)
            if ids:
                # By requester: rows keyed per person (digest timers) are then taken in the same order by
                # every replica, so two setups can queue behind each other but never deadlock.
                tickets = (await session.execute(
                    select(Ticket).where(Ticket.id.in_(ids)).order_by(Ticket.requester_id, Ticket.id))).scalars().all()
                # Into the session's identity map in one query, so each ticket's setup finds its requester there.
                (await session.execute(select(Person).where(
                    Person.id.in_({t.requester_id for t in tickets})))).scalars().all()
                for ticket in tickets:
                    await self._emit_opened(session, ticket)
        return len(ids)

    async def _emit_opened(self, session: AsyncSession, ticket: Ticket) -> None:
        requester = await session.get(Person, ticket.requester_id)
        payload: dict[str, Any] = {"summary": ticket.summary, "priority": ticket.priority, "category": ticket.category,
                                   "origin": ticket.origin_platform}
        # Dated when the person asked, not when setup ran: SLA clocks and reports count from there.
        await self._emit(session, ticket, "opened", requester, payload, previous_status=None, at=ticket.created_at)

    async def _ticket_for_dedup(self, session: AsyncSession, dedup: tuple[str, str]) -> TicketSnapshot | None:
        ticket = (await session.execute(
            select(Ticket).where(Ticket.intake_key == f"{dedup[0]}:{dedup[1]}"))).scalar_one_or_none()
        return await self._snapshot(session, ticket) if ticket else None

    def _calendar_for(self, priority: str) -> str:
        policy = self.config.sla_policy(priority)
        return policy.calendar if policy and policy.calendar else self.config.default_calendar

    # -- agent actions ------------------------------------------------------------------------------
    async def claim(self, ticket_id: int, agent: PersonRef) -> TicketSnapshot:
        """Assign the ticket to ``agent``. Of two concurrent claims exactly one wins; the other
        gets ``AlreadyClaimed`` naming the owner."""
        self._require_agent(agent, "claim tickets")
        async with self.db.transaction() as session:
            now = self.clock.now()
            if await session.scalar(select(Ticket.setup_pending).where(Ticket.id == ticket_id)):
                await self._load(session, ticket_id, lock=True)  # sets it up first: "opened" precedes "claimed"
            person = await self.record_person(session, agent)
            # The conditional UPDATE is the arbiter: only a row still unassigned and claimable changes.
            result = await session.execute(
                update(Ticket)
                .where(Ticket.id == ticket_id, Ticket.assignee_id.is_(None), Ticket.status.in_((NEW, REOPENED)))
                .values(assignee_id=person.id, status=CLAIMED, updated_at=now, version=Ticket.version + 1)
                .returning(Ticket.status)
                .execution_options(synchronize_session=False)
            )
            won = result.first() is not None
            ticket = await self._load(session, ticket_id, lock=not won)
            if not won:
                if ticket.assignee_id is not None:
                    owner = await session.get(Person, ticket.assignee_id)
                    if owner is not None and owner.id == person.id:
                        return await self._snapshot(session, ticket)  # a double click changes nothing
                    raise AlreadyClaimed(ticket.number, owner.display_name if owner else "someone")
                raise IllegalTransition(
                    f"{ticket.number} is {STATUS_LABELS[ticket.status]}; it can't be claimed now.")
            await session.refresh(ticket)
            previous = REOPENED if ticket.reopen_count and ticket.resolved_at is None else NEW
            await self._first_response(ticket, now)
            await self._emit(session, ticket, "claimed", person, {"assignee": person.address},
                             previous_status=previous)
            return await self._snapshot(session, ticket)

    async def unassign(self, ticket_id: int, agent: PersonRef) -> TicketSnapshot:
        self._require_agent(agent, "unassign tickets")

        async def change(session: AsyncSession, ticket: Ticket, actor: Person) -> tuple[str, dict[str, Any]]:
            if ticket.assignee_id is None:
                raise IllegalTransition(f"{ticket.number} isn't assigned to anyone.")
            self._check(ticket, NEW)
            ticket.assignee_id = None
            ticket.status = REOPENED if ticket.reopen_count else NEW
            return "unassigned", {}

        return await self._change(ticket_id, agent, change)

    async def set_status(
        self, ticket_id: int, agent: PersonRef, status: str, note: str | None = None
    ) -> TicketSnapshot:
        """Move the ticket to ``in_progress`` or ``waiting_on_requester`` (use resolve/close/reopen for the rest)."""
        self._require_agent(agent, "change a ticket's status")
        if status not in (IN_PROGRESS, WAITING):
            label = STATUS_LABELS.get(status, status)
            raise IllegalTransition(f"Use resolve, close or reopen to make a ticket {label}.")

        async def change(session: AsyncSession, ticket: Ticket, actor: Person) -> tuple[str, dict[str, Any]]:
            if ticket.status == status:
                raise _Unchanged
            self._check(ticket, status)
            self._auto_assign(ticket, actor)
            ticket.status = status
            return "status_changed", {"status": status, "note": note}

        return await self._change(ticket_id, agent, change)

    async def set_priority(self, ticket_id: int, agent: PersonRef, priority: str) -> TicketSnapshot:
        self._require_agent(agent, "change priorities")
        if priority not in self.config.priorities:
            raise InvalidInput(f"{priority} is not a priority here; use {', '.join(self.config.priorities)}.",
                               field="priority")

        async def change(session: AsyncSession, ticket: Ticket, actor: Person) -> tuple[str, dict[str, Any]]:
            if not ticket.is_open:
                raise IllegalTransition(f"{ticket.number} is {STATUS_LABELS[ticket.status]}; reopen it first.")
            if ticket.priority == priority:
                raise _Unchanged
            old = ticket.priority
            ticket.priority = priority
            ticket.calendar = self._calendar_for(priority)
            return "priority_changed", {"from": old, "to": priority}

        return await self._change(ticket_id, agent, change)

    async def resolve(self, ticket_id: int, agent: PersonRef, note: str) -> TicketSnapshot:
        self._require_agent(agent, "resolve tickets")
        note = _clean_text(note, "resolution note", MAX_DESCRIPTION, required=True)

        async def change(session: AsyncSession, ticket: Ticket, actor: Person) -> tuple[str, dict[str, Any]]:
            self._check(ticket, RESOLVED)
            self._auto_assign(ticket, actor)
            ticket.status = RESOLVED
            ticket.resolved_at = self.clock.now()
            return "resolved", {"note": note}

        return await self._change(ticket_id, agent, change)

    async def resolve_self_served(self, ticket_id: int, requester: PersonRef, note: str,
                                  extra: dict[str, Any]) -> TicketSnapshot:
        """The requester closes their own ticket: an article answered it (``extra`` names which).

        The event is a ``resolved`` one marked ``self_served``, so SLA clocks stop and pages end as for any
        resolution, and subscribers that should not follow up (surveys) can tell.
        """

        async def change(session: AsyncSession, ticket: Ticket, actor: Person) -> tuple[str, dict[str, Any]]:
            if actor.id != ticket.requester_id:
                raise NotAllowed(f"Only the person who asked can say {ticket.number} is solved.")
            if ticket.status not in OPEN_STATUSES:
                raise _Unchanged
            ticket.status = RESOLVED
            ticket.resolved_at = self.clock.now()
            return "resolved", {"note": note, "self_served": True, **extra}

        return await self._change(ticket_id, requester, change)

    # -- anyone involved ----------------------------------------------------------------------------
    async def comment(
        self, ticket_id: int, author: PersonRef, text: str, *, dedup: tuple[str, str] | None = None,
        source: str | None = None, posted: dict[str, str] | None = None,
        attachments: list[dict[str, str]] | None = None,
    ) -> TicketSnapshot | None:
        """Add a public comment. Returns None when ``dedup`` says this message was already recorded.

        ``source`` names where it was written (e.g. ``slack:triage``) so relays skip the place it came from;
        ``posted`` (outbox ``target`` and platform ``message`` id) is the chat message it was, kept on the event so
        that message can be marked as sent to the requester.
        ``attachments`` (``{"name", "url"}``) lists the files the message shared, on the ticket's event.
        """
        text = _clean_text(text, "comment", MAX_DESCRIPTION, required=True)

        async def change(session: AsyncSession, ticket: Ticket, actor: Person) -> tuple[str, dict[str, Any]]:
            if dedup is not None and not await mark_seen(
                session, source=dedup[0], key=dedup[1], expires_at=self.clock.now() + DEDUP_TTL
            ):
                raise _Duplicate
            is_requester = actor.id == ticket.requester_id
            if not is_requester and not actor.is_agent:
                raise NotAllowed(f"Only the requester and IT agents can comment on {ticket.number}.")
            if ticket.status == CLOSED:
                raise IllegalTransition(f"{ticket.number} is closed; open a new ticket or reopen it.")
            role = "requester" if is_requester else "agent"
            if role == "agent":
                await self._first_response(ticket, self.clock.now())
            elif ticket.status == WAITING:
                # The requester answered: the ball is back with IT and the SLA clock resumes.
                ticket.status = IN_PROGRESS if ticket.assignee_id else NEW
            payload: dict[str, Any] = {"text": text, "role": role, "source": source}
            if posted:
                payload["posted"] = posted
            if attachments:
                payload["attachments"] = attachments
            return "commented", payload

        try:
            return await self._change(ticket_id, author, change)
        except _Duplicate:
            return None

    async def note(
        self, ticket_id: int, author: PersonRef, text: str, *, dedup: tuple[str, str] | None = None,
        source: str | None = None, posted: dict[str, str] | None = None,
    ) -> TicketSnapshot | None:
        """Record an agent's internal note (event ``noted``): kept on the ticket for agents, never sent to the
        requester, never a response to them. Returns None when ``dedup`` says it was already recorded."""
        text = _clean_text(text, "note", MAX_DESCRIPTION, required=True)

        async def change(session: AsyncSession, ticket: Ticket, actor: Person) -> tuple[str, dict[str, Any]]:
            if dedup is not None and not await mark_seen(
                session, source=dedup[0], key=dedup[1], expires_at=self.clock.now() + DEDUP_TTL
            ):
                raise _Duplicate
            if not actor.is_agent:
                raise NotAllowed(f"Only IT agents can write internal notes on {ticket.number}.")
            return "noted", {"text": text, "source": source, "internal": True, **({"posted": posted} if posted else {})}

        try:
            return await self._change(ticket_id, author, change)
        except _Duplicate:
            return None

    async def reopen(self, ticket_id: int, person: PersonRef, reason: str = "") -> TicketSnapshot:
        async def change(session: AsyncSession, ticket: Ticket, actor: Person) -> tuple[str, dict[str, Any]]:
            if actor.id != ticket.requester_id and not actor.is_agent:
                raise NotAllowed(f"Only the requester and IT agents can reopen {ticket.number}.")
            self._check(ticket, REOPENED)
            previous_assignee = ticket.assignee_id
            # Back to the queue so the triage card offers Claim again; the last owner is told (payload).
            ticket.status = REOPENED
            ticket.assignee_id = None
            ticket.reopen_count += 1
            ticket.resolved_at = None
            ticket.closed_at = None
            return "reopened", {"reason": reason[:MAX_DESCRIPTION], "previous_assignee_id": previous_assignee}

        return await self._change(ticket_id, person, change)

    async def close(self, ticket_id: int, person: PersonRef | None) -> TicketSnapshot:
        """Close a resolved ticket (``person`` None = the system, e.g. auto-close)."""

        async def change(session: AsyncSession, ticket: Ticket, actor: Person | None) -> tuple[str, dict[str, Any]]:
            if actor is not None and actor.id != ticket.requester_id and not actor.is_agent:
                raise NotAllowed(f"Only the requester and IT agents can close {ticket.number}.")
            self._check(ticket, CLOSED)
            ticket.status = CLOSED
            ticket.closed_at = self.clock.now()
            return "closed", {}

        return await self._change(ticket_id, person, change)

    async def mute_updates(self, ticket_id: int, person: PersonRef, muted: bool = True) -> TicketSnapshot:
        """Stop (or restart) scheduled progress updates for this one ticket."""

        async def change(session: AsyncSession, ticket: Ticket, actor: Person | None) -> tuple[str, dict[str, Any]]:
            if actor is None or (actor.id != ticket.requester_id and not actor.is_agent):
                raise NotAllowed(f"Only the requester can mute updates for {ticket.number}.")
            if ticket.updates_muted == muted:
                raise _Unchanged
            ticket.updates_muted = muted
            return "updates_muted" if muted else "updates_unmuted", {}

        return await self._change(ticket_id, person, change)

    # -- messages outside a change -------------------------------------------------------------------
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

    # -- reads --------------------------------------------------------------------------------------
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

    # -- internals ----------------------------------------------------------------------------------
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


class _Unchanged(Exception):
    """Raised inside a change to say "already so": idempotent no-op, no event."""


class _Duplicate(Exception):
    """Raised inside a change when its inbound message was already recorded."""


def _clean_text(text: str, what: str, limit: int, *, required: bool) -> str:
    cleaned = without_controls(text or "").strip()
    if required and not cleaned:
        raise InvalidInput(f"The {what} can't be empty.", field=what)
    if len(cleaned) > limit:
        raise InvalidInput(f"The {what} is {len(cleaned):,} characters; the limit is {limit:,}.", field=what)
    return cleaned


def check_intake(summary: str, description: str = "") -> tuple[str, str]:
    """(summary, description) as a ticket would store them, or ``InvalidInput``: for intake that files later."""
    return _clean_intake(summary, description)


def _clean_intake(summary: str, description: str) -> tuple[str, str]:
    summary = without_controls(summary or "").strip()
    description = without_controls(description or "").strip()
    if not summary:
        raise InvalidInput("Please describe the problem in a few words.", field="summary")
    first_line = summary.splitlines()[0].strip()
    if len(first_line) > MAX_SUMMARY or first_line != summary:
        # Long or multi-line text is kept whole as the description; nothing the person typed is dropped.
        cut = first_line[: MAX_SUMMARY - 1].rstrip() + "…" if len(first_line) > MAX_SUMMARY else first_line
        description = summary + ("\n\n" + description if description else "")
        summary = cut
    if len(description) > MAX_DESCRIPTION:
        raise InvalidInput(f"The description is {len(description):,} characters; the limit is {MAX_DESCRIPTION:,}. "
                           "Attach long logs as a file instead.", field="description")
    return summary, description

