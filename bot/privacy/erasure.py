"""An erasure request: a person's text and identity removed from every table, their anonymous metrics kept.

In one transaction, so it happens whole or not at all:

1. the tickets they asked for lose all their free text (whoever typed it: it is about them), as retention does;
2. what they typed on other tickets (comments, notes, reasons) is redacted, with its copies in messages;
3. pending digests to them are cancelled; messages still owed to them are dead-lettered, not sent;
4. they get a pseudonym, and their ids, names and email are rewritten in every table (targets, keys, view models,
   escalation snapshots); their conversation references, direct-message refs, dedup marks and counters go;
5. the privacy log records who asked and when, with a salted fingerprint of the address (so a second request is
   recognised and changes nothing), never what was removed.

A person with open tickets is refused unless ``force``: those tickets would lose their requester mid-flight.
A dry run (``commit=False``) does everything, reports it and rolls back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.privacy.identity import anonymise_people, pseudonym_name
from bot.privacy.people import ERASED, RequestError, erased_on, find_person, fingerprint, not_found, parse_address
from bot.privacy.redaction import clean_copies, redact_events, redact_tickets
from bot.privacy.scrub import Needles
from bot.tickets import OPEN_STATUSES
from store.conversation_models import HeldMessage
from store.db import Database
from store.models import Person, Ticket, TicketEvent, Timer, ticket_number
from store.privacy_models import PrivacyLog

log = logging.getLogger("ithelp.privacy")
LOCK_CONFLICTS = ("40P01", "40001")
"""PostgreSQL's deadlock detected and serialization failure: the transaction can simply run again."""
LOCK_ATTEMPTS = 3
CHUNK = 500
"""Tickets redacted per statement (a long-time requester's hundreds stay within bound-parameter limits)."""


class HasOpenTickets(RequestError):
    pass


@dataclass
class Erasure:
    """What an erasure did (or, in a dry run, would do)."""

    address: str
    pseudonym: str | None = None
    already_on: datetime | None = None
    rows: dict[str, int] = field(default_factory=dict)
    committed: bool = False


class _DryRun(Exception):
    pass


async def erase_person(db: Database, clock: Clock, address: str, *, by: str, force: bool = False,
                       commit: bool = True) -> Erasure:
    """Erase the person at ``address`` (``slack:U123``); raises :class:`RequestError` subclasses when it can't."""
    platform, user_id = parse_address(address)
    canonical = f"{platform}:{user_id}"
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            return await _erase_once(db, clock, platform, user_id, canonical, by=by, force=force, commit=commit)
        except DBAPIError as exc:
            # The engine may be working the same tickets (a setup, a card refresh) and lock them in another
            # order: PostgreSQL picks one transaction to fail. Ours rolled back whole; take it again.
            if getattr(exc.orig, "sqlstate", None) not in LOCK_CONFLICTS or attempt == LOCK_ATTEMPTS:
                raise
            log.warning("erasing %s collided with other work on its tickets (%s); trying again", canonical, exc.orig)
    raise AssertionError("unreachable")


async def _erase_once(db: Database, clock: Clock, platform: str, user_id: str, canonical: str, *, by: str,
                      force: bool, commit: bool) -> Erasure:
    outcome = Erasure(canonical)
    try:
        async with db.transaction() as session:
            now = clock.now()
            person = await find_person(session, platform, user_id, lock=True)
            if person is None:
                outcome.already_on = await erased_on(session, canonical)
                if outcome.already_on is None:
                    raise not_found(canonical)
                return outcome
            forced = await _open_tickets_allowed(session, person, canonical, force)
            outcome.rows = await _erase(session, person, now)
            outcome.pseudonym = pseudonym_name(person.id)
            session.add(PrivacyLog(at=now, action=ERASED, actor=by, subject=fingerprint(canonical),
                                   detail={"rows": dict(outcome.rows), "forced": forced}))
            if not commit:
                raise _DryRun
    except _DryRun:
        return outcome
    outcome.committed = True
    return outcome


async def _open_tickets_allowed(session: AsyncSession, person: Person, address: str, force: bool) -> bool:
    """Refuse a person with open tickets unless ``force``; True when some were open (and forced)."""
    open_tickets = list((await session.execute(select(Ticket.id).where(
        or_(Ticket.requester_id == person.id, Ticket.assignee_id == person.id),
        Ticket.status.in_(OPEN_STATUSES)).order_by(Ticket.id))).scalars())
    if open_tickets and not force:
        numbers = ", ".join(ticket_number(i) for i in open_tickets[:10])
        raise HasOpenTickets(
            f"{address} has {len(open_tickets)} open ticket(s) ({numbers}). Resolve or close them first, or pass "
            "--force to erase anyway (messages still owed to them are then not sent). Nothing was changed.")
    return bool(open_tickets)


async def _erase(session: AsyncSession, person: Person, now: datetime) -> dict[str, int]:
    rows: dict[str, int] = {}
    asked = select(Ticket.id).where(Ticket.requester_id == person.id)
    ids = list((await session.execute(asked.order_by(Ticket.id))).scalars())
    for start in range(0, len(ids), CHUNK):
        _merge(rows, await redact_tickets(session, ids[start:start + CHUNK], now))
    changed, typed = await redact_events(session, (TicketEvent.actor_id == person.id)
                                         & TicketEvent.ticket_id.not_in(asked))
    _merge(rows, {"ticket_events": changed})
    _merge(rows, await clean_copies(session, Needles.of(typed), None, None))
    cancelled: Any = await session.execute(update(Timer).where(
        Timer.done_at.is_(None), Timer.dedup_key.like(f"digest:{person.id}:%")).values(
        done_at=now, outcome="cancelled").execution_options(synchronize_session=False))
    _merge(rows, {"timers": int(cancelled.rowcount)})
    # Messages held while the bot asked which ticket they were about: their words, nothing else needs them.
    held: Any = await session.execute(delete(HeldMessage).where(HeldMessage.person_id == person.id)
                                      .execution_options(synchronize_session=False))
    _merge(rows, {"held_messages": int(held.rowcount)})
    anonymised = await anonymise_people(session, [person], now)
    _merge(rows, {"people": anonymised.people, **anonymised.rows})
    return rows


def _merge(into: dict[str, int], counts: dict[str, int]) -> None:
    for table, count in counts.items():
        if count:
            into[table] = into.get(table, 0) + count
