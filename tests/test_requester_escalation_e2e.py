"""The escalation matrix in the requester's hands, end to end on Slack and Teams.

Help shows who handles what; once IT lets a target pass (the SLA clock's verdict) the requester's ticket offers
"Escalate", and ``escalate N <why>`` does the same: the next level of the chain hears why, once per level, and the
triage card shows it. Before that, the requester is told when the target is, on their own clock.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

import tests.test_teams_e2e as e2e
from bot.clock import ManualClock
from bot.routing import Action
from bot.server import Server
from bot.simulators import teams_activities as ta
from bot.simulators.bot_connector import FakeBotConnector
from tests.slack_harness import ALICE, MALLORY, REQUESTER, TRIAGE, SlackBot
from tests.test_teams_e2e import PERSONAL, open_from_personal_chat, posted_to, send, settle

MATRIX = """
escalation:
  chains:
    ladder:
      levels:
        - {notify: ["slack:user:UAGENT2"], wait: 10m}
        - {notify: ["slack:channel:C0LEADS"], wait: 10m}
  policies:
    P3: {first_response: ladder}
escalation_matrix:
  - {handles: "Laptops, printers & accounts", contact: "IT service desk, #it-help"}
  - {handles: "Anything stuck past its target", contact: "Dana Lead, IT team lead"}
"""
PAST_FIRST_RESPONSE = timedelta(hours=5)  # P3: 4 business hours, opened Monday morning in London


@pytest.fixture
def slack_extra_config() -> str:
    return MATRIX


def _escalation_notices(bot: SlackBot, channel: str) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls_to("chat.postMessage")
            if c["channel"] == channel and "escalated by Rita Requester" in json.dumps(c)]


def _buttons(call: dict[str, Any]) -> set[str]:
    return {e["action_id"] for b in call.get("blocks") or [] if b["type"] == "actions" for e in b["elements"]}


async def test_slack_help_shows_who_handles_what_and_how_to_escalate(bot: SlackBot) -> None:
    _, body = await bot.command("help")
    assert "Laptops, printers &amp; accounts: IT service desk, #it-help" in body["text"]
    assert "Dana Lead, IT team lead" in body["text"]
    assert "`/ithelp escalate &lt;ticket number&gt; &lt;why&gt;`" in body["text"]  # escaped once, shown as typed


async def test_slack_requester_escalates_level_by_level_only_once_the_target_has_passed(
        bot: SlackBot, clock: ManualClock) -> None:
    await bot.command("VPN drops every hour")
    await bot.settle()
    [ticket] = await bot.tickets()

    _, body = await bot.command(f"escalate {ticket.number} nobody has answered")
    assert body["text"].startswith(f"Not yet: the first-response target for {ticket.number} is <!date^")
    assert "18:30 (your time)" in body["text"]  # 13:00 in London is 18:30 for Rita in Kolkata
    _, body = await bot.command(f"escalate {ticket.id} me too", user=MALLORY)
    assert body["text"].startswith("Only the person who asked")
    assert _escalation_notices(bot, "UAGENT2") == []

    clock.advance(PAST_FIRST_RESPONSE)
    await bot.settle()
    card_updates = [c for c in bot.slack.calls_to("chat.update") if c["channel"] == f"D{REQUESTER}"]
    assert Action.ESCALATE.value in _buttons(card_updates[-1])  # the requester's ticket now offers it

    await bot.click(Action.ESCALATE, str(ticket.id), REQUESTER, channel_id=f"D{REQUESTER}")
    await bot.settle()
    [level_one] = _escalation_notices(bot, "UAGENT2")
    assert "level 1 of 2" in json.dumps(level_one)
    triage_card = [c for c in bot.slack.calls_to("chat.update") if c["channel"] == TRIAGE][-1]
    assert "Escalated by Rita Requester to level 1 of 2" in json.dumps(triage_card)

    _, body = await bot.command(f"escalate {ticket.number} still down")  # straight after: no level skipped
    assert "moments ago" in body["text"] and _escalation_notices(bot, "C0LEADS") == []
    clock.advance(timedelta(minutes=11))
    _, body = await bot.command(f"escalate {ticket.number} <!channel> still down after lunch")
    assert body["text"].startswith(f"Escalated {ticket.number} to level 2 of 2")
    await bot.settle()
    [level_two] = _escalation_notices(bot, "C0LEADS")
    assert "Why: " in json.dumps(level_two) and "still down after lunch" in json.dumps(level_two)
    assert "<!channel>" not in json.dumps(level_two)
    clock.advance(timedelta(minutes=11))
    _, body = await bot.command(f"escalate {ticket.number} again")
    assert "already escalated to every level" in body["text"]
    assert len(_escalation_notices(bot, "UAGENT2")) == 1 and len(_escalation_notices(bot, "C0LEADS")) == 1
    assert await bot.events("escalation_requested") == 2

    _, body = await bot.command(f"escalate {ticket.number} I can too", user=ALICE)  # agents may escalate as well
    assert "already escalated to every level" in body["text"]


# -- Teams ------------------------------------------------------------------------------------------
# The Teams end-to-end fixtures: a fake Bot Connector (cards checked against the schema) and ithelp serve on it.
fake, teams_config, server = e2e.fake, e2e.teams_config, e2e.server


async def test_teams_help_escalate_command_and_escalate_button(
        server: Server, fake: FakeBotConnector, clock: ManualClock) -> None:
    await send(server, ta.message("help", service_url=fake.service_url))
    await fake.wait_for(lambda c: posted_to(PERSONAL)(c) and "how to escalate" in e2e.text_of(c))

    card_id = await open_from_personal_chat(server, fake)
    assert card_id
    await send(server, ta.message("escalate IT-1 it is urgent", service_url=fake.service_url))
    await fake.wait_for(lambda c: posted_to(PERSONAL)(c) and "Not yet: the first-response target" in e2e.text_of(c))

    clock.advance(PAST_FIRST_RESPONSE)
    await settle(server)
    requester_cards = [c for c in fake.activities if c.conversation_id == PERSONAL and c.method == "PUT"]
    assert Action.ESCALATE.value in e2e.text_of(requester_cards[-1])

    # No chain for this desk's P3: the triage channel is the one level.
    await send(server, ta.message(None, service_url=fake.service_url, value={
        "action": Action.ESCALATE.value, "value": "1", "ticket_id": 1}))
    await fake.wait_for(lambda c: posted_to(e2e.TRIAGE)(c) and "escalated by Alex Requester" in e2e.text_of(c))
    await fake.wait_for(lambda c: posted_to(PERSONAL)(c) and "Escalated IT-1 to level 1 of 1" in e2e.text_of(c))
    await settle(server)
    triage_updates = [c for c in fake.activities if c.method == "PUT" and c.conversation_id == e2e.TRIAGE]
    assert "Escalated by Alex Requester to level 1 of 1" in e2e.text_of(triage_updates[-1])
