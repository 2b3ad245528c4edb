"""Neutral view models: what a message says, before any platform's markup.

Each is rendered twice — Block Kit (``bot.renderers.slack_blocks``) and Adaptive Cards 1.5
(``bot.renderers.adaptive_cards``) — and built here from the store, so both platforms say the same thing.
All text fields hold raw user text; renderers escape it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bot.routing import Action


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
    value: str


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
    sla: tuple[str, ...] = ()
    escalation: str | None = None
    link: str | None = None
    actions: tuple[CardAction, ...] = ()
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Notice:
    """A short threaded message about a ticket (status change, relayed comment, progress update)."""

    ticket_id: int
    number: str
    headline: str
    body: str | None = None
    author: str | None = None
    facts: tuple[Fact, ...] = ()
    actions: tuple[CardAction, ...] = ()


@dataclass(frozen=True)
class TicketListItem:
    number: str
    summary: str
    status_label: str
    assignee: str | None
    next_update: str | None
    link: str | None = None


@dataclass(frozen=True)
class TicketList:
    """App Home / ``list`` answer: titled groups of tickets."""

    title: str
    sections: tuple[tuple[str, tuple[TicketListItem, ...]], ...] = field(default_factory=tuple)
    empty_text: str = "Nothing here."
