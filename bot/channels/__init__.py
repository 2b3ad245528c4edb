"""Outbound delivery channels (Slack, Teams, pagers) and the errors the outbox worker understands."""

from __future__ import annotations


class DeliveryError(Exception):
    """Base class for a failed delivery of one outbox message."""


class TransientDeliveryError(DeliveryError):
    """The target may accept the message later (429, 5xx, timeouts): retry with backoff.

    ``retry_after`` is the delay in seconds the target asked for (``Retry-After``), if any.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """The target refused the message for good (400, 403 ...): do not retry, surface it."""
