"""Outbound delivery channels (Slack, Teams, pagers).

The errors a channel raises are part of the outbox's contract (``bot.engine.outbox_types``); they are
re-exported here for the channels' convenience."""

from __future__ import annotations

from bot.engine.outbox_types import (
    CredentialsRefused,
    DeliveryError,
    PermanentDeliveryError,
    RateLimited,
    TransientDeliveryError,
)

__all__ = ["CredentialsRefused", "DeliveryError", "PermanentDeliveryError", "RateLimited", "TransientDeliveryError"]
