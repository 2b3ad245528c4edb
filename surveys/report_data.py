"""The report's facts, aggregated in SQL from the ticket event trail and streamed one ticket at a time.

One ``GROUP BY ticket_id`` over the events before ``until`` of the tickets that did something in the period
(opened, resolved or surveyed) turns each ticket's history into one row of timestamps and the SLA clock's
verdicts; Python folds the rows into ``GroupFigures`` as they stream, so memory does not grow with the history
(no ORM object per event or per ticket). Verdicts are read, never re-derived: ``bot.sla_rules`` says what a
set of verdict events means.

What each ticket contributes (all as of ``until``):

* **opened** in [since, until); its **first response** verdict and time (the clock's stop verdict, or
  missed once breached while still running) for tickets opened in the period;
* **resolved**: its last ``resolved`` event before ``until`` when that falls in [since, until), with the
  clock's verdict of that resolution (a re-resolution after a reopen counts once, as it last stood);
* **reopened** at any time before ``until``; its last **survey** sent in the period and its final answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, ColumnElement, String, and_, case, cast, func, literal, or_, select, union
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased

from bot.sla_rules import (
    FIRST_RESPONSE,
    RESOLUTION,
    SLA_BREACHED,
    STOP_VERDICTS,
    first_response_verdict,
    resolution_verdict,
)
from store.db import Database
from store.incident_models import IncidentLink
from store.models import Person, Ticket, TicketEvent
from store.report_models import ReportFacts

_FACT_KINDS = ("opened", "resolved", "reopened", "claimed", *STOP_VERDICTS, SLA_BREACHED, "survey_sent",
               "survey_answered")
_PERIOD_KINDS = ("opened", "resolved", "survey_sent")
"""A ticket takes part in a period's report when one of these falls in it."""
_STREAM_CHUNK = 2000
_FACTS_TABLE = ReportFacts.__table__


class TicketFacts(NamedTuple):
    """What one ticket contributes to a report, as of its ``until``."""

    ticket_id: int
    priority: str
    category: str | None
    opened_at: datetime | None
    first_response: str | None
    """``met``/``missed`` (the SLA clock's verdict) or None while running / without a policy."""
    first_response_hours: float | None
    resolved_at: datetime | None
    """Its last resolution, when that fell in the period."""
    resolution: str | None
    resolution_hours: float | None
    reopened: bool
    survey_sent_at: datetime | None
    answer: str | None
    agent_id: int | None
    """Who worked it: the last resolver, else the last claimer (only read when asked for)."""
    incident_id: int | None = None
    """The incident it is linked to now (read with the agent): resolving the incident resolves it."""


def _utc(value: datetime | None) -> datetime | None:
    # Aggregates (MIN/MAX over a CASE) keep the column's type on both databases; this only makes sure.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class _JsonText(ColumnElement[str]):
    """``payload``'s ``key`` as text, the way each database reads it fastest (no CAST around it)."""

    inherit_cache = True
    type = String()

    def __init__(self, column: Any, key: str) -> None:
        self.column, self.key = column, key


@compiles(_JsonText, "sqlite")
def _json_text_sqlite(element: _JsonText, compiler: Any, **kw: Any) -> str:
    return f"json_extract({compiler.process(element.column, **kw)}, '$.{element.key}')"


@compiles(_JsonText, "postgresql")
def _json_text_postgresql(element: _JsonText, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.column, **kw)} ->> '{element.key}')"


class _Stamped(ColumnElement[str]):
    """``<at as fixed-width text>|<value>``: the MAX of these is the value of the latest row, in one aggregate
    (the time's text sorts as the time does: SQLite stores it so, PostgreSQL is asked for microseconds)."""

    inherit_cache = True
    type = String()

    def __init__(self, at: Any, value: Any) -> None:
        self.at, self.value = at, value


@compiles(_Stamped, "sqlite")
def _stamped_sqlite(element: _Stamped, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.at, **kw)} || '|' || {compiler.process(element.value, **kw)})"


@compiles(_Stamped, "postgresql")
def _stamped_postgresql(element: _Stamped, compiler: Any, **kw: Any) -> str:
    return (f"(to_char({compiler.process(element.at, **kw)}, 'YYYY-MM-DD HH24:MI:SS.US') || '|' || "
            f"{compiler.process(element.value, **kw)})")


class _Scanned(ColumnElement[Any]):
    """A column compared without its index on SQLite (``+column``): for a period covering most rows, a straight
    scan reads them several times faster than walking the index and jumping to each row. PostgreSQL chooses
    for itself from its statistics."""

    inherit_cache = True

    def __init__(self, column: Any) -> None:
        self.column = column
        self.type = column.type


@compiles(_Scanned)
def _scanned_default(element: _Scanned, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.column, **kw))


@compiles(_Scanned, "sqlite")
def _scanned_sqlite(element: _Scanned, compiler: Any, **kw: Any) -> str:
    return f"+{compiler.process(element.column, **kw)}"


def scanned(column: Any) -> Any:
    """``column`` for a range filter that should scan rather than use the column's index (see ``_Scanned``)."""
    return _Scanned(column)


def _unstamp(value: str | None) -> str | None:
    return None if value is None else value.partition("|")[2]


def _facts_statement(since: datetime, until: datetime, *, with_agent: bool, only_inexact: bool = False,
                     first_tracked: int | None = None) -> Any:
    e = aliased(TicketEvent, name="e")
    kind, at = e.kind, e.at
    metric = _JsonText(e.payload, "metric")
    elapsed = _JsonText(e.payload, "elapsed_seconds")

    def first(*conditions: ColumnElement[bool]) -> Any:
        return func.min(case((and_(*conditions), at)))

    def last(*conditions: ColumnElement[bool]) -> Any:
        return func.max(case((and_(*conditions), at)))

    def latest(value: Any, *conditions: ColumnElement[bool]) -> Any:
        return func.max(case((and_(*conditions), _Stamped(at, value))))

    def seen(*conditions: ColumnElement[bool]) -> Any:
        return func.max(case((and_(*conditions), 1), else_=0))

    stop = kind.in_(STOP_VERDICTS)
    stop_and_elapsed = kind + literal("|") + elapsed
    active: Any = select(TicketEvent.ticket_id).where(
        TicketEvent.kind.in_(_PERIOD_KINDS), TicketEvent.at >= since, TicketEvent.at < until)
    if only_inexact:
        # Only the tickets whose facts row is not exact: found from the tickets (an index probe each) rather than
        # by scanning every event of the period; one with nothing in the period yields no facts.
        # The tickets whose facts row is not exact: rows changed since `until`, and tickets opened before the
        # table existed (every ticket since has its row from its opening, so they are the ids below the first
        # row, `first_tracked`: a number, so the planner sees how few). Both are index ranges: nothing here reads
        # every ticket.
        untracked = Ticket.id < first_tracked if first_tracked is not None else Ticket.id.is_not(None)
        active = union(select(ReportFacts.ticket_id).where(ReportFacts.changed_at >= until),
                       select(Ticket.id).where(untracked))
    agent = (latest(cast(e.actor_id, String), kind == "resolved").label("resolver"),
             latest(cast(e.actor_id, String), kind == "claimed").label("claimer"),
             func.max(IncidentLink.incident_id).label("incident_id")) if with_agent else (
        literal(None, String).label("resolver"), literal(None, String).label("claimer"),
        literal(None, BigInteger).label("incident_id"))
    statement = (
        select(
            e.ticket_id.label("ticket_id"), func.max(Ticket.priority).label("priority"),
            func.max(Ticket.category).label("category"),
            first(kind == "opened").label("opened_at"),
            last(kind == "resolved").label("resolved_at"),
            seen(kind == "reopened").label("reopened"),
            # The SLA clock's verdicts: the kind and business seconds of the latest stop of each target (a
            # calendar change between two resolutions can make a later one shorter: the latest, not the largest).
            latest(stop_and_elapsed, stop, metric == FIRST_RESPONSE).label("first_stop"),
            seen(kind == SLA_BREACHED, metric == FIRST_RESPONSE).label("first_breached"),
            latest(stop_and_elapsed, stop, metric == RESOLUTION).label("resolution_stop"),
            last(kind == "survey_sent", at >= since).label("survey_sent_at"),
            latest(_JsonText(e.payload, "answer"), kind == "survey_answered").label("answer"),
            *agent,
        )
        .join_from(e, Ticket, Ticket.id == e.ticket_id)
        .where(e.ticket_id.in_(active), e.at < until, kind.in_(_FACT_KINDS))
        .group_by(e.ticket_id)
    )
    return statement.outerjoin(IncidentLink, IncidentLink.ticket_id == e.ticket_id) if with_agent else statement


def _stop(stamped: str | None) -> tuple[str | None, float | None]:
    # "<at>|<verdict kind>|<elapsed seconds>" -> (kind, seconds)
    if stamped is None:
        return None, None
    _, kind, seconds = stamped.split("|", 2)
    return kind, float(seconds) if seconds else None


def _facts_of(row: Any, since: datetime) -> TicketFacts:
    resolved_at = _utc(row.resolved_at)
    resolved_in = resolved_at is not None and resolved_at >= since
    first_kind, first_seconds = _stop(row.first_stop)
    resolution_kind, resolution_seconds = _stop(row.resolution_stop) if resolved_in else (None, None)
    agent = _unstamp(row.resolver) or _unstamp(row.claimer)
    return TicketFacts(
        ticket_id=int(row.ticket_id), priority=row.priority, category=row.category, opened_at=_utc(row.opened_at),
        first_response=first_response_verdict(first_kind, bool(row.first_breached)),
        first_response_hours=None if first_seconds is None else first_seconds / 3600,
        resolved_at=resolved_at if resolved_in else None,
        resolution=resolution_verdict(resolution_kind),
        resolution_hours=None if resolution_seconds is None else resolution_seconds / 3600,
        reopened=bool(row.reopened), survey_sent_at=_utc(row.survey_sent_at),
        answer=_unstamp(row.answer), agent_id=int(agent) if agent else None,
        incident_id=None if row.incident_id is None else int(row.incident_id),
    )


def exact(until: datetime, *, scan: bool = False) -> ColumnElement[bool]:
    """Whether a ticket's facts row is its history as of ``until``: nothing changed since (``scan``: as a filter
    on a scan of the table, see ``scanned``)."""
    return (scanned(ReportFacts.changed_at) if scan else ReportFacts.changed_at) < until


def _read_model_statement(since: datetime, until: datetime, *, with_agent: bool) -> Any:
    def within(column: Any) -> ColumnElement[bool]:
        return and_(scanned(column) >= since, scanned(column) < until)

    incident = IncidentLink.incident_id if with_agent else literal(None, BigInteger)
    statement = select(*_FACTS_TABLE.c, incident.label("incident_id")).where(exact(until, scan=True), or_(
        within(ReportFacts.opened_at), within(ReportFacts.resolved_at), within(ReportFacts.survey_sent_at)))
    return statement.outerjoin(IncidentLink, IncidentLink.ticket_id == ReportFacts.ticket_id) if with_agent else (
        statement)


def _facts_of_read_model(row: Any, since: datetime) -> TicketFacts:
    resolved_in = row.resolved_at is not None and row.resolved_at >= since
    sent_in = row.survey_sent_at is not None and row.survey_sent_at >= since
    seconds = row.resolution_seconds if resolved_in else None
    return TicketFacts(
        ticket_id=row.ticket_id, priority=row.priority, category=row.category, opened_at=row.opened_at,
        first_response=row.first_response,
        first_response_hours=None if row.first_response_seconds is None else row.first_response_seconds / 3600,
        resolved_at=row.resolved_at if resolved_in else None,
        resolution=row.resolution if resolved_in else None,
        resolution_hours=None if seconds is None else seconds / 3600,
        reopened=row.reopened_at is not None, survey_sent_at=row.survey_sent_at if sent_in else None,
        answer=row.survey_answer if sent_in else None,
        agent_id=row.resolver_id if row.resolver_id is not None else row.claimer_id, incident_id=row.incident_id,
    )


async def ticket_facts(db: Database, *, since: datetime, until: datetime, with_agent: bool = False,
                       replay: bool = False, read_model: bool = True) -> AsyncIterator[TicketFacts]:
    """Every ticket that took part in [since, until), streamed: from its ``report_facts`` row when that row is its
    history as of ``until``, else (a period ending before its last change, or a ticket from before the read model;
    ``replay`` forces it for all) by aggregating its events. ``read_model=False`` leaves out the tickets whose
    row is exact (for a caller that aggregates those rows in SQL)."""
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be timezone-aware")
    replayed = _facts_statement(since, until, with_agent=with_agent)
    async with db.reading() as session:
        # Core rows on the session's connection: no ORM bookkeeping per ticket.
        conn = await session.connection()
        if not replay:
            if read_model:
                result = await conn.stream(_read_model_statement(since, until, with_agent=with_agent).execution_options(
                    yield_per=_STREAM_CHUNK))
                async for partition in result.partitions(_STREAM_CHUNK):
                    for row in partition:
                        yield _facts_of_read_model(row, since)
            first_tracked = await conn.scalar(select(func.min(ReportFacts.ticket_id)))
            replayed = _facts_statement(since, until, with_agent=with_agent, only_inexact=True,
                                        first_tracked=first_tracked)
        result = await conn.stream(replayed.execution_options(yield_per=_STREAM_CHUNK))
        async for partition in result.partitions(_STREAM_CHUNK):
            for row in partition:
                facts = _facts_of(row, since)
                if facts.resolved_at or facts.survey_sent_at or (facts.opened_at and facts.opened_at >= since):
                    yield facts


async def names_of(db: Database, person_ids: set[int]) -> dict[int, str]:
    """Display names of the given people (the agents a report names)."""
    if not person_ids:
        return {}
    async with db.reading() as session:
        rows = await session.execute(select(Person.id, Person.display_name).where(Person.id.in_(person_ids)))
        return {int(person_id): name for person_id, name in rows}
