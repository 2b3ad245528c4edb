"""One clock, one page, in Slack over real HTTP: tickets linked to an incident do not breach on their own; the
incident's clock breaches once and pages each escalation level once, with one pager dedup key (issue #20)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.simulators.pagers import FakePagerDuty
from store.db import Database
from store.models import TicketEvent
from tests.incident_helpers import INCIDENTS, dumps, incidents, links
from tests.slack_harness import ALICE, BOB, SlackBot

ROUTING_KEY = "rk-ops"
PEOPLE = [f"UPERSON{n}" for n in range(4)]


@pytest.fixture
async def pagerduty() -> AsyncIterator[FakePagerDuty]:
    async with FakePagerDuty(ROUTING_KEY) as fake:
        yield fake


@pytest.fixture
def slack_extra_config(pagerduty: FakePagerDuty) -> str:
    policies = "\n".join(f"    {p}: {{breach: urgent}}" for p in ("P1", "P2", "P3", "P4"))
    return INCIDENTS + f"""
pagers:
  pagerduty:
    ops: {{routing_key: {ROUTING_KEY}, events_url: "{pagerduty.events_url}"}}
escalation:
  chains:
    urgent:
      levels:
        - {{notify: ["slack:user:{BOB}", "pagerduty:ops"], wait: 10m}}
        - {{notify: ["slack:user:{ALICE}"], wait: 10m}}
  policies:
{policies}
"""


def pages_to(bot: SlackBot, user: str) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == user and "level" in dumps(c)]


async def test_linked_tickets_do_not_breach_and_the_incident_pages_each_level_once(
    bot: SlackBot, db: Database, clock: ManualClock, pagerduty: FakePagerDuty
) -> None:
    await bot.command("incident Email down in Pune", user=ALICE)
    await bot.settle()
    for n, user in enumerate(PEOPLE):
        bot.slack.add_user(user, name=f"person{n}", real_name=f"Person {n}", tz="Asia/Kolkata")
        await bot.command("email is down in Pune", user=user)
        await bot.settle()
    [incident] = await incidents(db)
    assert len(await links(db)) == 1 + len(PEOPLE)

    # Past the incident's P1 first response (15m) and, later, every linked P3 ticket's own (4h).
    for _ in range(3):
        clock.advance(timedelta(minutes=8))
        await bot.settle()
    clock.advance(timedelta(hours=5))
    await bot.settle()
    await bot.settle()

    anchor = incident.anchor_ticket_id
    async with db.transaction() as session:
        breached = list((await session.execute(select(TicketEvent.ticket_id).where(
            TicketEvent.kind == "sla_breached"))).scalars())
    assert breached and set(breached) == {anchor}
    [level_one] = pages_to(bot, BOB)
    assert "level 1 of 2" in dumps(level_one) and f"IT-{anchor}" in dumps(level_one)
    [level_two] = pages_to(bot, ALICE)
    assert "level 2 of 2" in dumps(level_two)
    triggers = [e for e in pagerduty.events if e["event_action"] == "trigger"]
    assert [e["dedup_key"] for e in triggers] == [f"IT-{anchor}"]
