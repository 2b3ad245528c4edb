"""``ithelp report``: the numbers that run the desk, from the ticket event trail (any period can be reproduced).

The facts come from ``surveys.report_data`` (SQL aggregation of the SLA clock's verdicts and the survey
events, streamed); ``surveys.report_metrics`` holds the measures and the grade; ``surveys.report_html`` draws
the page. This module renders the text formats and runs the command. Definitions are printed with every
report (``surveys.report_metrics.DEFINITIONS``):

* **Opened**: tickets whose ``opened`` event falls in [since, until).
* **Resolved**: tickets whose last ``resolved`` event before ``until`` falls in the period (a re-resolution
  does not count twice).
* **First response / resolution** verdicts and business hours are the SLA clock's (``bot.sla_rules``),
  stamped when the target stopped, with the target in force then.
* **Surveys**: polls whose ``survey_sent`` falls in the period; **response rate** = answered / sent;
  **CSAT** = 👍 / (👍 + 👎) over each ticket's final answer (up to ``until``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import IO, Any

from bot.config import AppConfig
from store.db import Database
from store.incident_models import incident_number
from surveys.report_aggregate import GROUPINGS, compute_report, week_of
from surveys.report_data import TicketFacts, names_of, ticket_facts
from surveys.report_html import format_period, render_html
from surveys.report_metrics import GRADE_RULE, GroupFigures, Report, grade_for, median, p90

__all__ = ["GRADE_RULE", "GROUPINGS", "GroupFigures", "Report", "add_report_parser", "compute_report", "grade_for",
           "median", "p90", "render_csv", "render_html", "render_json", "render_jsonl", "render_table",
           "ticket_lines", "week_of"]

FORMATS = ("table", "json", "csv", "html", "jsonl")


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value)}"
    return str(value)


def render_table(report: Report) -> str:
    """A plain-text table: one row per measure, one column for the desk and each group."""
    columns = report.columns()
    header = ["Measure", *[name for name, _ in columns]]
    summaries = [report.summary_of(metrics) for _, metrics in columns]
    lines = [header] + [[label, *[_fmt(summary[key]) for summary in summaries]] for key, label in report.measures()]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [f"IT desk report, {format_period(report.since, report.until)}" + (f", by {report.by}" if report.by else ""),
           ""]
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
    measures = report.measures()
    writer.writerow(["group", *[key for key, _ in measures]])
    for name, metrics in report.columns():
        summary = report.summary_of(metrics)
        writer.writerow([name, *["" if summary[key] is None else summary[key] for key, _ in measures]])
    return buffer.getvalue()


def render_jsonl(report: Report) -> str:
    """One JSON object a line: the desk, then each group (``--tickets`` exports tickets instead)."""
    return "".join(json.dumps({"group": name, **report.summary_of(metrics)}, ensure_ascii=False) + "\n"
                   for name, metrics in report.columns())


RENDERERS: dict[str, Callable[[Report], str]] = {
    "table": render_table, "json": render_json, "csv": render_csv, "html": render_html, "jsonl": render_jsonl}


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _hours(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


async def ticket_lines(db: Database, *, since: datetime, until: datetime) -> AsyncIterator[str]:
    """``--format jsonl --tickets``: one JSON line per ticket that took part in the period, with its facts and the
    SLA clock's verdicts, streamed (memory stays flat however long the history)."""
    names: dict[int, str] = {}
    async for facts in ticket_facts(db, since=since, until=until, with_agent=True):
        if facts.agent_id is not None and facts.agent_id not in names:
            names.update(await names_of(db, {facts.agent_id}))
        yield json.dumps(_ticket_record(facts, names), ensure_ascii=False) + "\n"


def _ticket_record(facts: TicketFacts, names: dict[int, str]) -> dict[str, Any]:
    return {
        "ticket": f"IT-{facts.ticket_id}", "priority": facts.priority, "category": facts.category,
        "opened_at": _iso(facts.opened_at), "first_response": facts.first_response,
        "first_response_hours": _hours(facts.first_response_hours), "resolved_at": _iso(facts.resolved_at),
        "resolution": facts.resolution, "resolution_hours": _hours(facts.resolution_hours),
        "reopened": facts.reopened, "agent": names.get(facts.agent_id) if facts.agent_id is not None else None,
        "survey_sent_at": _iso(facts.survey_sent_at), "survey_answer": facts.answer,
        "incident": None if facts.incident_id is None else incident_number(facts.incident_id),
    }


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
    report.add_argument("--tickets", action="store_true",
                        help="with --format jsonl: one line per ticket (times, SLA verdicts, agent, survey answer)")
    report.add_argument("--output", help="write to this file instead of standard output")
    report.set_defaults(func=cmd_report)
    return report


def cmd_report(args: argparse.Namespace, *, now: datetime | None = None) -> int:
    """Run ``ithelp report``."""
    if args.tickets and args.format != "jsonl":
        print("--tickets exports one line per ticket: use it with --format jsonl", file=sys.stderr)
        return 2
    from bot.config_cli import load_or_complain

    config = load_or_complain(args.config)
    if config is None:
        return 2
    from bot.clock import SystemClock

    now = now or SystemClock().now()
    try:
        since = parse_since(args.since, now)
        until = parse_since(args.until, now) if args.until else now
    except argparse.ArgumentTypeError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    from sqlalchemy.exc import OperationalError, ProgrammingError

    try:
        with open(args.output, "w", encoding="utf-8") if args.output else contextlib.nullcontext(sys.stdout) as out:
            asyncio.run(_write(config, args, since, until, out))
    except (OperationalError, ProgrammingError) as exc:
        if "report_facts" not in str(exc):
            raise
        print("The database is older than this ithelp: run `ithelp db upgrade` (ithelp serve does it on start).",
              file=sys.stderr)
        return 2
    if args.output:
        print(f"wrote {args.output}")
    return 0


async def _write(config: AppConfig, args: argparse.Namespace, since: datetime, until: datetime, out: IO[str]) -> None:
    db = Database(config.database.url, schema=config.database.schema_name)
    try:
        if args.tickets:
            async for line in ticket_lines(db, since=since, until=until):
                out.write(line)
            return
        report = await compute_report(db, config, since=since, until=until, by=args.by)
        rendered = RENDERERS[args.format](report)
        if config.knowledge.enabled and args.format in ("table", "json"):
            from surveys.report_knowledge import knowledge_report, render_knowledge_table

            knowledge = await knowledge_report(db, since=since, until=until)
            if args.format == "table":
                rendered += "\n" + render_knowledge_table(knowledge)
            else:
                rendered = json.dumps({**json.loads(rendered), "knowledge": knowledge.as_dict()}, indent=2,
                                      ensure_ascii=False) + "\n"
        out.write(rendered)
        if args.format == "table":
            from bot.incidents.report import incident_figures, render_incidents

            out.write(render_incidents(await incident_figures(db, since=since, until=until)))
    finally:
        await db.dispose()
