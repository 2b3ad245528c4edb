"""One SLA truth: the report, the triage card and the clock's pages agree on every awkward ticket.

The real ``SlaClock`` runs its timers as the ManualClock moves (SQLite and PostgreSQL; London calendar Mon-Fri
09:00-17:00 = UTC in November; P1 on the 24x7 "always" calendar; P1 15m / 4h, P2 1h / 8h, P3 4h / 72h):

* T1 (P3, Mon 09:00) resolved at 09:20 without anyone claiming it: the resolution is the first response.
* T2 (P2, Fri 15:00) claimed 15:10, waiting on the requester from 16:00 over the weekend until their reply on
  Mon 10:00, resolved 14:00: resolution 1h (Fri) + 4h (Mon) = 5h.
* T3 (P3, Mon 09:00) raised to P1 at 09:40: on the 24x7 calendar its 15m first response had run out at 09:15,
  so the clock breaches it; claimed 09:50 (missed, 50m); resolved 12:00 (3h of 4h, met).
* T4 (P2, Mon 09:00) claimed 09:30, resolved 12:00 (3h, met), reopened Tue 09:00 with 5h left, breached at
  Tue 14:00, resolved 15:00: 9h, missed.
* T5 (P2, Mon 11:00): nobody answers; the first response breaches at 12:00 and is still running at the end.
* T6 (P3, Tue 16:00): nobody answers yet, and its first response is not due before the end (Wed 10:00).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.config import AppConfig
from bot.durations import format_duration
from bot.people import PersonRef
from bot.sla import sla_lines, sla_outcomes
from bot.text import plain
from bot.tickets import Origin
from store.models import Ticket, TicketEvent
from surveys.report import compute_report, ticket_lines
from surveys.report_data import TicketFacts, ticket_facts

AGENT = PersonRef("slack", "UAGENT1", display_name="Agent One")
SINCE = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
UNTIL = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)

# (first response, resolution) verdicts and business hours, worked out by hand from the story above.
EXPECTED = {
    "T1": (("met", 20 / 60), ("met", 20 / 60)),
    "T2": (("met", 10 / 60), ("met", 5.0)),
    "T3": (("missed", 50 / 60), ("met", 3.0)),
    "T4": (("met", 0.5), ("missed", 9.0)),
    "T5": (("missed", None), (None, None)),
    "T6": ((None, None), (None, None)),
}
HARSHER = """
sla:
  policies:
    P1: {calendar: always, first_response: 1m, resolution: 10m}
    P2: {first_response: 1m, resolution: 10m}
    P3: {first_response: 1m, resolution: 10m}
"""


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def requester(name: str) -> PersonRef:
    return PersonRef("slack", f"U{name}", display_name=f"Requester {name}", timezone="Europe/London")


class Story:
    """Moves the clock and lets the desk's timers run at each step, as a running server would."""

    def __init__(self, desk: Any, clock: ManualClock) -> None:
        self.desk, self.clock = desk, clock
        self.ids: dict[str, int] = {}

    async def at(self, when: datetime) -> None:
        self.clock.set(when)
        for _ in range(3):
            await self.desk.timers.tick()

    async def open(self, name: str, priority: str) -> None:
        result = await self.desk.tickets.open(requester(name), f"{name}: laptop trouble", origin=Origin("slack"),
                                              priority=priority)
        self.ids[name] = int(result.ticket.id)


@pytest.fixture
async def awkward(make_desk: Callable[..., Any], clock: ManualClock) -> Story:
    story = Story(make_desk(), clock)
    tickets = story.desk.tickets
    await story.at(at(20, 15))
    await story.open("T2", "P2")
    await story.at(at(20, 15, 10))
    await tickets.claim(story.ids["T2"], AGENT)
    await story.at(at(20, 16))
    await tickets.set_status(story.ids["T2"], AGENT, "waiting_on_requester", "Which dock?")
    await story.at(at(23, 9))
    for name, priority in (("T1", "P3"), ("T3", "P3"), ("T4", "P2")):
        await story.open(name, priority)
    await story.at(at(23, 9, 20))
    await tickets.resolve(story.ids["T1"], AGENT, "Cleared the print queue.")
    await story.at(at(23, 9, 30))
    await tickets.claim(story.ids["T4"], AGENT)
    await story.at(at(23, 9, 40))
    await tickets.set_priority(story.ids["T3"], AGENT, "P1")
    await story.at(at(23, 9, 41))
    await story.at(at(23, 9, 50))
    await tickets.claim(story.ids["T3"], AGENT)
    await story.at(at(23, 10))
    await tickets.comment(story.ids["T2"], requester("T2"), "The grey one.")
    await story.at(at(23, 11))
    await story.open("T5", "P2")
    await story.at(at(23, 12))
    await tickets.resolve(story.ids["T3"], AGENT, "Switch replaced.")
    await tickets.resolve(story.ids["T4"], AGENT, "New battery.")
    await story.at(at(23, 14))
    await tickets.resolve(story.ids["T2"], AGENT, "Dock swapped.")
    await story.at(at(24, 9))
    await tickets.reopen(story.ids["T4"], requester("T4"), "Dead again.")
    await story.at(at(24, 14, 5))
    await story.at(at(24, 15))
    await tickets.resolve(story.ids["T4"], AGENT, "New charger too.")
    await story.at(at(24, 16))
    await story.open("T6", "P3")
    await story.at(UNTIL)
    return story


async def report_facts(story: Story) -> dict[str, TicketFacts]:
    by_id = {facts.ticket_id: facts async for facts in ticket_facts(story.desk.db, since=SINCE, until=UNTIL,
                                                                        with_agent=True)}
    return {name: by_id[ticket_id] for name, ticket_id in story.ids.items()}


async def ticket_and_events(story: Story, name: str) -> tuple[Ticket, list[TicketEvent]]:
    async with story.desk.db.reading() as session:
        ticket = await session.get(Ticket, story.ids[name])
        assert ticket is not None
        events = list((await session.execute(select(TicketEvent).where(
            TicketEvent.ticket_id == ticket.id).order_by(TicketEvent.id))).scalars())
        return ticket, events


def word(met: bool | None) -> str | None:
    return None if met is None else ("met" if met else "missed")


async def test_the_report_gives_each_awkward_ticket_the_verdicts_the_clock_stamped(awkward: Story) -> None:
    facts = await report_facts(awkward)
    for name, ((first, first_hours), (resolution, resolution_hours)) in EXPECTED.items():
        got = facts[name]
        assert (got.first_response, got.resolution) == (first, resolution), name
        if first_hours is not None:
            assert got.first_response_hours == pytest.approx(first_hours), name
        if resolution_hours is not None:
            assert got.resolution_hours == pytest.approx(resolution_hours), name
        # The clock's own reading of its verdicts at the report's end agrees, metric by metric.
        ticket, events = await ticket_and_events(awkward, name)
        outcomes = sla_outcomes(ticket, events, awkward.desk.sla.calendar(ticket.calendar), UNTIL)
        assert word(outcomes["first_response"].met) == got.first_response, name
        if got.resolved_at is not None:
            assert word(outcomes["resolution"].met) == got.resolution, name
            assert outcomes["resolution"].elapsed_business.total_seconds() / 3600 == pytest.approx(
                got.resolution_hours), name


async def test_a_running_target_the_clock_breached_is_missed_and_one_not_yet_due_is_pending(awkward: Story) -> None:
    _, events = await ticket_and_events(awkward, "T5")
    breaches = [(e.at, e.payload["metric"]) for e in events
                if e.kind == "sla_breached" and e.payload["metric"] != "update"]
    assert breaches == [(at(23, 12), "first_response"), (at(24, 14, 5), "resolution")]
    _, later = await ticket_and_events(awkward, "T6")
    assert not [e for e in later if e.kind.startswith("sla_")]
    report = await compute_report(awkward.desk.db, since=SINCE, until=UNTIL, by=None)
    # Opened in the period: T1-T6; first responses met T1, T2, T4 and missed T3, T5; T6 still running.
    assert (report.total.first_response_met, report.total.first_response_missed) == (3, 2)
    assert (report.total.resolution_met, report.total.resolution_missed) == (3, 1)


async def test_the_triage_card_says_what_the_clock_decided(awkward: Story) -> None:
    facts = await report_facts(awkward)
    for name in ("T1", "T2", "T3", "T4"):
        ticket, _ = await ticket_and_events(awkward, name)
        calendar = awkward.desk.sla.calendar(ticket.calendar)
        lines = [plain(line) for line in sla_lines(ticket, UNTIL, calendar, "Europe/London")]
        for label, verdict, hours in (("First response", facts[name].first_response, facts[name].first_response_hours),
                                      ("Resolution", facts[name].resolution, facts[name].resolution_hours)):
            assert hours is not None
            took = format_duration(timedelta(hours=hours))
            expected = f"{label}: met in {took}" if verdict == "met" else f"{label}: breached (took {took})"
            assert expected in lines, (name, lines)


async def test_editing_the_policies_afterwards_changes_no_verdict_already_given(
    awkward: Story, make_desk: Callable[..., Any], make_config: Callable[..., AppConfig], clock: ManualClock,
) -> None:
    before = await report_facts(awkward)
    harsher = make_config(HARSHER)
    # The server restarts with the new app.yaml and runs on for a day; the report is taken with it too.
    restarted = Story(make_desk(app_config=harsher), clock)
    await restarted.at(UNTIL + timedelta(days=1))
    after = await report_facts(awkward)
    for name in EXPECTED:
        assert (after[name].first_response, after[name].resolution) == (
            before[name].first_response, before[name].resolution), name
    report = await compute_report(awkward.desk.db, harsher, since=SINCE, until=UNTIL, by=None)
    assert (report.total.first_response_met, report.total.resolution_met) == (3, 3)


async def test_the_ticket_export_streams_one_line_per_ticket_with_its_verdicts(awkward: Story) -> None:
    lines = [json.loads(line) async for line in ticket_lines(awkward.desk.db, since=SINCE, until=UNTIL)]
    by_number = {line["ticket"]: line for line in lines}
    for name, ((first, _), (resolution, resolution_hours)) in EXPECTED.items():
        line = by_number[f"IT-{awkward.ids[name]}"]
        assert (line["first_response"], line["resolution"]) == (first, resolution), name
        hours = None if resolution_hours is None else pytest.approx(resolution_hours, abs=1e-3)
        assert line["resolution_hours"] == hours, name
    t4 = by_number[f"IT-{awkward.ids['T4']}"]
    assert (t4["agent"], t4["reopened"], t4["priority"]) == ("Agent One", True, "P2")
    assert t4["resolved_at"] == at(24, 15).isoformat()


def test_the_ticket_export_runs_from_the_command_line(tmp_path: Path) -> None:
    from bot.cli import main

    config = tmp_path / "app.yaml"
    config.write_text(f"database:\n  url: sqlite+aiosqlite:///{tmp_path / 'empty.db'}\n")
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    out = tmp_path / "tickets.jsonl"
    assert main(["report", "--config", str(config), "--format", "jsonl", "--tickets", "--output", str(out)]) == 0
    assert out.read_text() == ""
    assert main(["report", "--config", str(config), "--tickets"]) == 2


def test_a_database_not_yet_upgraded_gets_told_how_to_upgrade(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from bot.cli import main
    from store.db import Database
    from store.migrate import upgrade

    config = tmp_path / "app.yaml"
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    config.write_text(f"database:\n  url: {url}\n")

    async def old_schema() -> None:
        db = Database(url)
        await upgrade(db, "0005")
        await db.dispose()

    asyncio.run(old_schema())
    assert main(["report", "--config", str(config)]) == 2
    assert "run `ithelp db upgrade`" in capsys.readouterr().err


def test_the_rules_name_the_statuses_the_ticket_service_uses() -> None:
    from bot import sla_rules, tickets

    assert sla_rules.RUNNING == {tickets.NEW, tickets.CLAIMED, tickets.IN_PROGRESS, tickets.REOPENED}


@pytest.mark.parametrize("until", [UNTIL, at(24, 10), at(23, 12, 30)], ids=["end", "before-reopen", "monday"])
async def test_the_read_model_gives_what_replaying_the_events_gives(awkward: Story, until: datetime) -> None:
    async def facts(replay: bool) -> list[TicketFacts]:
        found = [f async for f in ticket_facts(awkward.desk.db, since=SINCE, until=until, with_agent=True,
                                               replay=replay)]
        return sorted(found, key=lambda f: f.ticket_id)

    fast, replayed = await facts(False), await facts(True)
    assert [f.ticket_id for f in fast] == [f.ticket_id for f in replayed] and fast
    for one, other in zip(fast, replayed, strict=True):
        hours = ("first_response_hours", "resolution_hours")
        assert one._replace(first_response_hours=None, resolution_hours=None) == other._replace(
            first_response_hours=None, resolution_hours=None)
        for name in hours:
            assert getattr(one, name) == pytest.approx(getattr(other, name)), name


async def test_tickets_from_before_the_read_model_are_replayed_from_their_events(awkward: Story) -> None:
    from sqlalchemy import delete

    from store.report_models import ReportFacts

    before = (await compute_report(awkward.desk.db, since=SINCE, until=UNTIL, by="priority")).as_dict()
    async with awkward.desk.db.transaction() as session:  # T2 was opened first: as if before the upgrade
        await session.execute(delete(ReportFacts).where(ReportFacts.ticket_id == awkward.ids["T2"]))
    assert (await compute_report(awkward.desk.db, since=SINCE, until=UNTIL, by="priority")).as_dict() == before
