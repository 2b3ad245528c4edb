"""Read-only lookups the platform adapters need: who someone is, which ticket a thread or a reply belongs to.

Adapters translate payloads; they ask here instead of querying the store themselves, so a schema change
touches one file and the adapters stay transport only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select

from store.db import Database
from store.models import MessageRef, OutboxMessage, Person


@dataclass(frozen=True)
class KnownPerson:
    """What the desk already knows of a platform user."""

    display_name: str | None
    timezone: str | None
    email: str | None


@dataclass(frozen=True)
class ThreadTicket:
    """The ticket a platform message (a card, a thread root) belongs to, and the message's role for it."""

    ticket_id: int
    role: str


class Directory:
    """Lookups by platform ids, each in its own short read."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def known_person(self, platform: str, user_id: str) -> KnownPerson | None:
        """The stored name, zone and email of a platform user, or None if the desk has never seen them."""
        async with self._db.reading() as session:
            person = (await session.execute(select(Person).where(
                Person.platform == platform, Person.platform_user_id == user_id))).scalar_one_or_none()
            if person is None:
                return None
            return KnownPerson(person.display_name, person.timezone, person.email)

    async def display_names(self, platform: str, user_ids: Iterable[str]) -> dict[str, str | None]:
        """Stored display names of those users the desk knows (unknown ids are left out)."""
        wanted = set(user_ids)
        if not wanted:
            return {}
        async with self._db.reading() as session:
            rows = await session.execute(select(Person.platform_user_id, Person.display_name).where(
                Person.platform == platform, Person.platform_user_id.in_(wanted)))
            return {user: name for user, name in rows.tuples()}

    async def ticket_for_message(self, platform: str, message_id: str, *,
                                 role: str | None = None) -> ThreadTicket | None:
        """The ticket whose card or thread root is ``message_id`` (optionally only in that role)."""
        query = select(MessageRef).where(MessageRef.platform == platform, MessageRef.message_id == message_id)
        if role is not None:
            query = query.where(MessageRef.role == role)
        async with self._db.reading() as session:
            ref = (await session.execute(query)).scalars().first()
            return ThreadTicket(ref.ticket_id, ref.role) if ref is not None else None

    async def ticket_for_delivered(self, target: str, delivered_message_id: str) -> int | None:
        """The ticket of the bot's message delivered to ``target`` as ``delivered_message_id`` (a reply to it
        is about that ticket)."""
        async with self._db.reading() as session:
            return await session.scalar(select(OutboxMessage.ticket_id).where(
                OutboxMessage.target == target,
                OutboxMessage.delivered_message_id == delivered_message_id).limit(1))


__all__ = ["Directory", "KnownPerson", "ThreadTicket"]
