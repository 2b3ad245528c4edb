"""A running bot wired to a fake Slack, driven the way Slack drives it (signed requests)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.routing import Action
from bot.server import Server
from bot.simulators import slack_requests as rq
from bot.simulators.http import post
from bot.simulators.slack_api import FakeSlackApi
from store.models import Ticket, TicketEvent
from tests.harness import running_server

SECRET = "test-signing-secret"
REQUESTER, ALICE, BOB, MALLORY = "UREQ1", "UAGENT1", "UAGENT2", "UMALLORY"
TRIAGE = "C0TRIAGE"


@dataclass
class SlackBot:
    """The running bot plus the fake Slack it talks to, and ways to poke it like Slack does."""

    server: Server
    slack: FakeSlackApi

    @property
    def events_url(self) -> str:
        return f"{self.server.url}/slack/events"

    async def send(self, request: rq.SignedRequest) -> tuple[int, Any]:
        return await post(self.events_url, request.body, request.headers)

    async def command(self, text: str, user: str = REQUESTER, **kw: Any) -> tuple[int, Any]:
        return await self.send(rq.slash_command(text, user, SECRET, **kw))

    async def click(self, action: Action, value: str, user: str, **kw: Any) -> tuple[int, Any]:
        kw.setdefault("channel_id", TRIAGE)
        kw.setdefault("message_ts", "1.0")
        return await self.send(rq.block_action(action.value, value, user, SECRET, **kw))

    async def event(self, event: dict[str, Any], **kw: Any) -> tuple[int, Any]:
        return await self.send(rq.event_callback(event, SECRET, **kw))

    async def tickets(self) -> list[Ticket]:
        assert self.server.desk is not None
        async with self.server.desk.db.transaction() as session:
            return list((await session.execute(select(Ticket).order_by(Ticket.id))).scalars())

    async def events(self, kind: str) -> int:
        assert self.server.desk is not None
        async with self.server.desk.db.transaction() as session:
            return int(await session.scalar(select(func.count()).select_from(TicketEvent).where(
                TicketEvent.kind == kind)) or 0)

    async def settle(self) -> None:
        """Run the engine until the outbox is empty and the timer tasks it started (what Slack's requests left for
        after their ack) have ended; the server also kicks it after each request."""
        assert self.server.engine is not None
        await self.server.engine.tick()


@pytest.fixture
def slack_extra_config() -> str:
    """Extra app.yaml text for the running bot; a test module overrides this fixture to add sections."""
    return ""


@pytest.fixture
async def bot(db: Any, clock: Any, make_config: Any, slack_extra_config: str) -> AsyncIterator[SlackBot]:
    async with FakeSlackApi() as slack:
        for user, name, tz in ((REQUESTER, "Rita Requester", "Asia/Kolkata"), (ALICE, "Alice", "Europe/London"),
                               (BOB, "Bob", "Europe/London"), (MALLORY, "Mallory", "America/Los_Angeles")):
            slack.add_user(user, name=name.split()[0].lower(), real_name=name, tz=tz)
        config = make_config(slack_extra_config)
        config = config.model_copy(update={"slack": config.slack.model_copy(update={"api_url": slack.url})})
        async with running_server(config, db, clock) as server:
            yield SlackBot(server, slack)
        assert_valid_block_kit(slack)


def assert_valid_block_kit(slack: FakeSlackApi) -> None:
    """Every message and view the bot sent in the test passes slack_sdk's own model validation."""
    from slack_sdk.models.blocks import Block
    from slack_sdk.models.views import View

    for call in slack.calls:
        for block in call.args.get("blocks") or []:
            parsed = Block.parse(block)
            assert parsed is not None, f"{call.method}: unknown block {block}"
            parsed.validate_json()
            assert len(json.dumps(block)) < 50_000
        assert len(call.args.get("blocks") or []) <= 50, f"{call.method}: more than 50 blocks"
        view = call.args.get("view")
        if isinstance(view, dict):
            View(**view).validate_json()


