"""A known incident ranks above every article (issues #20, #21), over real HTTP in Microsoft Teams: Bot Framework
activities into ``/api/messages``, replies caught by the fake Bot Connector. A report that matches an open incident
joins it and hears the known issue, not a card of articles with "This solved it"; in ``ask_first`` it is filed at
once instead of being held behind articles. Reports that match no incident get articles as before.

The Slack versions of these stories are in ``test_kb_known_incidents_e2e.py``; the wording and articles are theirs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.routing import Action
from bot.server import Server
from bot.simulators import teams_activities as ta
from bot.simulators.bot_connector import FakeBotConnector
from store.db import Database
from store.knowledge import KbArticle, KbHeldRequest
from tests.incident_helpers import INCIDENTS, incidents, links
from tests.test_kb_known_incidents_e2e import ASK_FIRST, KNOWLEDGE, OUTAGE
from tests.test_kb_teams_e2e import AGENT, suggestions, teams, tickets  # noqa: F401  (teams: the server fixture)
from tests.test_nps_e2e import PERSONAL, fake, send, settle  # noqa: F401  (fake: the connector fixture)

REPORT = "My VPN keeps disconnecting when I work from home"
VPN_ARTICLE = "VPN keeps disconnecting or dropping"  # the article the report would get were there no incident


@pytest.fixture
def teams_extra_config() -> str:
    return KNOWLEDGE + INCIDENTS


async def declare_outage(teams: Server, fake: FakeBotConnector, db: Database,  # noqa: F811
                         clock: ManualClock) -> int:
    """The agent's ``incident <title>`` in their chat with the bot; the incident's id."""
    assert await send(teams, ta.message(f"incident {OUTAGE}", service_url=fake.service_url, **AGENT)) == 201
    await settle(teams, clock)
    [incident] = await incidents(db)
    assert incident.title == OUTAGE and incident.status != "resolved"
    async with db.reading() as session:  # the article the report would get were there no incident is indexed
        assert await session.scalar(select(KbArticle.id).where(KbArticle.title == VPN_ARTICLE)) is not None
    return incident.id


def to_requester(fake: FakeBotConnector) -> str:  # noqa: F811
    """Everything the bot posted or updated in the requester's chat, as one string."""
    return json.dumps([c.body for c in fake.activities if c.ok and c.conversation_id == PERSONAL and c.body],
                      ensure_ascii=False)


def known_issue_notices(fake: FakeBotConnector) -> list[dict[str, Any]]:  # noqa: F811
    """The bodies of the messages in the requester's chat that tell them their report is the known outage."""
    return [c.body for c in fake.activities if c.ok and c.method == "POST" and c.conversation_id == PERSONAL
            and c.body and "This looks like a known issue: " + OUTAGE in json.dumps(c.body, ensure_ascii=False)]


def offers_self_service(fake: FakeBotConnector) -> bool:  # noqa: F811
    """Whether any card in the requester's chat carries a "This solved it" (KB_SOLVED) or ask_first
    "Solved" (KB_ASK_SOLVED) button."""
    found = to_requester(fake)
    return Action.KB_SOLVED.value in found or Action.KB_ASK_SOLVED.value in found


async def held_requests(db: Database) -> list[KbHeldRequest]:
    async with db.reading() as session:
        return list((await session.scalars(select(KbHeldRequest))).all())


async def test_teams_a_report_matching_an_open_incident_hears_the_known_issue_instead_of_articles(
    teams: Server, fake: FakeBotConnector, db: Database, clock: ManualClock  # noqa: F811
) -> None:
    incident_id = await declare_outage(teams, fake, db, clock)
    assert await send(teams, ta.message(REPORT, service_url=fake.service_url)) == 201
    await settle(teams, clock)
    report = (await tickets(db))[-1]
    assert report.summary == REPORT
    assert (await links(db)).get(report.id) == incident_id
    [notice] = known_issue_notices(fake)
    assert Action.INCIDENT_MINE.value in json.dumps(notice)  # "Yes, that's mine" / "Something else" to answer
    said = to_requester(fake)
    assert suggestions(fake, PERSONAL) == []  # the outage is the answer: no "This solved it" on an outage report
    assert not offers_self_service(fake) and VPN_ARTICLE not in said

    # A problem the incident doesn't cover still gets its articles.
    assert await send(teams, ta.message("printer on the 2nd floor is jammed again",
                                        service_url=fake.service_url)) == 201
    await settle(teams, clock)
    printer = (await tickets(db))[-1]
    assert printer.id != report.id and printer.id not in await links(db)
    [(_, card)] = suggestions(fake, PERSONAL)
    assert "Printer jammed or offline" in json.dumps(card) and f'"{printer.id}:' in json.dumps(card)


@pytest.mark.parametrize("teams_extra_config", [ASK_FIRST + INCIDENTS])
async def test_teams_ask_first_files_a_report_of_a_known_incident_at_once_so_it_joins_it(
    teams: Server, fake: FakeBotConnector, db: Database, clock: ManualClock  # noqa: F811
) -> None:
    incident_id = await declare_outage(teams, fake, db, clock)
    tickets_before = len(await tickets(db))  # the incident's own ticket
    assert await send(teams, ta.message(REPORT, service_url=fake.service_url)) == 201
    # Filed in the turn itself, not held behind articles until "I still need help" or the timeout.
    assert await held_requests(db) == []
    assert len(await tickets(db)) == tickets_before + 1
    report = (await tickets(db))[-1]
    assert report.summary == REPORT
    assert "Before I pass this to IT" not in to_requester(fake)
    await settle(teams, clock)  # the ticket's setup after the turn links it to the incident
    assert (await links(db)).get(report.id) == incident_id
    [notice] = known_issue_notices(fake)
    assert Action.INCIDENT_MINE.value in json.dumps(notice)
    said = to_requester(fake)
    assert not offers_self_service(fake) and VPN_ARTICLE not in said

    # Without a matching incident, ask_first still shows the articles first and files nothing yet.
    assert await send(teams, ta.message("forgot my password", service_url=fake.service_url)) == 201
    await settle(teams, clock)
    assert len(await tickets(db)) == tickets_before + 1
    [held] = await held_requests(db)
    assert held.summary == "forgot my password" and held.ticket_id is None
    said = to_requester(fake)
    assert "Before I pass this to IT" in said and "Reset your password" in said
    assert Action.KB_ASK_FILE.value in said

