"""``app.yaml``: where the desk runs: database, HTTP server, Slack and Teams credentials."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Literal

from pydantic import (
    Field,
    HttpUrl,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url

from bot.config_types import (
    ConfigError,
    Duration,
    Section,
)

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


__all__ = ["BOT_FRAMEWORK_OPENID_METADATA_URL", "DatabaseConfig", "ServerConfig", "SlackConfig", "TeamsConfig"]
