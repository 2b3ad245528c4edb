"""Agents' messages in a ticket's triage thread: a reply relayed to the requester, or an internal note.

Chat help desks leak internal talk to customers when every message under a ticket is relayed. Here the desk
chooses the default in ``app.yaml`` (``triage_thread.default``) and a prefix says otherwise for one message
(``note:`` / ``//`` keep it among agents, ``reply:`` sends it). Every such message is then marked where agents
see it, so nobody has to guess whether the requester read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.attachments import SharedFile, listed, with_files
from bot.config import TriageThreadConfig
from bot.core import Core
from bot.messages import MARK, mark_payload
from bot.people import PersonRef
from bot.tickets import TicketChange, TicketSnapshot
from bot.views import Notice
from store.queries import enqueue_messages, outbox_row

TRIAGE_THREAD = "triage_thread"
"""The ``source`` of comments and notes written in a triage thread."""


@dataclass(frozen=True)
class Posted:
    """Where an agent's message is: the outbox target of its conversation and the platform's message id."""

    target: str
    message: str


@dataclass(frozen=True)
class Split:
    """An agent's message read against the prefixes: internal or not, and the text without its prefix."""

    internal: bool
    text: str


def split_note(text: str, rules: TriageThreadConfig) -> Split:
    """Is ``text`` an internal note? A note prefix makes it one, a reply prefix makes it a reply (checked
    case-insensitively, longest first), and otherwise the configured default decides."""
    stripped = text.lstrip()
    folded = stripped.casefold()
    prefixes = [(p, True) for p in rules.note_prefixes] + [(p, False) for p in rules.reply_prefixes]
    for prefix, internal in sorted(prefixes, key=lambda item: -len(item[0])):
        if folded.startswith(prefix.casefold()):
            return Split(internal, stripped[len(prefix):].strip())
    return Split(rules.default == "note", text.strip())


def marker_text(internal: bool, requester: str) -> str:
    """What the marker says to agents about one of their messages."""
    return f"🔒 Internal note, not sent to {requester}." if internal else f"✉️ Sent to {requester}."


class TriageThread:
    """Records agents' triage-thread messages as replies or notes, and marks each one for the agents."""

    def __init__(self, core: Core) -> None:
        self.core = core

    async def agent_message(self, ticket_id: int, agent: PersonRef, text: str, *, dedup: tuple[str, str],
                            posted: Posted, files: Sequence[SharedFile] = ()) -> TicketSnapshot | None:
        """An agent wrote ``text`` (and shared ``files``) under the ticket's triage card: relay it or keep it as a
        note (None: a repeat of a message already recorded)."""
        split = split_note(text, self.core.config.triage_thread)
        body = with_files(split.text, files)
        where = {"target": posted.target, "message": posted.message}
        tickets = self.core.tickets
        if split.internal:
            return await tickets.note(ticket_id, agent, body, dedup=dedup, source=TRIAGE_THREAD, posted=where)
        return await tickets.comment(ticket_id, agent, body, dedup=dedup, source=TRIAGE_THREAD, posted=where,
                                     attachments=listed(files) or None)

    async def on_change(self, change: TicketChange) -> None:
        """Subscriber: a recorded triage-thread message gets its marker, in the same transaction."""
        event = change.event
        posted = event.payload.get("posted")
        if event.kind not in ("noted", "commented") or not isinstance(posted, dict):
            return
        internal = event.kind == "noted"
        ticket = change.ticket
        view = Notice(ticket_id=ticket.id, number=ticket.number,
                      headline=marker_text(internal, change.requester.display_name), numbered=False)
        target = str(posted["target"])
        await enqueue_messages(change.session, [outbox_row(
            target=target, kind=MARK, ticket_id=ticket.id, now=change.now, idempotency_key=f"mark:{event.id}:{target}",
            payload=mark_payload(view, message=str(posted["message"]), internal=internal))])
