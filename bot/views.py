"""Neutral view models: what a message says, before any platform's markup.

Services build these and enqueue them (serialized with :func:`dump_view`) as the payload of a neutral outbox
kind; ``bot.renderers`` turns them into Block Kit or an Adaptive Card at delivery time. Wording lives here,
markup in the renderers, so no Slack ``*bold*`` can leak into Teams.

Text fields hold :data:`Text`: a plain string of *neutral text* (what a person typed, decoded at the platform
edge: links written ``[label](url)`` or bare, mentions already turned into names) or a tuple of spans mixing
such strings with :class:`Link` and :class:`Moment`. Renderers escape every string once for their platform and
show each :class:`Moment` on the reader's own clock (Slack ``<!date^…>``, Adaptive Card ``{{DATE()}}``), so no
time the bot shows is ever in the wrong zone or goes stale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import TypeAdapter

from bot.routing import Action


@dataclass(frozen=True)
class Link:
    """A link the reader can follow; ``label`` None shows the address itself."""

    url: str
    label: str | None = None


@dataclass(frozen=True)
class Moment:
    """An instant, shown in each reader's own zone where the platform can; ``zone`` (IANA) is the zone of the
    written-out fallback for clients that can't (the reader's zone when known)."""

    at: datetime
    zone: str = "UTC"
    form: Literal["datetime", "date"] = "datetime"
    label: str | None = None
    """How the fallback names the zone ("your time" when it is the reader's own); default: "London time"."""


Span = str | Link | Moment
Text = str | tuple[Span, ...]
"""Neutral text, or spans of it with links and moments."""


def spans(text: Text) -> tuple[Span, ...]:
    """``text`` as a tuple of spans (a plain string is one span)."""
    return (text,) if isinstance(text, str) else text


@dataclass(frozen=True)
class Choice:
    label: str
    value: str


@dataclass(frozen=True)
class CardAction:
    """A button (no ``choices``) or a menu (``choices``) on a card; ``value`` goes back on click."""

    action: Action
    label: str
    value: str
    style: str | None = None  # "primary" | "danger" | None
    choices: tuple[Choice, ...] = ()
    selected: str | None = None


@dataclass(frozen=True)
class Fact:
    label: str
    value: Text


@dataclass(frozen=True)
class TicketCard:
    """The ticket as a card: the triage card agents act on, or the requester's own copy."""

    ticket_id: int
    number: str
    summary: str
    description: str
    audience: str  # "triage" | "requester"
    status: str
    status_label: str
    priority: str
    priority_label: str
    facts: tuple[Fact, ...]
    sla: tuple[Text, ...] = ()
    escalation: Text | None = None
    link: str | None = None
    actions: tuple[CardAction, ...] = ()
    updated_at: datetime | None = None
    opened_at: datetime | None = None
    zone: str = "UTC"
    """The reader's zone for written-out times (the requester's on their copy, the desk's on triage)."""
    notes: tuple[Text, ...] = ()
    """Extra lines under the facts (e.g. how agents reach the requester from this card)."""


@dataclass(frozen=True)
class Notice:
    """A short message about a ticket (status change, relayed comment, progress update, page, acknowledgement).

    Renderers put ``number`` in front of the headline, unless ``numbered`` is False because the headline
    already says it ("IT-3 opened — …"): a message names its ticket once.
    """

    ticket_id: int
    number: str
    headline: Text
    body: Text | None = None
    author: str | None = None
    facts: tuple[Fact, ...] = ()
    actions: tuple[CardAction, ...] = ()
    numbered: bool = True


@dataclass(frozen=True)
class TicketListItem:
    number: str
    summary: str
    status_label: str
    assignee: str | None
    next_update: Text | None
    link: str | None = None


MAX_INTRO_LINES = 7
"""Intro lines a ticket list shows: a welcome's two and the five known issues (``bot.incidents``) after them."""


@dataclass(frozen=True)
class TicketList:
    """App Home / ``list`` answer: titled groups of tickets."""

    title: str
    sections: tuple[tuple[str, tuple[TicketListItem, ...]], ...] = field(default_factory=tuple)
    empty_text: str = "Nothing here."
    intro: tuple[Text, ...] = ()
    actions: tuple[CardAction, ...] = ()


@dataclass(frozen=True)
class DigestLine:
    """One ticket in a digest: its headline, one line of detail and at most one button."""

    ticket_id: int
    number: str
    summary: str
    detail: Text
    action: CardAction | None = None


@dataclass(frozen=True)
class DigestSection:
    heading: str | None
    lines: tuple[DigestLine, ...]
    more: int = 0
    """Tickets that matched but are not listed."""


@dataclass(frozen=True)
class Digest:
    """A digest spanning several tickets (a requester's open tickets, the agents' morning triage list)."""

    title: str
    intro: Text | None
    sections: tuple[DigestSection, ...]
    footer: Text | None = None

    @property
    def count(self) -> int:
        return sum(len(s.lines) + s.more for s in self.sections)


@dataclass(frozen=True)
class Survey:
    """The satisfaction poll as it stands: question or thanks, details, buttons, until when it can change."""

    ticket_id: int
    number: str
    headline: Text
    details: tuple[Text, ...] = ()
    actions: tuple[CardAction, ...] = ()
    expires_at: Moment | None = None


@dataclass(frozen=True)
class Pulse:
    """A one-question pulse (NPS) to one person, about the desk rather than a ticket: the question (or the thanks),
    a row of score buttons (the chosen one marked ``primary``), until when it can change."""

    pulse_id: int
    headline: Text
    details: tuple[Text, ...] = ()
    actions: tuple[CardAction, ...] = ()
    expires_at: Moment | None = None
    scale: tuple[str, str] | None = None
    """Labels of the two ends of the scale (e.g. "0 = not at all likely", "10 = extremely likely")."""


@dataclass(frozen=True)
class Summary:
    """A report card for managers (the weekly summary): a title, lines of figures and a footnote."""

    title: str
    lines: tuple[Text, ...]
    footnote: Text | None = None


@dataclass(frozen=True)
class Message:
    """A message that is only text (an answer the platform refused in the turn and the outbox now carries)."""

    text: Text


View = Notice | Survey | Pulse | Digest | Summary | Message
V = TypeVar("V", Notice, Survey, Pulse, Digest, Summary, Message)


_ADAPTERS: dict[str, TypeAdapter[Any]] = {}


def _adapter(kind: type[Any]) -> TypeAdapter[Any]:
    # Built once per view type: a TypeAdapter compiles a validator, which costs far more than using one.
    adapter = _ADAPTERS.get(kind.__name__)
    if adapter is None:
        adapter = _ADAPTERS[kind.__name__] = TypeAdapter(kind)
    return adapter


def dump_view(view: View) -> dict[str, Any]:
    """A view model as JSON-able data for an outbox payload."""
    data: dict[str, Any] = _adapter(type(view)).dump_python(view, mode="json")
    return data


def load_view(kind: type[V], data: Any) -> V:
    """Read back what :func:`dump_view` wrote (raises ``pydantic.ValidationError`` on anything else)."""
    view: V = _adapter(kind).validate_python(data)
    return view
