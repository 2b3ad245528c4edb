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
from bot.routing import Action, Form
from bot.server import Server
from bot.simulators import teams_activities as ta
from bot.simulators.bot_connector import FakeBotConnector
from store.db import Database
from store.knowledge import SENT, KbUse
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
def teams_extra_config() -> str:
    """app.yaml text for the running bot; a module that imports ``teams`` overrides this to add sections."""
    return KNOWLEDGE


@pytest.fixture
async def teams(make_config: Callable[..., AppConfig], fake: FakeBotConnector, db: Database,  # noqa: F811
                clock: ManualClock, teams_extra_config: str) -> AsyncIterator[Server]:
    config = make_config(teams_extra_config).model_copy(update={
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


AGENT: ta.Where = {"aad_object_id": "aad-agent-1", "user_id": "29:agent", "user_name": "Ada Agent",
                   "conversation_id": "a:1agent-chat"}


def cards_to(fake: FakeBotConnector, conversation: str) -> list[tuple[str, dict[str, Any]]]:  # noqa: F811
    return [(str(c.response["id"]) if isinstance(c.response, dict) else "", a["content"])
            for c in fake.activities if c.ok and c.conversation_id == conversation and c.body
            for a in c.body.get("attachments") or []]


async def test_teams_an_agent_searches_and_sends_an_article_to_the_requester(
    teams: Server, fake: FakeBotConnector, db: Database, clock: ManualClock  # noqa: F811
) -> None:
    assert await send(teams, ta.message("The thing on the 2nd floor won't give me my pages",
                                        service_url=fake.service_url)) == 201
    await settle(teams, clock)
    [ticket] = await tickets(db)
    triage_card = next(card for _, card in cards_to(fake, TRIAGE))
    assert {"action": Action.KB_SEND.value, "value": str(ticket.id), "ticket_id": ticket.id} in [
        a.get("data") for a in triage_card["actions"]]

    assert await send(teams, ta.message(None, service_url=fake.service_url, **AGENT, value={
        "action": Action.KB_SEND.value, "value": str(ticket.id), "ticket_id": ticket.id})) == 201
    [(form_id, _form)] = [(i, c) for i, c in cards_to(fake, AGENT["conversation_id"])
                         if "Send an article" in json.dumps(c)]
    search = {"form": Form.SEND_ARTICLE.value, "ticket_id": ticket.id, "query": "print job stuck in queue"}
    assert await send(teams, ta.message(None, service_url=fake.service_url, reply_to_id=form_id, **AGENT,
                                        value=search)) == 201
    shown = fake.activity(AGENT["conversation_id"], form_id)
    assert shown is not None
    [choices] = [b["choices"] for a in shown["attachments"] for b in a["content"]["body"]
                 if b["type"] == "Input.ChoiceSet"]
    article_id = {c["title"]: c["value"] for c in choices}["Print jobs stuck in the queue"]

    assert await send(teams, ta.message(None, service_url=fake.service_url, reply_to_id=form_id, **AGENT,
                                        value={**search, "article": article_id})) == 201
    await settle(teams, clock)
    assert "Print jobs stuck in the queue" in json.dumps(fake.sent_to(PERSONAL))
    async with db.reading() as session:
        sent = (await session.execute(select(KbUse.ticket_id, KbUse.article_id).where(KbUse.kind == SENT))).all()
    assert [tuple(row) for row in sent] == [(ticket.id, int(article_id))]

    # A requester pressing the same button gets a refusal, not the form.
    assert await send(teams, ta.message(None, service_url=fake.service_url, value={
        "action": Action.KB_SEND.value, "value": str(ticket.id), "ticket_id": ticket.id})) == 201
    assert "Only IT agents can send articles" in json.dumps(fake.sent_to(PERSONAL))
