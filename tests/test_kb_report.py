"""The report's knowledge-base section: deflection rate, the articles that helped, and what is missing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.clock import ManualClock
from bot.config import AppConfig
from bot.people import PersonRef
from surveys.report_knowledge import knowledge_report, render_knowledge_table

ARTICLES = Path(__file__).parent / "data" / "kb" / "articles"
RITA = PersonRef("slack", "UREQ1", display_name="Rita")
ALICE = PersonRef("slack", "UAGENT1", display_name="Alice")


@pytest.fixture
def config(make_config: Callable[..., AppConfig]) -> AppConfig:
    return make_config(f"knowledge:\n  folder: {ARTICLES}\n")


async def test_the_report_shows_deflection_useful_articles_and_gaps(desk: Any, make_ticket: Any,
                                                                   clock: ManualClock) -> None:
    await desk.knowledge.reindex()
    since = clock.now()
    password = await make_ticket("forgot my password")
    printer = await make_ticket("the printer is jammed")
    await make_ticket("blorf widget catalogue broken")
    await make_ticket("blorf widget needs a restart")
    await make_ticket("forgot my password again")  # offered the article, not clicked: not self-served

    [solved_it] = [use for use in await _suggested(desk, password.id) if use[1] == "Reset your password"]
    await desk.knowledge.solved(password.id, RITA, f"{password.id}:{solved_it[0]}")
    jam = next(article_id for article_id, title in (await desk.knowledge.search_for_agent(printer.id, ""))[1]
               if title == "Printer jammed or offline")
    await desk.knowledge.send(printer.id, ALICE, jam)
    await desk.tickets.resolve(printer.id, ALICE, "Cleared the jam")
    clock.advance(timedelta(hours=1))

    report = await knowledge_report(desk.db, since=since, until=clock.now())
    assert (report.requests, report.self_served) == (5, 1)
    assert report.deflection_rate == pytest.approx(20.0)
    assert report.useful == [("Printer jammed or offline", 0, 1), ("Reset your password", 1, 0)]
    assert report.gaps[:2] == [("blorf", 2), ("widget", 2)]
    text = render_knowledge_table(report)
    assert "Deflection rate 20.0% (1 self-served of 5 requests)" in text
    assert "blorf (2)" in text


async def _suggested(desk: Any, ticket_id: int) -> list[tuple[int, str]]:
    from sqlalchemy import select

    from store.knowledge import SUGGESTED, KbArticle, KbUse

    async with desk.db.reading() as session:
        rows = await session.execute(select(KbArticle.id, KbArticle.title).join(KbUse).where(
            KbUse.ticket_id == ticket_id, KbUse.kind == SUGGESTED))
        return [(int(i), str(t)) for i, t in rows.all()]


async def test_requests_ask_first_kept_from_becoming_tickets_count_as_self_served(
        make_desk: Any, make_config: Callable[..., AppConfig], clock: ManualClock) -> None:
    from bot.tickets import Origin

    desk = make_desk(app_config=make_config(f"knowledge:\n  folder: {ARTICLES}\n  mode: ask_first\n"))
    await desk.knowledge.reindex()
    since = clock.now()
    origin = Origin("slack", conversation="D1")
    solved = await desk.knowledge.held.hold(RITA, "forgot my password", origin, ("test", "1"))
    filed = await desk.knowledge.held.hold(RITA, "printer jammed", origin, ("test", "2"))
    assert solved is not None and filed is not None
    await desk.knowledge.held.solved(solved.ticket_id, RITA)
    await desk.knowledge.held.still_need_help(filed.ticket_id, RITA)
    clock.advance(timedelta(minutes=1))
    report = await knowledge_report(desk.db, since=since, until=clock.now())
    assert (report.requests, report.self_served) == (2, 1)

