"""``incidents:`` in ``app.yaml``: when to suggest an incident for many similar reports."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from bot.config_types import Duration, Section


class IncidentsConfig(Section):
    """Outages: when to suggest an incident, and how alike a report must be to count as the same fault."""

    suggest_after: int = Field(default=5, ge=2)
    """Similar open reports within ``window`` that make the desk suggest an incident."""
    window: Duration = timedelta(minutes=15)
    similarity: int = Field(default=80, ge=1, le=100)
    """rapidfuzz token-set similarity (0-100) at which two reports count as the same fault."""
    status_channel: str = ""
    """Optional Slack channel id that also gets every incident update."""


__all__ = ["IncidentsConfig"]
