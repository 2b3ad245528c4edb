"""A hanging database (issue #16): PostgreSQL stops answering without going down.

``ithelp serve`` runs as a real process against PostgreSQL through a TCP proxy that the test freezes (it
stops relaying bytes; connections stay open and nothing answers). Signed Slack requests and Teams activities
must still be answered within Slack's 3 seconds, with the friendly "nothing was saved" sentence, and
``/healthz`` must say 503 within its own short deadline. When the hang ends (the proxy resets the stuck
connections) the bot carries on, and nothing it said was not saved was saved.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bot.simulators import slack_requests as rq
from bot.simulators import teams_activities as ta
from bot.simulators.bot_connector import FakeBotConnector
from bot.simulators.slack_api import FakeSlackApi
from store.db import Database
from store.models import OutboxMessage, Ticket, TicketEvent
from tests.conftest import TEST_CONFIG, DatabaseFactory
from tests.fakes.process import ServeProcess, start_servers, stop_servers, write_config
from tests.fakes.tcp_proxy import FreezableProxy

POSTGRES_URL = os.environ.get("ITHELP_TEST_POSTGRES_URL", "")
SECRET = "test-signing-secret"
NOTHING_SAVED = "nothing was saved"
pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="set ITHELP_TEST_POSTGRES_URL to run the hang tests")


@dataclass
class Answer:
    what: str
    status: int
    text: str
    took: float


@pytest.fixture
async def schema(tmp_path: Path) -> AsyncIterator[tuple[str, Database]]:
    """A fresh schema on the test PostgreSQL: its name, and a direct handle for the test's own checks."""
    factory = DatabaseFactory("postgresql", tmp_path)
    url, name = await factory.url_and_schema()
    assert name is not None
    db = Database(url, schema=name, pool_size=2)
    factory.databases.append(db)
    yield name, db
    await factory.cleanup()


async def timed(what: str, call: Any) -> Answer:
    started = time.monotonic()
    try:
        status, text = await call
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Answer(what, 0, repr(exc), time.monotonic() - started)
    return Answer(what, status, text, time.monotonic() - started)


async def test_a_hanging_database_still_gets_slack_and_teams_an_answer_within_3_seconds(
    tmp_path: Path, schema: tuple[str, Database],
) -> None:
    name, db = schema
    upstream = make_url(POSTGRES_URL)
    async with FakeSlackApi() as slack, FakeBotConnector() as connector, \
            FreezableProxy(upstream.host or "127.0.0.1", upstream.port or 5432) as proxy:
        known = [f"UKNOWN{i}" for i in range(6)]
        newcomers = [f"UNEW{i}" for i in range(4)]
        for user in known + newcomers:
            slack.add_user(user, real_name=f"Person {user}", tz="Europe/London")
        data = yaml.safe_load(TEST_CONFIG)
        data["database"] = {"url": upstream.set(port=proxy.port).render_as_string(hide_password=False),
                            "schema_name": name, "pool_size": 5}
        data["slack"] = {**data["slack"], "api_url": slack.url}
        data["teams"] = {"enabled": True, "service_url": connector.service_url,
                         "triage_conversation": "19:triage@thread.tacv2"}
        data["engine"] = {"min_interval_per_channel": "0s", "tick_interval": "1s", "lease": "5s"}
        # 2 s, not the default 2.5 s: the answers must reach the client within Slack's 3 s on a loaded machine.
        data["server"] = {"request_deadline": "2s"}
        server = ServeProcess(write_config(tmp_path / "app.yaml", "", data), replica="hung")
        await start_servers([server])
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:

                async def slack_post(request: rq.SignedRequest) -> tuple[int, str]:
                    async with http.post(server.url + "/slack/events", data=request.body,
                                         headers=request.headers) as response:
                        return response.status, await response.text()

                async def get(path: str) -> tuple[int, str]:
                    async with http.get(server.url + path) as response:
                        return response.status, await response.text()

                async def teams(activity: dict[str, Any]) -> tuple[int, str]:
                    async with http.post(server.url + "/api/messages", data=json.dumps(activity).encode(),
                                         headers={"Content-Type": "application/json"}) as response:
                        return response.status, await response.text()

                # Before: the known people have opened a ticket each (the bot has them on file).
                for user in known:
                    status, text = await slack_post(rq.slash_command(f"Before the hang {user}", user, SECRET))
                    assert status == 200 and "opened" in text, text

                proxy.freeze()
                hung: dict[str, Any] = {}
                for i, user in enumerate(known):
                    hung[f"during the hang {i}"] = slack_post(rq.slash_command(f"During the hang {i}", user, SECRET))
                for i, user in enumerate(newcomers):
                    hung[f"newcomer {i}"] = slack_post(rq.slash_command(f"Newcomer {i} during the hang", user,
                                                                        SECRET))
                hung["status"] = slack_post(rq.slash_command("status", known[0], SECRET))
                hung["dm"] = slack_post(rq.event_callback(
                    {"type": "message", "channel_type": "im", "channel": f"D{known[1]}", "user": known[1],
                     "text": "DM during the hang", "ts": "1700000500.000100"}, SECRET))
                hung["teams"] = teams(ta.message("Teams during the hang", service_url=connector.service_url))
                for i in range(3):
                    hung[f"/healthz {i}"] = get("/healthz")
                answers = await asyncio.gather(*(timed(what, call) for what, call in hung.items()))
                apology = await connector.wait_for(
                    lambda call: call.method == "POST" and NOTHING_SAVED in json.dumps(call.body), timeout=10)

                for answer in answers:
                    if answer.what.startswith("/healthz"):
                        assert (answer.status, json.loads(answer.text)) == (503, {"status": "error"}), answer
                        assert answer.took < 1.5, answer
                        continue
                    assert answer.took < 3, answer
                    if answer.what == "dm":
                        assert answer.status == 503, answer  # Slack retries events; the event-id dedup makes it safe
                    elif answer.what == "teams":
                        assert answer.status == 201, answer
                    else:
                        assert answer.status == 200 and NOTHING_SAVED in json.loads(answer.text)["text"], answer
                assert apology, "the Teams sender heard that nothing was saved"
                print("\nanswers while the database hung: " + ", ".join(
                    f"{a.what} {a.status} in {a.took:.2f}s" for a in answers))

                proxy.thaw()
                await server.wait_healthy(timeout=30)
                status, text = await slack_post(rq.slash_command("After the hang", known[0], SECRET))
                assert status == 200 and "opened" in text, text

            async def set_up() -> bool:
                async with db.reading() as session:
                    return not await session.scalar(select(func.count()).select_from(Ticket).where(
                        Ticket.setup_pending))

            deadline = time.monotonic() + 60
            while not await set_up():
                assert time.monotonic() < deadline, "the tickets were never set up after the hang"
                await asyncio.sleep(0.2)
        finally:
            await stop_servers([server])

    async with db.reading() as session:
        summaries = Counter((await session.execute(select(Ticket.summary))).scalars())
        opened = Counter((await session.execute(select(TicketEvent.ticket_id).where(
            TicketEvent.kind == "opened"))).scalars())
        tickets = list((await session.execute(select(Ticket.id))).scalars())
        orphans = await session.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.ticket_id.is_not(None), OutboxMessage.ticket_id.not_in(select(Ticket.id))))
    # Nothing the bot said was not saved was saved; everything it acknowledged is, set up exactly once.
    assert set(summaries) == {f"Before the hang {user}" for user in known} | {"After the hang"}, summaries
    assert set(summaries.values()) == {1}
    assert opened == Counter(dict.fromkeys(tickets, 1)), "every ticket has exactly one opened event"
    assert orphans == 0
    assert "Traceback" not in "".join(a.text for a in answers)
