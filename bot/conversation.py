"""Plain direct messages from someone a ticket is waiting on: they answer it instead of opening a new one.

Chat has no reliable threads for people (a Teams 1:1 has none, and people answer a Slack DM at top level), so
when a ticket is waiting on its requester, their next plain message in the DM is read as the answer:

- one open ticket, waiting on them: the message joins it (a requester comment, so the ticket resumes);
- several open tickets: the message is held (``HeldMessage``) and the bot asks, with one button per ticket and
  one for "something new", which it is about; the answer joins or files the held message exactly once;
- nothing waiting on them: the message opens a ticket, as before (in ``knowledge.mode: ask_first``, matching
  articles are shown first and the request is held until the person says they still need help).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select, update

from bot.attachments import Attachments, SharedFile, listed, stored, with_files
from bot.core import Core
from bot.knowledge.held import HeldRequests
from bot.messages import NOTICE, notice_payload
from bot.people import PersonRef
from bot.routing import Action
from bot.text import to_plain, to_spans
from bot.tickets import DEDUP_TTL, WAITING, NotAllowed, OpenResult, Origin, TicketSnapshot
from bot.views import CardAction, Notice
from store.conversation_models import HeldMessage
from store.models import InboundDedup, Person
from store.queries import enqueue_message, mark_seen

__all__ = ["Conversations", "Routed", "held_choice"]

MAX_CHOICES = 4
"""Ticket buttons on the question; with "something new" it stays within what both platforms show in a row."""
HELD_SOURCE = "held-message"
_LABEL_CHARS = 40


@dataclass(frozen=True)
class Routed:
    """What became of a direct message: a new ticket, a comment on an open one, a question, or a repeat."""

    outcome: Literal["opened", "joined", "asked", "repeat", "articles"]
    ticket: TicketSnapshot | None = None
    created: bool = False
    articles: Notice | None = None
    """``articles``: the knowledge-base question to show before filing (ask_first)."""


def held_choice(choice: str) -> tuple[int | None, int | None]:
    """(ticket id or None for "something new", held message id) from a question button's
    ``<ticket id>:<held id>`` value; (None, None) for anything else."""
    ticket, _, held = choice.partition(":")
    if not (ticket.isascii() and ticket.isdigit() and held.isascii() and held.isdigit()
            and len(ticket) <= 18 and len(held) <= 18):
        return None, None
    return (int(ticket) or None), int(held)


class Conversations:
    """Decides what a plain direct message is about, and carries out the person's answer to the question."""

    def __init__(self, core: Core, attachments: Attachments, held: HeldRequests | None = None) -> None:
        self.core = core
        self.attachments = attachments
        self.held = held

    async def route(self, person: PersonRef, text: str, *, origin: Origin, dedup: tuple[str, str],
                    files: Sequence[SharedFile] = ()) -> Routed:
        """File, join or hold ``text`` (and ``files``); ``dedup`` (the inbound event) makes a retry a no-op."""
        if await self._seen(dedup):
            return Routed("repeat")
        tickets = await self.core.tickets.tickets_of(person, open_only=True)
        waiting = [t for t in tickets if t.status == WAITING]
        if not text and not (waiting and len(tickets) == 1):
            await self.attachments.hold(person, files, origin, dedup)  # "What's the problem?"
            return Routed("asked")
        if not waiting:
            if self.held is not None and not files:
                question = await self.held.hold(person, text, origin, dedup)
                if question is not None:  # ask_first: articles before filing
                    return Routed("articles", articles=question)
            result = await self.core.tickets.open(person, text, origin=origin, dedup=dedup, defer_setup=True)
            if files:
                await self.attachments.comment(result.ticket.id, person, "", files,
                                               dedup=(dedup[0], f"{dedup[1]}:files"), source="requester_thread")
            await self.attachments.attach_waiting(person, result.ticket.id)
            return Routed("opened", result.ticket, result.created)
        if len(tickets) == 1:
            joined = await self.attachments.comment(tickets[0].id, person, text, files, dedup=dedup,
                                                    source="requester_thread")
            if joined is not None:
                await self.attachments.attach_waiting(person, joined.id)
                await self._confirm(person, joined, key=f"joined:{dedup[0]}:{dedup[1]}")
            return Routed("joined" if joined else "repeat", joined)
        await self._hold_and_ask(person, text, files, origin, dedup,
                                 waiting + [t for t in tickets if t.status != WAITING])
        return Routed("asked")

    async def answer(self, person: PersonRef, held_id: int, ticket_id: int | None) -> Routed:
        """The person picked ``ticket_id`` (None: something new) for held message ``held_id``. Exactly once: a
        second click, or a click on the other button, changes nothing (both share one inbound-dedup mark)."""
        async with self.core.db.reading() as session:
            held = await session.get(HeldMessage, held_id)
            owner = await session.scalar(select(Person.id).where(
                Person.platform == person.platform, Person.platform_user_id == person.user_id))
            if held is None or owner is None or held.person_id != owner:
                raise NotAllowed("That question was for someone else.")
            text, files = held.text, stored(held.files)
            origin = Origin(held.platform, conversation=held.conversation, thread=held.thread)
            if held.answered_at is not None:
                return Routed("repeat")
        dedup = (HELD_SOURCE, str(held_id))
        routed: Routed
        if ticket_id is None:
            result: OpenResult = await self.core.tickets.open(person, text, origin=origin, dedup=dedup,
                                                              defer_setup=True)
            routed = Routed("opened", result.ticket, result.created)
            if files:
                await self.attachments.comment(result.ticket.id, person, "", files,
                                               dedup=(HELD_SOURCE, f"{held_id}:files"), source="requester_thread")
        else:
            joined = await self.attachments.comment(ticket_id, person, text, files, dedup=dedup,
                                                    source="requester_thread")
            routed = Routed("joined" if joined else "repeat", joined)
            if joined is not None:
                await self._confirm(person, joined, key=f"joined:{HELD_SOURCE}:{held_id}")
        if routed.ticket is not None:
            await self.attachments.attach_waiting(person, routed.ticket.id)
            # The words now live on the ticket (where retention and erasure find them): no copy stays behind.
            async with self.core.db.transaction() as session:
                await session.execute(update(HeldMessage).where(
                    HeldMessage.id == held_id, HeldMessage.answered_at.is_(None)).values(
                    answered_at=self.core.clock.now(), ticket_id=routed.ticket.id, text="", files=None))
        self.core.wake()
        return routed

    async def _seen(self, dedup: tuple[str, str]) -> bool:
        async with self.core.db.reading() as session:
            return await session.scalar(select(InboundDedup.key).where(
                InboundDedup.source == dedup[0], InboundDedup.key == dedup[1])) is not None

    async def _hold_and_ask(self, person: PersonRef, text: str, files: Sequence[SharedFile], origin: Origin,
                            dedup: tuple[str, str], tickets: list[TicketSnapshot]) -> None:
        # One transaction: the retry mark, the held message and the question commit together or not at all.
        now = self.core.clock.now()
        async with self.core.db.transaction() as session:
            if not await mark_seen(session, source=dedup[0], key=dedup[1], expires_at=now + DEDUP_TTL):
                return
            owner = await self.core.tickets.record_person(session, person)
            held = HeldMessage(person_id=owner.id, platform=origin.platform, conversation=origin.conversation,
                               thread=origin.thread, text=text, files=listed(files) or None, created_at=now)
            session.add(held)
            await session.flush()
            question = _question(held.id, with_files(text, files), tickets[:MAX_CHOICES])
            await enqueue_message(session, target=f"{person.platform}:user:{person.user_id}", kind=NOTICE,
                                  payload=notice_payload(question), ticket_id=question.ticket_id,
                                  idempotency_key=f"ask:{held.id}", now=now)
        self.core.wake()

    async def _confirm(self, person: PersonRef, ticket: TicketSnapshot, *, key: str) -> None:
        await self.core.tickets.tell(person, Notice(
            ticket_id=ticket.id, number=ticket.number, headline=f"Added to {ticket.number}; IT will see it.",
            body=to_spans(ticket.summary)), key=key)


def _label(ticket: TicketSnapshot) -> str:
    summary = to_plain(ticket.summary)
    if len(summary) > _LABEL_CHARS:
        summary = summary[:_LABEL_CHARS - 1].rstrip() + "…"
    return f"{ticket.number} ({summary})"


def _question(held_id: int, text: str, tickets: list[TicketSnapshot]) -> Notice:
    """ "Is this about IT-3 (VPN drops) or something new?", quoting what was held, a button per choice."""
    about = " or ".join(_label(t) for t in tickets[:2]) if len(tickets) <= 2 else "one of your open tickets"
    buttons = [CardAction(Action.CONVERSATION_JOIN, _label(t), f"{t.id}:{held_id}") for t in tickets]
    buttons.append(CardAction(Action.CONVERSATION_NEW, "Something new", f"0:{held_id}", style="primary"))
    # The notice belongs to the first ticket only so the outbox row has one; the buttons carry their own.
    return Notice(ticket_id=tickets[0].id, number=tickets[0].number,
                  headline=f"Is this about {about}, or something new?", body=("You wrote: ", *to_spans(text)),
                  actions=tuple(buttons), numbered=False)
