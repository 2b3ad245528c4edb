"""Opening tickets: the fast path from chat (row first, setup after) and the plain one."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.people import PersonRef
from bot.ticket_base import TicketBase
from bot.ticket_types import (
    _KNOWN_PEOPLE_LIMIT,
    _LOCK_CONFLICTS,
    DEDUP_TTL,
    NEW,
    InvalidInput,
    OpenResult,
    Origin,
    TicketError,
    TicketSnapshot,
    _clean_intake,
    _Known,
)
from store.models import Person, Ticket, ticket_number
from store.queries import claim_pending_setup, mark_seen

log = logging.getLogger("ithelp.tickets")


class TicketIntake(TicketBase):
    """Opening tickets: the fast path from chat (row first, setup after) and the plain one."""

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

    async def _ticket_for_dedup(self, session: AsyncSession, dedup: tuple[str, str]) -> TicketSnapshot | None:
        ticket = (await session.execute(
            select(Ticket).where(Ticket.intake_key == f"{dedup[0]}:{dedup[1]}"))).scalar_one_or_none()
        return await self._snapshot(session, ticket) if ticket else None


__all__ = ["TicketIntake"]
