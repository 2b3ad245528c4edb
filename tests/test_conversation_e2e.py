"""A plain DM from someone a ticket is waiting on answers it, on Slack and Teams (issue #18).

One open ticket waiting on them: the message joins it. Several open tickets: the bot asks which (or something
new) with buttons, holds the message until answered, and files or joins it exactly once however often it is
clicked.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

from sqlalchemy import func, select

from bot.privacy.erasure import erase_person
from bot.privacy.export import export_person
from bot.routing import Action
from bot.server import Server
from bot.simulators import teams_activities as ta
from bot.simulators.bot_connector import FakeBotConnector
from store.conversation_models import HeldMessage
from store.db import Database
from store.models import Ticket, TicketEvent
from tests import test_teams_e2e as e2e
from tests.slack_harness import ALICE, MALLORY, REQUESTER, TRIAGE, SlackBot
from tests.test_teams_e2e import AGENT, PERSONAL, card_action, open_from_personal_chat, posted_to, send, settle

fake, teams_config, server = e2e.fake, e2e.teams_config, e2e.server  # the Teams e2e fixtures, shared


def dm(text: str, ts: str) -> dict[str, Any]:
    return {"type": "message", "channel_type": "im", "channel": f"D{REQUESTER}", "user": REQUESTER, "text": text,
            "ts": ts}


async def statuses(db: Database) -> list[str]:
    async with db.transaction() as session:
        return list((await session.execute(select(Ticket.status).order_by(Ticket.id))).scalars())


async def comments(db: Database) -> list[str]:
    async with db.transaction() as session:
        events = (await session.execute(select(TicketEvent).where(TicketEvent.kind == "commented")
                                        .order_by(TicketEvent.id))).scalars()
        return [str(e.payload.get("text")) for e in events]


async def held(db: Database) -> list[HeldMessage]:
    async with db.transaction() as session:
        return list((await session.execute(select(HeldMessage).order_by(HeldMessage.id))).scalars())


def slack_buttons(bot: SlackBot) -> list[dict[str, Any]]:
    """The buttons of the latest question in the requester's DM."""
    questions = [c for c in bot.slack.calls_to("chat.postMessage")
                 if c["channel"] == REQUESTER and "something new" in json.dumps(c)]
    return [e for b in questions[-1]["blocks"] if b["type"] == "actions" for e in b["elements"]]


async def test_slack_a_top_level_dm_answer_joins_the_ticket_waiting_on_the_requester(bot: SlackBot, db: Database
                                                                                  ) -> None:
    await bot.command("VPN drops every hour")
    await bot.settle()
    await bot.click(Action.WAIT, "1", ALICE)
    await bot.settle()
    assert await statuses(db) == ["waiting_on_requester"]
    answer = dm("It drops when I switch to wifi", "1700000600.000100")
    await bot.event(answer, event_id="EvAnswer")
    await bot.event(answer, event_id="EvAnswer", retry_num=1)
    await bot.settle()
    assert await statuses(db) == ["in_progress"]  # one ticket, resumed, not a second one
    assert await comments(db) == ["It drops when I switch to wifi"]
    relayed = [c for c in bot.slack.calls_to("chat.postMessage")
               if c["channel"] == TRIAGE and c.get("thread_ts") and "switch to wifi" in json.dumps(c)]
    assert len(relayed) == 1
    assert any("Added to IT-1" in json.dumps(c) for c in bot.slack.calls_to("chat.postMessage")
               if c["channel"] == REQUESTER)


async def test_slack_with_several_open_tickets_the_bot_asks_and_files_the_answer_exactly_once(
    bot: SlackBot, db: Database
) -> None:
    await bot.command("VPN drops every hour")
    await bot.command("Printer on floor 3 jams")
    await bot.settle()
    await bot.click(Action.WAIT, "1", ALICE)
    await bot.event(dm("Still dropping after the restart", "1700000700.000100"), event_id="EvHeld1")
    await bot.settle()
    assert len(await bot.tickets()) == 2 and await comments(db) == []
    [waiting] = await held(db)
    assert waiting.text == "Still dropping after the restart" and waiting.answered_at is None
    buttons = slack_buttons(bot)
    labels = [b["text"]["text"] for b in buttons]
    assert labels == ["IT-1 (VPN drops every hour)", "IT-2 (Printer on floor 3 jams)", "Something new"]
    join_vpn = buttons[0]
    for _ in range(2):  # a double click
        await bot.click(Action(join_vpn["action_id"]), join_vpn["value"], REQUESTER, channel_id=f"D{REQUESTER}")
    await bot.click(Action(buttons[2]["action_id"]), buttons[2]["value"], REQUESTER, channel_id=f"D{REQUESTER}")
    await bot.settle()
    assert await comments(db) == ["Still dropping after the restart"] and len(await bot.tickets()) == 2
    [answered] = await held(db)
    assert answered.ticket_id == 1 and answered.text == "" and await statuses(db) == ["in_progress", "new"]

    await bot.click(Action.WAIT, "2", ALICE)
    await bot.event(dm("The toner light is on too", "1700000800.000100"), event_id="EvHeld2")
    await bot.settle()
    new = slack_buttons(bot)[-1]
    await bot.click(Action(new["action_id"]), new["value"], MALLORY, channel_id=f"D{MALLORY}")
    assert len(await bot.tickets()) == 2  # someone else's click files nothing
    for _ in range(2):
        await bot.click(Action(new["action_id"]), new["value"], REQUESTER, channel_id=f"D{REQUESTER}")
    tickets = await bot.tickets()
    assert len(tickets) == 3 and tickets[-1].summary == "The toner light is on too"


def teams_question(fake: FakeBotConnector) -> tuple[str, list[dict[str, Any]]]:
    """The latest question card in the personal chat: its activity id and its buttons."""
    calls = [c for c in fake.activities if posted_to(PERSONAL)(c) and "something new" in json.dumps(c.body)]
    call = calls[-1]
    assert isinstance(call.response, dict) and call.body is not None
    card = call.body["attachments"][0]["content"]
    return str(call.response["id"]), [a for a in card["actions"] if a["type"] == "Action.Submit"]


async def ticket_count(db: Database) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(Ticket)) or 0)


async def test_teams_a_plain_message_in_the_personal_chat_answers_the_ticket_waiting_on_the_requester(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    card_id = await open_from_personal_chat(server, fake, "VPN drops every hour")
    await send(server, card_action(fake, Action.WAIT, card_id, **AGENT))
    await settle(server)
    assert await statuses(db) == ["waiting_on_requester"]
    answer = ta.message("It drops when I switch to wifi", service_url=fake.service_url)
    for _ in range(2):  # the connector delivers it twice
        status, _ = await send(server, answer)
        assert status == 201
    thread = f"{e2e.TRIAGE};messageid={card_id}"
    (relayed,) = await fake.wait_for(lambda c: posted_to(thread)(c) and "switch to wifi" in e2e.text_of(c))
    assert "Alex Requester replied:" in e2e.text_of(relayed)
    await settle(server)
    assert await statuses(db) == ["in_progress"] and await comments(db) == ["It drops when I switch to wifi"]


async def test_teams_with_several_open_tickets_the_bot_asks_and_files_the_answer_exactly_once(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    card_id = await open_from_personal_chat(server, fake, "VPN drops every hour")
    await send(server, ta.message("Printer on floor 3 jams", service_url=fake.service_url))
    await settle(server)
    await send(server, card_action(fake, Action.WAIT, card_id, **AGENT))
    await send(server, ta.message("Still dropping after the restart", service_url=fake.service_url))
    await settle(server)
    assert await ticket_count(db) == 2 and len(await held(db)) == 1
    question_id, buttons = teams_question(fake)
    assert [b["title"] for b in buttons] == ["IT-1 (VPN drops every hour)", "IT-2 (Printer on floor 3 jams)",
                                             "Something new"]
    for button in (buttons[0], buttons[0], buttons[2]):  # a double click, then second thoughts
        await send(server, ta.message(None, service_url=fake.service_url, reply_to_id=question_id,
                                      value=button["data"]))
    await settle(server)
    assert await comments(db) == ["Still dropping after the restart"] and await ticket_count(db) == 2
    (relayed,) = await fake.wait_for(lambda c: "Still dropping after the restart" in e2e.text_of(c)
                                     and posted_to(f"{e2e.TRIAGE};messageid={card_id}")(c))
    assert "Alex Requester replied:" in e2e.text_of(relayed)


async def test_slack_a_held_message_is_exported_and_erased_with_its_author(bot: SlackBot, db: Database,
                                                                         clock: Any) -> None:
    await bot.command("VPN drops every hour")
    await bot.command("Printer on floor 3 jams")
    await bot.click(Action.WAIT, "1", ALICE)
    await bot.event(dm("My home address is 1 Main St", "1700000900.000100"), event_id="EvHeld3")
    assert len(await held(db)) == 1
    out = io.StringIO()
    await export_person(db, clock, f"slack:{REQUESTER}", out, by="test")
    assert "My home address is 1 Main St" in json.loads(out.getvalue())["held_messages"][0]["text"]
    await erase_person(db, clock, f"slack:{REQUESTER}", by="test", force=True)
    assert await held(db) == []


async def test_slack_the_question_quotes_the_held_message_escaped_once_and_pinging_nobody(
    bot: SlackBot, db: Database
) -> None:
    await bot.command("VPN drops every hour")
    await bot.command("Printer on floor 3 jams")
    await bot.click(Action.WAIT, "1", ALICE)
    await bot.event(dm("<!channel> still &lt;broken&gt; &amp; slow", "1700001300.000100"), event_id="EvHeld4")
    await bot.settle()
    [question] = [c for c in bot.slack.calls_to("chat.postMessage")
                  if c["channel"] == REQUESTER and "something new" in json.dumps(c)]
    quoted = json.dumps(question["blocks"])
    assert "<!channel>" not in quoted and "@channel" in quoted
    assert "&lt;broken&gt; &amp; slow" in quoted and "&amp;amp;" not in quoted and "&amp;lt;" not in quoted


async def test_slack_answers_clicked_at_once_file_the_held_message_exactly_once(bot: SlackBot, db: Database) -> None:
    await bot.command("VPN drops every hour")
    await bot.command("Printer on floor 3 jams")
    await bot.click(Action.WAIT, "1", ALICE)
    await bot.event(dm("Still dropping", "1700001500.000100"), event_id="EvHeld5")
    await bot.settle()
    join, _, new = slack_buttons(bot)
    await asyncio.gather(*(bot.click(Action(b["action_id"]), b["value"], REQUESTER, channel_id=f"D{REQUESTER}")
                           for b in (join, new, join, new)))
    await bot.settle()
    filed = len(await bot.tickets()) - 2 + len(await comments(db))
    assert filed == 1  # a comment on IT-1 or a new ticket, never both, never twice
    [answered] = await held(db)
    assert answered.answered_at is not None and answered.ticket_id is not None
