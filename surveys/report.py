"""The numbers that run the desk, computed from the ticket event trail (so any period can be reproduced).

Definitions (also printed with every report):

* **Opened**: tickets whose ``opened`` event falls in [since, until).
* **Resolved**: tickets with a ``resolved`` event in the period (a re-resolution does not count twice).
* **Business time** is counted on the ticket's calendar (``BusinessCalendar.between``) only while the ticket
  is open and not waiting on the requester (new, claimed, in progress, reopened) — the SLA clock's rule.
* **First response**: business time from ``opened`` to the first ``claimed`` or agent ``commented`` event, for
  tickets opened in the period. Met when ≤ the priority's ``first_response`` target; a ticket still without a
  response counts as missed once its business time to ``until`` exceeds the target.
* **Resolution**: business time from ``opened`` to the ticket's last ``resolved`` event in the period.
  Met when ≤ the priority's ``resolution`` target.
* **Median** is the middle value (mean of the two middle ones); **p90** is the nearest-rank 90th percentile.
* **Reopen rate**: share of resolved tickets with a ``reopened`` event (up to ``until``).
* **Surveys**: polls whose ``survey_sent`` falls in the period; **response rate** = answered / sent;
  **CSAT** = 👍 / (👍 + 👎) over each ticket's final answer (up to ``until``).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import html
import io
import json
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bot.business_time import BusinessCalendar
from bot.config import AppConfig, CalendarConfig
from store.db import Database
from store.models import Person, Ticket, TicketEvent

GROUPINGS = ("agent", "category", "priority", "week")
FORMATS = ("table", "json", "csv", "html")
COUNTING_STATUSES = frozenset({"new", "claimed", "in_progress", "reopened"})
UNASSIGNED, UNCATEGORISED = "(unassigned)", "(none)"
TOTAL = "Total"

# (grade, minimum CSAT %, minimum SLA attainment %), best first; anything below D is F.
GRADE_BANDS: tuple[tuple[str, float, float], ...] = (("A", 90.0, 95.0), ("B", 80.0, 90.0), ("C", 70.0, 80.0),
                                                     ("D", 60.0, 70.0))
GRADE_RULE = (
    "Grade: A if CSAT ≥ 90% and SLA ≥ 95%; B if ≥ 80% and ≥ 90%; C if ≥ 70% and ≥ 80%; D if ≥ 60% and ≥ 70%; "
    "otherwise F. SLA is the lower of first-response and resolution attainment; a measure with no data is not "
    "held against the desk, and with neither measure the grade is n/a."
)
DEFINITIONS = (
    "Times are business hours on each ticket's calendar, counted while the ticket is open and not waiting on "
    "the requester. Median = middle value; p90 = nearest-rank 90th percentile. CSAT = thumbs up / (up + down) "
    "of surveys sent in the period; response rate = answered/sent; reopen rate = reopened/resolved."
)


@dataclass
class Metrics:
    """One column of the report (the whole desk, or one agent/category/priority/week)."""

    opened: int = 0
    resolved: int = 0
    reopened: int = 0
    surveys_sent: int = 0
    surveys_answered: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    first_response_hours: list[float] = field(default_factory=list)
    resolution_hours: list[float] = field(default_factory=list)
    first_response_met: int = 0
    first_response_missed: int = 0
    resolution_met: int = 0
    resolution_missed: int = 0

    @property
    def csat(self) -> float | None:
        return _percent(self.thumbs_up, self.thumbs_up + self.thumbs_down)

    @property
    def response_rate(self) -> float | None:
        return _percent(self.surveys_answered, self.surveys_sent)

    @property
    def reopen_rate(self) -> float | None:
        return _percent(self.reopened, self.resolved)

    @property
    def first_response_attainment(self) -> float | None:
        return _percent(self.first_response_met, self.first_response_met + self.first_response_missed)

    @property
    def resolution_attainment(self) -> float | None:
        return _percent(self.resolution_met, self.resolution_met + self.resolution_missed)

    @property
    def sla_attainment(self) -> float | None:
        known = [v for v in (self.first_response_attainment, self.resolution_attainment) if v is not None]
        return min(known) if known else None

    @property
    def grade(self) -> str:
        return grade_for(self.csat, self.sla_attainment)

    def summary(self) -> dict[str, Any]:
        """The numbers, flat, rounded for display (hours to 2 places, percentages to 1)."""
        return {
            "grade": self.grade,
            "csat_pct": _round(self.csat, 1),
            "thumbs_up": self.thumbs_up,
            "thumbs_down": self.thumbs_down,
            "surveys_sent": self.surveys_sent,
            "surveys_answered": self.surveys_answered,
            "response_rate_pct": _round(self.response_rate, 1),
            "opened": self.opened,
            "resolved": self.resolved,
            "first_response_median_h": _round(median(self.first_response_hours), 2),
            "first_response_p90_h": _round(p90(self.first_response_hours), 2),
            "resolution_median_h": _round(median(self.resolution_hours), 2),
            "resolution_p90_h": _round(p90(self.resolution_hours), 2),
            "first_response_sla_pct": _round(self.first_response_attainment, 1),
            "first_response_met": self.first_response_met,
            "first_response_missed": self.first_response_missed,
            "resolution_sla_pct": _round(self.resolution_attainment, 1),
            "resolution_met": self.resolution_met,
            "resolution_missed": self.resolution_missed,
            "reopened": self.reopened,
            "reopen_rate_pct": _round(self.reopen_rate, 1),
        }


COLUMNS: tuple[tuple[str, str], ...] = (
    ("grade", "Grade"), ("csat_pct", "CSAT %"), ("thumbs_up", "Thumbs up"), ("thumbs_down", "Thumbs down"),
    ("surveys_sent", "Surveys sent"), ("surveys_answered", "Surveys answered"),
    ("response_rate_pct", "Response rate %"), ("opened", "Opened"), ("resolved", "Resolved"),
    ("first_response_median_h", "First response median (h)"), ("first_response_p90_h", "First response p90 (h)"),
    ("resolution_median_h", "Resolution median (h)"), ("resolution_p90_h", "Resolution p90 (h)"),
    ("first_response_sla_pct", "First response SLA %"), ("first_response_met", "First response met"),
    ("first_response_missed", "First response missed"), ("resolution_sla_pct", "Resolution SLA %"),
    ("resolution_met", "Resolution met"), ("resolution_missed", "Resolution missed"),
    ("reopened", "Reopened"), ("reopen_rate_pct", "Reopen rate %"),
)


@dataclass
class Report:
    since: datetime
    until: datetime
    by: str | None
    total: Metrics
    groups: dict[str, Metrics]
    grade_rule: str = GRADE_RULE
    definitions: str = DEFINITIONS

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(), "until": self.until.isoformat(), "by": self.by,
            "total": self.total.summary(),
            "groups": {name: metrics.summary() for name, metrics in self.groups.items()},
            "grade_rule": self.grade_rule, "definitions": self.definitions,
        }


# -- statistics -------------------------------------------------------------------------------------
def _percent(part: int, whole: int) -> float | None:
    return 100.0 * part / whole if whole else None


def _round(value: float | None, places: int) -> float | None:
    return None if value is None else round(value, places)


def median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def p90(values: Sequence[float]) -> float | None:
    """Nearest-rank 90th percentile: the smallest value with at least 90% of values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def grade_for(csat: float | None, sla: float | None) -> str:
    """The report-card grade (see ``GRADE_RULE``)."""
    if csat is None and sla is None:
        return "n/a"
    for letter, min_csat, min_sla in GRADE_BANDS:
        if (csat is None or csat >= min_csat - 1e-9) and (sla is None or sla >= min_sla - 1e-9):
            return letter
    return "F"


# -- computing --------------------------------------------------------------------------------------
def _calendar(spec: CalendarConfig, name: str) -> BusinessCalendar:
    if spec.always_open:
        return BusinessCalendar.twenty_four_seven(name, spec.timezone)
    return BusinessCalendar.from_spec(name, spec.timezone, spec.hours, country=spec.country,
                                      subdivision=spec.subdivision, holidays=spec.holidays)


def _calendars(config: AppConfig) -> Callable[[str | None], BusinessCalendar]:
    @cache
    def get(name: str | None) -> BusinessCalendar:
        if name and name in config.calendars:
            return _calendar(config.calendars[name], name)
        if name == "24x7":
            return BusinessCalendar.twenty_four_seven()
        return _calendar(config.calendars[config.default_calendar], config.default_calendar)

    return get


def week_of(at: datetime) -> str:
    year, week, _ = at.astimezone(UTC).isocalendar()
    return f"{year}-W{week:02d}"


@dataclass
class _TicketFacts:
    """What one ticket contributes, each fact with the instant it belongs to (for weekly grouping)."""

    opened_at: datetime | None = None
    first_response_h: float | None = None
    first_response_status: str | None = None  # met | missed | None (pending / no policy)
    resolved_at: datetime | None = None
    resolution_h: float | None = None
    resolution_status: str | None = None
    reopened: bool = False
    survey_sent_at: datetime | None = None
    answer: str | None = None
    agent_id: int | None = None


def _walk(ticket: Ticket, events: list[TicketEvent], config: AppConfig, calendar: BusinessCalendar,
          since: datetime, until: datetime) -> _TicketFacts:
    facts = _TicketFacts()
    policy = config.sla_policy(ticket.priority)
    status: str | None = None
    counted = timedelta(0)
    previous_at: datetime | None = None
    responded = False
    last_claimer: int | None = None
    resolver: int | None = None
    for event in events:
        if previous_at is not None and status in COUNTING_STATUSES and event.at > previous_at:
            counted += calendar.between(previous_at, event.at)
        previous_at = event.at
        payload = event.payload or {}
        if event.kind == "opened":
            status = "new"
            facts.opened_at = event.at
        elif payload.get("to_status"):
            status = str(payload["to_status"])
        kind = event.kind
        if kind == "claimed":
            last_claimer = event.actor_id
        is_response = kind == "claimed" or (kind == "commented" and payload.get("role") == "agent")
        if is_response and not responded and facts.opened_at is not None:
            responded = True
            facts.first_response_h = counted.total_seconds() / 3600
            if policy is not None:
                facts.first_response_status = "met" if counted <= policy.first_response else "missed"
        if kind == "resolved":
            resolver = event.actor_id
            if since <= event.at < until and facts.opened_at is not None:
                facts.resolved_at = event.at
                facts.resolution_h = counted.total_seconds() / 3600
                facts.resolution_status = (None if policy is None else
                                           "met" if counted <= policy.resolution else "missed")
        if kind == "reopened" and resolver is not None:
            facts.reopened = True
        if kind == "survey_sent" and since <= event.at < until:
            facts.survey_sent_at = event.at
        if kind == "survey_answered":
            facts.answer = payload.get("answer")
    if not responded and facts.opened_at is not None and policy is not None:
        if previous_at is not None and status in COUNTING_STATUSES and until > previous_at:
            counted += calendar.between(previous_at, until)
        if counted > policy.first_response:
            facts.first_response_status = "missed"
    facts.agent_id = resolver if resolver is not None else last_claimer
    return facts


def _add(metrics: Metrics, facts: _TicketFacts, *, since: datetime, until: datetime, part: str | None = None) -> None:
    """Add ``facts`` to ``metrics``; ``part`` limits it to one family of facts (for weekly grouping)."""
    opened_in = facts.opened_at is not None and since <= facts.opened_at < until
    if opened_in and part in (None, "opened"):
        metrics.opened += 1
        if facts.first_response_h is not None:
            metrics.first_response_hours.append(facts.first_response_h)
        if facts.first_response_status == "met":
            metrics.first_response_met += 1
        elif facts.first_response_status == "missed":
            metrics.first_response_missed += 1
    if facts.resolved_at is not None and part in (None, "resolved"):
        metrics.resolved += 1
        metrics.reopened += int(facts.reopened)
        if facts.resolution_h is not None:
            metrics.resolution_hours.append(facts.resolution_h)
        if facts.resolution_status == "met":
            metrics.resolution_met += 1
        elif facts.resolution_status == "missed":
            metrics.resolution_missed += 1
    if facts.survey_sent_at is not None and part in (None, "survey"):
        metrics.surveys_sent += 1
        if facts.answer in ("up", "down"):
            metrics.surveys_answered += 1
            if facts.answer == "up":
                metrics.thumbs_up += 1
            else:
                metrics.thumbs_down += 1


async def compute_report(db: Database, config: AppConfig, *, since: datetime, until: datetime,
                         by: str | None) -> Report:
    """Compute the report for [since, until) from ``ticket_events``, grouped ``by`` agent/category/priority/week."""
    if by is not None and by not in GROUPINGS:
        raise ValueError(f"--by must be one of {', '.join(GROUPINGS)}")
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be timezone-aware")
    calendars = _calendars(config)
    async with db.reading() as session:
        ids = select(TicketEvent.ticket_id).where(TicketEvent.at >= since, TicketEvent.at < until).distinct()
        tickets = {t.id: t for t in (await session.execute(select(Ticket).where(Ticket.id.in_(ids)))).scalars()}
        rows = (await session.execute(select(TicketEvent).where(
            TicketEvent.ticket_id.in_(ids), TicketEvent.at < until).order_by(
            TicketEvent.ticket_id, TicketEvent.at, TicketEvent.id))).scalars().all()
        people = {p.id: p for p in (await session.execute(select(Person).where(Person.id.in_(
            select(TicketEvent.actor_id).where(TicketEvent.ticket_id.in_(ids)).distinct())))).scalars()}
    by_ticket: dict[int, list[TicketEvent]] = {}
    for row in rows:
        by_ticket.setdefault(row.ticket_id, []).append(row)

    total = Metrics()
    groups: dict[str, Metrics] = {}
    for ticket_id, ticket in sorted(tickets.items()):
        facts = _walk(ticket, by_ticket.get(ticket_id, []), config, calendars(ticket.calendar), since, until)
        _add(total, facts, since=since, until=until)
        if by == "week":
            for part, at in (("opened", facts.opened_at), ("resolved", facts.resolved_at),
                             ("survey", facts.survey_sent_at)):
                if at is not None and since <= at < until:
                    _add(groups.setdefault(week_of(at), Metrics()), facts, since=since, until=until, part=part)
        elif by is not None:
            key = _group_key(by, ticket, facts, people)
            _add(groups.setdefault(key, Metrics()), facts, since=since, until=until)
    ordered = dict(sorted(groups.items(), key=lambda item: (item[0].startswith("("), item[0])))
    return Report(since=since, until=until, by=by, total=total, groups=ordered)


def _group_key(by: str, ticket: Ticket, facts: _TicketFacts, people: dict[int, Person]) -> str:
    if by == "agent":
        person = people.get(facts.agent_id) if facts.agent_id is not None else None
        return person.display_name if person else UNASSIGNED
    if by == "category":
        return ticket.category or UNCATEGORISED
    return ticket.priority


# -- rendering --------------------------------------------------------------------------------------
def _columns(report: Report) -> list[tuple[str, Metrics]]:
    return [(TOTAL, report.total), *report.groups.items()]


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value)}"
    return str(value)


def _period(report: Report) -> str:
    return f"{report.since.isoformat()} to {report.until.isoformat()}"


def render_table(report: Report) -> str:
    """A plain-text table: one row per measure, one column for the desk and each group."""
    columns = _columns(report)
    header = ["Measure", *[name for name, _ in columns]]
    summaries = [metrics.summary() for _, metrics in columns]
    lines = [header] + [[label, *[_fmt(summary[key]) for summary in summaries]] for key, label in COLUMNS]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [f"IT desk report, {_period(report)}" + (f", by {report.by}" if report.by else ""), ""]
    for index, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                             for i, cell in enumerate(line)).rstrip())
        if index == 0:
            out.append("  ".join("-" * width for width in widths))
    out += ["", report.grade_rule, report.definitions]
    return "\n".join(out) + "\n"


def render_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n"


def render_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["group", *[key for key, _ in COLUMNS]])
    for name, metrics in _columns(report):
        summary = metrics.summary()
        writer.writerow([name, *["" if summary[key] is None else summary[key] for key, _ in COLUMNS]])
    return buffer.getvalue()


_PALETTE = {"up": "#2e7d32", "down": "#c62828", "a": "#1565c0", "b": "#ef6c00", "grid": "#d0d0d0"}


def _bar_chart(title: str, labels: list[str], series: list[tuple[str, str, list[float | None]]], *,
               unit: str, max_value: float | None = None, chart_id: str) -> str:
    """A grouped horizontal bar chart as inline SVG; every bar is labelled with its value."""
    escape = html.escape
    values = [v for _, _, data in series for v in data if v is not None]
    top = max_value if max_value is not None else max([*values, 0.0]) or 1.0
    label_w, plot_w, bar_h, gap = 170, 420, 18, 14
    group_h = bar_h * len(series) + gap
    legend_h = 24
    height = 40 + legend_h + group_h * max(1, len(labels))
    width = label_w + plot_w + 90
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{chart_id}" role="img" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" aria-label="{escape(title)}">',
             f"<title>{escape(title)}</title>",
             f'<text x="0" y="18" font-size="15" font-weight="bold">{escape(title)}</text>']
    x = label_w
    for name, colour, _ in series:
        parts.append(f'<rect x="{x}" y="28" width="12" height="12" fill="{colour}"/>'
                     f'<text x="{x + 16}" y="39" font-size="12">{escape(name)}</text>')
        x += 24 + 8 * len(name)
    for tick in range(5):
        tx = label_w + plot_w * tick / 4
        parts.append(f'<line x1="{tx:.1f}" y1="{40 + legend_h - 4}" x2="{tx:.1f}" y2="{height - gap + 4}" '
                     f'stroke="{_PALETTE["grid"]}" stroke-width="1"/>')
    for row, label in enumerate(labels):
        y0 = 40 + legend_h + row * group_h
        parts.append(f'<text x="{label_w - 8}" y="{y0 + bar_h * len(series) / 2 + 4:.1f}" font-size="12" '
                     f'text-anchor="end">{escape(label)}</text>')
        for index, (name, colour, data) in enumerate(series):
            value = data[row]
            y = y0 + index * bar_h
            if value is None:
                parts.append(f'<text x="{label_w + 4}" y="{y + bar_h - 5}" font-size="11" fill="#666">no data</text>')
                continue
            w = plot_w * min(value, top) / top if top else 0
            parts.append(f'<rect class="bar" x="{label_w}" y="{y + 1}" width="{w:.1f}" height="{bar_h - 2}" '
                         f'fill="{colour}"><title>{escape(label)} — {escape(name)}: {_fmt(round(value, 2))}{unit}'
                         f"</title></rect>")
            parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 5}" font-size="11">'
                         f"{_fmt(round(value, 1))}{unit}</text>")
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: Report) -> str:
    """A self-contained HTML page (no scripts, no network) with the table and inline-SVG charts."""
    escape = html.escape
    columns = _columns(report)
    labels = [name for name, _ in columns]
    charts = [
        _bar_chart("Customer satisfaction and survey response", labels, [
            ("CSAT %", _PALETTE["up"], [m.csat for _, m in columns]),
            ("Response rate %", _PALETTE["a"], [m.response_rate for _, m in columns])],
            unit="%", max_value=100.0, chart_id="chart-csat"),
        _bar_chart("SLA attainment", labels, [
            ("First response %", _PALETTE["a"], [m.first_response_attainment for _, m in columns]),
            ("Resolution %", _PALETTE["b"], [m.resolution_attainment for _, m in columns])],
            unit="%", max_value=100.0, chart_id="chart-sla"),
        _bar_chart("Resolution time (business hours)", labels, [
            ("Median", _PALETTE["a"], [median(m.resolution_hours) for _, m in columns]),
            ("p90", _PALETTE["b"], [p90(m.resolution_hours) for _, m in columns])],
            unit="h", chart_id="chart-resolution"),
        _bar_chart("Tickets opened and resolved", labels, [
            ("Opened", _PALETTE["a"], [float(m.opened) for _, m in columns]),
            ("Resolved", _PALETTE["up"], [float(m.resolved) for _, m in columns])],
            unit="", chart_id="chart-volume"),
    ]
    summaries = [m.summary() for _, m in columns]
    head = "".join(f"<th>{escape(name)}</th>" for name in labels)
    body = "".join(
        f"<tr><th scope=row>{escape(label)}</th>" + "".join(f"<td>{escape(_fmt(s[key]))}</td>" for s in summaries)
        + "</tr>" for key, label in COLUMNS)
    grade = report.total.grade
    title = f"IT desk report — {_period(report)}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #222; }}
.grade {{ font-size: 3rem; font-weight: bold; display: inline-block; padding: 0 1rem; border: 3px solid #1565c0;
  border-radius: 8px; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th[scope=row] {{ text-align: left; font-weight: normal; }}
.chart {{ display: block; margin: 1.5rem 0; max-width: 100%; height: auto; }}
.rule {{ color: #444; max-width: 60rem; }}
</style></head>
<body>
<h1>{escape(title)}</h1>
<p>Report card: <span class="grade" id="grade">{escape(grade)}</span></p>
<p class="rule" id="grade-rule">{escape(report.grade_rule)}</p>
{"".join(charts)}
<table id="numbers"><thead><tr><th>Measure</th>{head}</tr></thead><tbody>{body}</tbody></table>
<p class="rule">{escape(report.definitions)}</p>
</body></html>
"""


RENDERERS: dict[str, Callable[[Report], str]] = {
    "table": render_table, "json": render_json, "csv": render_csv, "html": render_html}


# -- command line -----------------------------------------------------------------------------------
def parse_since(value: str, now: datetime) -> datetime:
    """``30d``/``2w``/``12h`` back from now, or an ISO date/datetime (UTC unless it has a zone)."""
    from bot.durations import parse_duration

    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f'"{value}" is not a period; write 30d, 2w or 2026-11-01') from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``ithelp report`` to the CLI's subparsers."""
    report: argparse.ArgumentParser = subparsers.add_parser(
        "report", help="CSAT, SLA and volume numbers from the ticket history")
    report.add_argument("--config", help="path to app.yaml (default: $ITHELP_CONFIG or ./app.yaml)")
    report.add_argument("--since", default="30d", help="how far back: 30d, 2w, or a date like 2026-11-01 (default 30d)")
    report.add_argument("--until", help="end of the period: a date/time, or 7d for a week ago (default now)")
    report.add_argument("--by", choices=GROUPINGS, help="one column per agent, category, priority or week")
    report.add_argument("--format", choices=FORMATS, default="table")
    report.add_argument("--output", help="write to this file instead of standard output")
    report.set_defaults(func=cmd_report)
    return report


def cmd_report(args: argparse.Namespace, *, now: datetime | None = None) -> int:
    import os

    from bot.config import ConfigError, load_config

    path = Path(args.config or os.environ.get("ITHELP_CONFIG", "app.yaml"))
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: the configuration has problems:", file=sys.stderr)
        for where, message in exc.problems:
            print(f"  {where}: {message}", file=sys.stderr)
        return 2
    from bot.clock import SystemClock

    now = now or SystemClock().now()
    try:
        since = parse_since(args.since, now)
        until = parse_since(args.until, now) if args.until else now
    except argparse.ArgumentTypeError as exc:
        print(str(exc), file=sys.stderr)
        return 2

    async def run() -> Report:
        db = Database(config.database.url, schema=config.database.schema_name)
        try:
            return await compute_report(db, config, since=since, until=until, by=args.by)
        finally:
            await db.dispose()

    text = RENDERERS[args.format](asyncio.run(run()))
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0
