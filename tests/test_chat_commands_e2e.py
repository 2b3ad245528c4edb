"""Commands and small talk in a DM / personal chat are answered, never filed (issue #18), on Slack and Teams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot import teams_app
from bot.chat_commands import Command, Said, read_command
from bot.server import Server
from bot.simulators import teams_activities as ta
from bot.simulators.bot_connector import FakeBotConnector
from store.db import Database
from tests import test_teams_e2e as e2e
from tests.slack_harness import ALICE, MALLORY, REQUESTER, SlackBot
from tests.test_teams_e2e import AGENT, PERSONAL, open_from_personal_chat, send, ticket_count

fake, teams_config, server = e2e.fake, e2e.teams_config, e2e.server  # the Teams e2e fixtures, shared


def dm(text: str, ts: str, user: str = REQUESTER) -> dict[str, Any]:
    return {"type": "message", "channel_type": "im", "channel": f"D{user}", "user": user, "text": text, "ts": ts}


def answers_in(bot: SlackBot, channel: str) -> list[str]:
    return [json.dumps(c) for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == channel]


def test_commands_are_read_and_problems_are_not() -> None:
    assert read_command("Hi!") == Command(Said.GREETING)
    assert read_command("thanks") == Command(Said.THANKS)
    assert read_command("status IT-13") == Command(Said.STATUS, 13)
    assert read_command("ithelp status 13") == Command(Said.STATUS, 13)
    assert read_command("list") == Command(Said.LIST)
    assert read_command("status ¹³") is None
    assert read_command("hi, my VPN keeps dropping") is None
    assert read_command("thanks but the printer is still broken") is None


async def test_slack_small_talk_and_commands_in_a_dm_are_answered_not_filed(bot: SlackBot) -> None:
    for n, word in enumerate(("hi", "thanks!", "help", "status", "list")):
        await bot.event(dm(word, f"1700000{n}00.000100"))
    assert await bot.tickets() == []
    said = answers_in(bot, f"D{REQUESTER}")
    assert len(said) == 5
    assert "Tell me what's wrong" in said[0] and "welcome" in said[1] and "/ithelp" in said[2]
    assert "You have no open tickets." in said[3] and "You have no open tickets." in said[4]


async def test_slack_status_of_a_ticket_shows_it_to_its_requester_and_agents_only(bot: SlackBot) -> None:
    await bot.command("VPN drops every hour")
    [ticket] = await bot.tickets()
    await bot.event(dm(f"status {ticket.id}", "1700000500.000100"))
    await bot.event(dm(f"status {ticket.id}", "1700000501.000100", user=MALLORY))
    await bot.event(dm("status 999", "1700000502.000100", user=MALLORY))
    await bot.event(dm(f"status {ticket.id}", "1700000503.000100", user=ALICE))
    mine = answers_in(bot, f"D{REQUESTER}")[-1]
    assert "VPN drops every hour" in mine and "IT-1" in mine
    refused = answers_in(bot, f"D{MALLORY}")
    assert len(refused) == 2 and all("VPN drops" not in r and "one of your tickets" in r for r in refused)
    assert "VPN drops every hour" in answers_in(bot, f"D{ALICE}")[-1]
    assert len(await bot.tickets()) == 1


async def test_slack_slash_status_list_and_help_answer_the_person(bot: SlackBot) -> None:
    await bot.command("Printer on floor 3 jams")
    _, status = await bot.command("status 1")
    assert "Printer on floor 3 jams" in json.dumps(status) and status["response_type"] == "ephemeral"
    _, listed = await bot.command("list")
    assert "Your open tickets" in json.dumps(listed) and "Printer on floor 3 jams" in json.dumps(listed)
    _, refused = await bot.command("status 1", user=MALLORY)
    assert "one of your tickets" in refused["text"]
    _, helped = await bot.command("help")
    assert "status 13" in helped["text"]
    assert len(await bot.tickets()) == 1


async def test_teams_small_talk_and_commands_in_a_personal_chat_are_answered_not_filed(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    for word in ("hello", "thank you", "list"):
        status, _ = await send(server, ta.message(word, service_url=fake.service_url))
        assert status == 201
    answers = [json.dumps(a) for a in fake.sent_to(PERSONAL)]
    assert len(answers) == 3 and await ticket_count(db) == 0
    assert "Tell me what's wrong" in answers[0] and "welcome" in answers[1]
    assert "You have no open tickets." in answers[2]


async def test_teams_status_of_a_ticket_shows_it_to_its_requester_and_agents_only(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    await open_from_personal_chat(server, fake, "Teams camera is black")
    await send(server, ta.message("status 1", service_url=fake.service_url))
    assert "Teams camera is black" in json.dumps(fake.sent_to(PERSONAL)[-1])
    colleague: ta.Where = {"aad_object_id": "aad-colleague", "user_id": "29:cole", "user_name": "Cole",
                           "conversation_id": "a:1cole"}
    await send(server, ta.message("status 1", service_url=fake.service_url, **colleague))
    [refusal] = fake.sent_to("a:1cole")
    assert "one of your tickets" in json.dumps(refusal) and "camera" not in json.dumps(refusal)
    agent_chat: ta.Where = {**AGENT, "conversation_id": "a:1agent"}
    await send(server, ta.message("status IT-1", service_url=fake.service_url, **agent_chat))
    [shown] = fake.sent_to("a:1agent")
    assert "Teams camera is black" in json.dumps(shown) and "Alex Requester" in json.dumps(shown)
    await send(server, ta.message("list", service_url=fake.service_url))
    assert "Your open tickets" in json.dumps(fake.sent_to(PERSONAL)[-1])
    assert await ticket_count(db) == 1


async def test_teams_every_command_the_manifest_lists_is_answered_not_filed(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    manifest = json.loads((Path(teams_app.__file__).parent / "manifest.json").read_text())
    titles = [c["title"] for bot in manifest["bots"] for group in bot["commandLists"] for c in group["commands"]]
    assert {"help", "list", "status", "new ticket"} <= set(titles)
    for title in titles:
        await send(server, ta.message(title, service_url=fake.service_url))
    assert len(fake.sent_to(PERSONAL)) == len(titles) and await ticket_count(db) == 0
