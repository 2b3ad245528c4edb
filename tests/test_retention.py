"""Retention (issue #22), on both databases, with the clock moved past ``text_after`` and ``people_after``:
old tickets' free text is redacted and inactive people anonymised by engine timers, batch by batch, while every
figure of ``ithelp report`` over the old period stays the same."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.config import AppConfig
from bot.desk import Desk
from bot.privacy.retention import JOB_ID, PEOPLE_TIMER, TEXT_TIMER, RetentionService
from bot.privacy.scrub import REDACTED
from bot.scheduler import EngineRunner
from store.models import Person, Ticket, Timer
from store.privacy_models import PrivacyLog
from surveys.polls import SurveyService
from surveys.report import Report, compute_report
from tests.data_grep import find_everywhere
from tests.desk_story import ALICE, BOB, OLGA, RITA, SAM, Story, a_week_at_the_desk

POLICY = "retention:\n  text_after: 365d\n  people_after: 730d\n  batch_size: 2\n"


@pytest.fixture
def retained_desk(make_desk: Callable[..., Any], make_config: Callable[..., AppConfig]) -> Callable[..., Any]:
    def make(extra: str = POLICY, **kw: Any) -> tuple[Desk, RetentionService, SurveyService]:
        config = make_config(extra)
        desk = make_desk(app_config=config, **kw)
        return desk, desk.retention, desk.surveys

    return make


async def run_daily(desk: Desk, retention: RetentionService) -> int:
    """What a running server does by then: the hourly prune (expired dedup marks go), the 03:00 cron job,
    then the engine until no timer is due; returns timers run."""
    await EngineRunner(desk).prune()
    await retention.enqueue_daily_run()
    ran = 0
    while count := await desk.timers.tick():
        ran += count
    return ran


async def report_figures(desk: Desk, story: Story) -> dict[str | None, Any]:
    """The report over the story's period, whole and by each grouping (by agent: the figures without the names,
    which anonymisation replaces)."""
    since, until = story.started - timedelta(days=1), story.started + timedelta(days=14)
    figures: dict[str | None, Any] = {}
    for by in (None, "category", "priority", "week", "agent"):
        report: Report = await compute_report(desk.db, desk.config, since=since, until=until, by=by)
        groups = {name: metrics.summary() for name, metrics in report.groups.items()}
        figures[by] = (report.total.summary(), sorted(map(repr, groups.values())) if by == "agent" else groups)
    return figures


async def the_tickets(desk: Desk) -> dict[int, Ticket]:
    async with desk.db.reading() as session:
        return {t.id: t for t in (await session.execute(select(Ticket))).scalars()}


async def people(desk: Desk) -> dict[str, Person]:
    async with desk.db.reading() as session:
        return {p.display_name: p for p in (await session.execute(select(Person))).scalars()}


async def log_rows(desk: Desk, action: str) -> list[PrivacyLog]:
    async with desk.db.reading() as session:
        return list((await session.execute(select(PrivacyLog).where(PrivacyLog.action == action)
                                           .order_by(PrivacyLog.id))).scalars())


async def test_old_text_goes_then_old_people_while_the_report_over_that_period_stays_the_same(
    retained_desk: Callable[..., Any], clock: ManualClock,
) -> None:
    desk, retention, surveys = retained_desk()
    story = await a_week_at_the_desk(desk, clock, surveys)
    before = await report_figures(desk, story)
    assert before[None][0]["resolved"] == 3 and before[None][0]["surveys_answered"] == 2  # a report with figures
    closed_text = [t for who in (RITA, SAM, ALICE, BOB) for t in story.typed[who.user_id]]
    open_text = story.typed[OLGA.user_id]
    assert await find_everywhere(desk.db, closed_text)  # copied around: events, outbox notices, survey

    clock.advance(timedelta(days=300))
    await run_daily(desk, retention)
    assert all(t.redacted_at is None for t in (await the_tickets(desk)).values())  # not yet a year

    clock.advance(timedelta(days=100))
    await run_daily(desk, retention)
    tickets = await the_tickets(desk)
    for name in ("printer", "office", "access"):
        assert tickets[story.tickets[name]].summary == REDACTED and tickets[story.tickets[name]].redacted_at
    assert tickets[story.tickets["open"]].summary == "New starter needs a laptop"
    leftovers = await find_everywhere(desk.db, closed_text)
    assert leftovers == [], "\n".join(map(str, leftovers))
    assert await find_everywhere(desk.db, open_text)  # the open ticket keeps its text
    batches = await log_rows(desk, "retention.redact_text")
    assert [b.detail["tickets"] for b in batches] == [2, 1]  # batch_size 2: two rounds of one run
    assert sorted(i for b in batches for i in b.detail["ticket_ids"]) == sorted(
        story.tickets[n] for n in ("printer", "office", "access"))
    assert await report_figures(desk, story) == before
    assert "Rita Requester" in (await people(desk))  # people stay until people_after

    clock.advance(timedelta(days=400))
    await run_daily(desk, retention)
    after = await people(desk)
    assert "Olga Open" in after  # an open ticket: kept
    names = {p.display_name for p in after.values() if p.anonymised_at}
    assert len(names) == 4 and all(n.startswith("Former user #") for n in names)
    identities = [f(p) for p in (RITA, SAM, ALICE, BOB) for f in (lambda p: p.user_id, lambda p: p.display_name)]
    identities += [RITA.email or "", ALICE.email or ""]
    leftovers = await find_everywhere(desk.db, identities)
    assert leftovers == [], "\n".join(map(str, leftovers))
    assert await find_everywhere(desk.db, [OLGA.user_id, "Olga Open"])
    assert sum(b.detail["people"] for b in await log_rows(desk, "retention.anonymise_people")) == 4
    assert await report_figures(desk, story) == before


async def pseudonymised_values(desk: Any) -> set[tuple[str, str, object, str]]:
    """Each value that names a pseudonym, by table, column and row id: what a second run must leave alone (the
    engine may meanwhile deliver or retry the rows that carry them, which changes only their bookkeeping)."""
    return {(f.table, f.column, f.row.get("id"), json.dumps(f.row[f.column], sort_keys=True, default=str))
            for f in await find_everywhere(desk.db, ["Former user #"])}


async def test_a_second_run_the_same_day_changes_nothing(retained_desk: Callable[..., Any], clock: ManualClock,
                                                         ) -> None:
    desk, retention, surveys = retained_desk()
    await a_week_at_the_desk(desk, clock, surveys)
    clock.advance(timedelta(days=800))
    assert await run_daily(desk, retention) > 0
    snapshot = await pseudonymised_values(desk)
    runs = len(await log_rows(desk, "retention.redact_text")) + len(await log_rows(desk, "retention.anonymise_people"))
    assert not await retention.enqueue_daily_run()  # today's rows exist (dedup key per date)
    clock.advance(timedelta(days=1))
    await run_daily(desk, retention)  # tomorrow: nothing left to do
    assert await pseudonymised_values(desk) == snapshot
    assert len(await log_rows(desk, "retention.redact_text")) + len(
        await log_rows(desk, "retention.anonymise_people")) == runs


async def test_a_reopened_redacted_ticket_is_redacted_again_once_it_is_old_again(
    retained_desk: Callable[..., Any], clock: ManualClock,
) -> None:
    desk, retention, surveys = retained_desk("retention:\n  text_after: 365d\n")
    story = await a_week_at_the_desk(desk, clock, surveys)
    clock.advance(timedelta(days=400))
    await run_daily(desk, retention)
    access = story.tickets["access"]
    await desk.tickets.reopen(access, RITA, "It is back after a year: Q4 folder now")
    assert (await the_tickets(desk))[access].redacted_at is None
    await desk.tickets.resolve(access, ALICE, "Added you to FIN-Q4")
    clock.advance(timedelta(days=400))
    await run_daily(desk, retention)
    assert not await find_everywhere(desk.db, ["Q4 folder now", "FIN-Q4"])


async def test_without_a_policy_nothing_is_forgotten(retained_desk: Callable[..., Any], clock: ManualClock) -> None:
    desk, retention, surveys = retained_desk("")
    story = await a_week_at_the_desk(desk, clock, surveys)
    clock.advance(timedelta(days=3000))
    assert not await retention.enqueue_daily_run()
    while await desk.timers.tick():
        pass
    assert await find_everywhere(desk.db, story.typed[RITA.user_id][:1])
    assert not [p for p in (await people(desk)).values() if p.anonymised_at]


async def test_two_replicas_share_the_work_and_redact_each_ticket_once(
    retained_desk: Callable[..., Any], databases: Any, db: Any, clock: ManualClock,
) -> None:
    desk, retention, _ = retained_desk("retention:\n  text_after: 30d\n  batch_size: 3\n")
    other, other_retention, _ = retained_desk("retention:\n  text_after: 30d\n  batch_size: 3\n",
                                              database=databases.another_handle(db), replica="b")
    for n in range(14):
        ticket = (await desk.tickets.open(SAM, f"Monitor {n} flickers", origin=_origin())).ticket
        await desk.tickets.resolve(ticket.id, BOB, f"Swapped cable {n}")
    clock.advance(timedelta(days=31))
    added = await asyncio.gather(retention.enqueue_daily_run(), other_retention.enqueue_daily_run())
    assert sorted(added) == [False, True]

    async def drain(d: Desk) -> None:
        while await d.timers.tick():
            pass

    await asyncio.gather(drain(desk), drain(other))
    batches = await log_rows(desk, "retention.redact_text")
    redacted = [i for b in batches for i in b.detail["ticket_ids"]]
    assert len(redacted) == 14 and len(set(redacted)) == 14
    assert all(t.summary == REDACTED for t in (await the_tickets(desk)).values())


async def test_the_daily_cron_job_enqueues_the_days_run_in_the_default_calendars_zone(
    make_desk: Callable[..., Any], make_config: Callable[..., AppConfig], clock: ManualClock,
) -> None:
    desk = make_desk(app_config=make_config(POLICY + "  run_at: '02:30'\n"))
    runner = EngineRunner(desk)
    for cron in desk.cron_jobs:
        runner.add_cron(cron)
    job = runner.scheduler.get_job(JOB_ID)
    assert job is not None and str(job.trigger.timezone) == "Europe/London"
    assert job.trigger.get_next_fire_time(None, datetime(2026, 11, 23, 12, 0, tzinfo=UTC)) == datetime(
        2026, 11, 24, 2, 30, tzinfo=UTC)
    await job.func()  # what APScheduler calls at 02:30: enqueue and kick
    await job.func()  # a second replica's job the same day adds nothing
    await runner.stop()
    async with desk.db.reading() as session:
        kinds = (await session.execute(select(Timer.kind, func.count()).where(
            Timer.kind.in_((TEXT_TIMER, PEOPLE_TIMER))).group_by(Timer.kind))).all()
    assert sorted(kinds) == [(PEOPLE_TIMER, 1), (TEXT_TIMER, 1)]


def _origin() -> Any:
    from bot.tickets import Origin

    return Origin("slack")


async def test_an_inactive_teams_user_loses_their_chat_references_with_their_name(
    retained_desk: Callable[..., Any], clock: ManualClock,
) -> None:
    from bot.channels.teams import PERSON, remember_conversation
    from bot.people import PersonRef
    from bot.tickets import Origin
    from store.models import ConversationRef

    desk, retention, _ = retained_desk()
    tess = PersonRef("teams", "aad-tess-3", display_name="Tess Teams", email="tess@example.com")
    ticket = (await desk.tickets.open(tess, "Teams camera is black", origin=Origin("teams"))).ticket
    await desk.tickets.resolve(ticket.id, ALICE, "Updated the camera driver")
    async with desk.db.transaction() as session:
        await remember_conversation(session, key=tess.user_id, kind=PERSON, now=clock.now(), reference={
            "user": {"id": "29:1tess", "name": "Tess Teams", "aadObjectId": tess.user_id},
            "conversation": {"id": "a:1tess-chat"}})
    clock.advance(timedelta(days=731))
    await run_daily(desk, retention)
    async with desk.db.reading() as session:
        assert (await session.execute(select(ConversationRef))).first() is None
    leftovers = await find_everywhere(desk.db, [tess.user_id, "29:1tess", "Tess Teams", "tess@example.com"])
    assert leftovers == [], "\n".join(map(str, leftovers))


@pytest.mark.parametrize(("value", "message"), [
    ("365", "6m is less than a day, too short to keep data (a bare number counts seconds); write e.g. 365d"),
    ("forever", '"forever" is not a duration; write 15m, 2h or 1d'),
])
def test_a_retention_period_that_would_erase_too_soon_is_refused_with_the_fix(
    value: str, message: str, tmp_path: Any, capsys: pytest.CaptureFixture[str],
) -> None:
    from bot.cli import main

    path = tmp_path / "app.yaml"
    path.write_text(f"retention:\n  text_after: {value}\n")
    assert main(["check-config", str(path)]) == 1
    assert f"retention.text_after: {message}" in capsys.readouterr().out.splitlines()
