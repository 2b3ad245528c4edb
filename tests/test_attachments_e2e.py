"""Screenshots and files reach the other side and are listed on the ticket, on Slack and Teams (issue #18)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from bot.routing import Action
from bot.server import Server
from bot.simulators import teams_activities as ta
from bot.simulators.bot_connector import FakeBotConnector
from store.db import Database
from store.models import TicketEvent
from tests import test_teams_e2e as e2e
from tests.slack_harness import ALICE, REQUESTER, TRIAGE, SlackBot
from tests.test_teams_e2e import AGENT, PERSONAL, in_card_thread, open_from_personal_chat, posted_to, send, settle

fake, teams_config, server = e2e.fake, e2e.teams_config, e2e.server  # the Teams e2e fixtures, shared

SLACK_PERMALINK = "https://acme.slack.com/files/UREQ1/F0SHOT/vpn-error.png"
TEAMS_IMAGE = "https://smba.trafficmanager.net/emea/v3/attachments/0-shot/views/original"
TEAMS_FILE = "https://contoso.sharepoint.com/personal/ada/Documents/logs.zip?download=1"


def shot(text: str, ts: str, *, user: str = REQUESTER, channel: str | None = None,
         thread_ts: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "message", "subtype": "file_share", "channel_type": "channel" if channel else "im",
        "channel": channel or f"D{user}", "user": user, "text": text, "ts": ts,
        "files": [{"id": "F0SHOT", "name": "vpn-error.png", "title": "vpn-error.png", "mimetype": "image/png",
                   "permalink": SLACK_PERMALINK}],
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


async def attachments_on_tickets(db: Database) -> list[tuple[int, list[dict[str, str]]]]:
    async with db.transaction() as session:
        events = (await session.execute(select(TicketEvent).where(TicketEvent.kind == "commented")
                                        .order_by(TicketEvent.id))).scalars()
        return [(e.ticket_id, e.payload["attachments"]) for e in events if e.payload.get("attachments")]


async def test_slack_a_screenshot_at_intake_is_linked_in_the_triage_thread_and_listed_on_the_ticket(
    bot: SlackBot, db: Database
) -> None:
    await bot.event(shot("VPN shows this error on connect", "1700001000.000100"), event_id="EvShot1")
    await bot.settle()
    [ticket] = await bot.tickets()
    assert ticket.summary == "VPN shows this error on connect"
    assert await attachments_on_tickets(db) == [(ticket.id, [{"name": "vpn-error.png", "url": SLACK_PERMALINK}])]
    linked = [c for c in bot.slack.calls_to("chat.postMessage")
              if c["channel"] == TRIAGE and c.get("thread_ts") and SLACK_PERMALINK in json.dumps(c)]
    assert len(linked) == 1 and "vpn-error.png" in json.dumps(linked[0])


async def test_slack_a_screenshot_alone_asks_whats_the_problem_and_joins_the_next_ticket(
    bot: SlackBot, db: Database
) -> None:
    await bot.event(shot("", "1700001100.000100"), event_id="EvShot2")
    await bot.event(shot("", "1700001100.000100"), event_id="EvShot2", retry_num=1)
    await bot.settle()
    assert await bot.tickets() == []
    asked = [c for c in bot.slack.calls_to("chat.postMessage")
             if c["channel"] == REQUESTER and "What's the problem?" in json.dumps(c)]
    assert len(asked) == 1
    await bot.event({"type": "message", "channel_type": "im", "channel": f"D{REQUESTER}", "user": REQUESTER,
                     "text": "VPN refuses my password", "ts": "1700001101.000100"}, event_id="EvShot3")
    await bot.settle()
    [ticket] = await bot.tickets()
    assert ticket.summary == "VPN refuses my password"
    assert await attachments_on_tickets(db) == [(ticket.id, [{"name": "vpn-error.png", "url": SLACK_PERMALINK}])]
    assert any(SLACK_PERMALINK in json.dumps(c) for c in bot.slack.calls_to("chat.postMessage")
               if c["channel"] == TRIAGE and c.get("thread_ts"))


async def test_slack_an_agents_screenshot_in_the_triage_thread_reaches_the_requester(bot: SlackBot,
                                                                                   db: Database) -> None:
    await bot.command("Which VPN profile do I pick?")
    await bot.settle()
    card_ts = bot.slack.messages[TRIAGE][0]["ts"]
    await bot.event(shot("Pick this one", "1700001200.000100", user=ALICE, channel=TRIAGE, thread_ts=card_ts))
    await bot.settle()
    to_requester = [c for c in bot.slack.calls_to("chat.postMessage")
                    if c["channel"] == f"D{REQUESTER}" and SLACK_PERMALINK in json.dumps(c)]
    assert len(to_requester) == 1 and "Pick this one" in json.dumps(to_requester[0])
    assert len(await attachments_on_tickets(db)) == 1


def with_image(activity: dict[str, Any]) -> dict[str, Any]:
    activity["attachments"] = [
        {"contentType": "image/png", "contentUrl": TEAMS_IMAGE, "name": "screenshot.png"},
        {"contentType": "text/html", "content": '<div><img src="x"></div>'},  # Teams' HTML copy: not a file
    ]
    return activity


async def test_teams_an_inline_screenshot_at_intake_is_linked_in_the_triage_thread_and_listed(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    await send(server, with_image(ta.message("Camera shows this", service_url=fake.service_url)))
    (card,) = await fake.wait_for(posted_to(e2e.TRIAGE))
    await settle(server)
    assert isinstance(card.response, dict)
    thread = f"{e2e.TRIAGE};messageid={card.response['id']}"
    await fake.wait_for(lambda c: posted_to(thread)(c) and TEAMS_IMAGE in e2e.text_of(c))
    assert await attachments_on_tickets(db) == [(1, [{"name": "screenshot.png", "url": TEAMS_IMAGE}])]


async def test_teams_a_screenshot_alone_asks_whats_the_problem_and_joins_the_next_ticket(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    await send(server, with_image(ta.message(None, service_url=fake.service_url)))
    await settle(server)
    assert await e2e.ticket_count(db) == 0
    assert any("What's the problem?" in json.dumps(a) for a in fake.sent_to(PERSONAL))
    assert not any("form.new_ticket" in json.dumps(a) for a in fake.sent_to(PERSONAL))  # not the empty-text form
    await open_from_personal_chat(server, fake, "Camera is black in every meeting")
    assert await attachments_on_tickets(db) == [(1, [{"name": "screenshot.png", "url": TEAMS_IMAGE}])]


async def test_teams_an_agents_file_in_the_triage_thread_reaches_the_requester(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    card_id = await open_from_personal_chat(server, fake, "Need the VPN logs tool")
    reply = ta.message("Here is the tool", mention_bot=True, service_url=fake.service_url,
                       **in_card_thread(card_id, AGENT))
    reply["attachments"] = [{"contentType": "application/vnd.microsoft.teams.file.download.info", "name": "logs.zip",
                             "content": {"downloadUrl": TEAMS_FILE, "uniqueId": "u1", "fileType": "zip"}}]
    await send(server, reply)
    (relayed,) = await fake.wait_for(lambda c: posted_to(PERSONAL)(c) and "Here is the tool" in e2e.text_of(c))
    assert "logs.zip" in e2e.text_of(relayed) and TEAMS_FILE.split("?")[0] in e2e.text_of(relayed)
    assert await attachments_on_tickets(db) == [(1, [{"name": "logs.zip", "url": TEAMS_FILE}])]


async def test_slack_a_screenshot_held_while_the_bot_asks_which_ticket_goes_with_the_answer(
    bot: SlackBot, db: Database
) -> None:
    await bot.command("VPN drops every hour")
    await bot.command("Printer on floor 3 jams")
    await bot.click(Action.WAIT, "1", ALICE)
    await bot.event(shot("This is what I see", "1700001400.000100"), event_id="EvShot4")
    await bot.settle()
    assert await attachments_on_tickets(db) == []
    [question] = [c for c in bot.slack.calls_to("chat.postMessage")
                  if c["channel"] == REQUESTER and "something new" in json.dumps(c)]
    join_vpn = next(e for b in question["blocks"] if b["type"] == "actions" for e in b["elements"])
    await bot.click(Action(join_vpn["action_id"]), join_vpn["value"], REQUESTER, channel_id=f"D{REQUESTER}")
    await bot.settle()
    assert await attachments_on_tickets(db) == [(1, [{"name": "vpn-error.png", "url": SLACK_PERMALINK}])]
    assert any(SLACK_PERMALINK in json.dumps(c) and "This is what I see" in json.dumps(c)
               for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == TRIAGE and c.get("thread_ts"))
