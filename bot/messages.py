"""The neutral outbox kinds: what services enqueue and channels read back, one payload shape per kind.

Services never write platform markup into the outbox: a payload holds a view model (``bot.views``, serialized)
plus delivery hints (which thread, which message it replaces). Channels render it at delivery time with
``bot.renderers``; adding a platform is one renderer and one channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.routing import Action
from bot.views import CardAction, Digest, Message, Notice, Pulse, Summary, Survey, dump_view, load_view
from store.models import ticket_number

TICKET_CARD = "ticket_card"
"""A ticket's card, rendered from the store at delivery: ``{ticket_id, event_id, audience}``."""
NOTICE = "notice"
"""A short message about a ticket, threaded under the requester's or the triage card when ``thread`` says so."""
PAGE = "page"
"""An escalation page to a person or channel (a notice that pages: delivered at once, edited when it ends)."""
SURVEY = "survey"
"""The satisfaction poll, posted once and edited in place (``ref_role``)."""
PULSE = "pulse"
"""A one-question pulse (NPS) to a person, no ticket: posted once, later revisions edit that message
(``edits``: the idempotency key of the outbox row that posted it)."""
DIGEST = "digest"
"""A digest spanning several tickets."""
SUMMARY = "summary"
"""The weekly report card for managers."""
TEXT = "text"
"""A message that is only text, outside any ticket thread."""
MARK = "mark"
"""A marker on a person's own chat message (an agent's message in a triage thread): whether it went to the
requester. Slack reacts to the message; Teams, which has no bot reactions, replies under it with the notice."""
CHAT_KINDS = (TICKET_CARD, NOTICE, PAGE, SURVEY, PULSE, DIGEST, SUMMARY, TEXT, MARK)
# Rows written before the outbox was neutral carried pre-rendered markup; a channel still delivers the few
# that may be pending when a desk upgrades.
LEGACY_SLACK_BLOCKS, LEGACY_TEAMS_CARD = "blocks", "card"


@dataclass(frozen=True)
class NoticeDelivery:
    """A notice (or page) read back from its outbox payload."""

    view: Notice
    thread: str | None = None
    """``requester`` / ``triage``: reply in that ticket thread (its card's conversation); None: a new message."""
    ref_role: str | None = None
    """Remember the message under this role (a page), so the notice that ends it can edit it in place."""
    replace: bool = False
    """Edit the message recorded under ``ref_role`` instead of posting a new one."""


def notice_payload(view: Notice, *, thread: str | None = None, ref_role: str | None = None, replace: bool = False,
                   urgent: bool = False, **extra: Any) -> dict[str, Any]:
    """The outbox payload of a ``notice``/``page``; ``extra`` keys (e.g. ``event_id``) are kept for audits."""
    payload: dict[str, Any] = {"ticket_id": view.ticket_id, "view": dump_view(view), "thread": thread, **extra}
    if ref_role:
        payload["ref_role"] = ref_role
    if replace:
        payload["replace"] = True
    if urgent:
        payload["urgent"] = True
    return payload


def read_notice(payload: dict[str, Any]) -> NoticeDelivery:
    """The notice in a ``notice``/``page`` payload (also the pre-neutral shape with headline/body strings)."""
    if "view" in payload:
        view = load_view(Notice, payload["view"])
    else:
        ticket_id = int(payload["ticket_id"])
        view = Notice(ticket_id=ticket_id, number=ticket_number(ticket_id), headline=str(payload.get("headline") or ""),
                      body=payload.get("body"), author=payload.get("author"),
                      actions=tuple(CardAction(Action(a["action"]), a["label"], a["value"], a.get("style"))
                                    for a in payload.get("actions") or ()))
    return NoticeDelivery(view, payload.get("thread"), payload.get("ref_role"), bool(payload.get("replace")))


def survey_payload(view: Survey, *, ref_role: str = "survey") -> dict[str, Any]:
    return {"ticket_id": view.ticket_id, "view": dump_view(view), "ref_role": ref_role}


def pulse_payload(view: Pulse, *, edits: str | None = None) -> dict[str, Any]:
    """The outbox payload of a ``pulse``; ``edits`` names (by idempotency key) the row whose message it replaces."""
    return {"view": dump_view(view), "edits": edits}


def read_pulse(payload: dict[str, Any]) -> tuple[Pulse, str | None]:
    """The pulse in a ``pulse`` payload, and the idempotency key of the message it edits (None: a new message)."""
    edits = payload.get("edits")
    return load_view(Pulse, payload["view"]), edits if isinstance(edits, str) else None


def digest_payload(view: Digest) -> dict[str, Any]:
    return {"view": dump_view(view)}


def summary_payload(view: Summary) -> dict[str, Any]:
    return {"view": dump_view(view)}


def read_survey(payload: dict[str, Any]) -> Survey:
    return load_view(Survey, payload["view"])


def read_digest(payload: dict[str, Any]) -> Digest:
    return load_view(Digest, payload["view"])


def read_summary(payload: dict[str, Any]) -> Summary:
    return load_view(Summary, payload["view"])


def text_payload(view: Message) -> dict[str, Any]:
    return {"view": dump_view(view)}


def read_text(payload: dict[str, Any]) -> Message:
    return load_view(Message, payload["view"])


@dataclass(frozen=True)
class MarkDelivery:
    """A ``mark`` read back from its outbox payload."""

    view: Notice
    """The marker as a one-line notice (what Teams posts in the thread)."""
    message: str
    """The marked message, as the platform's channel names it (Slack ``<channel>|<ts>``)."""
    internal: bool
    """True: an internal note, not sent to the requester; False: relayed to them."""


def mark_payload(view: Notice, *, message: str, internal: bool) -> dict[str, Any]:
    return {"ticket_id": view.ticket_id, "view": dump_view(view), "message": message, "internal": internal}


def read_mark(payload: dict[str, Any]) -> MarkDelivery:
    return MarkDelivery(load_view(Notice, payload["view"]), str(payload["message"]), bool(payload["internal"]))
