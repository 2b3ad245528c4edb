"""Issue #20: per-agent figures keep incident-linked tickets apart (SQLite and PostgreSQL).

The story (London calendar Mon-Fri 09:00-17:00 = UTC in November, P3: first response 4h, resolution 3d):
Mon 23 Nov, Agent One resolves two tickets of their own (T1 opened 09:00, claimed 09:30, resolved 10:00; T2 opened
09:30, claimed 10:00, resolved 11:00; 👍 each).
Three people report the Wi-Fi down (L1-L3, 12:00-12:20); Agent One declares an incident from L1, links L2 and L3,
and at 16:00 resolves the incident, which resolves all three (👎 each, answered Tue). Agent One's own figures
are T1 and T2 alone: resolved 2, first response 0.5h each, resolution 1h and 1.5h, CSAT 100%. The three linked
tickets are "resolved via incident" in Agent One's column and make up the (incident-linked) column; the desk's
column counts all five.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.people import PersonRef
from bot.tickets import Origin
from surveys.report import (
    compute_report,
    render_csv,
    render_html,
    render_json,
    render_jsonl,
    render_table,
    ticket_lines,
)

AGENT_ONE = PersonRef("slack", "UAGENT1", display_name="Agent One")
LINKED = "(incident-linked)"


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


SINCE, AFTER_ANSWERS, BEFORE_ANSWERS = at(23, 0), at(25, 0), at(23, 18)


@pytest.fixture
async def story(make_desk: Callable[..., Any], clock: Any) -> Any:
    desk = make_desk()

    async def open_(n: int, summary: str, when: datetime) -> int:
        clock.set(when)
        person = PersonRef("slack", f"UREQ{n}", display_name=f"Requester {n}")
        return int((await desk.tickets.open(person, summary, origin=Origin("slack"), priority="P3")).ticket.id)

    own = [await open_(1, "Mouse broken", at(23, 9)), await open_(2, "Need Visio", at(23, 9, 30))]
    for ticket_id, done in zip(own, (at(23, 10), at(23, 11)), strict=True):
        await desk.tickets.claim(ticket_id, AGENT_ONE)
        clock.set(done)
        await desk.tickets.resolve(ticket_id, AGENT_ONE, "Done.")
        await desk.timers.tick()  # the survey goes out now (surveys.delay is 0)
    linked = [await open_(3 + n, "Wi-Fi down on floor 2", at(23, 12, 10 * n)) for n in range(3)]
    clock.set(at(23, 12, 30))
    incident_id = int((await desk.incidents.declare(linked[0], AGENT_ONE)).removeprefix("INC-"))
    for ticket_id in linked[1:]:
        await desk.incidents.link(ticket_id, incident_id, AGENT_ONE)
    clock.set(at(23, 16))
    assert await desk.incident_updates.resolve(incident_id, AGENT_ONE, "Switch replaced.") == 3
    await desk.timers.tick()
    clock.set(at(24, 9))
    for n, ticket_id in enumerate(own + linked, start=1):
        await desk.surveys.answer(ticket_id, PersonRef("slack", f"UREQ{n}"), "up" if ticket_id in own else "down")
    return desk, own, linked


@pytest.mark.parametrize("until", [AFTER_ANSWERS, BEFORE_ANSWERS], ids=["read-model", "replayed"])
async def test_an_agent_who_resolves_an_incident_is_credited_with_its_tickets_apart_from_their_own(
        story: Any, until: datetime) -> None:
    desk, _, _ = story
    report = await compute_report(desk.db, since=SINCE, until=until, by="agent")
    assert list(report.groups) == ["Agent One", LINKED]
    one, linked = report.groups["Agent One"], report.groups[LINKED]
    # Agent One's own two tickets only: counts, times, SLA and (once answered) CSAT are theirs alone.
    assert (one.opened, one.resolved, one.resolved_via_incident, one.resolution_met) == (2, 2, 3, 2)
    assert sorted(one.resolution_hours) == [1.0, 1.5] and sorted(one.first_response_hours) == [0.5, 0.5]
    assert (one.surveys_sent, one.thumbs_down, one.csat) == ((2, 0, 100.0) if until == AFTER_ANSWERS else (2, 0, None))
    # The three linked tickets, shown apart; the desk counts all five, each linked one once.
    assert (linked.opened, linked.resolved, linked.resolved_via_incident, linked.surveys_sent) == (3, 3, 3, 3)
    assert (report.total.opened, report.total.resolved, report.total.resolved_via_incident) == (5, 5, 3)
    plain = await compute_report(desk.db, since=SINCE, until=until, by=None)
    assert (plain.total.resolved, sorted(plain.total.resolution_hours)) == (
        5, sorted([*report.total.resolution_hours]))


async def test_every_format_shows_the_incident_linked_tickets_apart(story: Any) -> None:
    desk, _, linked = story
    report = await compute_report(desk.db, since=SINCE, until=AFTER_ANSWERS, by="agent")
    table = render_table(report).splitlines()
    assert [line.split()[-3:] for line in table if line.startswith(("Resolved  ", "Resolved via incident"))] == [
        ["5", "2", "3"], ["3", "3", "3"]]
    assert "(incident-linked)" in table[2] and "incident-linked" in render_table(report).split("Reopen rate")[-1]
    data = json.loads(render_json(report))
    assert (data["groups"]["Agent One"]["resolved"], data["groups"]["Agent One"]["resolved_via_incident"]) == (2, 3)
    assert data["groups"][LINKED]["resolved"] == 3 and data["total"]["resolved"] == 5
    rows = {row["group"]: row for row in csv.DictReader(io.StringIO(render_csv(report)))}
    assert (rows["Agent One"]["resolved"], rows["Agent One"]["resolved_via_incident"], rows[LINKED]["resolved"]) == (
        "2", "3", "3")
    lines = [json.loads(line) for line in render_jsonl(report).splitlines()]
    assert [(line["group"], line["resolved"], line["resolved_via_incident"]) for line in lines] == [
        ("Total", 5, 3), ("Agent One", 2, 3), (LINKED, 3, 3)]
    page = render_html(report)
    assert "<th>(incident-linked)</th>" in page and "Agent One — Resolved via incident: 3" in page  # the chart
    assert "<th scope=row>Resolved via incident</th><td>3</td><td>3</td><td>3</td>" in page
    tickets = [json.loads(line) async for line in ticket_lines(desk.db, since=SINCE, until=AFTER_ANSWERS)]
    assert sorted(t["ticket"] for t in tickets if t["incident"] == "INC-1") == [f"IT-{i}" for i in sorted(linked)]
    # Other groupings do not tell them apart, so they do not show the measure.
    by_category = await compute_report(desk.db, since=SINCE, until=AFTER_ANSWERS, by="category")
    assert "Resolved via incident" not in render_table(by_category) and "resolved_via_incident" not in render_csv(
        by_category)
