"""Optional services that hang off the core (escalation, surveys, the NPS pulse, digests, retention)."""

from __future__ import annotations

from bot.desk import Desk
from bot.scheduler import EngineRunner


def install_features(desk: Desk, runner: EngineRunner | None) -> None:
    """Install every feature service on ``desk``; ``runner`` (None in unit tests) takes their cron jobs."""
    from bot.digests import Digests
    from bot.escalation import EscalationService
    from bot.privacy.retention import RetentionService
    from surveys.nps import NpsService
    from surveys.polls import SurveyService
    from surveys.weekly import WeeklySummary

    sla = desk.extras["sla"]
    escalation = EscalationService(desk.config, sla.calendars)
    escalation.install(desk)
    sla.on_breach.append(escalation.on_breach)
    desk.extras.setdefault("closers", []).append(escalation.aclose)
    desk.extras["cards"].escalation_state = escalation.escalation_state
    if desk.config.surveys.enabled:
        SurveyService(desk.config).install(desk)
    NpsService(desk.config).install(desk)  # off unless nps.enabled; installed anyway so pulses out close cleanly
    if desk.config.surveys.weekly_summary:
        WeeklySummary(desk.config).install(desk, runner)
    Digests(desk.config, sla.calendars).install(desk, runner)
    RetentionService(desk.config).install(desk, runner)
