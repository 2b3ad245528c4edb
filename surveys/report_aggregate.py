"""The report's numbers, aggregated in SQL over the per-ticket facts the SLA clock keeps (``report_facts``).

For every ticket whose facts row is its history as of ``until`` (``surveys.report_data.exact``), the database
counts each family of facts in its own period column, grouped by the report's key:

* **opened** (``opened_at`` in the period): first-response verdicts met / missed;
* **resolved** (the latest ``resolved_at`` in the period): reopened, resolution verdicts met / missed;
* **surveyed** (the latest survey's ``survey_sent_at`` in the period): answered, 👍, 👎;

and sends only the business seconds the medians and p90s need (one joined text per group). The few tickets
whose row is not exact (a period that ends before their last change, or tickets from before the read model)
are replayed from their events (``surveys.report_data.ticket_facts``) and added one by one, by the same rules.

By agent, each statement also groups by whether the ticket is linked to an incident (its id in
``incident_links``, in the same pass): linked tickets go to their own column, (incident-linked), and
count towards their resolver's ``resolved_via_incident`` instead of the agent's own figures.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import ColumnElement, Date, String, and_, case, func, literal, select
from sqlalchemy.ext.compiler import compiles

from bot.config import AppConfig
from bot.sla_rules import MET, MISSED
from store.db import Database
from store.incident_models import IncidentLink
from store.nps_models import NpsPulse
from store.report_models import ReportFacts
from surveys.report_data import TicketFacts, exact, names_of, scanned, ticket_facts
from surveys.report_metrics import DEFINITIONS, INCIDENT_DEFINITION, GroupFigures, Report

GROUPINGS = ("agent", "category", "priority", "week")
UNASSIGNED, UNCATEGORISED, INCIDENT_LINKED = "(unassigned)", "(none)", "(incident-linked)"
OPENED, RESOLVED, SURVEYED = "opened", "resolved", "survey"
_BUCKETS = 64


def week_of(at: datetime | date) -> str:
    """The ISO week an instant (UTC) or a date falls in, e.g. ``2026-W48``."""
    day = at.astimezone(UTC).date() if isinstance(at, datetime) else at
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


class _DayOf(ColumnElement[date]):
    """The UTC day an instant falls in, the cheapest way each database has (weeks are made of days in Python:
    a year is 365 groups)."""

    inherit_cache = True
    type = Date()

    def __init__(self, at: Any) -> None:
        self.at = at


@compiles(_DayOf, "sqlite")
def _day_sqlite(element: _DayOf, compiler: Any, **kw: Any) -> str:
    # Stored as "YYYY-MM-DD HH:MM:SS.ffffff" (UTC): the day is its first ten characters.
    return f"substr({compiler.process(element.at, **kw)}, 1, 10)"


@compiles(_DayOf, "postgresql")
def _day_postgresql(element: _DayOf, compiler: Any, **kw: Any) -> str:
    return f"CAST({compiler.process(element.at, **kw)} AS DATE)"


def _period_column(family: str) -> Any:
    return {OPENED: ReportFacts.opened_at, RESOLVED: ReportFacts.resolved_at, SURVEYED: ReportFacts.survey_sent_at}[
        family]


def _key(by: str | None, family: str) -> Any:
    if by == "week":
        return _DayOf(_period_column(family))
    if by == "agent":
        return func.coalesce(ReportFacts.resolver_id, ReportFacts.claimer_id)
    if by == "category":
        return func.coalesce(ReportFacts.category, UNCATEGORISED)
    if by == "priority":
        return ReportFacts.priority
    return None


_LINKED = case((ReportFacts.ticket_id.in_(select(IncidentLink.ticket_id)), 1), else_=0)


def _keys(by: str | None, family: str) -> list[Any]:
    """The GROUP BY columns: the report's key (by agent, and whether the ticket is incident-linked)."""
    key = _key(by, family)
    if by == "agent":
        return [key, _LINKED]
    return [key if key is not None else literal("")]


def _group_of(groups: dict[Any, GroupFigures], by: str | None, row: Any) -> GroupFigures:
    return groups.setdefault(INCIDENT_LINKED if by == "agent" and row[1] else row[0], GroupFigures())


def _count(*conditions: ColumnElement[bool]) -> Any:
    return func.coalesce(func.sum(case((and_(*conditions), 1), else_=0)), 0)


_COUNTS: dict[str, tuple[tuple[str, Callable[[], Any]], ...]] = {
    OPENED: (("opened", func.count),
             ("first_response_met", lambda: _count(ReportFacts.first_response == MET)),
             ("first_response_missed", lambda: _count(ReportFacts.first_response == MISSED))),
    RESOLVED: (("resolved", func.count),
               ("reopened", lambda: _count(ReportFacts.reopened_at.is_not(None))),
               ("resolution_met", lambda: _count(ReportFacts.resolution == MET)),
               ("resolution_missed", lambda: _count(ReportFacts.resolution == MISSED))),
    SURVEYED: (("surveys_sent", func.count),
               ("surveys_answered", lambda: _count(ReportFacts.survey_answer.in_(("up", "down")))),
               ("thumbs_up", lambda: _count(ReportFacts.survey_answer == "up")),
               ("thumbs_down", lambda: _count(ReportFacts.survey_answer == "down"))),
}
_SECONDS = {OPENED: ("first_response_hours", ReportFacts.first_response_seconds, ReportFacts.first_response),
            RESOLVED: ("resolution_hours", ReportFacts.resolution_seconds, ReportFacts.resolution)}


def _from_facts(statement: Any, family: str, since: datetime, until: datetime) -> Any:
    column = _period_column(family)
    # One table, no joins: one pass over narrow rows per family (by agent, each row also looked up in the small
    # set of incident-linked ticket ids, read once per statement).
    return statement.select_from(ReportFacts).where(exact(until, scan=True), scanned(column) >= since,
                                                    scanned(column) < until)


async def _aggregate(db: Database, by: str | None, since: datetime, until: datetime) -> dict[Any, GroupFigures]:
    """GroupFigures per raw group key (a Monday, an agent id, a category, a priority, or "") from the exact rows."""
    groups: dict[Any, GroupFigures] = {}
    async with db.reading() as session:
        conn = await session.connection()
        for family, counts in _COUNTS.items():
            keyed = _keys(by, family)
            statement = _from_facts(select(*keyed, *(make() for _, make in counts)), family, since, until)
            for row in await conn.execute(statement.group_by(*keyed)):
                metrics, values = _group_of(groups, by, row), row[len(keyed):]
                for (name, _), value in zip(counts, values, strict=True):
                    setattr(metrics, name, getattr(metrics, name) + int(value))
                if by == "agent" and row[1] and family == RESOLVED:
                    groups.setdefault(row[0], GroupFigures()).resolved_via_incident += int(values[0])
            if family in _SECONDS:
                await _add_hours(conn, groups, by, family, since, until)
    return groups


class _Joined(ColumnElement[str]):
    """A group's numbers as one comma-joined text: thousands of values cross to Python as one string each group
    and are parsed in C (``float`` over ``str.split``) instead of one result row each."""

    inherit_cache = True
    type = String()

    def __init__(self, column: Any) -> None:
        self.column = column


@compiles(_Joined, "sqlite")
def _joined_sqlite(element: _Joined, compiler: Any, **kw: Any) -> str:
    return f"group_concat({compiler.process(element.column, **kw)}, ',')"


@compiles(_Joined, "postgresql")
def _joined_postgresql(element: _Joined, compiler: Any, **kw: Any) -> str:
    return f"string_agg(CAST({compiler.process(element.column, **kw)} AS TEXT), ',')"


async def _add_hours(conn: Any, groups: dict[Any, GroupFigures], by: str | None, family: str, since: datetime,
                     until: datetime) -> None:
    # The business seconds behind the medians and p90s, one joined text per group.
    field, seconds, verdict = _SECONDS[family]
    keyed = _keys(by, family)
    # Split into buckets so no single text (and its parsed list) holds a whole decade of values at once.
    bucket = ReportFacts.ticket_id % _BUCKETS
    statement = _from_facts(select(*keyed, _Joined(seconds)), family, since, until).where(
        seconds.is_not(None), verdict.is_not(None)).group_by(*keyed, bucket)
    for row in await conn.execute(statement):
        if joined := row[-1]:
            getattr(_group_of(groups, by, row), field).extend(value / 3600 for value in map(float, joined.split(",")))


async def _add_nps(db: Database, groups: dict[Any, GroupFigures], by: str | None, since: datetime,
                   until: datetime) -> None:
    """NPS pulses sent in the period, by each person's answer as of ``until``: desk-wide, or per day (weeks)."""
    key = _DayOf(NpsPulse.sent_at) if by == "week" else literal("")
    answered = and_(NpsPulse.score.is_not(None), NpsPulse.answered_at < until)
    statement = (select(key, func.count(), _count(answered, NpsPulse.score >= 9),
                        _count(answered, NpsPulse.score.between(7, 8)), _count(answered, NpsPulse.score <= 6))
                 .where(NpsPulse.sent_at >= since, NpsPulse.sent_at < until).group_by(key))
    async with db.reading() as session:
        for group, sent, promoters, passives, detractors in (await session.execute(statement)).tuples():
            metrics = groups.setdefault(group, GroupFigures())
            metrics.nps_sent += int(sent)
            metrics.promoters += int(promoters)
            metrics.passives += int(passives)
            metrics.detractors += int(detractors)


def add_facts(metrics: GroupFigures, facts: TicketFacts, *, since: datetime, until: datetime,
              part: str | None = None) -> None:
    """Add one replayed ticket's ``facts`` to ``metrics`` (``part``: one family of facts, for weekly grouping)."""
    if part in (None, OPENED) and facts.opened_at is not None and since <= facts.opened_at < until:
        metrics.opened += 1
        if facts.first_response_hours is not None and facts.first_response is not None:
            metrics.first_response_hours.append(facts.first_response_hours)
        metrics.first_response_met += facts.first_response == MET
        metrics.first_response_missed += facts.first_response == MISSED
    if part in (None, RESOLVED) and facts.resolved_at is not None:
        metrics.resolved += 1
        metrics.reopened += int(facts.reopened)
        if facts.resolution_hours is not None:
            metrics.resolution_hours.append(facts.resolution_hours)
        metrics.resolution_met += facts.resolution == MET
        metrics.resolution_missed += facts.resolution == MISSED
    if part in (None, SURVEYED) and facts.survey_sent_at is not None:
        metrics.surveys_sent += 1
        metrics.surveys_answered += facts.answer in ("up", "down")
        metrics.thumbs_up += facts.answer == "up"
        metrics.thumbs_down += facts.answer == "down"


def _replayed_key(by: str | None, facts: TicketFacts) -> Any:
    if by == "agent":
        return facts.agent_id
    if by == "category":
        return facts.category or UNCATEGORISED
    if by == "priority":
        return facts.priority
    return ""


async def _add_replayed(db: Database, groups: dict[Any, GroupFigures], by: str | None, since: datetime,
                        until: datetime) -> None:
    async for facts in ticket_facts(db, since=since, until=until, with_agent=by == "agent", read_model=False):
        if by == "agent" and facts.incident_id is not None:
            add_facts(groups.setdefault(INCIDENT_LINKED, GroupFigures()), facts, since=since, until=until)
            if facts.resolved_at is not None:
                groups.setdefault(facts.agent_id, GroupFigures()).resolved_via_incident += 1
            continue
        if by != "week":
            add_facts(groups.setdefault(_replayed_key(by, facts), GroupFigures()), facts, since=since, until=until)
            continue
        for part, at in ((OPENED, facts.opened_at), (RESOLVED, facts.resolved_at), (SURVEYED, facts.survey_sent_at)):
            if at is not None and since <= at < until:
                add_facts(groups.setdefault(at.astimezone(UTC).date(), GroupFigures()), facts, since=since, until=until,
                          part=part)


def _merge(into: GroupFigures, other: GroupFigures) -> None:
    for name, value in vars(other).items():
        if isinstance(value, array):
            getattr(into, name).extend(value)
        else:
            setattr(into, name, getattr(into, name) + value)


async def _label(db: Database, by: str | None, groups: dict[Any, GroupFigures]) -> dict[str, GroupFigures]:
    if by == "agent":
        people = {key for key in groups if key not in (None, INCIDENT_LINKED)}
        names = await names_of(db, {int(key) for key in people})
        labels = {key: names.get(int(key), UNASSIGNED) if key in people else key or UNASSIGNED for key in groups}
    elif by == "week":
        labels = {key: week_of(key if isinstance(key, date) else date.fromisoformat(str(key))) for key in groups}
    else:
        labels = {key: str(key) for key in groups}
    named: dict[str, GroupFigures] = {}
    for key, metrics in groups.items():
        _merge(named.setdefault(labels[key], GroupFigures()), metrics)
    return dict(sorted(named.items(), key=lambda item: (item[0].startswith("("), item[0])))


async def compute_report(db: Database, config: AppConfig | None = None, *, since: datetime, until: datetime,
                         by: str | None) -> Report:
    """The report for [since, until), grouped ``by`` agent/category/priority/week, from the clock's verdicts.

    ``config`` is accepted for callers that have one; the numbers depend only on the stored history (the
    verdicts carry the targets that were in force), never on today's policies.
    """
    if by is not None and by not in GROUPINGS:
        raise ValueError(f"--by must be one of {', '.join(GROUPINGS)}")
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be timezone-aware")
    raw = await _aggregate(db, by, since, until)
    await _add_replayed(db, raw, by, since, until)
    if by in (None, "week"):  # NPS rates the desk, not an agent's or a category's tickets
        await _add_nps(db, raw, by, since, until)
    groups = await _label(db, by, raw)
    total = GroupFigures()
    for metrics in groups.values():
        _merge(total, metrics)
    if by not in (None, "week"):
        await _add_nps(db, {"": total}, None, since, until)
    if linked := groups.get(INCIDENT_LINKED):  # after the total: each one is counted there once, by its resolver
        linked.resolved_via_incident = linked.resolved
    definitions = f"{DEFINITIONS} {INCIDENT_DEFINITION}" if by == "agent" else DEFINITIONS
    return Report(since=since, until=until, by=by, total=total, groups=groups if by is not None else {},
                  definitions=definitions)
