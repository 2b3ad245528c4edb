"""Outbound delivery channels (Slack, Teams, pagers) and the errors the outbox worker understands."""

from __future__ import annotations


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
