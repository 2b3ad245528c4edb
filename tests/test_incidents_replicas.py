"""Replicas sharing one database raise one incident suggestion for one outage, however their openings interleave
(issue #20): the first to reach ``suggest_after`` creates it, every other replica counts towards it."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select

from bot.people import PersonRef
from bot.tickets import Origin
from store.incident_models import IncidentSuggestion
from store.models import Ticket

SLACK = Origin("slack", conversation="C0GENERAL")


async def test_three_replicas_setting_up_an_outages_reports_together_raise_one_suggestion(make_desk: Any) -> None:
    replicas = [make_desk(replica=f"r{i}") for i in range(3)]
    for n in range(15):
        person = PersonRef("slack", f"UOUTAGE{n}", display_name=f"Person {n}", timezone="Asia/Kolkata")
        await replicas[n % 3].tickets.open(person, "Email is down in the Pune office", origin=SLACK,
                                           defer_setup=True)

    async def drain(desk: Any) -> None:
        # One report per transaction, so the replicas' transactions interleave as much as they can. A pass that
        # collided with another replica's sets up nothing (it rolled back whole): the reports are still pending.
        while await desk.tickets.finish_setup(limit=1) or await pending(desk):
            pass

    async def pending(desk: Any) -> int:
        async with desk.db.reading() as session:
            return int(await session.scalar(select(func.count()).select_from(Ticket).where(Ticket.setup_pending)) or 0)

    await asyncio.gather(*(drain(desk) for desk in replicas))
    async with replicas[0].db.reading() as session:
        suggestions = list((await session.execute(select(IncidentSuggestion))).scalars())
    assert len(suggestions) == 1
    assert suggestions[0].count == 15
