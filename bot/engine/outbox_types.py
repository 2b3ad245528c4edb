"""What the outbox hands a delivery channel and what the channel hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class OutboxItem:
    """A plain copy of an outbox row handed to a channel (no session attached)."""

    id: int
    target: str
    kind: str
    ticket_id: int | None
    payload: dict[str, Any]
    attempts: int
    superseded: bool = False
    """A card refresh with a newer refresh of the same card queued behind it: skipped."""
    urgent: bool = False
    """A page (an urgent channel, or ``"urgent": true`` in the payload): never waits for a turn, goes
    first in its lane, and holds a short lease."""


@dataclass
class Delivered:
    """What a channel reports back: the platform message id, and refs to remember for in-place updates."""

    message_id: str | None = None
    refs: list[tuple[int, str, str, str, str]] = field(default_factory=list)
    """(ticket_id, role, platform, channel, message_id) rows for ``message_refs``."""


class Channel(Protocol):
    """Delivers outbox messages for one target prefix (``slack``, ``teams``, ``pagerduty`` …).

    ``pacing_key`` names the conversation a message lands in: its lane, paced and held (429) on its own.
    A channel may set ``min_interval`` (seconds between messages in one pacing lane) to override the
    worker's default, e.g. 0 for pagers, which have no per-conversation limit; and ``urgent = True``
    (pagers) for messages that never wait for a turn and hold a short, renewed lease, as a message
    whose payload says ``"urgent": true`` (a chat page) does.
    """

    async def deliver(self, item: OutboxItem) -> Delivered: ...

    def pacing_key(self, item: OutboxItem) -> str: ...


class DeliveryError(Exception):
    """Base class for a failed delivery of one outbox message."""


class TransientDeliveryError(DeliveryError):
    """The target may accept the message later (5xx, timeouts): retry with backoff.

    ``retry_after`` is the delay in seconds the target asked for (``Retry-After``), if any.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """The target refused the message for good (400, 403 ...): do not retry, surface it."""


class RateLimited(TransientDeliveryError):
    """The conversation (or method) is over its rate limit: come back after ``retry_after`` seconds.

    Holds only the lane it came from, never the whole platform: Slack and the Bot Framework limit
    per conversation (chat.postMessage: about one message a second per channel) and their 429s do not
    say when a limit is workspace-wide. Being told to wait is not the message's fault, so it does not
    use up one of its attempts.
    """


class CredentialsRefused(TransientDeliveryError):
    """The platform refused the bot's own credentials (a revoked or expired token, a rotated app
    secret): every message to that platform fails until someone fixes them, so this is an outage of
    the platform, not a problem with the message. The outbox keeps retrying for
    ``engine.credentials_outage_window`` from the message's first such failure, then dead-letters it."""
