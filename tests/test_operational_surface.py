"""What operators see and expose (issue #16): /metrics on its own port or behind a token, a /healthz that says
nothing about the database, metric names, and an SQLite desk answering a burst of first-time requesters in time.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import yaml
from sqlalchemy import select

from bot.clock import ManualClock
from bot.config import AppConfig
from bot.metrics import Metrics
from bot.simulators import slack_requests as rq
from bot.simulators.slack_api import FakeSlackApi
from store.db import Database
from store.models import Ticket
from tests.conftest import TEST_CONFIG
from tests.fakes.process import ServeProcess, start_servers, stop_servers, write_config
from tests.harness import running_server

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-signing-secret"


async def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers or {}) as response:
        return response.status, await response.text()


async def test_metrics_on_their_own_port_answer_only_with_the_bearer_token(
    make_config: Callable[..., AppConfig], db: Database, clock: ManualClock,
) -> None:
    config = make_config("server:\n  metrics_port: 0\n  metrics_token: s3cret-scrape-token\n")
    async with running_server(config, db, clock) as server:
        assert not server.metrics_url.startswith(server.url), "a listener of its own"
        assert (await fetch(server.url + "/metrics"))[0] == 404, "no longer on the chat listener"
        assert (await fetch(server.metrics_url))[0] == 401
        assert (await fetch(server.metrics_url, {"Authorization": "Bearer wrong-token"}))[0] == 401
        assert (await fetch(server.metrics_url, {"Authorization": "s3cret-scrape-token"}))[0] == 401
        status, body = await fetch(server.metrics_url, {"Authorization": "Bearer s3cret-scrape-token"})
        assert status == 200 and "ithelp_tickets_opened" in body


async def test_a_metrics_token_protects_metrics_on_the_main_listener_too(
    make_config: Callable[..., AppConfig], db: Database, clock: ManualClock,
) -> None:
    async with running_server(make_config("server:\n  metrics_token: s3cret\n"), db, clock) as server:
        assert server.metrics_url == server.url + "/metrics"
        assert (await fetch(server.metrics_url))[0] == 401
        assert (await fetch(server.metrics_url, {"Authorization": "Bearer s3cret"}))[0] == 200


async def test_healthz_says_ok_and_nothing_about_the_database(
    make_config: Callable[..., AppConfig], db: Database, clock: ManualClock,
) -> None:
    async with running_server(make_config(), db, clock) as server:
        status, body = await fetch(server.url + "/healthz")
    assert (status, body) == (200, '{"status": "ok"}')


def test_every_metric_is_named_ithelp_and_every_one_declared_is_used() -> None:
    metrics = Metrics()
    names = {family.name for family in metrics.registry.collect()}
    assert names and all(name.startswith("ithelp_") for name in names), sorted(names)
    sources = "\n".join(path.read_text() for folder in ("bot", "surveys") for path in (ROOT / folder).rglob("*.py")
                        if path.name != "metrics.py")
    declared = [name for name, value in vars(metrics).items() if name != "registry"]
    unused = [name for name in declared if not re.search(rf"\.{name}\b", sources)]
    assert unused == [], f"declared in bot/metrics.py but never updated: {unused}"


class _Connection(asyncio.Protocol):
    """A kept-alive HTTP/1.1 connection that writes prepared request bytes and reads one answer (Content-Length
    framed, as aiohttp answers): as little client work as possible, since the client shares the machine."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        head_end = self._buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = bytes(self._buffer[:head_end]).lower()
        length = int(re.search(rb"\r\ncontent-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        if len(self._buffer) < head_end + 4 + length:
            return
        body = bytes(self._buffer[head_end + 4: head_end + 4 + length])
        del self._buffer[: head_end + 4 + length]
        if self._answer is not None and not self._answer.done():
            self._answer.set_result((int(head[9:12]), body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc or ConnectionError("closed"))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self._answer


def http_bytes(port: int, path: str, request: rq.SignedRequest) -> bytes:
    headers = {"Host": f"127.0.0.1:{port}", "Content-Length": str(len(request.body)), **request.headers}
    return (f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode() \
        + request.body


async def test_600_first_time_requesters_at_once_on_sqlite_are_each_answered_within_3_seconds(
    tmp_path: Path,
) -> None:
    async with FakeSlackApi() as slack:
        users = [f"UNEW{i:04d}" for i in range(600)]
        warm = [f"UWARM{i:02d}" for i in range(20)]
        for user in users + warm:
            slack.add_user(user, real_name=f"Person {user}", tz="Europe/London")
        data = yaml.safe_load(TEST_CONFIG)
        data["database"] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'burst.db'}"}
        data["slack"] = {**data["slack"], "api_url": slack.url}
        data["server"] = {"request_deadline": "2.5s"}  # the shipped default
        server = ServeProcess(write_config(tmp_path / "app.yaml", "", data), replica="burst")
        await start_servers([server])
        loop = asyncio.get_running_loop()
        connections: list[_Connection] = []
        try:
            # A desk that has been running: a few people have asked before, and Slack's connections to it
            # are open. Requests are signed, and connections opened, before the clock starts: that is
            # Slack's work, and the client shares the machine with the desk.
            for user in warm:
                async with aiohttp.ClientSession() as http:
                    request = rq.slash_command("Warming up", user, SECRET)
                    async with http.post(server.url + "/slack/events", data=request.body,
                                         headers=request.headers) as response:
                        assert response.status == 200 and "opened" in await response.text()
            burst = [http_bytes(server.port, "/slack/events", rq.slash_command(f"Everything is down ({user})", user,
                                                                               SECRET)) for user in users]
            for _ in burst:
                connections.append((await loop.create_connection(_Connection, "127.0.0.1", server.port))[1])

            async def ask(connection: _Connection, request: bytes) -> tuple[float, int, str]:
                started = time.monotonic()
                status, body = await connection.send(request)
                return time.monotonic() - started, status, body.decode()

            answers = await asyncio.gather(*(ask(c, r) for c, r in zip(connections, burst, strict=True)))
        finally:
            for connection in connections:
                if connection.transport is not None:
                    connection.transport.close()
            await stop_servers([server])
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'burst.db'}")
    try:
        async with db.reading() as session:
            stored = set((await session.execute(select(Ticket.summary))).scalars())
    finally:
        await db.dispose()
    times = sorted(took for took, _, _ in answers)
    opened = [json.loads(text)["text"] for _, _, text in answers if " opened" in text or "ticket is saved" in text]
    print(f"\n600 first-time requesters at once on SQLite: answered in p50 {times[300]:.2f} s, p99 {times[594]:.2f} s, "
          f"max {times[-1]:.2f} s; {len(opened)} got their ticket, {600 - len(opened)} were asked to try again")
    assert times[-1] < 3, f"the slowest answer took {times[-1]:.2f} s"
    # Every answer is the ticket or the truth: those asked to try again have no ticket, the others have theirs
    # (some, whose ticket was being saved as time ran out, hear that it is and get its number in a DM).
    for (_, status, text), user in zip(answers, users, strict=True):
        summary = f"Everything is down ({user})"
        assert status == 200, text
        if " opened" in text or "ticket is saved" in text:
            assert summary in stored, text
        else:
            assert "nothing was saved" in text and summary not in stored, text
    # How many get their ticket in time depends on the machine (on the shared 2-core VM, 250-400 of the 600);
    # the rest are told to try again. Never all of them: the burst must not fail as one.
    assert len(opened) >= 100, len(opened)
