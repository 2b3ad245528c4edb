"""``app.yaml``: how the desk works: agents, calendars, priorities and SLA policies, escalation, pagers,
updates, surveys, the engine, retention and the triage thread."""

from __future__ import annotations

from datetime import date, time, timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    field_validator,
)

from bot.config_types import (
    ClockTime,
    Duration,
    Percent,
    Section,
    SlaTarget,
    Window,
)
from bot.durations import format_duration


class AgentsConfig(Section):
    slack_users: list[str] = Field(default_factory=list)
    slack_usergroups: list[str] = Field(default_factory=list)
    teams_users: list[str] = Field(default_factory=list)
    leads: dict[str, str] = Field(default_factory=dict)
    """Maps an agent (``slack:U…`` / ``teams:<aad id>``) to their lead's target."""


def _valid_zone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f'"{value}" is not an IANA time zone; write e.g. Europe/London') from None
    return value


Zone = Annotated[str, AfterValidator(_valid_zone)]


class CalendarConfig(Section):
    timezone: Zone = "UTC"
    hours: dict[str, list[str]] = Field(default_factory=lambda: {"mon-fri": ["09:00-17:00"]})
    country: str | None = None
    subdivision: str | None = None
    holidays: list[date] = Field(default_factory=list)
    always_open: bool = False


class PriorityConfig(Section):
    label: str
    description: str = ""


class SlaPolicy(Section):
    """One priority's targets, counted on ``calendar`` (the ticket's calendar when unset)."""

    calendar: str | None = None
    first_response: SlaTarget
    update_every: SlaTarget | None = None
    resolution: SlaTarget
    warn_at: Percent | None = None


class SlaConfig(Section):
    policies: dict[str, SlaPolicy] = Field(default_factory=dict)
    auto_close_after: Duration = timedelta(days=3)


class EscalationLevel(Section):
    notify: list[str] = Field(min_length=1)
    wait: Duration = timedelta(minutes=15)


class EscalationChain(Section):
    levels: list[EscalationLevel] = Field(min_length=1)
    repeat: int = Field(default=0, ge=0, le=20)
    only_between: Window | None = None
    calendar: str | None = None


class EscalationTriggers(Section):
    warn: str | None = None
    breach: str | None = None
    first_response: str | None = None
    update: str | None = None
    resolution: str | None = None


class EscalationConfig(Section):
    chains: dict[str, EscalationChain] = Field(default_factory=dict)
    policies: dict[str, EscalationTriggers] = Field(default_factory=dict)
    max_chat_pages_per_hour: int = Field(default=6, ge=1)
    audit_every: Duration = timedelta(minutes=1)


class PagerDutyTarget(Section):
    routing_key: str
    events_url: str = "https://events.pagerduty.com/v2/enqueue"


class OpsgenieTarget(Section):
    api_key: str
    api_url: str = "https://api.opsgenie.com"


class WebhookTarget(Section):
    url: str
    secret: str | None = None


class PagersConfig(Section):
    pagerduty: dict[str, PagerDutyTarget] = Field(default_factory=dict)
    opsgenie: dict[str, OpsgenieTarget] = Field(default_factory=dict)
    webhook: dict[str, WebhookTarget] = Field(default_factory=dict)


class UpdatesConfig(Section):
    digest_times: list[ClockTime] = Field(default_factory=lambda: [time(10, 0), time(15, 0)])
    max_per_ticket_per_day: int = Field(default=3, ge=0)
    triage_digest_time: ClockTime | None = time(9, 0)
    nudge_assignee: bool = True


class SurveysConfig(Section):
    enabled: bool = True
    delay: Duration = timedelta(0)
    expire_after: Duration = timedelta(days=7)
    remind_after: Duration | None = None
    resurvey_on_reopen: bool = False
    fatigue_days: int | None = Field(default=None, ge=1)
    thumbs_down_notify: Literal["lead", "triage", "none"] = "triage"
    weekly_summary: bool = True
    cooldown: Duration | None = None
    """Survey fatigue across kinds: no NPS pulse within this long of a person's CSAT poll, and no CSAT poll
    within this long of their NPS pulse (``fatigue_days`` still spaces CSAT polls from each other)."""


NPS_QUESTION = "How likely are you to recommend the IT desk to a colleague?"


class NpsConfig(Section):
    """The optional NPS pulse: every ``every``, each person who filed a ticket in the period is asked once."""

    enabled: bool = False
    every: Duration = timedelta(days=90)
    expire_after: Duration = timedelta(days=14)
    """How long a pulse can be answered (and the answer changed)."""
    question: str = Field(default=NPS_QUESTION, min_length=1, max_length=300)
    start: date = date(2024, 1, 1)
    """Where the periods are counted from: rounds fall on ``start`` + k × ``every``."""
    send_at: ClockTime = time(10, 0)
    """Time of day (default calendar's zone) a round goes out."""

    @field_validator("every", "expire_after")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value < timedelta(hours=1):
            raise ValueError(f"{format_duration(value)} is too short; write e.g. 90d")
        return value


class EngineConfig(Section):
    tick_interval: Duration = timedelta(seconds=1)
    lease: Duration = timedelta(seconds=60)
    urgent_lease: Duration = timedelta(seconds=5)
    """Lease on urgent work (pages; SLA breach and warning timers), renewed while this replica still has it
    in hand: when a replica dies its pages go out from another one within about this long, not ``lease``."""
    batch_size: int = Field(default=200, ge=1, le=10000)
    outbox_max_attempts: int = Field(default=8, ge=1)
    outbox_concurrency: int = Field(default=16, ge=1, le=1000)
    """Messages delivered at once (pages do not count): enough for Slack's limits, and it leaves
    database connections for requests."""
    outbox_backoff_base: Duration = timedelta(seconds=1)
    outbox_backoff_max: Duration = timedelta(minutes=10)
    min_interval_per_channel: Duration = timedelta(seconds=1)
    """Spacing between messages to one Slack channel / Teams conversation (Slack allows ~1/s)."""
    credentials_outage_window: Duration = timedelta(hours=1)
    """How long a message is retried while its platform refuses the bot's credentials (a revoked token),
    counted from its first such failure; then it is dead-lettered (``ithelp outbox retry`` brings it back)."""
    keep_history: Duration = timedelta(days=30)
    """Delivered messages and finished timers older than this are deleted (hourly); tickets and their
    events, which the reports read, are kept for ever."""
    background_share: float = Field(default=0.1, gt=0, le=1)
    """During a burst of chat requests, the most of the time background work (setting up new tickets,
    the outbox) takes; pages are exempt. 1 = background work never steps aside."""


def _at_least_a_day(value: timedelta | None) -> timedelta | None:
    # A bare number is read as seconds elsewhere in app.yaml; here "365" would erase a day's tickets at once.
    if value is not None and value < timedelta(days=1):
        raise ValueError(f"{format_duration(value)} is less than a day, too short to keep data (a bare number "
                         "counts seconds); write e.g. 365d")
    return value


RetentionAge = Annotated[Duration | None, AfterValidator(_at_least_a_day)]


class RetentionConfig(Section):
    """What the desk forgets, and when (off unless set). Metrics (times, verdicts, answers) are kept."""

    text_after: RetentionAge = None
    """Closed (or long-resolved) tickets' free text is redacted this long after they were resolved."""
    people_after: RetentionAge = None
    """People with no open ticket and no activity for this long are anonymised."""
    run_at: ClockTime = time(3, 0)
    """When the daily run starts, in the default calendar's zone."""
    batch_size: int = Field(default=100, ge=1, le=2000)
    """Tickets (or people) per transaction: each batch holds its locks only briefly."""

    @property
    def enabled(self) -> bool:
        return self.text_after is not None or self.people_after is not None


def _prefixes(value: list[str]) -> list[str]:
    cleaned = [prefix.strip() for prefix in value]
    if any(not prefix for prefix in cleaned):
        raise ValueError("an empty prefix would match every message; remove it")
    return cleaned


Prefixes = Annotated[list[str], AfterValidator(_prefixes)]


class HelpContact(Section):
    """One row of the escalation matrix that help shows requesters: what is handled, by whom, how to reach them."""

    handles: str = Field(min_length=1, max_length=200)
    contact: str = Field(min_length=1, max_length=300)


class TriageThreadConfig(Section):
    """What an agent's message in a ticket's triage thread does: reach the requester, or stay among agents."""

    default: Literal["reply", "note"] = "reply"
    """``reply``: relayed to the requester unless it starts with a note prefix; ``note``: kept internal unless
    it starts with a reply prefix."""
    note_prefixes: Prefixes = Field(default_factory=lambda: ["note:", "//"])
    reply_prefixes: Prefixes = Field(default_factory=lambda: ["reply:"])


__all__ = [
    "NPS_QUESTION",
    "AgentsConfig",
    "CalendarConfig",
    "EngineConfig",
    "EscalationChain",
    "EscalationConfig",
    "EscalationLevel",
    "EscalationTriggers",
    "HelpContact",
    "NpsConfig",
    "OpsgenieTarget",
    "PagerDutyTarget",
    "PagersConfig",
    "Prefixes",
    "PriorityConfig",
    "RetentionAge",
    "RetentionConfig",
    "SlaConfig",
    "SlaPolicy",
    "SurveysConfig",
    "TriageThreadConfig",
    "UpdatesConfig",
    "WebhookTarget",
    "Zone",
]
