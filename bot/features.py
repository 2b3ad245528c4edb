"""Optional services that hang off the core (SLA clock, escalation, surveys, digests)."""

from __future__ import annotations

from bot.desk import Desk
from bot.scheduler import EngineRunner


def install_features(desk: Desk, runner: EngineRunner | None) -> None:
    """Install every feature service on ``desk``; ``runner`` (None in unit tests) takes their cron jobs."""
