"""The report as one self-contained HTML page: no scripts, no network, charts as inline SVG.

``--by week`` draws trends: CSAT and survey response, SLA attainment, median first-response and resolution
times, and volume, each a full-width chart with time on the x axis. Every chart uses the same viewBox width
and plot margins and the same week-to-x mapping, so with the page's width they stack aligned: a drop in one
lines up with the others. Other groupings (agent, category, priority) draw grouped horizontal bars.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from surveys.report_metrics import GroupFigures, Report, median, p90

WIDTH = 1000
"""Every chart's viewBox width; with the same margins, the x of a week is the same in every chart."""
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 40, 34
PLOT_HEIGHT = 150
PALETTE = {"green": "#2e7d32", "red": "#c62828", "blue": "#1565c0", "orange": "#ef6c00", "grid": "#e0e0e0",
           "axis": "#757575", "purple": "#6a1b9a"}

Series = tuple[str, str, list[float | None]]


def format_period(since: datetime, until: datetime) -> str:
    """The period as people write it (with an en dash): "2 Sep - 2 Dec 2026", "23-27 Nov 2026", "2 Dec 2025 -
    2 Dec 2026"; ``until`` is exclusive."""
    first = since.astimezone(UTC).date()
    last = (until - timedelta(microseconds=1)).astimezone(UTC).date()
    if first == last:
        return _day(first, year=True)
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day}–{_day(last, year=True)}"
    if first.year == last.year:
        return f"{_day(first, year=False)} – {_day(last, year=True)}"
    return f"{_day(first, year=True)} – {_day(last, year=True)}"


def _day(d: date, *, year: bool) -> str:
    return f"{d.day} {d:%b}" + (f" {d.year}" if year else "")


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "no data"
    return f"{value:.0f}{unit}" if unit == "%" else f"{value:.1f}{unit}"


@dataclass(frozen=True)
class _Axis:
    """Weeks (their Mondays) mapped to x across the plot's width, the same for every chart."""

    mondays: list[date]

    def x(self, index: int) -> float:
        # Inset by half a column so the first and last weeks' columns stay inside the plot.
        inset = min(14.0, (WIDTH - LEFT - RIGHT) / max(len(self.mondays), 1) / 2)
        span = WIDTH - LEFT - RIGHT - 2 * inset
        if len(self.mondays) == 1:
            return LEFT + inset + span / 2
        return LEFT + inset + span * index / (len(self.mondays) - 1)

    def ticks(self) -> list[tuple[float, str]]:
        # About eight labels whatever the length; the first of each month, or every few weeks for short periods.
        step = max(1, round(len(self.mondays) / 8))
        return [(self.x(i), f"{d.day} {d:%b}") for i, d in enumerate(self.mondays) if i % step == 0]


def _week_monday(label: str) -> date:
    year, week = label.split("-W")
    return date.fromisocalendar(int(year), int(week), 1)


def _weeks_between(since: datetime, until: datetime) -> list[str]:
    # Every ISO week the period touches, with or without data, so the x axis is continuous in time.
    last = (until - timedelta(microseconds=1)).astimezone(UTC).date()
    first = since.astimezone(UTC).date()
    monday = first - timedelta(days=first.weekday())
    weeks = []
    while monday <= last:
        year, week, _ = monday.isocalendar()
        weeks.append(f"{year}-W{week:02d}")
        monday += timedelta(days=7)
    return weeks


def _line_chart(chart_id: str, title: str, axis: _Axis, labels: list[str], series: Sequence[Series], *,
                unit: str, top: float | None = None, columns: bool = False) -> str:
    escape = html.escape
    values = [v for _, _, data in series for v in data if v is not None]
    ceiling = top if top is not None else _nice(max(values, default=0.0))
    height = TOP + PLOT_HEIGHT + BOTTOM
    base = TOP + PLOT_HEIGHT

    def y(value: float) -> float:
        return base - PLOT_HEIGHT * min(value, ceiling) / ceiling

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart trend" id="{chart_id}" role="img" '
             f'viewBox="0 0 {WIDTH} {height}" preserveAspectRatio="xMidYMid meet" aria-label="{escape(title)}">',
             f"<title>{escape(title)}</title>",
             f'<text x="{LEFT}" y="16" font-size="15" font-weight="bold">{escape(title)}</text>']
    x = float(WIDTH - RIGHT)
    for name, colour, _ in reversed(series):
        x -= 22 + 7.5 * len(name)
        parts.append(f'<rect x="{x:.0f}" y="6" width="12" height="12" fill="{colour}"/>'
                     f'<text x="{x + 16:.0f}" y="16" font-size="12">{escape(name)}</text>')
    for step in range(5):
        level = ceiling * step / 4
        gy = y(level)
        parts.append(f'<line x1="{LEFT}" y1="{gy:.1f}" x2="{WIDTH - RIGHT}" y2="{gy:.1f}" stroke="{PALETTE["grid"]}"/>'
                     f'<text x="{LEFT - 6}" y="{gy + 4:.1f}" font-size="11" text-anchor="end" fill="#555">'
                     f"{level:g}{unit}</text>")
    for tx, text in axis.ticks():
        parts.append(f'<line x1="{tx:.1f}" y1="{base}" x2="{tx:.1f}" y2="{base + 5}" stroke="{PALETTE["axis"]}"/>'
                     f'<text x="{tx:.1f}" y="{base + 18}" font-size="11" text-anchor="middle" fill="#555">'
                     f"{escape(text)}</text>")
    parts.append(f'<line x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}" stroke="{PALETTE["axis"]}"/>')
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    bar = max(1.0, min(14.0, slot * 0.8 / max(len(series), 1)))
    for index, (name, colour, data) in enumerate(series):
        if columns:
            for i, value in enumerate(data):
                if value is None:
                    continue
                cx = axis.x(i) + (index - (len(series) - 1) / 2) * bar
                parts.append(f'<rect class="point" data-week="{labels[i]}" data-series="{escape(name)}" '
                             f'x="{cx - bar / 2:.1f}" y="{y(value):.1f}" width="{bar:.1f}" '
                             f'height="{base - y(value):.1f}" fill="{colour}"><title>{labels[i]} — {escape(name)}: '
                             f"{_fmt(value, unit)}</title></rect>")
            continue
        runs: list[list[str]] = [[]]
        for i, value in enumerate(data):
            if value is None:
                runs.append([])
                continue
            runs[-1].append(f"{axis.x(i):.1f},{y(value):.1f}")
            parts.append(f'<circle class="point" data-week="{labels[i]}" data-series="{escape(name)}" '
                         f'cx="{axis.x(i):.1f}" cy="{y(value):.1f}" r="3" fill="{colour}"><title>{labels[i]} — '
                         f"{escape(name)}: {_fmt(value, unit)}</title></circle>")
        parts.extend(f'<polyline class="line" fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(run)}"/>'
                     for run in runs if len(run) > 1)
    parts.append("</svg>")
    return "".join(parts)


def _nice(value: float) -> float:
    # A round ceiling for the y axis: 1, 2, 2.5, 5 or 10 times a power of ten.
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for factor in (1.0, 2.0, 2.5, 5.0):
        if value <= factor * power:
            return factor * power
    return 10.0 * power


def trend_charts(report: Report) -> list[str]:
    """The stacked, aligned weekly trend charts of a ``--by week`` report."""
    labels = _weeks_between(report.since, report.until)
    axis = _Axis([_week_monday(label) for label in labels])
    weeks = [report.groups.get(label, GroupFigures()) for label in labels]

    def each(measure: Callable[[GroupFigures], float | None]) -> list[float | None]:
        return [measure(m) for m in weeks]

    return [
        _line_chart("chart-csat", "Customer satisfaction and survey response", axis, labels, [
            ("CSAT %", PALETTE["green"], each(lambda m: m.csat)),
            ("Response rate %", PALETTE["blue"], each(lambda m: m.response_rate))], unit="%", top=100.0),
        _line_chart("chart-sla", "SLA attainment", axis, labels, [
            ("First response", PALETTE["blue"], each(lambda m: m.first_response_attainment)),
            ("Resolution", PALETTE["orange"], each(lambda m: m.resolution_attainment))], unit="%", top=100.0),
        _line_chart("chart-times", "Median time (business hours)", axis, labels, [
            ("First response", PALETTE["blue"], each(lambda m: median(m.first_response_hours))),
            ("Resolution", PALETTE["orange"], each(lambda m: median(m.resolution_hours)))], unit="h"),
        _line_chart("chart-volume", "Tickets per week", axis, labels, [
            ("Opened", PALETTE["blue"], each(lambda m: float(m.opened))),
            ("Resolved", PALETTE["green"], each(lambda m: float(m.resolved)))], unit="", columns=True),
    ]


def _bar_chart(chart_id: str, title: str, labels: list[str], series: Sequence[Series], *, unit: str,
               top: float | None = None) -> str:
    """A grouped horizontal bar chart (one group per agent/category/priority), full width; bars are labelled."""
    escape = html.escape
    values = [v for _, _, data in series for v in data if v is not None]
    ceiling = top if top is not None else _nice(max(values, default=0.0))
    label_w, plot_w, bar_h, gap = 200, WIDTH - 200 - 80, 18, 14
    group_h = bar_h * len(series) + gap
    height = 64 + group_h * max(1, len(labels))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{chart_id}" role="img" '
             f'viewBox="0 0 {WIDTH} {height}" aria-label="{escape(title)}"><title>{escape(title)}</title>',
             f'<text x="0" y="18" font-size="15" font-weight="bold">{escape(title)}</text>']
    x = label_w
    for name, colour, _ in series:
        parts.append(f'<rect x="{x}" y="28" width="12" height="12" fill="{colour}"/>'
                     f'<text x="{x + 16}" y="39" font-size="12">{escape(name)}</text>')
        x += 24 + 8 * len(name)
    for row, label in enumerate(labels):
        y0 = 60 + row * group_h
        parts.append(f'<text x="{label_w - 8}" y="{y0 + bar_h * len(series) / 2 + 4:.1f}" font-size="12" '
                     f'text-anchor="end">{escape(label)}</text>')
        for index, (name, colour, data) in enumerate(series):
            value, y = data[row], y0 + index * bar_h
            if value is None:
                parts.append(f'<text x="{label_w + 4}" y="{y + bar_h - 5}" font-size="11" fill="#666">no data</text>')
                continue
            w = plot_w * min(value, ceiling) / ceiling
            parts.append(f'<rect class="bar" x="{label_w}" y="{y + 1}" width="{w:.1f}" height="{bar_h - 2}" '
                         f'fill="{colour}"><title>{escape(label)} — {escape(name)}: {_fmt(value, unit)}</title></rect>'
                         f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 5}" font-size="11">'
                         f"{_fmt(value, unit)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def group_charts(report: Report) -> list[str]:
    """Bar charts comparing the desk with each agent/category/priority."""
    columns = report.columns()
    labels = [name for name, _ in columns]
    via_incident: list[Series] = [("Resolved via incident", PALETTE["purple"], [
        float(m.resolved_via_incident) for _, m in columns])] if report.separates_incidents else []
    return [
        _bar_chart("chart-csat", "Customer satisfaction and survey response", labels, [
            ("CSAT %", PALETTE["green"], [m.csat for _, m in columns]),
            ("Response rate %", PALETTE["blue"], [m.response_rate for _, m in columns])], unit="%", top=100.0),
        _bar_chart("chart-sla", "SLA attainment", labels, [
            ("First response %", PALETTE["blue"], [m.first_response_attainment for _, m in columns]),
            ("Resolution %", PALETTE["orange"], [m.resolution_attainment for _, m in columns])], unit="%", top=100.0),
        _bar_chart("chart-resolution", "Resolution time (business hours)", labels, [
            ("Median", PALETTE["blue"], [median(m.resolution_hours) for _, m in columns]),
            ("p90", PALETTE["orange"], [p90(m.resolution_hours) for _, m in columns])], unit="h"),
        _bar_chart("chart-volume", "Tickets opened and resolved", labels, [
            ("Opened", PALETTE["blue"], [float(m.opened) for _, m in columns]),
            ("Resolved", PALETTE["green"], [float(m.resolved) for _, m in columns]), *via_incident], unit=""),
    ]


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value)}"
    return str(value)


def _fmt_nps(value: float | None) -> str:
    # NPS is a score from -100 to +100, not a percentage; the sign is part of it.
    return "–" if value is None else f"{value:+.0f}"


def render_html(report: Report) -> str:
    """A self-contained HTML page (no scripts, no network) with the charts and the table of numbers."""
    escape = html.escape
    charts = trend_charts(report) if report.by == "week" else group_charts(report)
    columns = report.columns()
    summaries = [report.summary_of(m) for _, m in columns]
    head = "".join(f"<th>{escape(name)}</th>" for name, _ in columns)
    body = "".join(
        f"<tr><th scope=row>{escape(label)}</th>" + "".join(f"<td>{escape(_cell(s[key]))}</td>" for s in summaries)
        + "</tr>" for key, label in report.measures())
    total = summaries[0]
    period = format_period(report.since, report.until)
    title = f"IT desk report, {period}" + (f", by {report.by}" if report.by else "")
    tiles = "".join(f'<div class="tile"><div class="label">{escape(label)}</div><div class="value">'
                    f"{escape(text)}</div></div>" for label, text in (
                        ("CSAT", _fmt(total["csat_pct"], "%")),
                        ("Response rate", _fmt(total["response_rate_pct"], "%")),
                        ("NPS", _fmt_nps(total["nps"])),
                        ("First response SLA", _fmt(total["first_response_sla_pct"], "%")),
                        ("Resolution SLA", _fmt(total["resolution_sla_pct"], "%")),
                        ("Opened", str(total["opened"])), ("Resolved", str(total["resolved"]))))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem 2rem; color: #222; }}
h1 {{ font-size: 1.6rem; margin: 0 0 .5rem; }}
.headline {{ display: flex; flex-wrap: wrap; gap: 1rem; align-items: center; }}
.grade {{ font-size: 2.6rem; font-weight: bold; padding: 0 1rem; border: 3px solid #1565c0; border-radius: 8px; }}
.tile {{ border: 1px solid #ddd; border-radius: 6px; padding: .4rem .8rem; min-width: 8rem; }}
.tile .label {{ color: #555; font-size: .85rem; }} .tile .value {{ font-size: 1.4rem; font-weight: bold; }}
.charts {{ width: 100%; }}
.chart {{ display: block; width: 100%; height: auto; margin: .8rem 0; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th[scope=row] {{ text-align: left; font-weight: normal; }}
.rule {{ color: #444; max-width: 70rem; }}
</style></head>
<body>
<h1 id="title">{escape(title)}</h1>
<div class="headline"><div>Report card <span class="grade" id="grade">{escape(total["grade"])}</span></div>{tiles}</div>
<p class="rule" id="grade-rule">{escape(report.grade_rule)}</p>
<div class="charts">{"".join(charts)}</div>
<table id="numbers"><thead><tr><th>Measure</th>{head}</tr></thead><tbody>{body}</tbody></table>
<p class="rule">{escape(report.definitions)}</p>
</body></html>
"""
