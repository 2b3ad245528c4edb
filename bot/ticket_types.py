"""What the ticket lifecycle is made of: statuses and their transitions, the errors a change can raise, and the
snapshots and change records services and adapters see."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import AppConfig
from bot.text import without_controls
from store.models import Person, Ticket, TicketEvent

NEW, CLAIMED, IN_PROGRESS, WAITING, RESOLVED, CLOSED, REOPENED = (
    "new", "claimed", "in_progress", "waiting_on_requester", "resolved", "closed", "reopened",
)
OPEN_STATUSES = (NEW, CLAIMED, IN_PROGRESS, WAITING, REOPENED)
STATUS_LABELS = {
    NEW: "new", CLAIMED: "claimed", IN_PROGRESS: "in progress", WAITING: "waiting on the requester",
    RESOLVED: "resolved", CLOSED: "closed", REOPENED: "reopened",
}
"""How agents (and the audit trail) read a status."""
REQUESTER_STATUS_LABELS = {**STATUS_LABELS, WAITING: "waiting on you"}
"""How the requester reads their own ticket's status."""
TRANSITIONS: dict[str, frozenset[str]] = {
    NEW: frozenset({CLAIMED, IN_PROGRESS, WAITING, RESOLVED}),
    CLAIMED: frozenset({IN_PROGRESS, WAITING, RESOLVED, NEW}),
    IN_PROGRESS: frozenset({WAITING, RESOLVED, NEW}),
    WAITING: frozenset({IN_PROGRESS, RESOLVED, NEW}),
    RESOLVED: frozenset({CLOSED, REOPENED}),
    REOPENED: frozenset({CLAIMED, IN_PROGRESS, WAITING, RESOLVED}),
    CLOSED: frozenset({REOPENED}),
}
MAX_SUMMARY = 300
MAX_DESCRIPTION = 40_000
DEDUP_TTL = timedelta(days=2)


class TicketError(Exception):
    """A request the desk can't carry out; ``str()`` is a sentence to show the person as is."""


class TicketNotFound(TicketError):
    pass


class IllegalTransition(TicketError):
    pass


class NotAllowed(TicketError):
    pass


class AlreadyClaimed(TicketError):
    def __init__(self, number: str, owner: str) -> None:
        super().__init__(f"{number} is already claimed by {owner}.")
        self.owner = owner


class InvalidInput(TicketError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Origin:
    """Where a ticket came from, so replies can go back there and cards can link to it."""

    platform: str
    conversation: str | None = None
    thread: str | None = None
    link: str | None = None


@dataclass(frozen=True)
class TicketSnapshot:
    """A detached, read-only view of a ticket after a change (safe to use outside the session)."""

    id: int
    number: str
    summary: str
    status: str
    priority: str
    category: str | None
    requester_address: str
    requester_name: str
    requester_timezone: str | None
    assignee_address: str | None
    assignee_name: str | None
    created_at: datetime
    first_response_due: datetime | None
    resolution_due: datetime | None
    next_update_due: datetime | None
    calendar: str

    @property
    def status_label(self) -> str:
        return STATUS_LABELS.get(self.status, self.status)

    @property
    def requester_status_label(self) -> str:
        return REQUESTER_STATUS_LABELS.get(self.status, self.status)


@dataclass
class TicketChange:
    """What subscribers see: the change, inside its transaction."""

    session: AsyncSession
    now: datetime
    ticket: Ticket
    event: TicketEvent
    actor: Person | None
    requester: Person
    assignee: Person | None
    previous_status: str | None
    config: AppConfig
    extra: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[TicketChange], Awaitable[None]]
# (priority, calendar, opened at) -> (first response due, resolution due, next update due) of a new ticket.
InitialTargets = Callable[[str, str, datetime], tuple[datetime | None, datetime | None, datetime | None]]
_KNOWN_PEOPLE_LIMIT = 50_000
_LOCK_CONFLICTS = ("40P01", "40001")  # PostgreSQL: deadlock detected, serialization failure
log = logging.getLogger("ithelp.tickets")
_Known = tuple[bool, int, str, str | None]  # is agent, person id, display name, time zone


@dataclass(frozen=True)
class OpenResult:
    ticket: TicketSnapshot
    created: bool


class _Unchanged(Exception):
    """Raised inside a change to say "already so": idempotent no-op, no event."""


class _Duplicate(Exception):
    """Raised inside a change when its inbound message was already recorded."""


def _clean_text(text: str, what: str, limit: int, *, required: bool) -> str:
    cleaned = without_controls(text or "").strip()
    if required and not cleaned:
        raise InvalidInput(f"The {what} can't be empty.", field=what)
    if len(cleaned) > limit:
        raise InvalidInput(f"The {what} is {len(cleaned):,} characters; the limit is {limit:,}.", field=what)
    return cleaned


def check_intake(summary: str, description: str = "") -> tuple[str, str]:
    """(summary, description) as a ticket would store them, or ``InvalidInput``: for intake that files later."""
    return _clean_intake(summary, description)


def _clean_intake(summary: str, description: str) -> tuple[str, str]:
    summary = without_controls(summary or "").strip()
    description = without_controls(description or "").strip()
    if not summary:
        raise InvalidInput("Please describe the problem in a few words.", field="summary")
    first_line = summary.splitlines()[0].strip()
    if len(first_line) > MAX_SUMMARY or first_line != summary:
        # Long or multi-line text is kept whole as the description; nothing the person typed is dropped.
        cut = first_line[: MAX_SUMMARY - 1].rstrip() + "…" if len(first_line) > MAX_SUMMARY else first_line
        description = summary + ("\n\n" + description if description else "")
        summary = cut
    if len(description) > MAX_DESCRIPTION:
        raise InvalidInput(f"The description is {len(description):,} characters; the limit is {MAX_DESCRIPTION:,}. "
                           "Attach long logs as a file instead.", field="description")
    return summary, description


__all__ = [
    "CLAIMED",
    "CLOSED",
    "DEDUP_TTL",
    "IN_PROGRESS",
    "MAX_DESCRIPTION",
    "MAX_SUMMARY",
    "NEW",
    "OPEN_STATUSES",
    "REOPENED",
    "REQUESTER_STATUS_LABELS",
    "RESOLVED",
    "STATUS_LABELS",
    "TRANSITIONS",
    "WAITING",
    "AlreadyClaimed",
    "IllegalTransition",
    "InitialTargets",
    "InvalidInput",
    "NotAllowed",
    "OpenResult",
    "Origin",
    "Subscriber",
    "TicketChange",
    "TicketError",
    "TicketNotFound",
    "TicketSnapshot",
    "check_intake",
    "log",
]
