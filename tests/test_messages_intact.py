"""Every message reaches its person intact (issue #15): what people type survives the trip once-escaped, links
stay links, mentions become names, nobody is pinged, names and times read right, and what the bot owes in a
Teams turn is not lost when Teams refuses it.

Both platforms at once over real HTTP: signed Slack requests into ``/slack/events`` against a fake Slack Web API,
Bot Framework activities into ``/api/messages`` against a fake connector.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.config import AppConfig, TeamsConfig
from bot.routing import Action
from bot.server import Server
from bot.simulators import slack_requests as rq
from bot.simulators import teams_activities as ta
from bot.simulators.bot_connector import ConnectorCall, FakeBotConnector
from bot.simulators.http import post
from bot.simulators.slack_api import FakeSlackApi
from store.db import Database
from store.models import Person, Ticket
from tests.harness import running_server
from tests.slack_harness import ALICE, BOB, REQUESTER, SECRET, TRIAGE, assert_valid_block_kit

TEAMS_TRIAGE = "19:triage@thread.tacv2"
PERSONAL = "a:1personal-chat"
TEAMS_REQUESTER = "6f1c2d3e-0000-4000-8000-00000000a1a1"
SLACK_DATE = re.compile(r"<!date\^(\d+)\^[^|>]*\|([^>]*)>")


@dataclass
class BothPlatforms:
    server: Server
    slack: FakeSlackApi
    teams: FakeBotConnector

    async def command(self, text: str, user: str = REQUESTER) -> Any:
        status, body = await post(f"{self.server.url}/slack/events", *_request(rq.slash_command(text, user, SECRET)))
        assert status == 200
        return body

    async def slack_event(self, event: dict[str, Any]) -> None:
        status, _ = await post(f"{self.server.url}/slack/events", *_request(rq.event_callback(event, SECRET)))
        assert status == 200

    async def click(self, action: Action, value: str, user: str) -> None:
        request = rq.block_action(action.value, value, user, SECRET, channel_id=TRIAGE, message_ts="1.0")
        status, _ = await post(f"{self.server.url}/slack/events", *_request(request))
        assert status == 200

    async def teams_message(self, activity: dict[str, Any]) -> int:
        status, _ = await post(f"{self.server.url}/api/messages", json.dumps(activity).encode(),
                               {"Content-Type": "application/json"})
        return status

    async def settle(self) -> None:
        assert self.server.engine is not None
        await self.server.engine.tick()

    async def tickets(self) -> list[Ticket]:
        assert self.server.desk is not None
        async with self.server.desk.db.reading() as session:
            return list((await session.execute(select(Ticket).order_by(Ticket.id))).scalars())

    def triage_card(self) -> dict[str, Any]:
        """The latest version of the first Slack triage card."""
        return self.slack.messages[TRIAGE][0]

    def slack_thread(self, channel: str) -> list[dict[str, Any]]:
        """Replies the bot posted in threads of ``channel``, oldest first."""
        return [m for m in self.slack.messages.get(channel, []) if m.get("thread_ts") not in (None, m["ts"])]


def _request(request: rq.SignedRequest) -> tuple[bytes, dict[str, str]]:
    return request.body, request.headers


def posted_to(conversation: str) -> Callable[[ConnectorCall], bool]:
    return lambda c: c.ok and c.method == "POST" and c.conversation_id == conversation


def teams_text(call: ConnectorCall) -> str:
    return json.dumps(call.body, ensure_ascii=False)


@pytest.fixture
async def both(db: Database, clock: ManualClock, make_config: Callable[..., AppConfig]) -> AsyncIterator[BothPlatforms]:
    async with FakeSlackApi() as slack, FakeBotConnector() as teams:
        for user, name, tz in ((REQUESTER, "Rita Requester", "Asia/Kolkata"), (ALICE, "Alice", "Europe/London"),
                               (BOB, "Bob", "Europe/London")):
            slack.add_user(user, name=name.split()[0].lower(), real_name=name, tz=tz)
        config = make_config()
        config = config.model_copy(update={
            "slack": config.slack.model_copy(update={"api_url": slack.url}),
            "teams": TeamsConfig(enabled=True, triage_conversation=TEAMS_TRIAGE, service_url=teams.service_url),
        })
        async with running_server(config, db, clock) as server:
            yield BothPlatforms(server, slack, teams)
        assert_valid_block_kit(slack)


def everything_slack_saw(both: BothPlatforms) -> str:
    return json.dumps([call.args for call in both.slack.calls if call.method != "users.info"], ensure_ascii=False)


def everything_teams_saw(both: BothPlatforms) -> str:
    return json.dumps([call.body for call in both.teams.activities], ensure_ascii=False)


async def test_slack_entities_are_decoded_once_so_every_surface_shows_what_the_requester_typed(
        both: BothPlatforms) -> None:
    # Slack sends what Rita typed, "VPN <-> office & home", entity-encoded.
    await both.command("VPN &lt;-&gt; office &amp; home")
    await both.settle()
    [ticket] = await both.tickets()
    assert ticket.summary == "VPN <-> office & home"  # stored as typed

    head = both.triage_card()["blocks"][0]["text"]["text"]
    assert "VPN &lt;-&gt; office &amp; home" in head and "&amp;lt;" not in head  # escaped once for mrkdwn
    (teams_card,) = await both.teams.wait_for(posted_to(TEAMS_TRIAGE))
    assert "VPN <-\\\\> office & home" in teams_text(teams_card)  # markdown-escaped once, no entities
    assert "&lt;" not in everything_teams_saw(both) and "&amp;" not in everything_teams_saw(both)
    assert both.server.adapters["slack"] is not None
    await both.server.adapters["slack"].publish_home(REQUESTER)
    home = json.dumps(both.slack.home_views[REQUESTER]["blocks"], ensure_ascii=False)
    assert "VPN &lt;-&gt; office &amp; home" in home and "&amp;lt;" not in home


async def test_an_agents_link_and_mention_reach_a_slack_requester_as_a_link_and_a_name(both: BothPlatforms) -> None:
    await both.command("Printer jams on every page")
    await both.settle()
    card_ts = both.triage_card()["ts"]
    await both.slack_event({
        "type": "message", "channel": TRIAGE, "channel_type": "channel", "user": ALICE, "ts": "1700000300.000100",
        "thread_ts": card_ts,
        "text": "Try <https://kb.example.com/printers|the printer guide>; <@UAGENT2> can help. <!channel> <!here>"})
    await both.settle()

    [relayed] = both.slack_thread(f"D{REQUESTER}")
    blocks = json.dumps(relayed["blocks"], ensure_ascii=False)
    assert "<https://kb.example.com/printers|the printer guide>" in blocks  # a link, not literal markup
    assert "@Bob can help" in blocks  # the mention became the person's name
    # What a phone's notification shows carries the reply itself, escaped like the blocks.
    assert "Alice replied: Try <https://kb.example.com/printers|the printer guide>; @Bob can help." in relayed["text"]
    for seen in (everything_slack_saw(both), relayed["text"]):
        assert "<!channel>" not in seen and "<!here>" not in seen and "<!subteam" not in seen


async def test_a_slack_agents_link_and_mention_reach_a_teams_requester_as_markdown_and_a_display_name(
        both: BothPlatforms) -> None:
    assert await both.teams_message(ta.message("Laptop won't charge", service_url=both.teams.service_url)) == 201
    await both.teams.wait_for(posted_to(PERSONAL), count=2)
    await both.settle()
    card_ts = both.triage_card()["ts"]
    await both.slack_event({
        "type": "message", "channel": TRIAGE, "channel_type": "channel", "user": ALICE, "ts": "1700000310.000100",
        "thread_ts": card_ts, "text": "See <https://kb.example.com/power|the power guide> or ask <@UAGENT2> "
                                      "<!subteam^S0IT|@it-team> <!channel>"})
    await both.settle()

    (relayed,) = await both.teams.wait_for(lambda c: posted_to(PERSONAL)(c) and "power guide" in teams_text(c))
    said = teams_text(relayed)
    assert "[the power guide](https://kb.example.com/power)" in said
    assert "@Bob" in said and "UAGENT2" not in said
    assert "<!subteam" not in said and "<!channel>" not in said
    assert "Alice replied: See the power guide (https://kb.example.com/power) or ask @Bob" in relayed.body["summary"]
    # Teams pings people only through mention entities: the bot never sends one.
    assert all(not call.body.get("entities") for call in both.teams.activities if call.body)


async def test_a_click_names_the_agent_and_keeps_the_requester_by_their_directory_names(both: BothPlatforms) -> None:
    await both.command("Monitor flickers")
    await both.settle()
    [ticket] = await both.tickets()
    # Slack's click payloads carry handles ("uagent1", "ureq1"), not display names.
    await both.click(Action.START, str(ticket.id), ALICE)
    await both.settle()
    await both.click(Action.MUTE, str(ticket.id), REQUESTER)
    await both.settle()

    card = json.dumps(both.triage_card()["blocks"], ensure_ascii=False)
    assert "*Assignee*\\nAlice" in card and "uagent1" not in card
    assert "*Requester*\\nRita Requester" in card and "ureq1" not in card
    assert both.server.desk is not None
    async with both.server.desk.db.reading() as session:
        names = dict((await session.execute(select(Person.platform_user_id, Person.display_name))).tuples().all())
    assert (names[ALICE], names[REQUESTER]) == ("Alice", "Rita Requester")
    status_notice = [m for m in both.slack_thread(f"D{REQUESTER}") if "in progress" in m["text"]]
    assert status_notice and "Alice changed the status" in status_notice[0]["text"]


async def test_times_on_cards_and_surveys_are_shown_on_each_readers_clock_and_never_go_stale(
        both: BothPlatforms, clock: ManualClock) -> None:
    await both.command("Keyboard missing keys")
    await both.settle()
    [ticket] = await both.tickets()
    card = json.dumps(both.triage_card()["blocks"], ensure_ascii=False)
    assert "Age" not in card  # a frozen "Age: 0s" is gone; "Opened <date>" renders live on each client
    stamps = {int(stamp) for stamp, _ in SLACK_DATE.findall(card)}
    assert int(ticket.created_at.timestamp()) in stamps
    assert ticket.first_response_due is not None and int(ticket.first_response_due.timestamp()) in stamps
    assert " left" not in card  # no countdown that is wrong a minute later
    (teams_card,) = await both.teams.wait_for(posted_to(TEAMS_TRIAGE))
    due = ticket.first_response_due.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert f"{{{{DATE({due}, SHORT)}}}} {{{{TIME({due})}}}}" in teams_text(teams_card)

    await both.click(Action.CLAIM, str(ticket.id), ALICE)
    await both.server.desk.tickets.resolve(ticket.id, await both.server.adapters["slack"].person(ALICE),  # type: ignore[union-attr]
                                           "Replaced the keyboard")
    await both.settle()
    [survey] = [m for m in both.slack.messages[f"D{REQUESTER}"] if "How did we do" in m["text"]]
    expiry = next(b for b in survey["blocks"] if b["block_id"].endswith("survey:expiry"))["elements"][0]["text"]
    # Rita is in Kolkata: the fallback says her clock, the token shows everyone theirs.
    assert SLACK_DATE.search(expiry) and "(Kolkata time)" in expiry and "UTC" not in expiry


async def test_a_teams_client_info_time_zone_is_the_requesters_zone(both: BothPlatforms) -> None:
    activity = ta.message("Teams keeps crashing", service_url=both.teams.service_url)
    del activity["localTimezone"]  # many clients send their zone only in the clientInfo entity
    activity["entities"] = [{"type": "clientInfo", "locale": "en-IN", "timezone": "Asia/Kolkata"}]
    assert await both.teams_message(activity) == 201
    await both.teams.wait_for(posted_to(PERSONAL))
    assert both.server.desk is not None
    async with both.server.desk.db.reading() as session:
        zone = await session.scalar(select(Person.timezone).where(Person.platform_user_id == TEAMS_REQUESTER))
    assert zone == "Asia/Kolkata"


async def test_the_teams_acknowledgement_names_the_ticket_once(both: BothPlatforms) -> None:
    await both.teams_message(ta.message("Outlook won't open", service_url=both.teams.service_url))
    (ack,) = await both.teams.wait_for(posted_to(PERSONAL))
    said = teams_text(ack)
    assert "IT-1 opened — first response by" in said and said.count("IT-1") == 1


async def test_a_teams_acknowledgement_refused_with_429_still_reaches_the_requester(both: BothPlatforms) -> None:
    # The in-turn reply is refused; the ticket exists, so the requester is owed its number.
    both.teams.fail_next(status=429, times=1, retry_after=1)
    assert await both.teams_message(ta.message("VPN refuses my password", service_url=both.teams.service_url)) == 201
    [ticket] = await both.tickets()
    acks = await both.teams.wait_for(
        lambda c: posted_to(PERSONAL)(c) and f"{ticket.number} opened" in teams_text(c), timeout=10)
    assert len(acks) == 1


async def test_a_teams_acknowledgement_refused_with_503_still_reaches_the_requester(both: BothPlatforms) -> None:
    both.teams.fail_next(status=503, times=1)
    await both.teams_message(ta.message("Printer offline", service_url=both.teams.service_url))
    acks = await both.teams.wait_for(lambda c: posted_to(PERSONAL)(c) and "IT-1 opened" in teams_text(c), timeout=10)
    assert len(acks) == 1


async def test_a_page_says_when_the_target_passed_and_names_its_ticket_once(
        make_config: Callable[..., AppConfig], db: Database, clock: ManualClock) -> None:
    from datetime import timedelta

    async with FakeSlackApi() as slack:
        slack.add_user(REQUESTER, name="rita", real_name="Rita Requester", tz="Asia/Kolkata")
        slack.add_user("UONCALL", name="olly", real_name="Olly Oncall")
        slack.add_user("UAGENT1", name="alice", real_name="Alice")
        config = make_config("""
escalation:
  chains:
    urgent: {levels: [{notify: ["slack:user:UONCALL"], wait: 10m}]}
  policies:
    P1: {breach: urgent}
""")
        config = config.model_copy(update={"slack": config.slack.model_copy(update={"api_url": slack.url})})
        async with running_server(config, db, clock) as server:
            assert server.desk is not None and server.engine is not None
            await post(f"{server.url}/slack/events", *_request(rq.slash_command("Email down", REQUESTER, SECRET)))
            [ticket] = await _tickets(server)
            await server.desk.tickets.set_priority(ticket.id, await server.adapters["slack"].person("UAGENT1"), "P1")
            await server.engine.tick()
            clock.advance(timedelta(minutes=15, seconds=0.3))  # the breach timer runs a moment after its due time
            await server.engine.tick()
            [page] = [m for m in slack.messages.get("DUONCALL", []) if "level 1 of 1" in m["text"]]
            assert page["text"].startswith(f"🚨 {ticket.number} breached its first response target")
            assert page["text"].count(ticket.number) == 1
            assert "0s ago" not in page["text"] and " ago" not in json.dumps(page["blocks"])
            assert SLACK_DATE.search(json.dumps(page["blocks"]))  # "Target passed <date>"


async def _tickets(server: Server) -> list[Ticket]:
    assert server.desk is not None
    async with server.desk.db.reading() as session:
        return list((await session.execute(select(Ticket).order_by(Ticket.id))).scalars())
