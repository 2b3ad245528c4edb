"""A welcome, once per person: installing the Teams app, or first opening the Slack App Home (issue #18)."""

from __future__ import annotations

import json

from bot.routing import Action, Form
from bot.server import Server
from bot.simulators import teams_activities as ta
from bot.simulators.bot_connector import FakeBotConnector
from tests import test_teams_e2e as e2e
from tests.slack_harness import ALICE, REQUESTER, SlackBot
from tests.test_teams_e2e import PERSONAL, send, settle

fake, teams_config, server = e2e.fake, e2e.teams_config, e2e.server  # the Teams e2e fixtures, shared


def welcomes_to(bot: SlackBot, user: str) -> list[str]:
    return [json.dumps(c) for c in bot.slack.calls_to("chat.postMessage")
            if c["channel"] == user and "Welcome to ITHelp" in json.dumps(c)]


async def test_slack_the_first_app_home_open_welcomes_the_person_once_with_a_new_ticket_button(bot: SlackBot) -> None:
    opened = {"type": "app_home_opened", "user": REQUESTER, "channel": f"D{REQUESTER}", "tab": "home"}
    await bot.event(opened, event_id="EvHome1")
    await bot.event(opened, event_id="EvHome1", retry_num=1)  # Slack's retry
    await bot.event(opened, event_id="EvHome2")  # opened again the next day
    [welcome] = welcomes_to(bot, REQUESTER)
    assert "/ithelp" in welcome and "help desk" in welcome and Action.NEW_TICKET.value in welcome
    assert bot.slack.home_views[REQUESTER]["type"] == "home"  # the home tab itself still shows
    status, _ = await bot.click(Action.NEW_TICKET, "new", REQUESTER, channel_id=f"D{REQUESTER}")
    assert status == 200
    [form] = await bot.slack.wait_for_calls("views.open", 1)
    assert form["view"]["callback_id"] == Form.NEW_TICKET.value
    assert await bot.tickets() == []


async def test_teams_installing_the_app_in_personal_scope_welcomes_the_person_once(
    server: Server, fake: FakeBotConnector
) -> None:
    install = ta.conversation_update_installed(service_url=fake.service_url)
    for _ in range(2):  # Teams may send the update again
        status, _ = await send(server, install)
        assert status == 201
    [welcome] = [a for a in fake.sent_to(PERSONAL) if "Welcome to ITHelp" in json.dumps(a)]
    card = welcome["attachments"][0]["content"]
    [button] = [a for a in card["actions"] if a["type"] == "Action.Submit"]
    assert button["title"] == "New ticket" and "tell me what's wrong" in json.dumps(card)
    await send(server, ta.message(None, service_url=fake.service_url, value=button["data"], reply_to_id="1"))
    form = fake.sent_to(PERSONAL)[-1]
    assert Form.NEW_TICKET.value in json.dumps(form)


async def test_teams_a_team_install_is_not_a_personal_welcome(server: Server, fake: FakeBotConnector) -> None:
    await send(server, ta.conversation_update_installed(service_url=fake.service_url, conversation_type="channel"))
    assert not [a for a in fake.activities if "Welcome to ITHelp" in json.dumps(a.body)]


# -- Known issues (issue #20): open incidents in the welcome, as ``list`` shows them ------------------------------
AGENT_CHAT: ta.Where = {**e2e.AGENT, "conversation_id": "a:1agent-chat"}


async def teams_welcome_card(server: Server, fake: FakeBotConnector) -> str:
    status, _ = await send(server, ta.conversation_update_installed(service_url=fake.service_url))
    assert status == 201
    [welcome] = [a for a in fake.sent_to(PERSONAL) if "Welcome to ITHelp" in json.dumps(a)]
    return json.dumps(welcome["attachments"][0]["content"], ensure_ascii=False)


async def declare_in_teams(server: Server, fake: FakeBotConnector, title: str) -> None:
    status, _ = await send(server, ta.message(f"incident {title}", service_url=fake.service_url, **AGENT_CHAT))
    assert status == 201
    await settle(server)


async def test_teams_the_welcome_lists_open_incidents_as_known_issues_escaped_once(
    server: Server, fake: FakeBotConnector
) -> None:
    await declare_in_teams(server, fake, "Printers & VPN <!channel> down")
    card = await teams_welcome_card(server, fake)
    assert "Known issue INC-1: Printers & VPN <!channel\\\\> down" in card  # markdown-escaped once
    assert "&amp;" not in card and "&lt;" not in card and "\\\\\\\\" not in card
    assert card.index("help desk") < card.index("Known issue INC-1")  # the greeting first, then what is broken


async def test_teams_the_welcome_shows_every_known_issue_the_list_shows_after_the_greeting(
    server: Server, fake: FakeBotConnector
) -> None:
    titles = ["Email bounces", "VPN drops hourly", "Printer jams", "Wifi is slow", "Payroll login fails",
              "Badge readers offline"]
    for title in titles:
        await declare_in_teams(server, fake, title)
    card = await teams_welcome_card(server, fake)
    assert sum(title in card for title in titles) == 5  # as many as ``list`` shows
    assert "tell me what's wrong" in card and "press New ticket" in card


async def test_teams_with_no_open_incident_the_welcome_has_no_known_issues(
    server: Server, fake: FakeBotConnector
) -> None:
    card = await teams_welcome_card(server, fake)
    assert "Known issue" not in card and "help desk" in card


async def test_slack_the_welcome_lists_open_incidents_as_known_issues_escaped_once(bot: SlackBot) -> None:
    status, _ = await bot.command("incident Printers &amp; VPN <!channel> down", user=ALICE)
    assert status == 200
    await bot.settle()
    await bot.event({"type": "app_home_opened", "user": REQUESTER, "channel": f"D{REQUESTER}", "tab": "home"})
    [welcome] = welcomes_to(bot, REQUESTER)
    assert "Known issue INC-1: Printers &amp; VPN" in welcome
    assert "<!channel>" not in welcome and "&amp;amp;" not in welcome and "&amp;lt;" not in welcome
