"""Issue #7: the desk's numbers, computed from the event trail of a seeded week (SQLite and PostgreSQL).

The seeded week (London calendar Mon-Fri 09:00-17:00 = UTC in November; P1 runs on the 24x7 "always" calendar;
targets: P1 first response 15m / resolution 4h, P2 1h / 8h, P3 4h / 3d):

* T0 (P3, Hardware, opened *before* the period, Fri 20 Nov 16:00): claimed 16:30 by Agent One, resolved
  Mon 10:00 → resolution 1h (Fri) + 1h (Mon) = 2h, met. Survey sent Mon 10:00, answered 👍.
* T1 (P2, Hardware, Mon 09:00): claimed 09:30 → first response 0.5h, met; resolved 13:00 → 4h, met. 👍.
* T2 (P2, Software, Mon 10:00): claimed 12:00 by Agent Two → first response 2h, missed (> 1h). Waiting on the
  requester 13:00-15:00 (paused), resolved Tue 11:00 (3h + 2h + 2h = 7h). Survey sent Tue 11:00, answered 👎,
  reopened from the survey Tue 12:00, claimed 13:00, resolved again Tue 14:00 → resolution 7h + 2h = 9h,
  missed (> 8h). No second survey.
* T3 (P1, Network, Mon 16:00, 24x7): Agent One comments 16:10 → first response 10 min, met; resolved 21:00
  → 5h, missed (> 4h). Survey sent, never answered.
* T4 (P3, Hardware, Tue 09:00): nobody responds. By the end of the period (Fri 27 Nov 09:00) it has had
  8h + 8h + 8h = 24 business hours > 4h → first response missed.

Period: Mon 23 Nov 00:00 to Fri 27 Nov 09:00 UTC. Hand-computed totals:
opened 4 (T1-T4); resolved 4 (T0-T3); first response hours [0.5, 2, 1/6] → median 0.5, p90 2;
first-response SLA met T1, T3 / missed T2, T4 → 50%; resolution hours [2, 4, 9, 5] → median 4.5, p90 9;
resolution SLA met T0, T1 / missed T2, T3 → 50%; reopened 1 of 4 → 25%; surveys sent 4, answered 3 → 75%;
CSAT 2 👍 / (2 👍 + 1 👎) = 66.7%; grade: CSAT 66.7% but SLA 50% < 70% → F.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.config import AppConfig
from bot.people import PersonRef
from bot.tickets import Origin
from surveys.report import (
    GRADE_RULE,
    add_report_parser,
    compute_report,
    grade_for,
    p90,
    render_csv,
    render_html,
    render_json,
    render_table,
)

AGENT_ONE = PersonRef("slack", "UAGENT1", display_name="Agent One")
AGENT_TWO = PersonRef("slack", "UAGENT2", display_name="Agent Two")
SINCE = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
UNTIL = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def person(n: int) -> PersonRef:
    return PersonRef("slack", f"UREQ{n}", display_name=f"Requester {n}")


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


@pytest.fixture
async def seeded(make_desk: Callable[..., Any], config: AppConfig, clock: Any) -> Any:
    desk = make_desk()
    surveys = desk.surveys
    tickets = desk.tickets

    async def open_(n: int, summary: str, priority: str, category: str) -> int:
        result = await tickets.open(person(n), summary, origin=Origin("slack"), priority=priority, category=category)
        return int(result.ticket.id)

    async def resolve(ticket_id: int, agent: PersonRef) -> None:
        await tickets.resolve(ticket_id, agent, "Done.")
        await desk.timers.tick()  # surveys.delay is 0: the poll goes out now

    clock.set(at(20, 16))
    t0 = await open_(0, "Monitor flickers", "P3", "Hardware")
    clock.set(at(20, 16, 30))
    await tickets.claim(t0, AGENT_ONE)
    clock.set(at(23, 9))
    t1 = await open_(1, "Keyboard dead", "P2", "Hardware")
    clock.set(at(23, 9, 30))
    await tickets.claim(t1, AGENT_ONE)
    clock.set(at(23, 10))
    t2 = await open_(2, "Can't install Office", "P2", "Software")
    await resolve(t0, AGENT_ONE)
    clock.set(at(23, 10, 5))
    await surveys.answer(t0, person(0), "up")
    clock.set(at(23, 12))
    await tickets.claim(t2, AGENT_TWO)
    clock.set(at(23, 13))
    await resolve(t1, AGENT_ONE)
    await tickets.set_status(t2, AGENT_TWO, "waiting_on_requester", "Which version?")
    clock.set(at(23, 13, 5))
    await surveys.answer(t1, person(1), "up")
    clock.set(at(23, 15))
    await tickets.comment(t2, person(2), "The 64-bit one.")
    clock.set(at(23, 16))
    t3 = await open_(3, "Wi-Fi down on floor 2", "P1", "Network")
    clock.set(at(23, 16, 10))
    await tickets.comment(t3, AGENT_ONE, "Looking now.")
    clock.set(at(23, 21))
    await resolve(t3, AGENT_ONE)
    clock.set(at(24, 9))
    t4 = await open_(4, "New starter needs a laptop", "P3", "Hardware")
    clock.set(at(24, 11))
    await resolve(t2, AGENT_TWO)
    clock.set(at(24, 11, 30))
    await surveys.answer(t2, person(2), "down")
    clock.set(at(24, 12))
    await surveys.reopen_from_survey(t2, person(2))
    clock.set(at(24, 13))
    await tickets.claim(t2, AGENT_TWO)
    clock.set(at(24, 14))
    await resolve(t2, AGENT_TWO)
    clock.set(at(27, 12))
    return desk, config, (t0, t1, t2, t3, t4)


async def test_the_seeded_week_gives_the_hand_computed_desk_numbers(seeded: Any) -> None:
    desk, config, _ = seeded
    report = await compute_report(desk.db, config, since=SINCE, until=UNTIL, by=None)
    total = report.total
    assert (total.opened, total.resolved) == (4, 4)
    assert sorted(round(h, 4) for h in total.first_response_hours) == [round(1 / 6, 4), 0.5, 2.0]
    assert sorted(total.resolution_hours) == [2.0, 4.0, 5.0, 9.0]
    summary = total.summary()
    assert summary["first_response_median_h"] == 0.5 and summary["first_response_p90_h"] == 2.0
    assert summary["resolution_median_h"] == 4.5 and summary["resolution_p90_h"] == 9.0
    assert (total.first_response_met, total.first_response_missed) == (2, 2)
    assert (total.resolution_met, total.resolution_missed) == (2, 2)
    assert summary["first_response_sla_pct"] == 50.0 and summary["resolution_sla_pct"] == 50.0
    assert (total.reopened, summary["reopen_rate_pct"]) == (1, 25.0)
    assert (total.surveys_sent, total.surveys_answered, summary["response_rate_pct"]) == (4, 3, 75.0)
    assert (total.thumbs_up, total.thumbs_down, summary["csat_pct"]) == (2, 1, 66.7)
    assert total.grade == "F"


async def test_the_numbers_split_by_agent_add_up_to_the_desk(seeded: Any) -> None:
    desk, config, _ = seeded
    report = await compute_report(desk.db, config, since=SINCE, until=UNTIL, by="agent")
    assert list(report.groups) == ["Agent One", "Agent Two", "(unassigned)"]
    one, two, nobody = (report.groups[name].summary() for name in report.groups)
    # Agent One: T0, T1, T3. Opened T1, T3; resolved T0, T1, T3; FR 0.5h and 1/6h both met; resolution 2h, 4h
    # met and 5h missed; 3 surveys, 2 👍; no reopen. CSAT 100% but SLA 66.7% < 70% → F.
    assert (one["opened"], one["resolved"], one["first_response_sla_pct"], one["first_response_median_h"]) == (
        2, 3, 100.0, 0.33)
    assert (one["resolution_sla_pct"], one["resolution_median_h"], one["csat_pct"], one["response_rate_pct"]) == (
        66.7, 4.0, 100.0, 66.7)
    assert (one["reopen_rate_pct"], one["grade"]) == (0.0, "F")
    # Agent Two: T2 only. FR 2h missed, resolution 9h missed, 👎, reopened.
    assert (two["opened"], two["resolved"], two["first_response_sla_pct"], two["resolution_p90_h"]) == (1, 1, 0.0, 9.0)
    assert (two["csat_pct"], two["reopen_rate_pct"]) == (0.0, 100.0)
    # Nobody: T4, opened, never answered → first response missed.
    assert (nobody["opened"], nobody["first_response_missed"], nobody["resolved"], nobody["csat_pct"]) == (
        1, 1, 0, None)


async def test_by_priority_category_and_week(seeded: Any) -> None:
    desk, config, _ = seeded
    by_priority = await compute_report(desk.db, config, since=SINCE, until=UNTIL, by="priority")
    assert {k: (m.opened, m.resolved) for k, m in by_priority.groups.items()} == {
        "P1": (1, 1), "P2": (2, 2), "P3": (1, 1)}
    by_category = await compute_report(desk.db, config, since=SINCE, until=UNTIL, by="category")
    assert {k: m.thumbs_up for k, m in by_category.groups.items()} == {"Hardware": 2, "Network": 0, "Software": 0}
    by_week = await compute_report(desk.db, config, since=SINCE, until=UNTIL, by="week")
    assert list(by_week.groups) == ["2026-W48"] and by_week.groups["2026-W48"].summary() == by_week.total.summary()


async def test_a_period_that_ends_before_the_reopen_sees_history_as_it_was(seeded: Any) -> None:
    desk, config, _ = seeded
    # Up to Tue 11:45: T2 was resolved once (7h, met) and rated 👎, not yet reopened.
    report = await compute_report(desk.db, config, since=SINCE, until=at(24, 11, 45), by=None)
    assert sorted(report.total.resolution_hours) == [2.0, 4.0, 5.0, 7.0]
    assert (report.total.reopened, report.total.resolution_met, report.total.thumbs_down) == (0, 3, 1)


def test_the_grade_rule_is_stated_and_applied() -> None:
    assert "A if CSAT ≥ 90% and SLA ≥ 95%" in GRADE_RULE
    assert grade_for(95.0, 96.0) == "A"
    assert grade_for(95.0, 91.0) == "B"
    assert grade_for(None, 85.0) == "C"
    assert grade_for(60.0, 99.0) == "D"
    assert grade_for(59.9, 99.0) == "F"
    assert grade_for(None, None) == "n/a"
    assert p90([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]) == 9.0


async def test_table_json_and_csv_carry_the_same_numbers_and_the_rule(seeded: Any) -> None:
    desk, config, _ = seeded
    report = await compute_report(desk.db, config, since=SINCE, until=UNTIL, by="agent")
    table = render_table(report)
    assert "CSAT %" in table and "66.7" in table and GRADE_RULE in table and "Agent One" in table
    data = json.loads(render_json(report))
    assert data["total"]["csat_pct"] == 66.7 and data["grade_rule"] == GRADE_RULE
    assert data["groups"]["Agent Two"]["reopen_rate_pct"] == 100.0
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert [row["group"] for row in rows] == ["Total", "Agent One", "Agent Two", "(unassigned)"]
    assert rows[0]["resolution_p90_h"] == "9.0" and rows[0]["grade"] == "F"


def test_the_report_command_parses_its_options() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", "--since", "30d", "--by", "week", "--format", "html", "--output", "r.html"])
    assert (args.since, args.by, args.format, args.output) == ("30d", "week", "html", "r.html")


CHROMIUM = next((path for path in (shutil.which("chromium"), shutil.which("chromium-browser"),
                                   shutil.which("google-chrome")) if path), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary found (apt-get install -y chromium)")
async def test_the_html_report_renders_in_headless_chromium_with_its_charts(seeded: Any, tmp_path: Path) -> None:
    desk, config, _ = seeded
    report = await compute_report(desk.db, config, since=SINCE, until=UNTIL, by="agent")
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    assert "http" not in render_html(report).replace("http://www.w3.org/2000/svg", "")  # nothing fetched
    assert CHROMIUM is not None
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               f"--user-data-dir={tmp_path / 'profile'}"]

    def run(*extra: str) -> str:
        return subprocess.run([*command, *extra, page.as_uri()], capture_output=True, text=True, timeout=120,
                              check=True).stdout

    dom = await asyncio.to_thread(run, "--dump-dom")
    for chart in ("chart-csat", "chart-sla", "chart-resolution", "chart-volume"):
        assert f'id="{chart}"' in dom
    assert dom.count('class="bar"') >= 20 and 'id="grade">F<' in dom and "Agent One" in dom
    shot = tmp_path / "report.png"
    await asyncio.to_thread(run, "--window-size=1000,2400", f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 10_000


@pytest.mark.parametrize("until", [UNTIL, at(24, 11, 45), at(27, 12, 1)], ids=["friday", "before-reopen", "after"])
async def test_the_read_model_and_a_replay_of_the_events_give_the_same_week(seeded: Any, until: datetime) -> None:
    from surveys.report_data import ticket_facts

    desk, _, ids = seeded

    async def facts(replay: bool) -> dict[int, Any]:
        found = {f.ticket_id: f._replace(first_response_hours=round(f.first_response_hours or 0, 6),
                                         resolution_hours=round(f.resolution_hours or 0, 6))
                 async for f in ticket_facts(desk.db, since=SINCE, until=until, with_agent=True, replay=replay)}
        assert set(found) <= set(ids)
        return found

    read_model = await facts(False)
    assert read_model == await facts(True) and read_model
