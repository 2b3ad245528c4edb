"""Who may act on a ticket, from Teams (issue #16, points 6 and 7): whoever a page reached may acknowledge it (the
person, or anyone in a paged channel), nobody else who isn't an agent; forged ticket numbers in a card click are
refused briefly and never reach the database as another ticket."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.config import AppConfig, SlackConfig, TeamsConfig
from bot.routing import Action
from bot.server import Server
from bot.simulators import teams_activities as ta
from bot.simulators.bot_connector import FakeBotConnector
from store.db import Database
from store.escalation_models import Escalation
from store.models import TicketEvent
from tests import test_teams_e2e as e2e
from tests.harness import running_server
from tests.test_teams_e2e import AGENT, TRIAGE, open_from_personal_chat, send, settle

fake = e2e.fake  # a fake Bot Connector; every card it receives is checked against the Adaptive Card schema

ONCALL: ta.Where = {"aad_object_id": "aad-oncall", "user_id": "29:oncall", "user_name": "Olly Oncall",
                    "conversation_id": "a:1oncall-chat"}
MANAGER: ta.Where = {"aad_object_id": "aad-manager", "user_id": "29:manager", "user_name": "Mia Manager",
                     "conversation_id": "a:1manager-chat"}
STRANGER: ta.Where = {"aad_object_id": "aad-stranger", "user_id": "29:stranger", "user_name": "Sam Stranger",
                      "conversation_id": "a:1stranger-chat"}
PAGES = "19:pages@thread.tacv2"
CHAINS = f"""
escalation:
  chains:
    oncall:
      levels:
        - {{notify: ["teams:user:aad-oncall", "teams:channel:{PAGES}"], wait: 10m}}
        - {{notify: ["teams:user:aad-manager"], wait: 10m}}
  policies:
    P3: {{breach: oncall}}
"""


@pytest.fixture
async def paging(make_config: Callable[..., AppConfig], fake: FakeBotConnector, db: Database,
                 clock: ManualClock) -> AsyncIterator[Server]:
    config = make_config(CHAINS).model_copy(update={
        "slack": SlackConfig(),
        "teams": TeamsConfig(enabled=True, triage_conversation=TRIAGE, service_url=fake.service_url),
    })
    async with running_server(config, db, clock) as server:
        for who in (ONCALL, MANAGER, STRANGER):  # each has chatted with the bot, so it can reach them
            await send(server, ta.message("help", service_url=fake.service_url, **who))
        yield server


async def breached(server: Server, fake: FakeBotConnector, clock: ManualClock) -> str:
    """Open a ticket, let its first response breach; returns the on-call's page activity id."""
    await open_from_personal_chat(server, fake)
    clock.advance(timedelta(hours=5))  # past P3's 4 business hours
    await settle(server)
    [page] = [c for c in fake.activities if c.ok and c.method == "POST" and c.conversation_id == ONCALL[
        "conversation_id"] and Action.ESCALATION_ACK.value in json.dumps(c.body)]
    assert isinstance(page.response, dict)
    return str(page.response["id"])


def click(fake: FakeBotConnector, action: Action, value: str, who: ta.Where, **where: Any) -> dict[str, Any]:
    return ta.message(None, service_url=fake.service_url, value={"action": action.value, "value": value},
                      **{**who, **where})


def pages_to(fake: FakeBotConnector, who: ta.Where) -> int:
    return sum(1 for c in fake.activities if c.ok and c.method == "POST" and c.conversation_id ==
               who["conversation_id"] and Action.ESCALATION_ACK.value in json.dumps(c.body))


def said_to(fake: FakeBotConnector, who: ta.Where) -> str:
    return json.dumps(fake.sent_to(who["conversation_id"]), ensure_ascii=False)


async def escalation(db: Database) -> Escalation:
    async with db.reading() as session:
        return (await session.execute(select(Escalation))).scalar_one()


async def test_teams_an_on_call_engineer_who_is_not_an_agent_acknowledges_their_page_and_nothing_more(
        paging: Server, fake: FakeBotConnector, db: Database, clock: ManualClock) -> None:
    page_id = await breached(paging, fake, clock)
    assert await send(paging, click(fake, Action.ESCALATION_ACK, "1", ONCALL, reply_to_id=page_id)) == (201, None)
    await settle(paging)
    acknowledged = await escalation(db)
    assert (acknowledged.status, acknowledged.acknowledged_by) == ("acknowledged", "Olly Oncall")
    clock.advance(timedelta(minutes=30))
    await settle(paging)
    assert pages_to(fake, MANAGER) == 0  # paging stopped at level 1
    await send(paging, click(fake, Action.START, "1", ONCALL))
    assert "Only IT agents" in said_to(fake, ONCALL)
    async with db.reading() as session:
        assert await session.scalar(select(func.count()).select_from(TicketEvent).where(
            TicketEvent.kind == "status_changed")) == 0


async def test_teams_anyone_in_a_paged_channel_may_acknowledge_from_that_channel(
        paging: Server, fake: FakeBotConnector, db: Database, clock: ManualClock) -> None:
    await breached(paging, fake, clock)
    [channel_page] = [c for c in fake.activities if c.ok and c.method == "POST" and c.conversation_id == PAGES]
    assert isinstance(channel_page.response, dict)
    thread = f"{PAGES};messageid={channel_page.response['id']}"
    await send(paging, click(fake, Action.ESCALATION_ACK, "1", MANAGER, conversation_type="channel",
                             conversation_id=thread, channel_id_teams=PAGES))
    await settle(paging)
    assert (await escalation(db)).acknowledged_by == "Mia Manager"


async def test_teams_a_stranger_cannot_acknowledge_and_paging_goes_on(
        paging: Server, fake: FakeBotConnector, db: Database, clock: ManualClock) -> None:
    await breached(paging, fake, clock)
    await send(paging, click(fake, Action.ESCALATION_ACK, "1", STRANGER))
    assert "people paged about" in said_to(fake, STRANGER)
    assert (await escalation(db)).status == "active"
    clock.advance(timedelta(minutes=10))
    await settle(paging)
    assert pages_to(fake, MANAGER) == 1


@pytest.mark.parametrize("forged", ["١", "²", "12²", "99999999999999999999999999999", "1\x00", "-1", "0x1", " 1"])
async def test_teams_forged_ticket_numbers_in_a_click_are_refused_briefly_without_a_traceback(
        paging: Server, fake: FakeBotConnector, db: Database, forged: str, caplog: pytest.LogCaptureFixture) -> None:
    await open_from_personal_chat(paging, fake)
    caplog.set_level(logging.WARNING)
    for value in ({"action": Action.CLAIM.value, "value": forged, "ticket_id": forged},
                  {"action": Action.CLAIM.value, "value": f"{forged}:x"}):
        status, _ = await send(paging, ta.message(None, service_url=fake.service_url, value=value,
                                                  conversation_id="a:1agent-chat", **AGENT))
        assert status == 201
    answers = [json.dumps(body, ensure_ascii=False) for body in fake.sent_to("a:1agent-chat")]
    assert len(answers) == 2 and all("That button doesn't point at a ticket any more." in a for a in answers)
    async with db.reading() as session:
        assert await session.scalar(select(func.count()).select_from(TicketEvent).where(
            TicketEvent.kind == "claimed")) == 0  # never ticket 1, nor any other
    assert not [r for r in caplog.records if r.exc_info]
