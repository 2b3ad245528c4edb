"""A known incident ranks above every article (issues #20, #21), over real HTTP in Slack: a report that matches
an open incident joins it and hears the known issue, not a list of articles; in ``ask_first`` it is filed at
once instead of being held behind articles. Reports that match no incident get articles as before."""

from __future__ import annotations

import json

import pytest

from store.db import Database
from tests.incident_helpers import INCIDENTS, links
from tests.slack_harness import ALICE, REQUESTER, SlackBot
from tests.test_kb_slack_e2e import ARTICLES, indexed, suggestion_posts

KNOWLEDGE = f"""
knowledge:
  folder: {ARTICLES}
"""
ASK_FIRST = KNOWLEDGE + "  mode: ask_first\n  ask_timeout: 5m\n"
OUTAGE = "VPN keeps disconnecting when working from home"


@pytest.fixture
def slack_extra_config() -> str:
    return KNOWLEDGE + INCIDENTS


def known_issue_posts(bot: SlackBot) -> list[dict[str, object]]:
    return [c for c in bot.slack.calls_to("chat.postMessage") if "known issue" in str(c.get("text"))]


async def declare_outage(bot: SlackBot) -> None:
    await indexed(bot)
    status, _ = await bot.command(f"incident {OUTAGE}", user=ALICE)
    assert status == 200
    await bot.settle()


async def test_a_report_matching_an_open_incident_hears_the_known_issue_instead_of_articles(
    bot: SlackBot, db: Database
) -> None:
    await declare_outage(bot)
    status, body = await bot.command("My VPN keeps disconnecting when I work from home")
    assert status == 200 and "opened" in body["text"]
    await bot.settle()
    ticket = (await bot.tickets())[-1]
    assert ticket.id in await links(db)
    [told] = known_issue_posts(bot)
    assert told["channel"] == f"D{REQUESTER}"
    assert suggestion_posts(bot) == []  # the outage is the answer: no "This solved it" on an outage report

    # A problem the incident doesn't cover still gets its articles.
    await bot.command("printer on the 2nd floor is jammed again")
    await bot.settle()
    [post] = suggestion_posts(bot)
    assert "Printer jammed or offline" in json.dumps(post["blocks"])


@pytest.mark.parametrize("slack_extra_config", [ASK_FIRST + INCIDENTS])
async def test_ask_first_files_a_report_of_a_known_incident_at_once_so_it_joins_it(
    bot: SlackBot, db: Database
) -> None:
    await declare_outage(bot)
    status, body = await bot.command("My VPN keeps disconnecting when I work from home")
    assert status == 200 and "Before I pass this to IT" not in json.dumps(body) and "opened" in body["text"]
    await bot.settle()
    ticket = (await bot.tickets())[-1]
    assert ticket.id in await links(db)
    assert len(known_issue_posts(bot)) == 1

    # Without a matching incident, ask_first still shows the articles first and files nothing yet.
    tickets_before = len(await bot.tickets())
    status, body = await bot.command("forgot my password")
    assert status == 200 and "Before I pass this to IT" in json.dumps(body)
    assert len(await bot.tickets()) == tickets_before
