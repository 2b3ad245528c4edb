"""``app.yaml``: the one file an IT team edits. Loaded into pydantic models, secrets from ``${ENV}``.

The sections live in ``bot.config_platforms`` and ``bot.config_sections``; this module puts them together
and loads the file."""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    model_validator,
)

from bot.config_incidents import IncidentsConfig
from bot.config_knowledge import KnowledgeConfig
from bot.config_platforms import (
    BOT_FRAMEWORK_OPENID_METADATA_URL,
    DatabaseConfig,
    ServerConfig,
    SlackConfig,
    TeamsConfig,
    _is_loopback_literal,
)
from bot.config_sections import (
    NPS_QUESTION,
    AgentsConfig,
    CalendarConfig,
    EngineConfig,
    EscalationChain,
    EscalationConfig,
    EscalationLevel,
    EscalationTriggers,
    HelpContact,
    NpsConfig,
    OpsgenieTarget,
    PagerDutyTarget,
    PagersConfig,
    Prefixes,
    PriorityConfig,
    RetentionAge,
    RetentionConfig,
    SlaConfig,
    SlaPolicy,
    SurveysConfig,
    TriageThreadConfig,
    UpdatesConfig,
    WebhookTarget,
    Zone,
)
from bot.config_types import (
    PRIORITIES,
    ClockTime,
    ConfigError,
    Duration,
    Percent,
    Section,
    SlaTarget,
    Window,
)


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
    knowledge: KnowledgeConfig = KnowledgeConfig()
    incidents: IncidentsConfig = IncidentsConfig()
    engine: EngineConfig = EngineConfig()
    retention: RetentionConfig = RetentionConfig()
    triage_thread: TriageThreadConfig = TriageThreadConfig()
    escalation_matrix: list[HelpContact] = Field(default_factory=list, max_length=20)
    """Who handles what, shown by help; without it, help describes the escalation chains."""

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


__all__ = [
    "BOT_FRAMEWORK_OPENID_METADATA_URL",
    "NPS_QUESTION",
    "PRIORITIES",
    "AgentsConfig",
    "AppConfig",
    "CalendarConfig",
    "ClockTime",
    "ConfigError",
    "DatabaseConfig",
    "Duration",
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
    "Percent",
    "Prefixes",
    "PriorityConfig",
    "RetentionAge",
    "RetentionConfig",
    "Section",
    "ServerConfig",
    "SlaConfig",
    "SlaPolicy",
    "SlaTarget",
    "SlackConfig",
    "SurveysConfig",
    "TeamsConfig",
    "TriageThreadConfig",
    "UpdatesConfig",
    "WebhookTarget",
    "Window",
    "Zone",
    "load_config",
    "parse_config",
]
