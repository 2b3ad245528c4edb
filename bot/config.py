"""``app.yaml``: the one file an IT team edits. Loaded into pydantic models, secrets from ``${ENV}``."""

from __future__ import annotations

import copy
import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from datetime import date, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url

from bot.durations import SlaDuration, format_duration, parse_duration, parse_sla_duration

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
SlaTarget = Annotated[SlaDuration, PlainValidator(parse_sla_duration)]
"""An SLA target: ``d``/``w`` count the policy calendar's working days, ``h``/``m`` its business time."""
PRIORITIES = ("P1", "P2", "P3", "P4")


def _parse_percent(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        fraction = float(value) / 100 if value > 1 else float(value)
    else:
        text = str(value).strip()
        try:
            fraction = float(text.rstrip("%")) / 100
        except ValueError:
            raise ValueError(f'"{value}" is not a percentage; write 75%') from None
    if not 0 < fraction < 1:
        raise ValueError(f'"{value}" must be between 0% and 100%; write e.g. 75%')
    return fraction


def _parse_clock_time(value: object) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, int):  # YAML 1.1 reads 10:00 as sexagesimal 600
        return time(value // 60 % 24, value % 60)
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", str(value).strip())
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueError(f'"{value}" is not a time of day; write HH:MM like 15:00')
    return time(int(match.group(1)), int(match.group(2)))


def _parse_window(value: object) -> tuple[time, time]:
    match = re.fullmatch(r"\s*(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})\s*", str(value))
    if not match:
        raise ValueError(f'"{value}" is not a time window; write HH:MM-HH:MM like 08:00-20:00')
    return _parse_clock_time(match.group(1)), _parse_clock_time(match.group(2))


Percent = Annotated[float, BeforeValidator(_parse_percent)]
ClockTime = Annotated[time, BeforeValidator(_parse_clock_time)]
Window = Annotated[tuple[time, time], BeforeValidator(_parse_window)]


class Section(BaseModel):
    """Every section rejects keys it does not know, so typos are caught at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_DRIVERS = {("sqlite", "aiosqlite"), ("postgresql", "asyncpg")}


class DatabaseConfig(Section):
    url: str = "sqlite+aiosqlite:///ithelp.db"
    schema_name: str | None = None
    """PostgreSQL schema (search_path) to keep ithelp's tables in; default is the server's."""
    pool_size: int = Field(default=10, ge=1, le=200)
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _usable_url(cls, value: str) -> str:
        # Checked here so a bad URL is a config error at load, not a traceback at serve. The messages never
        # quote the URL: it usually carries the database password.
        try:
            url = make_url(value)
        except ValueError as exc:
            port = "int()" in str(exc)
            raise ValueError("the port is not a number; write e.g. postgresql+asyncpg://ithelp:${ITHELP_DB_PASSWORD}"
                             "@db.internal:5432/ithelp" if port else "is not a database URL; write e.g. "
                             "postgresql+asyncpg://ithelp:${ITHELP_DB_PASSWORD}@db.internal:5432/ithelp") from None
        except Exception:  # SQLAlchemy raises ArgumentError for text that isn't a URL at all
            raise ValueError("is not a database URL; write e.g. sqlite+aiosqlite:///ithelp.db or "
                             "postgresql+asyncpg://ithelp:${ITHELP_DB_PASSWORD}@db.internal:5432/ithelp") from None
        if (url.get_backend_name(), url.get_driver_name()) not in _DRIVERS:
            raise ValueError("ithelp runs on postgresql+asyncpg://… or sqlite+aiosqlite:///… (async drivers); "
                             f"this URL asks for {url.get_backend_name()}+{url.get_driver_name()}")
        return value


def _is_loopback_literal(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=3978, ge=0, le=65535)
    public_url: HttpUrl | None = None
    """The bot's public address (https://…), where Slack and Teams reach it."""
    request_deadline: Duration = timedelta(seconds=2.5)
    """How long a chat request may take before the person is told to try again (Slack gives up at 3 s)."""
    metrics_host: str | None = None
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve /metrics on a listener of its own (metrics_host, default host) instead of the main one."""
    metrics_token: str = ""
    """When set, /metrics answers only requests with ``Authorization: Bearer <token>``."""

    @model_validator(mode="after")
    def _sane(self) -> ServerConfig:
        problems: list[tuple[str, str]] = []
        if not timedelta(milliseconds=100) <= self.request_deadline <= timedelta(seconds=60):
            problems.append(("server.request_deadline", "must be between 0.1s and 60s; Slack gives up after 3s, "
                             "so keep it under that, e.g. 2.5s"))
        if self.metrics_host is not None and self.metrics_port is None:
            problems.append(("server.metrics_port", "required when server.metrics_host is set, e.g. 9464"))
        if problems:
            raise ConfigError(problems)
        return self


class SlackConfig(Section):
    bot_token: str = ""
    signing_secret: str = ""
    app_token: str = ""
    api_url: str = "https://slack.com/api/"
    triage_channel: str = ""
    managers_channel: str = ""
    command: str = "/ithelp"

    @property
    def enabled(self) -> bool:
        return bool(self.bot_token and self.signing_secret)

    @property
    def disabled_reason(self) -> str:
        missing = [name for name in ("bot_token", "signing_secret") if not getattr(self, name)]
        return f"slack.{' and slack.'.join(missing)} not set" if missing else ""


BOT_FRAMEWORK_OPENID_METADATA_URL = "https://login.botframework.com/v1/.well-known/openidconfiguration"


class TeamsConfig(Section):
    enabled: bool | None = None
    """None (default): on when app_id is set. true without credentials: local testing on loopback only."""
    app_id: str = ""
    app_password: str = ""
    app_type: Literal["MultiTenant", "SingleTenant", "UserAssignedMSI"] = "MultiTenant"
    tenant_id: str = ""
    triage_conversation: str = ""
    managers_conversation: str = ""
    service_url: str = "https://smba.trafficmanager.net/teams/"
    openid_metadata_url: str = BOT_FRAMEWORK_OPENID_METADATA_URL
    """Where the Bot Framework publishes the keys Teams signs its requests with (OpenID metadata)."""
    openid_timeout: Duration = timedelta(seconds=5)
    """The longest a fetch of those keys may take; a failed fetch is not retried for 30 seconds."""

    @model_validator(mode="after")
    def _credentials_complete(self) -> TeamsConfig:
        # Half a set of credentials used to run /api/messages unauthenticated without a word: refuse it.
        if self.enabled is False:
            return self
        problems: list[tuple[str, str]] = []
        if self.app_id and not self.app_password and self.app_type != "UserAssignedMSI":
            problems.append(("teams.app_password", "required when teams.app_id is set (the bot's client secret, "
                             "e.g. ${TEAMS_APP_PASSWORD}); without it Teams requests could not be authenticated"))
        if self.app_password and not self.app_id:
            problems.append(("teams.app_id", "required when teams.app_password is set (the Azure Bot's "
                             "Microsoft App ID, e.g. ${TEAMS_APP_ID})"))
        if self.app_id and self.app_type != "MultiTenant" and not self.tenant_id:
            problems.append(("teams.tenant_id", f"required when teams.app_type is {self.app_type} "
                             "(the Azure AD tenant id, e.g. ${TEAMS_TENANT_ID})"))
        if problems:
            raise ConfigError(problems)
        return self

    @property
    def authenticated(self) -> bool:
        return bool(self.app_id and (self.app_password or self.app_type == "UserAssignedMSI"))

    @property
    def active(self) -> bool:
        return self.enabled if self.enabled is not None else bool(self.app_id)


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


class IncidentsConfig(Section):
    """Outages: when to suggest an incident, and how alike a report must be to count as the same fault."""

    suggest_after: int = Field(default=5, ge=2)
    """Similar open reports within ``window`` that make the desk suggest an incident."""
    window: Duration = timedelta(minutes=15)
    similarity: int = Field(default=80, ge=1, le=100)
    """rapidfuzz token-set similarity (0-100) at which two reports count as the same fault."""
    status_channel: str = ""
    """Optional Slack channel id that also gets every incident update."""


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


class AppConfig(Section):
    """The whole of ``app.yaml``."""

    database: DatabaseConfig = DatabaseConfig()
    server: ServerConfig = ServerConfig()
    slack: SlackConfig = SlackConfig()
    teams: TeamsConfig = TeamsConfig()
    agents: AgentsConfig = AgentsConfig()
    default_calendar: str = "default"
    calendars: dict[str, CalendarConfig] = Field(default_factory=lambda: {"default": CalendarConfig()})
    priorities: dict[str, PriorityConfig] = Field(
        default_factory=lambda: {
            "P1": PriorityConfig(label="Critical"),
            "P2": PriorityConfig(label="High"),
            "P3": PriorityConfig(label="Normal"),
            "P4": PriorityConfig(label="Low"),
        }
    )
    default_priority: str = "P3"
    categories: list[str] = Field(default_factory=lambda: ["Hardware", "Software", "Access", "Network", "Other"])
    sla: SlaConfig = SlaConfig()
    escalation: EscalationConfig = EscalationConfig()
    pagers: PagersConfig = PagersConfig()
    updates: UpdatesConfig = UpdatesConfig()
    surveys: SurveysConfig = SurveysConfig()
    nps: NpsConfig = NpsConfig()
    incidents: IncidentsConfig = IncidentsConfig()
    engine: EngineConfig = EngineConfig()
    retention: RetentionConfig = RetentionConfig()

    @model_validator(mode="after")
    def _cross_references(self) -> AppConfig:
        problems: list[tuple[str, str]] = []
        if self.default_calendar not in self.calendars:
            problems.append(("default_calendar", f'"{self.default_calendar}" is not one of calendars: '
                             f"{', '.join(self.calendars)}"))
        if self.teams.enabled and not self.teams.authenticated and not _is_loopback_literal(self.server.host):
            problems.append(("teams.enabled", "true without teams.app_id and teams.app_password runs /api/messages "
                             "unauthenticated, which is allowed only when server.host is a loopback address "
                             "(127.0.0.1); set the credentials or listen on 127.0.0.1"))
        if self.default_priority not in self.priorities:
            problems.append(("default_priority", f'"{self.default_priority}" is not one of priorities: '
                             f"{', '.join(self.priorities)}"))
        for name, policy in self.sla.policies.items():
            if name not in self.priorities:
                problems.append((f"sla.policies.{name}", f"unknown priority; use one of {', '.join(self.priorities)}"))
            if policy.calendar and policy.calendar not in self.calendars:
                problems.append((f"sla.policies.{name}.calendar",
                                 f'"{policy.calendar}" is not defined under calendars'))
        for name, chain in self.escalation.chains.items():
            if chain.calendar and chain.calendar not in self.calendars:
                problems.append((f"escalation.chains.{name}.calendar",
                                 f'"{chain.calendar}" is not defined under calendars'))
            for index, level in enumerate(chain.levels):
                for target in level.notify:
                    error = self._target_problem(target)
                    if error:
                        problems.append((f"escalation.chains.{name}.levels.{index}.notify", error))
        for priority, triggers in self.escalation.policies.items():
            for trigger, chain_name in triggers.model_dump().items():
                if chain_name and chain_name not in self.escalation.chains:
                    problems.append((f"escalation.policies.{priority}.{trigger}",
                                     f'"{chain_name}" is not defined under escalation.chains'))
        if problems:
            raise ConfigError(problems)
        return self

    def _target_problem(self, target: str) -> str | None:
        kind, _, rest = target.partition(":")
        if target == "assignee" or target == "lead":
            return None
        if kind in ("slack", "teams"):
            sub, _, ident = rest.partition(":")
            allowed = ("user", "usergroup", "channel") if kind == "slack" else ("user", "channel")
            if sub not in allowed or not ident:
                return f'"{target}" is not a target; write {kind}:{"|".join(allowed)}:<id>'
            return None
        registries: dict[str, Mapping[str, object]] = {
            "pagerduty": self.pagers.pagerduty, "opsgenie": self.pagers.opsgenie, "webhook": self.pagers.webhook}
        registry = registries.get(kind)
        if registry is None:
            return (f'"{target}" is not a target; use assignee, lead, slack:user:U…, slack:channel:C…, '
                    "teams:user:<id>, pagerduty:<name>, opsgenie:<name> or webhook:<name>")
        if rest not in registry:
            return f'"{target}" names no pager; define pagers.{kind}.{rest}'
        return None

    def sla_policy(self, priority: str) -> SlaPolicy | None:
        return self.sla.policies.get(priority)


class ConfigError(ValueError):
    """Every problem in a config file, each with its YAML path and a plain-words fix."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{path}: {message}" for path, message in problems))


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Interpolated:
    """What ``${ENV}`` put into the file: the variables each key used, and the values they brought (to scrub)."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {}
        self.values: set[str] = set()

    def scrub(self, message: str) -> str:
        # Longest first, so a value that contains another is replaced whole.
        for value in sorted(self.values, key=len, reverse=True):
            message = message.replace(value, "…")
        return message


def _interpolate(node: Any, path: str, env: Mapping[str, str], problems: list[tuple[str, str]],
                 seen: _Interpolated | None = None) -> Any:
    seen = seen if seen is not None else _Interpolated()
    if isinstance(node, dict):
        return {key: _interpolate(value, f"{path}.{key}" if path else str(key), env, problems, seen)
                for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate(value, f"{path}.{index}", env, problems, seen) for index, value in enumerate(node)]
    if isinstance(node, str):
        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            seen.names.setdefault(path, []).append(name)
            if name in env:
                if env[name]:
                    seen.values.add(env[name])
                return env[name]
            if default is not None:
                return default
            problems.append((path, f"environment variable {name} is not set; export it or write "
                                   f"${{{name}:-default}}"))
            return ""

        return _ENV.sub(replace, node)
    return node


def _cross_reference_problems(raw: dict[str, Any], field_errors: list[Any]) -> list[tuple[str, str]]:
    # Pydantic checks cross-references (an unknown pager, calendar…) only once every field is valid.
    # Check them again with the broken keys taken out (a whole entry when taking out a key leaves it
    # incomplete), so one run of check-config lists both kinds; problems under a removed key are left
    # out, as its removal may be what caused them.
    pruned = copy.deepcopy(raw)
    removed: list[str] = []
    errors = field_errors
    for _ in range(5):
        for error in errors:
            loc = [str(part) for part in error["loc"]]
            if error["type"] == "missing":
                loc = loc[:-1]
            parent: Any = pruned
            for part in loc[:-1]:
                parent = parent.get(part) if isinstance(parent, dict) else None
            if isinstance(parent, dict) and loc and loc[-1] in parent:
                del parent[loc[-1]]
                removed.append(".".join(loc))
        try:
            AppConfig.model_validate(pruned)
            return []
        except ValidationError as again:
            errors = [e for e in again.errors() if not isinstance(e.get("ctx", {}).get("error"), ConfigError)]
            if errors:
                continue
            found = [problem for error in again.errors() for problem in error["ctx"]["error"].problems]
            return [(path, message) for path, message in found
                    if not any(path == key or path.startswith(key + ".") for key in removed)]
    return []


def _describe(error: Mapping[str, Any], raw: Any, interpolated: _Interpolated) -> tuple[str, str]:
    loc = [str(part) for part in error["loc"]]
    path = ".".join(loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        parent: Any = raw
        for part in loc[:-1]:
            parent = parent.get(part, {}) if isinstance(parent, dict) else {}
        known = _known_keys(loc[:-1])
        guess = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f'; did you mean "{guess[0]}"?' if guess else (f"; known keys: {', '.join(known)}" if known else "")
        return path, f"unknown key{hint}"
    if kind == "missing":
        return path, "is required"
    message = str(error["msg"]).removeprefix("Value error, ")
    names = interpolated.names.get(path)
    if names:
        # Never the value: it came from the environment, where the secrets live. Say what was expected.
        variables = " and ".join(f"${{{name}}}" for name in dict.fromkeys(names))
        return path, f"the value from {variables} is invalid: {interpolated.scrub(message)}"
    value = error.get("input")
    if kind.startswith(("int_", "bool_", "float_", "string_", "list_", "dict_", "literal_", "greater", "less")):
        return path, f"{value!r} is invalid: {message}"
    return path, message


def _known_keys(loc: list[str]) -> list[str]:
    model: Any = AppConfig
    for part in loc:
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif args and isinstance(args[-1], type) and issubclass(args[-1], BaseModel):
            model = args[-1]
        else:
            return []
    return list(model.model_fields) if hasattr(model, "model_fields") else []


def parse_config(text: str, env: Mapping[str, str] | None = None) -> AppConfig:
    """Parse YAML text into an ``AppConfig``; raise ``ConfigError`` listing every problem."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "file"
        raise ConfigError([(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if not isinstance(raw, dict):
        raise ConfigError([("(top level)", "app.yaml must be a mapping of sections like database:, slack:")])
    problems: list[tuple[str, str]] = []
    interpolated = _Interpolated()
    resolved = _interpolate(raw, "", os.environ if env is None else env, problems, interpolated)
    try:
        config = AppConfig.model_validate(resolved)
    except ValidationError as exc:
        field_errors = []
        for error in exc.errors():
            ctx_error = error.get("ctx", {}).get("error")
            if isinstance(ctx_error, ConfigError):
                problems.extend(ctx_error.problems)
            else:
                problems.append(_describe(error, resolved, interpolated))
                field_errors.append(error)
        if field_errors:
            problems.extend(p for p in _cross_reference_problems(resolved, field_errors) if p not in problems)
        # Cross-reference messages quote values too ("… is not defined under calendars"): none from ${ENV}.
        raise ConfigError([(path, interpolated.scrub(message)) for path, message in problems]) from None
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: str | Path = "app.yaml", env: Mapping[str, str] | None = None) -> AppConfig:
    """Load and validate a config file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([(str(file), "file not found; copy app.yaml from the ithelp repository")]) from None
    return parse_config(text, env)
