"""Who may act on a ticket (issue #16, points 6 and 7): whoever is paged can acknowledge the page, nobody else
who isn't an agent; forged identifiers are refused cleanly and never reach the database as another ticket."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.config import AppConfig
from bot.routing import Action
from bot.simulators import slack_requests as rq
from bot.simulators.slack_api import FakeSlackApi
from store.db import Database
from store.escalation_models import Escalation
from store.models import Person, Ticket
from tests.harness import running_server
from tests.slack_harness import MALLORY, REQUESTER, SECRET, SlackBot

ONCALL, MANAGER = "UONCALL", "UMANAGER"  # paged, but not agents
PAGES = "C0PAGES"
CHAINS = """
escalation:
  chains:
    oncall:
      levels:
        - {notify: ["slack:user:UONCALL", "slack:channel:C0PAGES"], wait: 10m}
        - {notify: ["slack:user:UMANAGER"], wait: 10m}
  policies:
    P1: {breach: oncall}
"""


@pytest.fixture
async def paging_bot(db: Database, clock: ManualClock, make_config: Callable[..., AppConfig]
                     ) -> AsyncIterator[SlackBot]:
    async with FakeSlackApi() as slack:
        for user, name in ((REQUESTER, "Rita Requester"), ("UAGENT1", "Alice"), (ONCALL, "Olly Oncall"),
                           (MANAGER, "Mia Manager"), (MALLORY, "Mallory")):
            slack.add_user(user, name=name.split()[0].lower(), real_name=name)
        config = make_config(CHAINS)
        config = config.model_copy(update={"slack": config.slack.model_copy(update={"api_url": slack.url})})
        async with running_server(config, db, clock) as server:
            yield SlackBot(server, slack)


async def breached_p1(bot: SlackBot, clock: ManualClock) -> Ticket:
    await bot.command("Email down for everyone")
    await bot.settle()
    [ticket] = await bot.tickets()
    await bot.click(Action.PRIORITY, f"{ticket.id}:P1", "UAGENT1", action_type="static_select")
    await bot.settle()
    clock.advance(timedelta(minutes=16))  # P1: first response within 15 minutes
    await bot.settle()
    return ticket


async def escalation(bot: SlackBot) -> Escalation:
    assert bot.server.desk is not None
    async with bot.server.desk.db.reading() as session:
        return (await session.execute(select(Escalation))).scalar_one()


def pages_to(bot: SlackBot, user: str) -> list[dict[str, Any]]:
    return [m for m in bot.slack.messages.get(f"D{user}", []) if "breached" in m["text"]]


async def test_an_on_call_engineer_who_is_not_an_agent_acknowledges_their_page(
        paging_bot: SlackBot, clock: ManualClock) -> None:
    ticket = await breached_p1(paging_bot, clock)
    assert len(pages_to(paging_bot, ONCALL)) == 1
    await paging_bot.click(Action.ESCALATION_ACK, str(ticket.id), ONCALL, channel_id=f"D{ONCALL}")
    await paging_bot.settle()
    acknowledged = await escalation(paging_bot)
    assert (acknowledged.status, acknowledged.acknowledged_by) == ("acknowledged", "Olly Oncall")
    clock.advance(timedelta(minutes=30))
    await paging_bot.settle()
    assert pages_to(paging_bot, MANAGER) == []  # paging stopped at level 1
    assert paging_bot.slack.calls_to("chat.postEphemeral") == []
    # Acknowledging does not make them an agent: they can't work the ticket.
    await paging_bot.click(Action.START, str(ticket.id), ONCALL)
    [refusal] = await paging_bot.slack.wait_for_calls("chat.postEphemeral", 1)
    assert refusal["user"] == ONCALL and "Only IT agents" in refusal["text"]


async def test_anyone_in_a_paged_channel_may_acknowledge_from_that_channel(
        paging_bot: SlackBot, clock: ManualClock) -> None:
    ticket = await breached_p1(paging_bot, clock)
    await paging_bot.click(Action.ESCALATION_ACK, str(ticket.id), MANAGER, channel_id=PAGES)
    await paging_bot.settle()
    assert (await escalation(paging_bot)).acknowledged_by == "Mia Manager"


async def test_a_stranger_cannot_acknowledge_and_paging_goes_on(paging_bot: SlackBot, clock: ManualClock) -> None:
    ticket = await breached_p1(paging_bot, clock)
    await paging_bot.click(Action.ESCALATION_ACK, str(ticket.id), MALLORY, channel_id="C0GENERAL")
    [refusal] = await paging_bot.slack.wait_for_calls("chat.postEphemeral", 1)
    assert refusal["user"] == MALLORY and "people paged about" in refusal["text"]
    assert (await escalation(paging_bot)).status == "active"
    clock.advance(timedelta(minutes=10))
    await paging_bot.settle()
    assert len(pages_to(paging_bot, MANAGER)) == 1


async def test_a_paged_non_agent_pressing_claim_acknowledges_without_owning_the_ticket(
        paging_bot: SlackBot, clock: ManualClock) -> None:
    ticket = await breached_p1(paging_bot, clock)
    await paging_bot.click(Action.ESCALATION_CLAIM, str(ticket.id), ONCALL, channel_id=f"D{ONCALL}")
    await paging_bot.settle()
    assert (await escalation(paging_bot)).status == "acknowledged"
    [row] = await paging_bot.tickets()
    assert row.assignee_id is None and row.status == "new"


@pytest.mark.parametrize("forged", ["١", "²", "12²", "99999999999999999999999999999", "1\x00", "-1", "0x1", " 1"])
async def test_forged_ticket_numbers_in_a_click_are_refused_briefly_without_a_traceback(
        bot: SlackBot, forged: str, caplog: pytest.LogCaptureFixture) -> None:
    await bot.command("Printer jammed")
    await bot.settle()
    caplog.set_level(logging.WARNING)
    status, _ = await bot.click(Action.CLAIM, forged, "UAGENT1")
    assert status == 200
    [refusal] = await bot.slack.wait_for_calls("chat.postEphemeral", 1)
    assert refusal["text"] == "That button doesn't point at a ticket any more."
    assert await bot.events("claimed") == 0  # never ticket 1, nor any other
    assert not [r for r in caplog.records if r.exc_info]


async def test_nul_bytes_in_ids_and_names_never_reach_the_database_or_name_someone_else(
        bot: SlackBot, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    event = {"type": "message", "channel_type": "im", "channel": "D\x00UREQ1", "user": "UREQ1\x00",
             "text": "VPN\x00 down", "ts": "1700000500.000100"}
    status, _ = await bot.send(rq.event_callback(event, SECRET, event_id="Ev\x00nul"))
    assert status == 200
    await bot.click(Action.CLAIM, "1", "UAGENT1\x00")
    status, body = await bot.command("Disk\x00 full", user="UREQ1", user_name="rita\x00")
    assert status == 200 and "opened" in body["text"]
    assert bot.server.desk is not None
    async with bot.server.desk.db.reading() as session:
        people = (await session.execute(select(Person.platform_user_id, Person.display_name))).all()
        summaries = (await session.execute(select(Ticket.summary))).scalars().all()
    assert all("\x00" not in ident and "\x00" not in name for ident, name in people)
    assert sorted(summaries) == ["Disk\ufffd full", "VPN\ufffd down"]
    assert await bot.events("claimed") == 0  # "UAGENT1\x00" is not Alice
    assert not [r for r in caplog.records if r.exc_info]
    assert "\\u0000" not in json.dumps([c.args for c in bot.slack.calls])
