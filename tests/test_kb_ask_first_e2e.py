"""``knowledge.mode: ask_first`` over real HTTP in Slack and Teams: articles first, filing on "I still need help"
or after ``ask_timeout`` of silence, nothing filed on "Solved"."""

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
from store.models import Ticket
from tests.harness import running_server
from tests.slack_harness import MALLORY, REQUESTER, TRIAGE, SlackBot
from tests.test_kb_slack_e2e import ARTICLES
from tests.test_nps_e2e import OTHER, PERSONAL, fake, send, settle  # noqa: F401  (fake: the connector fixture)

ASK_FIRST = f"""
knowledge:
  folder: {ARTICLES}
  mode: ask_first
  ask_timeout: 5m
"""


@pytest.fixture
def slack_extra_config() -> str:
    return ASK_FIRST


def buttons(blocks: list[dict[str, Any]]) -> dict[str, str]:
    return {e["action_id"]: e["value"] for b in blocks if b["type"] == "actions" for e in b["elements"]}


async def ask(bot: SlackBot, text: str) -> str:
    """Send ``/ithelp text``; the held request's id from the question's buttons."""
    assert bot.server.desk is not None
    await bot.server.desk.knowledge.reindex()
    status, body = await bot.command(text)
    assert status == 200 and "Before I pass this to IT" in json.dumps(body)
    found = buttons(body["blocks"])
    assert set(found) == {Action.KB_ASK_SOLVED.value, Action.KB_ASK_FILE.value}
    return found[Action.KB_ASK_FILE.value]


async def test_slack_ask_first_shows_articles_and_files_nothing_until_i_still_need_help(bot: SlackBot) -> None:
    held = await ask(bot, "forgot my password")
    await bot.settle()
    assert await bot.tickets() == []
    await bot.click(Action.KB_ASK_FILE, held, MALLORY, channel_id="C0GENERAL")  # not Mallory's to answer
    [refusal] = await bot.slack.wait_for_calls("chat.postEphemeral", 1)
    assert "Only the person who asked" in refusal["text"] and await bot.tickets() == []

    await bot.click(Action.KB_ASK_FILE, held, REQUESTER, channel_id="C0GENERAL")
    await bot.settle()
    [ticket] = await bot.tickets()
    assert ticket.summary == "forgot my password" and ticket.status == "new"
    assert [c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == TRIAGE]
    # Filed once: a second press, or the timer later, files nothing more.
    await bot.click(Action.KB_ASK_FILE, held, REQUESTER, channel_id="C0GENERAL")
    assert len(await bot.tickets()) == 1


async def test_slack_ask_first_files_the_request_after_the_timeout(bot: SlackBot, clock: ManualClock) -> None:
    await ask(bot, "my laptop is really slow")
    clock.advance(timedelta(minutes=4))
    await bot.settle()
    assert await bot.tickets() == []
    clock.advance(timedelta(minutes=1, seconds=1))
    await bot.settle()
    [ticket] = await bot.tickets()
    assert ticket.summary == "my laptop is really slow"
    assert [c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == TRIAGE]


async def test_slack_ask_first_solved_files_nothing(bot: SlackBot, clock: ManualClock) -> None:
    held = await ask(bot, "how do I set up automatic replies while on vacation")
    await bot.click(Action.KB_ASK_SOLVED, held, REQUESTER, channel_id="C0GENERAL")
    clock.advance(timedelta(hours=1))
    await bot.settle()
    assert await bot.tickets() == []
    assert [c for c in bot.slack.calls_to("chat.postMessage") if "Glad that sorted it" in json.dumps(c)]


async def test_slack_ask_first_files_at_once_when_no_article_matches(bot: SlackBot) -> None:
    assert bot.server.desk is not None
    await bot.server.desk.knowledge.reindex()
    status, body = await bot.command("zxqv blorf")
    assert status == 200 and "opened" in body["text"]
    assert len(await bot.tickets()) == 1


# -- Teams ------------------------------------------------------------------------------------------
@pytest.fixture
async def teams(make_config: Callable[..., AppConfig], fake: FakeBotConnector, db: Database,  # noqa: F811
                clock: ManualClock) -> AsyncIterator[Server]:
    config = make_config(ASK_FIRST).model_copy(update={
        "slack": SlackConfig(),
        "teams": TeamsConfig(enabled=True, triage_conversation="19:triage@thread.tacv2", service_url=fake.service_url),
    })
    async with running_server(config, db, clock) as server:
        assert server.desk is not None
        await server.desk.knowledge.reindex()
        yield server


async def tickets(db: Database) -> list[Ticket]:
    async with db.reading() as session:
        return list((await session.scalars(select(Ticket).order_by(Ticket.id))).all())


def question(fake: FakeBotConnector, conversation: str) -> tuple[str, dict[str, Any]]:  # noqa: F811
    """(activity id, the "I still need help" submit data) of the question posted to ``conversation``."""
    for call in fake.activities:
        if call.ok and call.method == "POST" and call.conversation_id == conversation and call.body:
            for attachment in call.body.get("attachments") or []:
                for action in attachment["content"].get("actions") or []:
                    if action.get("data", {}).get("action") == Action.KB_ASK_FILE.value:
                        assert isinstance(call.response, dict)
                        return str(call.response["id"]), action["data"]
    raise AssertionError(f"no question in {conversation}")


async def test_teams_ask_first_files_on_i_still_need_help_and_on_timeout(
    teams: Server, fake: FakeBotConnector, db: Database, clock: ManualClock  # noqa: F811
) -> None:
    assert await send(teams, ta.message("printer jammed on the 2nd floor", service_url=fake.service_url)) == 201
    assert await send(teams, ta.message("onedrive not syncing my files", service_url=fake.service_url,
                                        **OTHER)) == 201
    await settle(teams, clock)
    assert await tickets(db) == []
    activity_id, still_need_help = question(fake, PERSONAL)
    question(fake, str(OTHER["conversation_id"]))

    assert await send(teams, ta.message(None, service_url=fake.service_url, reply_to_id=activity_id,
                                        value=still_need_help)) == 201
    await settle(teams, clock)
    assert [t.summary for t in await tickets(db)] == ["printer jammed on the 2nd floor"]

    clock.advance(timedelta(minutes=5, seconds=1))  # Olga never answered: hers is filed too
    await settle(teams, clock)
    assert [t.summary for t in await tickets(db)] == ["printer jammed on the 2nd floor",
                                                      "onedrive not syncing my files"]


async def test_slack_ask_first_from_the_form_asks_in_a_dm_and_files_with_everything_typed(bot: SlackBot) -> None:
    from bot.routing import Form
    from bot.simulators import slack_requests as rq
    from tests.slack_harness import SECRET

    assert bot.server.desk is not None
    await bot.server.desk.knowledge.reindex()
    status, body = await bot.send(rq.view_submission(
        Form.NEW_TICKET.value, {"summary": {"input": "Can't get into the building"},
                                "description": {"input": "my badge doesn't open the door anymore"},
                                "urgency": {"input": {"type": "static_select", "selected_option": {"value": "P2"}}}},
        REQUESTER, SECRET))
    assert status == 200 and not body
    [asked] = [c for c in bot.slack.calls_to("chat.postMessage") if "Before I pass this to IT" in json.dumps(c)]
    assert asked["channel"] == REQUESTER and "Door badge not working" in json.dumps(asked["blocks"])
    assert await bot.tickets() == []
    await bot.click(Action.KB_ASK_FILE, buttons(asked["blocks"])[Action.KB_ASK_FILE.value], REQUESTER,
                    channel_id=f"D{REQUESTER}")
    [ticket] = await bot.tickets()
    assert (ticket.summary, ticket.description, ticket.priority) == (
        "Can't get into the building", "my badge doesn't open the door anymore", "P2")


async def test_teams_ask_first_from_the_form_replaces_it_with_the_articles_and_files_on_i_still_need_help(
    teams: Server, fake: FakeBotConnector, db: Database, clock: ManualClock  # noqa: F811
) -> None:
    from bot.routing import Form

    assert await send(teams, ta.message("new ticket", service_url=fake.service_url)) == 201
    [form_id] = [str(c.response["id"]) for c in fake.activities if c.ok and c.method == "POST"
                 and c.conversation_id == PERSONAL and isinstance(c.response, dict)]
    form = {"form": Form.NEW_TICKET.value, "summary": "Can't get into the building",
            "description": "my badge doesn't open the door anymore", "urgency": "P2"}
    assert await send(teams, ta.message(None, service_url=fake.service_url, reply_to_id=form_id, value=form)) == 201
    assert await tickets(db) == []
    shown = fake.activity(PERSONAL, form_id)
    assert shown is not None and "Door badge not working" in json.dumps(shown)
    [still_need_help] = [a["data"] for att in shown["attachments"] for a in att["content"].get("actions") or []
                         if a.get("data", {}).get("action") == Action.KB_ASK_FILE.value]
    assert await send(teams, ta.message(None, service_url=fake.service_url, reply_to_id=form_id,
                                        value=still_need_help)) == 201
    [ticket] = await tickets(db)
    assert (ticket.summary, ticket.description, ticket.priority) == (
        "Can't get into the building", "my badge doesn't open the door anymore", "P2")
