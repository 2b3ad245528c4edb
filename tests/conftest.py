"""Shared fixtures: a fresh database per test on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.clock import ManualClock
from bot.config import AppConfig, parse_config
from store.db import Database
from store.migrate import upgrade

POSTGRES_URL = os.environ.get("ITHELP_TEST_POSTGRES_URL", "")
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if POSTGRES_URL:
        return
    skip = pytest.mark.skip(reason="set ITHELP_TEST_POSTGRES_URL to run the PostgreSQL variants")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


class DatabaseFactory:
    """Creates isolated databases: a temp SQLite file, or a fresh PostgreSQL schema."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self.schemas: list[str] = []
        self.databases: list[Database] = []

    async def url_and_schema(self) -> tuple[str, str | None]:
        if self.backend == "sqlite":
            return f"sqlite+aiosqlite:///{self.tmp_path / f'ithelp-{uuid.uuid4().hex[:6]}.db'}", None
        schema = f"t_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL))
        try:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        finally:
            await conn.close()
        self.schemas.append(schema)
        return POSTGRES_URL, schema

    async def create(self, *, migrate: bool = True) -> Database:
        url, schema = await self.url_and_schema()
        db = Database(url, schema=schema)
        self.databases.append(db)
        if migrate:
            await upgrade(db)
        return db

    def another_handle(self, db: Database) -> Database:
        """A second engine on the same database, as a second replica would have."""
        other = Database(str(db.url.render_as_string(hide_password=False)), schema=db.schema)
        self.databases.append(other)
        return other

    async def cleanup(self) -> None:
        for db in self.databases:
            await db.dispose()
        if self.schemas:
            conn = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL))
            try:
                for schema in self.schemas:
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()


@pytest.fixture(params=BACKENDS)
async def databases(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DatabaseFactory]:
    factory = DatabaseFactory(request.param, tmp_path)
    yield factory
    await factory.cleanup()


@pytest.fixture
async def db(databases: DatabaseFactory) -> Database:
    return await databases.create()


@pytest.fixture
def clock() -> ManualClock:
    # A Monday morning in London, inside business hours.
    return ManualClock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))


TEST_CONFIG = """
slack:
  bot_token: xoxb-test
  signing_secret: test-signing-secret
  triage_channel: C0TRIAGE
agents:
  slack_users: [UAGENT1, UAGENT2]
  teams_users: [aad-agent-1]
default_calendar: london
calendars:
  london:
    timezone: Europe/London
    hours: {mon-fri: ["09:00-17:00"]}
    country: GB
    subdivision: ENG
  always:
    timezone: UTC
    always_open: true
sla:
  policies:
    P1: {calendar: always, first_response: 15m, update_every: 1h, resolution: 4h, warn_at: 75%}
    P2: {first_response: 1h, update_every: 2h, resolution: 8h, warn_at: 75%}
    P3: {first_response: 4h, update_every: 24h, resolution: 72h}
    P4: {first_response: 24h, resolution: 120h}
engine:
  min_interval_per_channel: 0s
server:
  request_deadline: 20s  # a slow turn on a loaded test machine is not an outage; deadline tests set their own
"""


@pytest.fixture
def make_config() -> Callable[..., AppConfig]:
    def make(extra: str = "", **overrides: Any) -> AppConfig:
        config = parse_config(TEST_CONFIG + extra, env={})
        return config.model_copy(update=overrides) if overrides else config

    return make


@pytest.fixture
def config(make_config: Callable[..., AppConfig]) -> AppConfig:
    return make_config()


@pytest.fixture
async def make_desk(db: Database, clock: ManualClock, config: AppConfig) -> AsyncIterator[Callable[..., Any]]:
    from bot.desk import Desk, build_desk

    built: list[Desk] = []

    def make(*, database: Database | None = None, app_config: AppConfig | None = None, replica: str | None = None):
        desk = build_desk(app_config or config, database or db, clock, replica=replica)
        built.append(desk)
        return desk

    yield make
    for desk in built:
        await desk.aclose()


@pytest.fixture
def desk(make_desk: Callable[..., Any]) -> Any:
    return make_desk()


REQUESTER = "UREQ1"


@pytest.fixture
def make_ticket(desk: Any) -> Callable[..., Any]:
    """Open a ticket as a Slack requester; returns its snapshot."""
    from bot.people import PersonRef
    from bot.tickets import Origin

    async def make(summary: str = "Printer on 3rd floor is jammed", *, requester: str = REQUESTER,
                   priority: str | None = None, description: str = "", tz: str = "Europe/London") -> Any:
        result = await desk.tickets.open(
            PersonRef("slack", requester, display_name=f"Person {requester}", timezone=tz), summary,
            origin=Origin("slack", conversation="C0GENERAL"), description=description, priority=priority)
        return result.ticket

    return make

from tests.slack_harness import bot, slack_extra_config  # noqa: E402,F401  (shared Slack e2e fixtures)
