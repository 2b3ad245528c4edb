"""Outages in Teams, over real HTTP into ``ithelp serve`` and real botbuilder out to a fake Bot Connector:
declaring, linking, the suggestion card, and new reports linked at intake (issue #20)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.config import AppConfig, SlackConfig, TeamsConfig
from bot.incidents.report import incident_figures
from bot.routing import Action
from bot.server import Server
from bot.simulators import teams_activities as ta
from bot.simulators.bot_connector import ConnectorCall, FakeBotConnector
from bot.simulators.pagers import FakePagerDuty
from store.db import Database
from store.models import TicketEvent, Timer
from tests import test_teams_e2e as e2e
from tests.harness import running_server
from tests.incident_helpers import INCIDENTS, incidents, links, suggestions
from tests.test_teams_e2e import TRIAGE, cards_in, posted_to, send, settle, text_of

fake = e2e.fake  # a fake Bot Connector; every card it receives is checked against the Adaptive Card schema

AGENT: ta.Where = {"aad_object_id": "aad-agent-1", "user_id": "29:agent", "user_name": "Ada Agent",
                   "conversation_id": "a:1agent-chat"}


def person(n: int) -> ta.Where:
    return {"aad_object_id": f"aad-person-{n}", "user_id": f"29:p{n}", "user_name": f"Person {n}",
            "conversation_id": f"a:1chat-{n}", "local_timezone": "Asia/Kolkata"}


@pytest.fixture
def teams_config(make_config: Callable[..., AppConfig], fake: FakeBotConnector) -> AppConfig:
    return make_config(INCIDENTS).model_copy(update={
        "slack": SlackConfig(),
        "teams": TeamsConfig(enabled=True, triage_conversation=TRIAGE, service_url=fake.service_url),
    })


@pytest.fixture
async def server(teams_config: AppConfig, db: Database, clock: ManualClock) -> AsyncIterator[Server]:
    async with running_server(teams_config, db, clock) as running:
        yield running


async def say(server: Server, fake: FakeBotConnector, text: str, who: ta.Where) -> None:
    status, _ = await send(server, ta.message(text, service_url=fake.service_url, **who))
    assert status == 201
    await settle(server)


async def click(server: Server, fake: FakeBotConnector, action: Action, value: str, ticket_id: int,
                who: ta.Where, **extra: Any) -> None:
    data = {"action": action.value, "value": value, "ticket_id": ticket_id, **extra}
    status, _ = await send(server, ta.message(None, service_url=fake.service_url, value=data, **who))
    assert status == 201
    await settle(server)


def triage_posts(fake: FakeBotConnector) -> list[ConnectorCall]:
    return [c for c in fake.activities if posted_to(TRIAGE)(c)]


def with_text(calls: list[ConnectorCall], text: str) -> list[ConnectorCall]:
    return [c for c in calls if text in text_of(c)]


def submits(call: ConnectorCall) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Action.Submit":
                found.append(node["data"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(cards_in(call))
    return found


async def test_an_agent_declares_an_incident_from_the_card_and_links_a_ticket_from_its_card(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    await say(server, fake, "Email is down in Pune", person(0))
    await say(server, fake, "Outlook won't connect", person(1))
    first_card = triage_posts(fake)[0]
    assert {"action": Action.INCIDENT_DECLARE.value, "value": "1", "ticket_id": 1} in submits(first_card)

    await click(server, fake, Action.INCIDENT_DECLARE, "1", 1, AGENT)
    [incident] = await incidents(db)
    assert incident.title == "Email is down in Pune"
    [card] = with_text(triage_posts(fake), "Incident:")
    assert "INC-1" in text_of(card) and "1 report" in text_of(card)

    await click(server, fake, Action.INCIDENT_LINK, "", 2, AGENT, priority=f"2:{incident.id}")
    assert await links(db) == {1: incident.id, 2: incident.id}
    assert len(with_text(triage_posts(fake), "Incident:")) == 1
    assert "2 reports" in json.dumps(fake.activity(TRIAGE, str(card.response["id"])))  # type: ignore[index]

    await click(server, fake, Action.INCIDENT_UNLINK, "2", 2, person(5))  # not an agent: refused
    assert await links(db) == {1: incident.id, 2: incident.id}
    await click(server, fake, Action.INCIDENT_UNLINK, "2", 2, AGENT)
    assert await links(db) == {1: incident.id}


async def test_incident_command_declares_for_agents_only(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    await say(server, fake, "incident VPN gateway down", AGENT)
    assert any("INC-1 declared; its card is in the triage channel." in text_of(c)
               for c in fake.activities if posted_to("a:1agent-chat")(c))
    await say(server, fake, "incident VPN gateway down", person(0))
    assert any("Only IT agents can declare incidents." in text_of(c)
               for c in fake.activities if posted_to("a:1chat-0")(c))
    assert [i.title for i in await incidents(db)] == ["VPN gateway down"]
    assert len(with_text(triage_posts(fake), "Incident:")) == 1


async def test_similar_reports_raise_one_suggestion_card_and_create_incident_links_them(
    server: Server, fake: FakeBotConnector, db: Database, clock: ManualClock
) -> None:
    for n, text in enumerate(("email down", "Printer jams", "Email is down", "email down again")):
        await say(server, fake, text, person(n))
        clock.advance(timedelta(minutes=1))
    [card] = with_text(triage_posts(fake), "similar reports")
    assert "3 similar reports: 'email down again'" in text_of(card)
    await say(server, fake, "EMAIL DOWN", person(4))
    assert len(with_text(triage_posts(fake), "similar reports")) == 1
    [suggestion] = await suggestions(db)
    assert suggestion.count == 4
    accept = next(s for s in submits(card) if s["action"] == Action.INCIDENT_ACCEPT.value)

    await click(server, fake, Action.INCIDENT_ACCEPT, accept["value"], accept["ticket_id"], AGENT)
    [incident] = await incidents(db)
    assert sorted(t for t, i in (await links(db)).items() if i == incident.id) == [1, 3, 4, 5]
    [incident_card] = with_text(triage_posts(fake), "Incident:")
    assert "4 reports" in text_of(incident_card)


async def test_a_matching_report_is_linked_at_intake_and_something_else_unlinks_it(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    await say(server, fake, "incident Email down in Pune", AGENT)
    cards_before = len(triage_posts(fake))
    await say(server, fake, "email is down in pune", person(0))
    [incident] = await incidents(db)
    links_now = await links(db)
    [ticket_id] = [t for t, i in links_now.items() if i == incident.id and t != incident.anchor_ticket_id]
    assert len(triage_posts(fake)) == cards_before  # collapsed under the incident card
    [notice] = [c for c in fake.activities if posted_to("a:1chat-0")(c) and "looks like a known issue" in text_of(c)]
    assert "This looks like a known issue: Email down in Pune (since" in text_of(notice)
    assert "We're on it; you'll hear every update." in text_of(notice)
    assert [s["action"] for s in submits(notice)] == [Action.INCIDENT_MINE.value, Action.INCIDENT_NOT_MINE.value]

    await click(server, fake, Action.INCIDENT_NOT_MINE, str(ticket_id), ticket_id, person(0))
    assert ticket_id not in await links(db)
    assert len(triage_posts(fake)) == cards_before + 1  # a normal ticket now, with its own card


async def teams_outage(server: Server, fake: FakeBotConnector) -> dict[str, Any]:
    """INC-1 declared by the agent and three people reporting it; the incident card's "Post update" data."""
    await say(server, fake, "incident Email down in Pune", AGENT)
    for n in range(3):
        await say(server, fake, "email is down in Pune", person(n))
    [card] = with_text(triage_posts(fake), "Incident:")
    return next(s for s in submits(card) if s["action"] == Action.INCIDENT_POST_UPDATE.value)


async def submit_form(server: Server, fake: FakeBotConnector, data: dict[str, Any], text: str, who: ta.Where) -> None:
    status, _ = await send(server, ta.message(None, service_url=fake.service_url,
                                              value={**data, "incident_note": text}, **who))
    assert status == 201
    await settle(server)


def form_in(fake: FakeBotConnector, conversation: str) -> dict[str, Any]:
    """The data of the last form's submit button sent to ``conversation``."""
    calls = [c for c in fake.activities if posted_to(conversation)(c) and "incident_note" in text_of(c)]
    return submits(calls[-1])[-1]


async def test_post_update_reaches_every_affected_requester_once(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    button = await teams_outage(server, fake)
    await click(server, fake, Action.INCIDENT_POST_UPDATE, button["value"], button["ticket_id"], AGENT)
    form = form_in(fake, "a:1agent-chat")
    assert form["form"] == "form.incident_update"
    await submit_form(server, fake, form, "Mail server restarting; ETA 10:30", AGENT)
    await submit_form(server, fake, form, "Mail is back", AGENT)
    for n in range(3):
        got = [c for c in fake.activities if posted_to(f"a:1chat-{n}")(c) and "Update on INC-1" in text_of(c)]
        assert len(got) == 2
        assert "Mail server restarting" in text_of(got[0]) and "Mail is back" in text_of(got[1])
    [incident] = await incidents(db)
    assert incident.latest_update == "Mail is back"

    await click(server, fake, Action.INCIDENT_POST_UPDATE, button["value"], button["ticket_id"], person(0))
    assert any("Only IT agents can post incident updates." in text_of(c)
               for c in fake.activities if posted_to("a:1chat-0")(c))


async def test_resolving_the_incident_resolves_every_linked_ticket_with_its_note(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    button = await teams_outage(server, fake)
    await click(server, fake, Action.INCIDENT_RESOLVE, button["value"], button["ticket_id"], AGENT)
    form = form_in(fake, "a:1agent-chat")
    assert form["form"] == "form.incident_resolve"
    await submit_form(server, fake, form, "Replaced the failed mail relay", AGENT)
    await settle(server)
    [incident] = await incidents(db)
    assert incident.status == "resolved"
    for n in range(3):
        told = [c for c in fake.activities if posted_to(f"a:1chat-{n}")(c) and "resolved your ticket" in text_of(c)]
        assert len(told) == 1 and "Replaced the failed mail relay" in text_of(told[0])


async def test_linked_tickets_do_not_breach_and_the_incident_pages_once(
    make_config: Callable[..., AppConfig], fake: FakeBotConnector, db: Database, clock: ManualClock
) -> None:
    async with FakePagerDuty("rk-ops") as pagerduty:
        policies = "\n".join(f"    {p}: {{breach: urgent}}" for p in ("P1", "P2", "P3", "P4"))
        config = make_config(INCIDENTS + f"""
pagers:
  pagerduty:
    ops: {{routing_key: rk-ops, events_url: "{pagerduty.events_url}"}}
escalation:
  chains:
    urgent:
      levels:
        - {{notify: ["pagerduty:ops"], wait: 10m}}
  policies:
{policies}
""").model_copy(update={"slack": SlackConfig(), "teams": TeamsConfig(
            enabled=True, triage_conversation=TRIAGE, service_url=fake.service_url)})
        async with running_server(config, db, clock) as server:
            await say(server, fake, "incident Email down in Pune", AGENT)
            for n in range(3):
                await say(server, fake, "email is down in Pune", person(n))
            for _ in range(4):  # past the incident's P1 first response (15m) and its chain's wait
                clock.advance(timedelta(minutes=8))
                await settle(server)
        [incident] = await incidents(db)
        anchor = incident.anchor_ticket_id
        async with db.transaction() as session:
            breached = list((await session.execute(select(TicketEvent.ticket_id).where(
                TicketEvent.kind == "sla_breached"))).scalars())
            # The linked reports' own SLA timers are all stood down: the incident's clock covers them.
            armed = list((await session.execute(select(Timer.ticket_id).where(
                Timer.kind.like("sla.%"), Timer.done_at.is_(None), Timer.ticket_id != anchor))).scalars())
        assert breached == [anchor] and armed == []
        triggers = [e["dedup_key"] for e in pagerduty.events if e["event_action"] == "trigger"]
        assert triggers == [f"IT-{anchor}"]


async def test_open_incidents_show_as_known_issues_in_status(server: Server, fake: FakeBotConnector) -> None:
    await say(server, fake, "incident Email down in Pune", AGENT)
    await say(server, fake, "status", person(0))
    [answer] = [c for c in fake.activities if posted_to("a:1chat-0")(c)]
    assert "Known issue INC-1: Email down in Pune" in text_of(answer)
    assert "Your open tickets" in text_of(answer)


async def test_the_report_shows_the_incident_with_affected_count_and_times(
    server: Server, fake: FakeBotConnector, db: Database, clock: ManualClock
) -> None:
    start = clock.now()
    button = await teams_outage(server, fake)
    await click(server, fake, Action.INCIDENT_POST_UPDATE, button["value"], button["ticket_id"], AGENT)
    clock.advance(timedelta(minutes=5))
    await submit_form(server, fake, form_in(fake, "a:1agent-chat"), "Mail relay restarting", AGENT)
    await click(server, fake, Action.INCIDENT_RESOLVE, button["value"], button["ticket_id"], AGENT)
    clock.advance(timedelta(minutes=25))
    await submit_form(server, fake, form_in(fake, "a:1agent-chat"), "Relay replaced", AGENT)
    [figures] = await incident_figures(db, since=start, until=clock.now() + timedelta(minutes=1))
    assert (figures.affected, figures.to_acknowledge_min, figures.to_resolve_min) == (4, 5.0, 30.0)


async def test_scheduled_progress_updates_reach_each_teams_requester_from_the_incident(
    server: Server, fake: FakeBotConnector, clock: ManualClock
) -> None:
    await teams_outage(server, fake)  # a P1 incident: an update every hour, any hour

    def scheduled(n: int) -> list[ConnectorCall]:
        return [c for c in fake.activities if posted_to(f"a:1chat-{n}")(c) and "still working on it" in text_of(c)]

    clock.advance(timedelta(minutes=59))
    await settle(server)
    assert all(scheduled(n) == [] for n in range(3))
    clock.advance(timedelta(minutes=2))
    await settle(server)
    for n in range(3):
        [update] = scheduled(n)
        assert "Update on INC-1: Email down in Pune" in text_of(update)
        assert not [c for c in fake.activities if posted_to(f"a:1chat-{n}")(c) and "Update on IT-" in text_of(c)]
