"""Self-service in Teams, over real HTTP: articles offered with the ticket, "This solved it" closing it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.config import AppConfig, SlackConfig, TeamsConfig
from bot.routing import Action
from bot.server import Server
from bot.simulators import teams_activities as ta
from bot.simulators.bot_connector import FakeBotConnector
from store.db import Database
from store.models import OutboxMessage, Ticket
from store.survey_models import Survey
from tests.harness import running_server
from tests.test_kb_slack_e2e import ARTICLES
from tests.test_nps_e2e import OTHER, PERSONAL, fake, send, settle  # noqa: F401  (fake: the connector fixture)

TRIAGE = "19:triage@thread.tacv2"
KNOWLEDGE = f"""
knowledge:
  folder: {ARTICLES}
escalation:
  chains:
    desk:
      levels:
        - {{notify: ["teams:user:aad-agent-1"], wait: 10m}}
  policies:
    P3: {{breach: desk}}
"""


@pytest.fixture
async def teams(make_config: Callable[..., AppConfig], fake: FakeBotConnector, db: Database,  # noqa: F811
                clock: ManualClock) -> AsyncIterator[Server]:
    config = make_config(KNOWLEDGE).model_copy(update={
        "slack": SlackConfig(),
        "teams": TeamsConfig(enabled=True, triage_conversation=TRIAGE, service_url=fake.service_url),
    })
    async with running_server(config, db, clock) as server:
        assert server.desk is not None
        await server.desk.knowledge.reindex()
        yield server


def suggestions(fake: FakeBotConnector, conversation: str) -> list[tuple[str, dict[str, Any]]]:  # noqa: F811
    """(activity id, card) of every suggestion message posted to ``conversation``."""
    found = []
    for call in fake.activities:
        if call.ok and call.method == "POST" and call.conversation_id == conversation and call.body:
            for attachment in call.body.get("attachments") or []:
                if Action.KB_SOLVED.value in json.dumps(attachment):
                    assert isinstance(call.response, dict)
                    found.append((str(call.response["id"]), attachment["content"]))
    return found


def solved_submits(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [a["data"] for a in card.get("actions") or [] if a.get("data", {}).get("action") == Action.KB_SOLVED.value]


async def tickets(db: Database) -> list[Ticket]:
    async with db.reading() as session:
        return list((await session.scalars(select(Ticket).order_by(Ticket.id))).all())


async def test_teams_a_message_gets_articles_and_this_solved_it_resolves_as_self_served_with_no_pages(
    teams: Server, fake: FakeBotConnector, db: Database, clock: ManualClock  # noqa: F811
) -> None:
    assert await send(teams, ta.message("I forgot my password", service_url=fake.service_url)) == 201
    assert await send(teams, ta.message("outlook isn't getting new emails", service_url=fake.service_url,
                                        **OTHER)) == 201
    await settle(teams, clock)
    solved, unsolved = await tickets(db)
    [(activity_id, card)] = suggestions(fake, PERSONAL)
    assert "Reset your password" in json.dumps(card)
    [first, *_] = solved_submits(card)
    assert first["value"].startswith(f"{solved.id}:")

    # Olga may not close Rita's ticket with Rita's button.
    assert await send(teams, ta.message(None, service_url=fake.service_url, reply_to_id=activity_id,
                                        value=first, **OTHER)) == 201
    assert await send(teams, ta.message(None, service_url=fake.service_url, reply_to_id=activity_id,
                                        value=first)) == 201
    await settle(teams, clock)
    solved, unsolved = await tickets(db)
    assert solved.status == "resolved" and unsolved.status == "new"
    assert "Only the person who asked" in json.dumps(fake.sent_to(OTHER["conversation_id"]))
    triage = json.dumps([c.body for c in fake.activities if c.conversation_id == TRIAGE and c.method == "PUT"])
    assert "Self-served" in triage

    clock.advance(timedelta(days=5))
    await settle(teams, clock)
    async with db.reading() as session:
        pages = [m.ticket_id for m in (await session.scalars(select(OutboxMessage).where(
            OutboxMessage.kind == "page"))).all()]
        assert (await session.scalars(select(Survey))).all() == []
    assert unsolved.id in pages and solved.id not in pages
