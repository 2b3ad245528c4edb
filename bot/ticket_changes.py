"""Changing tickets: claim, status, priority, comments and notes, resolve, reopen, close, mute."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.people import PersonRef
from bot.ticket_base import TicketBase
from bot.ticket_types import (
    CLAIMED,
    CLOSED,
    DEDUP_TTL,
    IN_PROGRESS,
    MAX_DESCRIPTION,
    NEW,
    OPEN_STATUSES,
    REOPENED,
    RESOLVED,
    STATUS_LABELS,
    WAITING,
    AlreadyClaimed,
    IllegalTransition,
    InvalidInput,
    NotAllowed,
    TicketSnapshot,
    _clean_text,
    _Duplicate,
    _Unchanged,
)
from store.models import Person, Ticket
from store.queries import mark_seen

log = logging.getLogger("ithelp.tickets")


class TicketChanges(TicketBase):
    """Changing tickets: claim, status, priority, comments and notes, resolve, reopen, close, mute."""

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


__all__ = ["TicketChanges"]
