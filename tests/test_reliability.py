"""Reliability (issue #8): replicas, crashes, a database restart and fuzzed payloads, against real processes.

- Three ``ithelp serve`` processes on one PostgreSQL schema take Slack traffic round-robin (Slack retries of one
  event land on different replicas): every ticket is created once, its triage card posted once, every breach
  recorded (and, with escalation installed, paged) once, every survey sent once.
- ``kill -9`` of a server while Slack is slow to answer: after a restart every outbox message is delivered;
  duplicates are bounded by the messages that were in flight (sent, not yet recorded) at the kill.
- A private PostgreSQL cluster is restarted under load: answers stay fast and clean, nothing is half-written,
  and the server carries on afterwards.
- Hypothesis fuzzes Slack and Teams payloads into an in-process server: never a 500, never a traceback; Teams
  bodies also against an authenticated endpoint, with and without tokens (refused before or after auth).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import yaml
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from bot.clock import ManualClock
from bot.config import AppConfig, TeamsConfig, parse_config
from bot.routing import Action, Form, Shortcut
from bot.server import Server
from bot.simulators import slack_requests as rq
from bot.simulators import teams_activities as ta
from bot.simulators.bot_connector import FakeBotConnector
from bot.simulators.slack_api import FakeSlackApi, read_args
from store.db import Database
from store.migrate import upgrade
from store.models import OutboxMessage, Ticket, TicketEvent, Timer
from tests.conftest import TEST_CONFIG, DatabaseFactory
from tests.fakes.openid import FakeOpenIdProvider, forged_token
from tests.fakes.process import (
    PrivatePostgres,
    ServeProcess,
    private_postgres_unavailable,
    start_servers,
    stop_servers,
    write_config,
)
from tests.harness import running_server

SECRET = "test-signing-secret"
TRIAGE = "C0TRIAGE"
AGENT = "UAGENT1"
ONCALL = "UONCALL"
POSTGRES_URL = os.environ.get("ITHELP_TEST_POSTGRES_URL", "")
needs_postgres = pytest.mark.skipif(not POSTGRES_URL, reason="set ITHELP_TEST_POSTGRES_URL to run the replica tests")
NUMBER = re.compile(r"\bIT-(\d+)\b")
OUTAGE_WORDS = "can't reach its database"


# -- shared helpers -------------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    text: str
    elapsed: float
    started: float = 0.0

    def json(self) -> Any:
        try:
            return json.loads(self.text) if self.text else None
        except ValueError:
            return None


async def send(http: aiohttp.ClientSession, url: str, request: rq.SignedRequest, *, timeout: float = 15) -> Reply:  # noqa: ASYNC109
    started = time.monotonic()
    async with http.post(url, data=request.body, headers=request.headers,
                         timeout=aiohttp.ClientTimeout(total=timeout)) as response:
        text = await response.text(errors="replace")
    return Reply(response.status, text, time.monotonic() - started, started)


def ticket_number(args: dict[str, Any]) -> int | None:
    """The ticket a Slack message is about, from its fallback text ("IT-12 · …")."""
    match = NUMBER.search(str(args.get("text") or ""))
    return int(match.group(1)) if match else None


def posts(slack: FakeSlackApi, channel: str) -> Counter[int]:
    """Successful ``chat.postMessage`` calls to ``channel``, counted per ticket."""
    return Counter(n for args in slack.calls_to("chat.postMessage")
                   if str(args.get("channel")) == channel and (n := ticket_number(args)) is not None)


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> float:  # noqa: ASYNC109
    """Poll ``check`` until it is true; returns how long that took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def pending_outbox(db: Database) -> int:
    async with db.reading() as session:
        return int(await session.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.delivered_at.is_(None), OutboxMessage.dead_at.is_(None))) or 0)


async def dead_outbox(db: Database) -> list[tuple[int, str, str | None]]:
    async with db.reading() as session:
        rows = await session.execute(select(OutboxMessage.id, OutboxMessage.target, OutboxMessage.last_error).where(
            OutboxMessage.dead_at.is_not(None)))
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def drained(db: Database, timeout: float = 60) -> float:  # noqa: ASYNC109
    async def empty() -> bool:
        if await pending_outbox(db):
            return False
        async with db.reading() as session:  # fast-intake tickets still to be set up write more outbox rows
            return not await session.scalar(select(func.count()).select_from(Ticket).where(Ticket.setup_pending))

    return await wait_until(empty, "new tickets to be set up and the outbox to drain", timeout)


async def events_per_ticket(db: Database, kind: str) -> Counter[int]:
    async with db.reading() as session:
        rows = await session.execute(select(TicketEvent.ticket_id, func.count()).where(
            TicketEvent.kind == kind).group_by(TicketEvent.ticket_id))
        return Counter({ticket_id: count for ticket_id, count in rows})


async def all_tickets(db: Database) -> list[Ticket]:
    async with db.reading() as session:
        return list((await session.execute(select(Ticket).order_by(Ticket.id))).scalars())


def config_dict(**changes: Any) -> dict[str, Any]:
    """TEST_CONFIG as a mapping, with top-level sections replaced (not merged) by ``changes``."""
    base: dict[str, Any] = yaml.safe_load(TEST_CONFIG)
    base.update(changes)
    return base


def serving_errors(server: ServeProcess) -> list[str]:
    """ERROR lines a server logged while serving (before "shutting down"), each with the line after it."""
    lines = server.log().splitlines()
    serving = list(itertools.takewhile(lambda line: "ithelp.server: shutting down" not in line, lines))
    return [f"{line} | {serving[i + 1] if i + 1 < len(serving) else ''}"
            for i, line in enumerate(serving) if " ERROR " in line]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def pg_schema(tmp_path: Path) -> AsyncIterator[tuple[str, str, Database]]:
    """A fresh schema on the shared PostgreSQL: (url, schema, a handle for the test's own queries)."""
    factory = DatabaseFactory("postgresql", tmp_path)
    url, schema = await factory.url_and_schema()
    assert schema is not None
    db = Database(url, schema=schema, pool_size=2)
    factory.databases.append(db)
    yield url, schema, db
    await factory.cleanup()


def people(slack: FakeSlackApi, count: int) -> list[str]:
    users = [f"UREQ{i:02d}" for i in range(1, count + 1)]
    for user in users:
        slack.add_user(user, real_name=f"Requester {user[-2:]}", tz="Europe/London")
    for user in (AGENT, "UAGENT2", ONCALL):
        slack.add_user(user, real_name=f"Agent {user}", tz="Europe/London")
    return users


# -- three replicas on one PostgreSQL ------------------------------------------------------------------------

REPLICA_SLA = {"policies": {
    "P1": {"calendar": "always", "first_response": "30m", "resolution": "8h"},
    "P2": {"first_response": "1h", "resolution": "8h"},
    "P3": {"first_response": "4h", "resolution": "3d"},
    "P4": {"first_response": "1d", "resolution": "5d"},
}}
REPLICA_ESCALATION = {
    "chains": {"oncall": {"levels": [{"notify": [f"slack:user:{ONCALL}"], "wait": "1h"}]}},
    "policies": {"P1": {"breach": "oncall"}},
    "max_chat_pages_per_hour": 1000,
}


async def replica_cluster(tmp_path: Path, url: str, schema: str, slack: FakeSlackApi, *,
                          count: int = 3) -> tuple[list[ServeProcess], AppConfig]:
    data = config_dict(default_priority="P1", sla=REPLICA_SLA, escalation=REPLICA_ESCALATION,
                       surveys={"enabled": True, "delay": "0s"})
    data["database"] = {"url": url, "schema_name": schema, "pool_size": 4}
    data["slack"] = {**data["slack"], "api_url": slack.url}
    data["engine"] = {"min_interval_per_channel": "0s", "tick_interval": "1s", "lease": "10s"}
    path = write_config(tmp_path / "app.yaml", "", data)
    servers = [ServeProcess(path, replica=f"replica-{name}") for name in "abc"[:count]]
    await start_servers(servers)
    return servers, parse_config(path.read_text(), env={})


@needs_postgres
async def test_three_replicas_open_each_ticket_once_and_record_and_page_each_breach_once(
    tmp_path: Path, pg_schema: tuple[str, str, Database], http: aiohttp.ClientSession,
) -> None:
    url, schema, db = pg_schema
    async with FakeSlackApi() as slack:
        users = people(slack, 20)
        servers, _config = await replica_cluster(tmp_path, url, schema, slack)
        try:
            # 40 slash commands and 20 DMs, round-robin; each DM is retried by "Slack" to the two other replicas.
            jobs: list[tuple[int, rq.SignedRequest]] = []
            for i in range(40):
                jobs.append((i % 3, rq.slash_command(f"Command problem number {i}", users[i % 20], SECRET)))
            for i in range(20):
                event = {"type": "message", "channel_type": "im", "channel": f"D{users[i]}", "user": users[i],
                         "text": f"DM problem number {i}", "ts": f"{1700001000 + i}.000100"}
                for retry in range(3):
                    jobs.append(((i + retry) % 3, rq.event_callback(event, SECRET, event_id=f"EvReliable{i:03d}",
                                                                    retry_num=retry or None)))
            random.Random(8).shuffle(jobs)  # retries race their originals on other replicas
            gate = asyncio.Semaphore(12)

            async def fire(replica: int, request: rq.SignedRequest) -> Reply:
                async with gate:
                    return await send(http, servers[replica].url + "/slack/events", request)

            replies = await asyncio.gather(*(fire(replica, request) for replica, request in jobs))
            assert [r.status for r in replies] == [200] * len(jobs), [r.text for r in replies if r.status != 200]
            await drained(db)

            tickets = await all_tickets(db)
            summaries = Counter(t.summary for t in tickets)
            expected = {f"Command problem number {i}" for i in range(40)}
            expected |= {f"DM problem number {i}" for i in range(20)}
            assert set(summaries) == expected and set(summaries.values()) == {1}, summaries
            assert await events_per_ticket(db, "opened") == Counter({t.id: 1 for t in tickets})
            assert posts(slack, TRIAGE) == Counter({t.id: 1 for t in tickets}), "one triage card per ticket"
            assert await dead_outbox(db) == []

            # Every breach once: move each P1 ticket's first-response deadline into the past (the servers run on
            # the real clock) and let three replicas race for the due timers.
            async with db.transaction() as session:
                moved = await session.execute(
                    update(Timer).where(Timer.kind == "sla.first_response", Timer.done_at.is_(None))
                    .values(due_at=datetime.now(UTC) - timedelta(minutes=1))
                    .execution_options(synchronize_session=False))
                assert moved.rowcount == len(tickets)  # type: ignore[attr-defined]

            async def all_breached() -> bool:
                return len(await events_per_ticket(db, "sla_breached")) == len(tickets)

            took = await wait_until(all_breached, "every ticket to be breached", timeout=60)
            await drained(db)
            await asyncio.sleep(2.5)  # two more ticks on every replica: a double run would show now
            breached = await events_per_ticket(db, "sla_breached")
            assert breached == Counter({t.id: 1 for t in tickets}), "each breach recorded exactly once"
            async with db.reading() as session:
                metrics = {payload["metric"] for (payload,) in await session.execute(
                    select(TicketEvent.payload).where(TicketEvent.kind == "sla_breached"))}
            assert metrics == {"first_response"}

            async def all_paged() -> bool:
                return len(posts(slack, ONCALL)) == len(tickets)

            await wait_until(all_paged, "a page per breached ticket", timeout=60)
            await drained(db)
            await asyncio.sleep(2.5)  # the observation window: a second page would arrive within two ticks
            assert posts(slack, ONCALL) == Counter({t.id: 1 for t in tickets}), "each breach paged exactly once"
            assert await events_per_ticket(db, "escalation_paged") == Counter({t.id: 1 for t in tickets})
            assert posts(slack, TRIAGE) == Counter({t.id: 1 for t in tickets}), "breach refreshes update in place"
            print(f"\n3 replicas: {len(jobs)} requests -> {len(tickets)} tickets, {len(tickets)} triage cards; "
                  f"{sum(breached.values())} breaches recorded {took:.1f}s after the deadlines moved; "
                  f"{sum(posts(slack, ONCALL).values())} pages")
            assert await dead_outbox(db) == []
        finally:
            await stop_servers(servers)
        assert [error for server in servers for error in serving_errors(server)] == []


@needs_postgres
async def test_three_replicas_send_each_survey_once(
    tmp_path: Path, pg_schema: tuple[str, str, Database], http: aiohttp.ClientSession,
) -> None:
    url, schema, db = pg_schema
    async with FakeSlackApi() as slack:
        users = people(slack, 10)
        servers, _ = await replica_cluster(tmp_path, url, schema, slack)
        try:
            opened = await asyncio.gather(*(
                send(http, servers[i % 3].url + "/slack/events",
                     rq.slash_command(f"Survey me {i}", users[i % 10], SECRET)) for i in range(15)))
            assert {r.status for r in opened} == {200}
            await drained(db)
            tickets = await all_tickets(db)
            assert len(tickets) == 15

            async def resolve(index: int, ticket: Ticket) -> list[Reply]:
                click = await send(http, servers[index % 3].url + "/slack/events", rq.block_action(
                    Action.RESOLVE.value, str(ticket.id), AGENT, SECRET, channel_id=TRIAGE, message_ts="1.0"))
                submissions = [rq.view_submission(Form.RESOLVE_NOTE.value, {"note": {"input": "Replaced the cable"}},
                                                  AGENT, SECRET, private_metadata=str(ticket.id)) for _ in range(2)]
                # A double-clicked Submit, landing on two other replicas at once.
                return [click, *await asyncio.gather(*(
                    send(http, servers[(index + k) % 3].url + "/slack/events", submission)
                    for k, submission in enumerate(submissions, start=1)))]

            replies = [r for rs in await asyncio.gather(*(resolve(i, t) for i, t in enumerate(tickets))) for r in rs]
            assert {r.status for r in replies} == {200}
            # The losing submission of each pair hears "it's already resolved", never "something went wrong".
            assert [r.text for r in replies if "went wrong" in r.text] == []
            assert await events_per_ticket(db, "resolved") == Counter({t.id: 1 for t in tickets})

            async def all_surveyed() -> bool:
                return len(await events_per_ticket(db, "survey_sent")) == len(tickets)

            await wait_until(all_surveyed, "a survey per resolved ticket", timeout=60)
            await drained(db)
            await asyncio.sleep(2.5)
            assert await events_per_ticket(db, "survey_sent") == Counter({t.id: 1 for t in tickets})
            survey_posts = Counter(
                n for args in slack.calls_to("chat.postMessage")
                if Action.SURVEY_UP.value in json.dumps(args.get("blocks") or []) and (n := ticket_number(args)))
            assert survey_posts == Counter({t.id: 1 for t in tickets}), "each survey sent exactly once"
        finally:
            await stop_servers(servers)
        assert [error for server in servers for error in serving_errors(server)] == []


# -- kill -9 mid-delivery ------------------------------------------------------------------------------------


class SlowSlack(FakeSlackApi):
    """The fake Slack, answering ``chat.postMessage`` only after ``post_delay`` seconds.

    The message is posted (stored) when the answer goes out, as Slack does once it has the request; a client
    that dies meanwhile never learns the ``ts``. ``in_flight`` holds the posts received and not yet answered.
    """

    def __init__(self, post_delay: float, *, fail_first_attempt: bool = False) -> None:
        super().__init__()
        self.post_delay = post_delay
        self.fail_first_attempt = fail_first_attempt
        self.in_flight: dict[int, tuple[str, int | None]] = {}
        self.received: list[tuple[str, int | None]] = []
        self._refused: set[tuple[str, int | None]] = set()
        self._tokens = itertools.count()

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["method"] != "chat.postMessage":
            return await super()._handle(request)
        args = await read_args(request)
        key = (str(args.get("channel")), ticket_number(args))
        if self.fail_first_attempt and key not in self._refused:
            # A transient Slack error: the retry comes from a later engine tick, not the request's kick.
            self._refused.add(key)
            return web.json_response({"ok": False, "error": "internal_error"})
        token = next(self._tokens)
        self.received.append(key)
        self.in_flight[token] = key
        try:
            await asyncio.sleep(self.post_delay)
            return await super()._handle(request)
        finally:
            del self.in_flight[token]


def _delivered_key(target: str, ticket_id: int | None) -> tuple[str, int | None]:
    return target.split(":", 2)[2], ticket_id


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_kill_9_mid_delivery_then_restart_delivers_every_message(
    backend: str, tmp_path: Path, http: aiohttp.ClientSession,
) -> None:
    factory = DatabaseFactory(backend, tmp_path)
    url, schema = await factory.url_and_schema()
    db = Database(url, schema=schema, pool_size=2)
    factory.databases.append(db)
    servers: list[ServeProcess] = []
    try:
        async with SlowSlack(post_delay=0.25) as slack:
            users = people(slack, 10)
            data = config_dict()
            data["database"] = {"url": url, "schema_name": schema, "pool_size": 4}
            data["slack"] = {**data["slack"], "api_url": slack.url}
            data["engine"] = {"min_interval_per_channel": "0s", "tick_interval": "1s", "lease": "3s"}
            path = write_config(tmp_path / "app.yaml", "", data)
            first = ServeProcess(path, replica="crashy")
            servers.append(first)
            await start_servers([first])
            replies = await asyncio.gather(*(
                send(http, first.url + "/slack/events", rq.slash_command(f"Kill test ticket {i}", users[i % 10],
                                                                         SECRET)) for i in range(30)))
            assert {r.status for r in replies} == {200}, [r.text for r in replies]

            async def mid_delivery() -> bool:
                return len(slack.calls_to("chat.postMessage")) >= 6 and bool(slack.in_flight)

            await wait_until(mid_delivery, "deliveries to be in flight", timeout=30)
            first.kill()
            unanswered_at_kill = len(slack.in_flight)
            # Let the fake read what the dead process had already written to its sockets (the kernel still
            # delivers it) and finish posting: all of that reached Slack, so it counts as in flight.
            await asyncio.sleep(slack.post_delay + 0.5)
            received_at_kill = set(slack.received)

            async with db.reading() as session:
                delivered = {_delivered_key(target, ticket_id) for target, ticket_id in await session.execute(
                    select(OutboxMessage.target, OutboxMessage.ticket_id).where(
                        OutboxMessage.delivered_at.is_not(None)))}
            pending_at_kill = await pending_outbox(db)
            in_flight_at_kill = received_at_kill - delivered  # sent to Slack, never recorded as delivered
            assert pending_at_kill > 0, "the kill came too late: nothing was left to deliver"

            second = ServeProcess(path, replica="survivor")
            servers.append(second)
            restarted = time.monotonic()
            await start_servers([second])
            await drained(db, timeout=90)
            recovery = time.monotonic() - restarted

            tickets = await all_tickets(db)
            assert len(tickets) == 30
            posted = Counter((str(args.get("channel")), ticket_number(args))
                             for args in slack.calls_to("chat.postMessage"))
            for ticket in tickets:
                requester = users[int(ticket.summary.rsplit(" ", 1)[1]) % 10]
                assert posted[(TRIAGE, ticket.id)] >= 1 and posted[(requester, ticket.id)] >= 1, ticket.id
            duplicated = {key: count - 1 for key, count in posted.items() if count > 1}
            duplicates = sum(duplicated.values())
            print(f"\n[{backend}] kill -9 with {pending_at_kill} message(s) undelivered, {len(in_flight_at_kill)} in "
                  f"flight (sent, unrecorded; {unanswered_at_kill} unanswered by Slack) -> {duplicates} duplicate(s) "
                  f"after restart; outbox drained {recovery:.1f}s after the restart began")
            assert set(duplicated) <= in_flight_at_kill, (duplicated, in_flight_at_kill)
            assert duplicates <= len(in_flight_at_kill)
            assert await dead_outbox(db) == []
            assert await second.stop() == 0, second.log()[-4000:]
    finally:
        for server in servers:
            server.kill()
        await factory.cleanup()


async def test_sigterm_mid_delivery_finishes_in_flight_messages_and_releases_the_rest(
    tmp_path: Path, http: aiohttp.ClientSession,
) -> None:
    """README: "SIGTERM shuts it down cleanly: in-flight deliveries finish, the rest return to the queue"."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'sigterm.db'}"
    db = Database(url)
    servers: list[ServeProcess] = []
    try:
        async with SlowSlack(post_delay=0.5, fail_first_attempt=True) as slack:
            users = people(slack, 6)
            data = config_dict()
            data["database"] = {"url": url}
            data["slack"] = {**data["slack"], "api_url": slack.url}
            # A long lease: a row the stopping server kept would be stuck for a minute, not a few seconds.
            data["engine"] = {"min_interval_per_channel": "0s", "tick_interval": "1s", "lease": "60s",
                              "outbox_backoff_base": "4s"}
            path = write_config(tmp_path / "app.yaml", "", data)
            first = ServeProcess(path, replica="leaving")
            servers.append(first)
            await start_servers([first])
            replies = await asyncio.gather(*(
                send(http, first.url + "/slack/events", rq.slash_command(f"Sigterm ticket {i}", users[i % 6], SECRET))
                for i in range(12)))
            assert {r.status for r in replies} == {200}

            async def mid_delivery() -> bool:
                return len(slack.calls_to("chat.postMessage")) >= 3 and bool(slack.in_flight)

            await wait_until(mid_delivery, "retried deliveries to be in flight", timeout=30)
            stopping = time.monotonic()
            code = await first.stop(timeout=20)
            stop_took = time.monotonic() - stopping
            await asyncio.sleep(slack.post_delay + 0.3)
            async with db.reading() as session:
                rows = (await session.execute(select(OutboxMessage))).scalars().all()
            delivered = {_delivered_key(row.target, row.ticket_id) for row in rows if row.delivered_at}
            kept = [row.id for row in rows if row.delivered_at is None and row.lease_owner is not None]
            unrecorded = set(slack.received) - delivered
            print(f"\nSIGTERM took {stop_took:.2f}s; {len(unrecorded)} message(s) sent but unrecorded, "
                  f"{len(kept)} undelivered row(s) still leased")
            assert code == 0, first.log()[-4000:]
            assert unrecorded == set(), "an in-flight delivery was cut off instead of finishing"
            assert kept == [], "undelivered rows were not returned to the queue"
            assert "Traceback" not in first.log(), first.log()[-6000:]

            second = ServeProcess(path, replica="arriving")
            servers.append(second)
            await start_servers([second])
            await drained(db, timeout=30)  # far less than the 60 s lease
            posted = Counter((str(args.get("channel")), ticket_number(args))
                             for args in slack.calls_to("chat.postMessage"))
            about_tickets = {key: count for key, count in posted.items() if key[1] is not None}
            assert len(about_tickets) == 24 and set(about_tickets.values()) == {1}, posted
            # Twelve alike reports also raise the incident suggestion card (issue #20): once, like the rest.
            assert posted[(TRIAGE, None)] <= 1 and len(posted) - len(about_tickets) <= 1, posted
    finally:
        for server in servers:
            server.kill()
        await db.dispose()


# -- the database restarts under load ------------------------------------------------------------------------


@dataclass
class LoadLog:
    replies: list[tuple[str, Reply]] = field(default_factory=list)
    errors: list[tuple[str, float, str]] = field(default_factory=list)


async def test_database_restart_under_load_fails_fast_and_cleanly_and_recovers(
    tmp_path: Path, http: aiohttp.ClientSession,
) -> None:
    reason = private_postgres_unavailable()
    if reason:
        pytest.skip(f"no private PostgreSQL cluster: {reason}")
    with PrivatePostgres() as pg:
        db = Database(pg.url, pool_size=2)
        server: ServeProcess | None = None
        try:
            async with FakeSlackApi() as slack:
                users = people(slack, 6)
                data = config_dict()
                data["database"] = {"url": pg.url, "pool_size": 5}
                data["slack"] = {**data["slack"], "api_url": slack.url}
                data["engine"] = {"min_interval_per_channel": "0s", "tick_interval": "1s", "lease": "5s"}
                server = ServeProcess(write_config(tmp_path / "app.yaml", "", data), replica="lonely")
                await start_servers([server])
                load = LoadLog()
                stop = asyncio.Event()
                serial = itertools.count()

                async def commands(worker: int) -> None:
                    while not stop.is_set():
                        summary = f"Load ticket {next(serial)} from worker {worker}"
                        request = rq.slash_command(summary, users[worker], SECRET)
                        started = time.monotonic()
                        try:
                            load.replies.append((summary, await send(http, server.url + "/slack/events", request,
                                                                     timeout=15)))
                        except (aiohttp.ClientError, TimeoutError) as exc:
                            load.errors.append((summary, time.monotonic() - started, repr(exc)))
                        await asyncio.sleep(0.02)

                async def health() -> None:
                    while not stop.is_set():
                        started = time.monotonic()
                        try:
                            async with http.get(server.url + "/healthz",
                                                timeout=aiohttp.ClientTimeout(total=15)) as response:
                                body = await response.text()
                            load.replies.append(("/healthz", Reply(response.status, body,
                                                                   time.monotonic() - started, started)))
                        except (aiohttp.ClientError, TimeoutError) as exc:
                            load.errors.append(("/healthz", time.monotonic() - started, repr(exc)))
                        await asyncio.sleep(0.1)

                workers = [asyncio.create_task(commands(w)) for w in range(4)] + [asyncio.create_task(health())]
                await asyncio.sleep(2)
                down_at = time.monotonic()
                await asyncio.to_thread(pg.stop, "fast")
                await asyncio.sleep(2)
                await asyncio.to_thread(pg.start)
                up_at = time.monotonic()
                await asyncio.sleep(4)
                stop.set()
                await asyncio.gather(*workers)

                assert server.running, server.log()[-4000:]
                assert load.errors == [], load.errors[:5]
                during = [(what, r) for what, r in load.replies if down_at <= r.started <= up_at]
                slowest = max(r.elapsed for _, r in load.replies)
                outage_answers = [r for _, r in during if r.status == 503 or OUTAGE_WORDS in r.text]
                statuses = Counter(f"{'healthz' if what == '/healthz' else 'command'} {r.status}" for what, r in during)
                print(f"\n{len(load.replies)} requests, {len(during)} while the database was down "
                      f"({dict(statuses)}); slowest answer {slowest:.2f}s, slowest while down "
                      f"{max((r.elapsed for _, r in during), default=0):.2f}s; "
                      f"{len(outage_answers)} said the database was unreachable")
                assert during and outage_answers, "the load never saw the database down"
                for what, reply in load.replies:
                    assert reply.elapsed < 5.5, (what, reply)
                    assert "Traceback" not in reply.text and 'File "' not in reply.text, (what, reply.text[:2000])
                    if what == "/healthz":
                        assert reply.status in (200, 503), reply
                    else:
                        assert reply.status == 200 or 400 <= reply.status < 600, reply

                # Recovery: healthy again, a new ticket opens, everything owed is delivered.
                await server.wait_healthy(timeout=15)
                after = await send(http, server.url + "/slack/events",
                                   rq.slash_command("After the restart", users[0], SECRET))
                assert after.status == 200 and "opened" in (after.json() or {}).get("text", ""), after
                await drained(db, timeout=60)

                # Nothing half-written, and no acknowledgement lied.
                tickets = {t.summary: t for t in await all_tickets(db)}
                opened = await events_per_ticket(db, "opened")
                if opened != Counter({t.id: 1 for t in tickets.values()}):
                    async with db.reading() as session:
                        doubled = [tid for tid, n in opened.items() if n != 1]
                        rows = (await session.execute(select(TicketEvent).where(
                            TicketEvent.ticket_id.in_(doubled)))).scalars().all()
                        print("DOUBLED", [(r.id, r.ticket_id, r.kind, r.at, r.payload) for r in rows])
                        trows = (await session.execute(select(Ticket).where(Ticket.id.in_(doubled)))).scalars().all()
                        print("TICKETS", [(t.id, t.summary, t.intake_key, t.created_at) for t in trows])
                assert opened == Counter({t.id: 1 for t in tickets.values()}), "every ticket has its opened event"
                async with db.reading() as session:
                    orphans = await session.scalar(select(func.count()).select_from(OutboxMessage).where(
                        OutboxMessage.ticket_id.is_not(None),
                        OutboxMessage.ticket_id.not_in(select(Ticket.id))))
                    carded = set((await session.execute(select(OutboxMessage.ticket_id).where(
                        OutboxMessage.target == f"slack:channel:{TRIAGE}"))).scalars())
                assert orphans == 0
                assert carded == {t.id for t in tickets.values()}, "every ticket owes (and got) its triage card"
                assert posts(slack, TRIAGE) == Counter({t.id: 1 for t in tickets.values()})
                for summary, reply in load.replies:
                    if summary == "/healthz":
                        continue
                    text = (reply.json() or {}).get("text", "") if reply.status == 200 else ""
                    if " opened" in text.split("\n", 1)[0]:
                        assert summary in tickets, f"acknowledged but not stored: {summary}"
                    elif "nothing was saved" in text:
                        assert summary not in tickets, f"said nothing was saved, but stored: {summary}"
                assert await dead_outbox(db) == []
        finally:
            if server is not None:
                await server.stop()
            await db.dispose()
        logs = server.log() if server else ""
        assert server is not None and server.process is not None and server.process.returncode == 0, logs[-4000:]


# -- fuzzing ---------------------------------------------------------------------------------------------------


@dataclass
class FuzzBot:
    server: Server
    slack: FakeSlackApi
    connector: FakeBotConnector
    http: aiohttp.ClientSession

    async def slack_post(self, body: bytes, headers: dict[str, str]) -> Reply:
        return await send(self.http, self.server.url + "/slack/events", rq.SignedRequest(body, headers))

    async def teams_post(self, body: bytes, content_type: str = "application/json",
                         authorization: str | None = None) -> Reply:
        headers = {"Content-Type": content_type}
        if authorization is not None:
            headers["Authorization"] = authorization
        return await send(self.http, self.server.url + "/api/messages", rq.SignedRequest(body, headers))

    async def healthy(self) -> bool:
        async with self.http.get(self.server.url + "/healthz") as response:
            return response.status == 200


@pytest.fixture
async def fuzz_bot(tmp_path: Path, make_config: Callable[..., AppConfig], clock: ManualClock,
                   http: aiohttp.ClientSession) -> AsyncIterator[FuzzBot]:
    async with FakeSlackApi() as slack, FakeBotConnector() as connector:
        people(slack, 3)
        config = make_config()
        config = config.model_copy(update={
            "slack": config.slack.model_copy(update={"api_url": slack.url}),
            "teams": TeamsConfig(enabled=True, triage_conversation="19:triage@thread.tacv2",
                                 service_url=connector.service_url),
        })
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}")
        await upgrade(db)
        async with running_server(config, db, clock) as server:
            bot = FuzzBot(server, slack, connector, http)
            yield bot
            assert await bot.healthy(), "the server still answers /healthz after the fuzzing"


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CONTENT_TYPES = st.sampled_from([
    rq.FORM, rq.JSON, "text/plain", "application/octet-stream", "multipart/form-data; boundary=x",
    "application/json; charset=utf-8", "", "application/x-www-form-urlencoded; charset=latin-1", "image/png",
])
ODD_TEXT = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=80),
    st.text(alphabet=st.sampled_from("\x00\x01\x07\x1b\r\n\t\u202e\u200b\ufeff<>&@!*_~`\\%+= ʕ•ᴥ•ʔ🎫"), max_size=60),
    st.sampled_from(["payload", "payload=", "payload={}", "payload=%7B%7D", "help", "status", "list", " ", "",
                     "<!channel>", "<@UAGENT1>", "&lt;", "x" * 5000, "é" * 70_000, "line\n" * 400]),
    st.builds(lambda a, b: f"{a} payload {b}", st.text(max_size=20), st.text(max_size=20)),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
ODD_VALUES = JSON_VALUES | ODD_TEXT


def assert_clean(reply: Reply, what: object) -> None:
    assert reply.status < 500, (reply.status, reply.text[:500], what)
    assert "Traceback" not in reply.text and 'File "/' not in reply.text, (reply.text[:2000], what)


@FUZZ
@given(body=st.binary(max_size=2000) | st.text(max_size=500).map(str.encode), content_type=CONTENT_TYPES,
       how=st.sampled_from(["unsigned", "wrong secret", "stale", "garbage header", "future"]))
async def test_fuzz_unsigned_or_badly_signed_slack_requests_are_refused(
    fuzz_bot: FuzzBot, body: bytes, content_type: str, how: str,
) -> None:
    tickets_before = await _ticket_count(fuzz_bot)
    now = int(time.time())
    if how == "unsigned":
        headers = {"Content-Type": content_type}
    elif how == "garbage header":
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": "abc", "X-Slack-Signature": "v0=zz"}
    else:
        secret, stamp = {"wrong secret": ("not-the-secret", now), "stale": (SECRET, now - 600),
                         "future": (SECRET, now + 600)}[how]
        headers = rq.signed(body, content_type, secret, stamp).headers
    reply = await fuzz_bot.slack_post(body, headers)
    assert_clean(reply, (how, body[:100]))
    assert reply.status == 401, (how, content_type, body[:200], reply.status, reply.text[:300])
    assert await _ticket_count(fuzz_bot) == tickets_before


async def _ticket_count(bot: FuzzBot) -> int:
    async with bot.server.db.reading() as session:
        return int(await session.scalar(select(func.count()).select_from(Ticket)) or 0)


@FUZZ
@given(body=st.one_of(
    st.binary(max_size=2000),
    st.text(max_size=500).map(str.encode),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=6).map(lambda d: urlencode(d).encode()),
    JSON_VALUES.map(lambda v: urlencode({"payload": json.dumps(v)}).encode()),
), content_type=CONTENT_TYPES)
async def test_fuzz_signed_garbage_to_slack_is_handled_without_a_500(
    fuzz_bot: FuzzBot, body: bytes, content_type: str,
) -> None:
    request = rq.signed(body, content_type, SECRET)
    assert_clean(await fuzz_bot.slack_post(request.body, request.headers), (content_type, body[:300]))


SLASH_FIELDS = ("token", "team_id", "team_domain", "channel_id", "channel_name", "user_id", "user_name", "command",
                "text", "api_app_id", "response_url", "trigger_id")


@FUZZ
@given(text=ODD_TEXT, dropped=st.sets(st.sampled_from(SLASH_FIELDS), max_size=2), user=ODD_TEXT | st.just("UREQ01"),
       drop_anything=st.booleans())
async def test_fuzz_slash_commands_with_odd_text_get_an_answer(
    fuzz_bot: FuzzBot, text: str, dropped: set[str], user: str, drop_anything: bool,
) -> None:
    request = rq.slash_command(text, "UREQ01", SECRET)
    fields = dict(rq_fields(request.body))
    fields["user_id"] = user if drop_anything else "UREQ01"
    for name in dropped if drop_anything else ():
        fields.pop(name, None)
    signed = rq.signed(urlencode(fields).encode(), rq.FORM, SECRET)
    reply = await fuzz_bot.slack_post(signed.body, signed.headers)
    assert_clean(reply, fields)
    if not drop_anything:
        # A well-formed command always gets its ephemeral answer, whatever was typed.
        assert reply.status == 200, reply
        if text.strip():
            answer = reply.json()
            assert isinstance(answer, dict) and answer.get("response_type") == "ephemeral" and answer.get("text"), (
                text[:100], reply.text[:300])


def rq_fields(body: bytes) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(body.decode(), keep_blank_values=True)


EVENT_KEYS = ("user", "text", "channel", "channel_type", "ts", "thread_ts", "subtype", "bot_id", "item", "reaction",
              "item_user", "tab", "event_ts")
PLAUSIBLE = {
    "user": st.sampled_from(["UREQ01", "UAGENT1", "UBOT", "", "UNKNOWN9"]),
    "channel": st.sampled_from(["DUREQ01", TRIAGE, "C0GENERAL", ""]),
    "channel_type": st.sampled_from(["im", "channel", "group", "mpim"]),
    "ts": st.sampled_from(["1700000001.000100", "1.0", "", "abc"]),
    "thread_ts": st.sampled_from(["1700000001.000100", "1.0", "1700000000.000100"]),
    "subtype": st.sampled_from(["message_changed", "file_share", "thread_broadcast", "bot_message"]),
    "reaction": st.sampled_from(["ticket", "eyes"]),
    "item": st.fixed_dictionaries({}, optional={"type": st.sampled_from(["message", "file"]),
                                                "channel": st.sampled_from(["C0GENERAL", ""]),
                                                "ts": st.sampled_from(["1700000100.000100", ""])}),
    "tab": st.sampled_from(["home", "messages"]),
}


@st.composite
def slack_events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {"type": draw(st.sampled_from(
        ["message", "app_mention", "reaction_added", "app_home_opened", "member_joined_channel", "nonsense"]))}
    for key in draw(st.sets(st.sampled_from(EVENT_KEYS), max_size=8)):
        plausible = PLAUSIBLE.get(key, ODD_TEXT)
        event[key] = draw(plausible if draw(st.integers(0, 3)) else ODD_VALUES)
    if draw(st.booleans()):
        event["type"] = draw(ODD_VALUES)
    return event


@FUZZ
@given(event=slack_events(), event_id=st.text(min_size=1, max_size=20) | st.none(),
       envelope_noise=st.dictionaries(st.sampled_from(["type", "team_id", "api_app_id", "authorizations", "event_id"]),
                                      JSON_VALUES, max_size=2))
async def test_fuzz_signed_slack_events_are_handled_without_a_500(
    fuzz_bot: FuzzBot, event: dict[str, Any], event_id: str | None, envelope_noise: dict[str, Any],
) -> None:
    request = rq.event_callback(event, SECRET, event_id=event_id)
    envelope = json.loads(request.body)
    envelope.update(envelope_noise)
    signed = rq.signed(json.dumps(envelope).encode(), rq.JSON, SECRET)
    assert_clean(await fuzz_bot.slack_post(signed.body, signed.headers), envelope)


ACTION_IDS = [a.value for a in Action] + ["nonsense"]
CALLBACKS = [f.value for f in Form] + [s.value for s in Shortcut] + ["nonsense"]


@st.composite
def interactions(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["block_actions", "view_submission", "message_action", "shortcut", "view_closed",
                                 "nonsense"]))
    user = draw(st.sampled_from([{"id": "UAGENT1", "name": "a"}, {"id": "UREQ01"}, {}, {"id": 7}]) | JSON_VALUES)
    payload: dict[str, Any] = {"type": kind, "user": user, "team": {"id": "T0001"}, "api_app_id": "A0001",
                               "token": "legacy", "trigger_id": "1.2.3"}
    if draw(st.booleans()):
        action: dict[str, Any] = {"action_id": draw(st.sampled_from(ACTION_IDS)), "block_id": "b",
                                  "type": draw(st.sampled_from(["button", "static_select"]))}
        value = draw(st.sampled_from(["1", "0", "-1", "99999999999999999999", "1:2", "abc", ""]) | ODD_TEXT)
        if draw(st.booleans()):
            action["value"] = value
        else:
            action["selected_option"] = draw(st.sampled_from([{"value": value}, {}, None]) | JSON_VALUES)
        payload["actions"] = [action] if draw(st.integers(0, 4)) else draw(JSON_VALUES)
    if draw(st.booleans()):
        payload["view"] = {
            "id": "V1", "callback_id": draw(st.sampled_from(CALLBACKS)),
            "private_metadata": draw(st.sampled_from(["1", "", "abc", "C0GENERAL", "-5"]) | ODD_TEXT),
            "state": {"values": draw(st.dictionaries(st.sampled_from(["summary", "description", "note", "reason",
                                                                      "category", "urgency", "comment"]),
                                                     st.dictionaries(st.sampled_from(["input", "x"]), ODD_VALUES,
                                                                     max_size=2), max_size=3) | JSON_VALUES)},
        }
    if draw(st.booleans()):
        payload["callback_id"] = draw(st.sampled_from(CALLBACKS))
        payload["message"] = draw(st.fixed_dictionaries({}, optional={"ts": st.sampled_from(["1.0", ""]),
                                                                      "text": ODD_TEXT, "user": ODD_VALUES}))
        payload["channel"] = draw(st.sampled_from([{"id": "C0GENERAL"}, {}, None]))
    if draw(st.booleans()):
        payload["container"] = draw(st.sampled_from([{"type": "message", "channel_id": TRIAGE, "message_ts": "1.0"},
                                                      {"type": "view", "view_id": "V1"}, {}]))
    return payload


@FUZZ
@given(payload=interactions())
async def test_fuzz_signed_slack_interactions_are_handled_without_a_500(
    fuzz_bot: FuzzBot, payload: dict[str, Any],
) -> None:
    signed = rq.signed(urlencode({"payload": json.dumps(payload)}).encode(), rq.FORM, SECRET)
    assert_clean(await fuzz_bot.slack_post(signed.body, signed.headers), payload)


async def test_a_message_shortcut_without_its_message_is_refused_every_time_not_a_500(fuzz_bot: FuzzBot) -> None:
    # Found by the fuzz test above: the second such payload hit "already filed", whose reply went to
    # an empty channel id; Slack refused it and the request ended in a 500.
    payload = {"type": "message_action", "user": {"id": "UAGENT1", "name": "a"}, "team": {"id": "T0001"},
               "api_app_id": "A0001", "token": "legacy", "trigger_id": "1.2.3",
               "callback_id": "ithelp.create_ticket_from_message", "message": {}, "channel": {}}
    signed = rq.signed(urlencode({"payload": json.dumps(payload)}).encode(), rq.FORM, SECRET)
    for _ in range(2):
        reply = await fuzz_bot.slack_post(signed.body, signed.headers)
        assert reply.status == 400, reply


ACTIVITY_PATHS = ("type", "id", "text", "value", "from", "from.id", "from.aadObjectId", "from.name", "conversation",
                  "conversation.id", "conversation.conversationType", "channelData", "channelData.tenant",
                  "entities", "replyToId", "localTimezone", "serviceUrl", "recipient", "name", "timestamp",
                  "membersAdded", "action", "channelId", "textFormat", "attachments")


@st.composite
def teams_activities(draw: st.DrawFn, service_url: str) -> dict[str, Any]:
    builders = [
        lambda: ta.message(draw(ODD_TEXT), service_url=service_url),
        lambda: ta.message(draw(ODD_TEXT), service_url=service_url, mention_bot=True, conversation_type="channel"),
        lambda: ta.message(None, service_url=service_url,
                           value=draw(st.fixed_dictionaries({}, optional={
                               "action": st.sampled_from(ACTION_IDS) | ODD_VALUES,
                               "form": st.sampled_from([f.value for f in Form]) | ODD_VALUES,
                               "ticket": st.sampled_from(["1", 1, "abc", None]) | ODD_VALUES,
                               "ticket_id": st.sampled_from(["1", 1, "abc", None]) | ODD_VALUES,
                               "summary": ODD_TEXT, "note": ODD_TEXT}))),
        lambda: ta.invoke_adaptive_card_action(draw(st.sampled_from(ACTION_IDS) | ODD_TEXT),
                                               draw(st.dictionaries(st.text(max_size=8), ODD_VALUES, max_size=4)),
                                               service_url=service_url),
        lambda: ta.conversation_update_installed(service_url=service_url,
                                                 conversation_type=draw(st.sampled_from(["personal", "channel"]))),
        lambda: ta.installation_update(service_url=service_url),
    ]
    activity: dict[str, Any] = draw(st.sampled_from(builders))()
    activity["id"] = f"fuzz-{draw(st.integers(0, 10**9))}"
    for path in draw(st.lists(st.sampled_from(ACTIVITY_PATHS), max_size=4)):
        parent, _, key = path.rpartition(".")
        holder = activity.get(parent) if parent else activity
        if not isinstance(holder, dict):
            continue
        if key == "serviceUrl":  # never send the bot off to a real host
            choice = draw(st.sampled_from(["drop", "", "not a url", "ftp://x", 42]))
        else:
            choice = draw(st.sampled_from(["drop", "odd"]))
            choice = draw(ODD_VALUES) if choice == "odd" else choice
        if choice == "drop":
            holder.pop(key, None)
        else:
            holder[key] = choice
    return activity


@FUZZ
@given(data=st.data())
async def test_fuzz_teams_activities_with_missing_or_odd_fields_are_handled_without_a_500(
    fuzz_bot: FuzzBot, data: st.DataObject,
) -> None:
    activity = data.draw(teams_activities(fuzz_bot.connector.service_url))
    assert_clean(await fuzz_bot.teams_post(json.dumps(activity).encode()), activity)


@FUZZ
@given(body=st.binary(max_size=500) | JSON_VALUES.map(lambda v: json.dumps(v).encode()), content_type=CONTENT_TYPES)
async def test_fuzz_teams_garbage_bodies_are_refused_with_a_4xx(
    fuzz_bot: FuzzBot, body: bytes, content_type: str,
) -> None:
    reply = await fuzz_bot.teams_post(body, content_type)
    assert_clean(reply, body[:300])
    assert 400 <= reply.status < 500, (body[:300], reply.status, reply.text[:300])


# -- Teams bodies at an authenticated endpoint: refused before auth, or after it, never a 500 -------------------

FUZZ_APP_ID = "0b7f5a9e-3c1d-4e2f-9a8b-7c6d5e4f3a2b"
# A genuine token for a service URL no fuzzed activity names: every body that gets past the token check as an
# activity is refused by the full check (no turn runs, so nothing would try to reach Microsoft's login service).
ELSEWHERE = "https://smba.trafficmanager.net/elsewhere/"


@dataclass
class AuthFuzzBot(FuzzBot):
    keys: FakeOpenIdProvider = field(default_factory=FakeOpenIdProvider)
    records: list[logging.LogRecord] = field(default_factory=list)


@pytest.fixture
async def auth_fuzz_bot(tmp_path: Path, make_config: Callable[..., AppConfig], clock: ManualClock,
                        http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> AsyncIterator[AuthFuzzBot]:
    caplog.set_level(logging.INFO)
    with FakeOpenIdProvider() as keys:
        async with FakeSlackApi() as slack, FakeBotConnector() as connector:
            config = make_config().model_copy(update={"teams": TeamsConfig(
                app_id=FUZZ_APP_ID, app_password="client-secret", triage_conversation="19:triage@thread.tacv2",
                service_url=connector.service_url, openid_metadata_url=keys.metadata_url)})
            db = Database(f"sqlite+aiosqlite:///{tmp_path / 'auth-fuzz.db'}")
            await upgrade(db)
            async with running_server(config, db, clock) as server:
                bot = AuthFuzzBot(server, slack, connector, http, keys)
                yield bot
                assert await bot.healthy()
            await db.dispose()
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    assert connector.activities == [], "no turn ran"


HOSTILE_TEAMS_BODIES = st.one_of(
    st.binary(max_size=2000),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 200_000).map(lambda depth: b"[" * depth),
    st.integers(1, 60_000).map(lambda depth: b'{"a":' * depth),
    st.integers(990, 1100).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(4_000, 40_000).map(lambda digits: b'{"type": "message", "id": ' + b"7" * digits + b"}"),
    st.binary(min_size=1, max_size=200).map(lambda junk: b'{"type": "message", "text": "' + junk + b'"}'),
    st.text(max_size=200).map(lambda text: json.dumps({"type": "message", "text": text}).encode("utf-16")),
)
TOKENS = st.sampled_from(["none", "empty", "basic", "bearer junk", "bearer jwt-shaped junk", "forged",
                          "forged with the real key id", "genuine, another bot", "genuine, expired", "genuine"])


def authorization(bot: AuthFuzzBot, token: str) -> str | None:
    service = bot.connector.service_url
    return {
        "none": None, "empty": "", "basic": "Basic dXNlcjpwYXNz", "bearer junk": "Bearer ###",
        "bearer jwt-shaped junk": "Bearer eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOjF9.c2ln",
        "forged": f"Bearer {forged_token(FUZZ_APP_ID, service)}",
        "forged with the real key id": f"Bearer {forged_token(FUZZ_APP_ID, service, kid=bot.keys.kid)}",
        "genuine, another bot": f"Bearer {bot.keys.token('another-app', ELSEWHERE)}",
        "genuine, expired": f"Bearer {bot.keys.token(FUZZ_APP_ID, ELSEWHERE, exp=int(time.time()) - 3600)}",
        "genuine": f"Bearer {bot.keys.token(FUZZ_APP_ID, ELSEWHERE)}",
    }[token]


@FUZZ
@given(data=st.data(), token=TOKENS, content_type=CONTENT_TYPES)
async def test_fuzz_teams_bodies_to_an_authenticated_endpoint_get_a_4xx_with_or_without_a_token(
    auth_fuzz_bot: AuthFuzzBot, data: st.DataObject, token: str, content_type: str,
) -> None:
    shaped = data.draw(st.booleans())
    body = (json.dumps(data.draw(teams_activities(auth_fuzz_bot.connector.service_url))).encode() if shaped
            else data.draw(HOSTILE_TEAMS_BODIES))
    reply = await auth_fuzz_bot.teams_post(body, content_type, authorization(auth_fuzz_bot, token))
    assert_clean(reply, (token, body[:300]))
    expected = {400, 401, 413} if token == "genuine" else {401}
    assert reply.status in expected, (token, body[:300], reply.status, reply.text[:300])
