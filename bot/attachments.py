"""Screenshots and files people share: linked to the other side and listed on the ticket.

Adapters turn a platform's files into :class:`SharedFile` (Slack: the file's permalink; Teams: an inline
image's or a file's download address). A file reaches the ticket as a comment whose text links it (so the
usual relays carry it to the triage thread or the requester) and whose event lists it (``attachments``). A
file sent on its own, before anything is filed, waits as a held message while the bot asks what the problem
is; the ticket the next message starts (or joins) gets it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update

from bot.core import Core
from bot.people import PersonRef
from bot.text import link_markup
from bot.tickets import DEDUP_TTL, Origin, TicketSnapshot
from bot.views import Message
from store.conversation_models import HeldMessage
from store.models import Person
from store.queries import mark_seen

__all__ = ["WHATS_THE_PROBLEM", "Attachments", "SharedFile", "listed", "stored", "with_files"]

WHATS_THE_PROBLEM = ("Thanks, I've got your file. What's the problem? Tell me in a sentence or two and I'll open a "
                     "ticket with the file attached.")
MAX_FILES = 10


@dataclass(frozen=True)
class SharedFile:
    """A file someone shared: its name and an address the other side can open."""

    name: str
    url: str


def with_files(text: str, files: Sequence[SharedFile]) -> str:
    """Neutral ``text`` followed by a line linking each file (the edge's own link markup)."""
    if not files:
        return text
    links = ", ".join(link_markup(f.name or "file", f.url) for f in files[:MAX_FILES])
    return f"{text}\n\nAttached: {links}" if text else f"Attached: {links}"


def listed(files: Sequence[SharedFile]) -> list[dict[str, str]]:
    """Files as stored on an event or a held message: ``{"name", "url"}`` each."""
    return [{"name": f.name, "url": f.url} for f in files[:MAX_FILES]]


def stored(files: list[dict[str, str]] | None) -> list[SharedFile]:
    """Files read back from an event or a held message."""
    return [SharedFile(str(f.get("name", "")), str(f.get("url", ""))) for f in files or []]


class Attachments:
    """Attaches shared files to tickets, and holds a file sent on its own until its ticket exists."""

    def __init__(self, core: Core) -> None:
        self.core = core

    async def comment(self, ticket_id: int, person: PersonRef, text: str, files: Sequence[SharedFile], *,
                      dedup: tuple[str, str], source: str) -> TicketSnapshot | None:
        """A comment with its files: linked in the text, listed on the event; None for a repeat."""
        return await self.core.tickets.comment(ticket_id, person, with_files(text, files), dedup=dedup,
                                               source=source, attachments=listed(files) or None)

    async def hold(self, person: PersonRef, files: Sequence[SharedFile], origin: Origin,
                   dedup: tuple[str, str]) -> None:
        """Keep a file-only message and ask what the problem is (once, however often the event comes)."""
        now = self.core.clock.now()
        async with self.core.db.transaction() as session:
            if not await mark_seen(session, source=dedup[0], key=dedup[1], expires_at=now + DEDUP_TTL):
                return
            owner = await self.core.tickets.record_person(session, person)
            session.add(HeldMessage(person_id=owner.id, platform=origin.platform, conversation=origin.conversation,
                                    thread=origin.thread, text="", files=listed(files), created_at=now))
        await self.core.tickets.tell(person, Message(WHATS_THE_PROBLEM), key=f"files:{dedup[0]}:{dedup[1]}"[:200])

    async def attach_waiting(self, person: PersonRef, ticket_id: int) -> None:
        """Attach the files this person sent on their own (still waiting for a ticket) to ``ticket_id``."""
        async with self.core.db.reading() as session:
            owner = await session.scalar(select(Person.id).where(
                Person.platform == person.platform, Person.platform_user_id == person.user_id))
            waiting = list((await session.execute(select(HeldMessage).where(
                HeldMessage.person_id == owner, HeldMessage.text == "", HeldMessage.files.is_not(None),
                HeldMessage.answered_at.is_(None)).order_by(HeldMessage.id))).scalars()) if owner else []
        for held in waiting:
            files = stored(held.files)
            # Keyed on the held row: a retry, or another replica doing the same, attaches nothing twice.
            await self.comment(ticket_id, person, "", files, dedup=("held-files", str(held.id)),
                               source="requester_thread")
            async with self.core.db.transaction() as session:
                await session.execute(update(HeldMessage).where(
                    HeldMessage.id == held.id, HeldMessage.answered_at.is_(None)).values(
                    answered_at=self.core.clock.now(), ticket_id=ticket_id, files=None))
