"""``ithelp report`` over a year of a large desk's history: wall time and peak RSS (SQLite and PostgreSQL).

Seeds N tickets spread over the last 365 days with the histories the desk writes (opened with its SLA targets,
claimed, agent comments, resolved, the SLA clock's verdicts, reopens, surveys sent and answered, closed; a few
still open with a breach), the survey rows and the report facts the SLA clock keeps beside them, through the
store's models, in batches of ORM rows; one ticket in ``LINKED_EVERY`` is linked to an incident
(``PER_INCIDENT`` to each). Then runs, as subprocesses:

* ``ithelp report --since 365d`` (the table),
* ``ithelp report --since 365d --by week --format html --output …``, and
* ``ithelp report --since 365d --by agent`` (incident-linked tickets kept apart),

and prints each one's wall time and peak RSS (``wait4``'s ``ru_maxrss`` of that process alone).

    python bench/report_scale.py [--tickets 100000] [--databases sqlite,postgresql] [--runs 3] [--keep DIR]

``--keep DIR`` keeps the SQLite file (and PostgreSQL schema name) in DIR and reuses them on the next run with
the same size, so a 1M-ticket database is seeded once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _support import POSTGRES_URL, ROOT, drop_schema, make_schema, table
from sqlalchemy import func, insert, select

from bot.report_facts import change_facts, verdict_facts
from bot.sla_rules import FIRST_RESPONSE, RESOLUTION, SLA_BREACHED, SLA_MET, SLA_MISSED
from store.db import Database
from store.incident_models import INCIDENT_RESOLVED, Incident, IncidentLink
from store.migrate import upgrade
from store.models import Person, Ticket, TicketEvent
from store.report_models import ReportFacts
from store.survey_models import ANSWERED, SENT, Survey

CHUNK = 5000
PEOPLE = 5000
AGENTS = 30
NOW = datetime.now(UTC).replace(microsecond=0)
PRIORITIES = (("P1", 0.05, 15 * 60, 4 * 3600), ("P2", 0.25, 3600, 8 * 3600), ("P3", 0.55, 4 * 3600, 24 * 3600),
              ("P4", 0.15, 8 * 3600, 40 * 3600))
CATEGORIES = ("Hardware", "Software", "Access", "Network", "Other")
LINKED_EVERY, PER_INCIDENT = 50, 25


class History:
    """One ticket's events, in order, as the services and the SLA clock write them, and its report facts row
    as the clock keeps it alongside (``bot.report_facts``)."""

    def __init__(self, ticket_id: int, requester: int, opened: datetime, priority: str, category: str) -> None:
        self.ticket_id, self.requester = ticket_id, requester
        self.rows: list[dict[str, Any]] = []
        self.facts: dict[str, Any] = {"ticket_id": ticket_id, "opened_at": opened, "priority": priority,
                                      "category": category, "survey_sent_at": None, "survey_answer": None,
                                      "first_response": None,
                                      "first_response_seconds": None, "resolved_at": None, "resolution": None,
                                      "resolution_seconds": None, "reopened_at": None, "resolver_id": None,
                                      "claimer_id": None, "changed_at": opened}
        self.survey: dict[str, Any] | None = None

    def add(self, at: datetime, kind: str, actor: int | None, **payload: Any) -> None:
        self.rows.append({"ticket_id": self.ticket_id, "at": at, "actor_id": actor, "kind": kind, "payload": payload})
        self.facts["changed_at"] = at
        self.facts.update(change_facts(kind, actor, at, payload) if kind != "reopened" else {
            "reopened_at": self.facts["reopened_at"] or at})
        if kind == SLA_BREACHED and payload["metric"] == FIRST_RESPONSE:
            self.facts["first_response"] = self.facts["first_response"] or "missed"
        if kind in (SLA_MET, SLA_MISSED):
            self.facts.update(verdict_facts(payload["metric"], kind, payload["elapsed_seconds"]))
        if kind == "survey_sent":
            self.survey = {"ticket_id": self.ticket_id, "requester_id": self.requester, "status": SENT,
                           "created_at": at, "sent_at": at, "expires_at": at + timedelta(days=7), "revision": 1}
        if kind == "survey_answered" and self.survey is not None:
            self.survey.update(status=ANSWERED, answer=payload["answer"], answered_at=at)

    def verdict(self, at: datetime, metric: str, elapsed: float, target: float) -> None:
        if elapsed > target:
            self.add(at, SLA_BREACHED, None, metric=metric, due=(at - timedelta(seconds=elapsed - target)).isoformat())
        self.add(at, SLA_MET if elapsed <= target else SLA_MISSED, None, metric=metric, elapsed_seconds=elapsed,
                 target_seconds=target)


def _priority(rng: random.Random) -> tuple[str, int, int]:
    pick, total = rng.random(), 0.0
    for name, share, first, resolution in PRIORITIES:
        total += share
        if pick <= total:
            return name, first, resolution
    return PRIORITIES[-1][0], PRIORITIES[-1][2], PRIORITIES[-1][3]


def ticket_rows(i: int, rng: random.Random) -> tuple[dict[str, Any], History]:
    """Ticket ``i``'s row and its history (people 1..AGENTS are agents, the rest requesters)."""
    requester = AGENTS + 1 + i % PEOPLE
    agent = 1 + rng.randrange(AGENTS)
    priority, first_target, resolution_target = _priority(rng)
    opened = NOW - timedelta(seconds=rng.uniform(60, 365 * 86400))
    history = History(i, requester, opened, priority, CATEGORIES[i % len(CATEGORIES)])
    history.add(opened, "opened", requester, summary=f"Problem {i}", priority=priority,
                category=CATEGORIES[i % len(CATEGORIES)], origin="slack",
                sla_targets={FIRST_RESPONSE: first_target, RESOLUTION: resolution_target})
    status, resolved_at, closed_at = "new", None, None
    first = rng.expovariate(1 / (first_target * 0.5))
    claimed = opened + timedelta(seconds=first)
    if claimed < NOW:
        status = "claimed"
        if first > first_target:
            history.add(opened + timedelta(seconds=first_target), SLA_BREACHED, None, metric=FIRST_RESPONSE,
                        due=(opened + timedelta(seconds=first_target)).isoformat())
        history.add(claimed, "claimed", agent, assignee=f"slack:UAGENT{agent}", to_status="claimed")
        history.add(claimed, SLA_MET if first <= first_target else SLA_MISSED, None, metric=FIRST_RESPONSE,
                    elapsed_seconds=first, target_seconds=first_target)
        took = first + rng.expovariate(1 / (resolution_target * 0.4))
        if rng.random() < 0.15:
            history.add(claimed + timedelta(minutes=5), "commented", agent, text="Looking into it.", role="agent")
        resolved = opened + timedelta(seconds=took)
        if resolved < NOW:
            history.add(resolved, "resolved", agent, note="Fixed.", to_status="resolved")
            history.verdict(resolved, RESOLUTION, took, resolution_target)
            status, resolved_at = "resolved", resolved
            if rng.random() < 0.05 and resolved + timedelta(days=1) < NOW:
                again = resolved + timedelta(days=1)
                history.add(again, "reopened", requester, reason="Broke again.", to_status="reopened")
                history.add(again + timedelta(hours=1), "claimed", agent, to_status="claimed")
                history.add(again + timedelta(hours=2), "resolved", agent, note="Fixed again.", to_status="resolved")
                history.verdict(again + timedelta(hours=2), RESOLUTION, took + 7200, resolution_target)
                resolved_at = again + timedelta(hours=2)
            if rng.random() < 0.6:
                history.add(resolved_at + timedelta(minutes=1), "survey_sent", None, survey_id=i)
                if rng.random() < 0.65:
                    history.add(resolved_at + timedelta(minutes=30), "survey_answered", requester,
                                answer="up" if rng.random() < 0.85 else "down", previous=None)
            if resolved_at + timedelta(days=3) < NOW:
                closed_at = resolved_at + timedelta(days=3)
                history.add(closed_at, "closed", None, to_status="closed")
                status = "closed"
    ticket = {"id": i, "requester_id": requester, "origin_platform": "slack", "intake_key": f"bench:{i}",
              "summary": f"Problem {i}", "description": "", "category": CATEGORIES[i % len(CATEGORIES)],
              "priority": priority, "status": status, "assignee_id": agent if status != "new" else None,
              "calendar": "always", "created_at": opened, "updated_at": opened,
              "first_response_at": claimed if status != "new" else None, "resolved_at": resolved_at,
              "closed_at": closed_at, "paused_seconds": 0.0, "updates_muted": False,
              "reopen_count": 0, "version": 1}
    return ticket, history


async def seed(db: Database, tickets: int) -> int:
    """Seed people and ``tickets`` tickets with their histories; returns the number of events."""
    await upgrade(db)
    people = [{"id": n, "platform": "slack", "platform_user_id": f"U{'AGENT' if n <= AGENTS else 'REQ'}{n}",
               "display_name": f"{'Agent' if n <= AGENTS else 'Person'} {n}", "timezone": "Europe/London",
               "is_agent": n <= AGENTS, "created_at": NOW, "updated_at": NOW} for n in range(1, AGENTS + PEOPLE + 1)]
    async with db.transaction() as session:
        await session.execute(insert(Person), people)
    rng, events = random.Random(19), 0
    for lo in range(1, tickets + 1, CHUNK):
        rows = [ticket_rows(i, rng) for i in range(lo, min(tickets + 1, lo + CHUNK))]
        batch = [event for _, history in rows for event in history.rows]
        tables: list[tuple[Any, list[dict[str, Any]]]] = [
            (Ticket, [ticket for ticket, _ in rows]), (TicketEvent, batch),
            (ReportFacts, [history.facts for _, history in rows]),
            (Survey, [history.survey for _, history in rows if history.survey is not None])]
        if db.is_postgres:
            await copy_rows(db, tables)
        else:
            async with db.transaction() as session:
                for model, table_rows in tables:
                    if table_rows:
                        await session.execute(insert(model), table_rows)
        events += len(batch)
        if lo // CHUNK % 20 == 0:
            print(f"  seeded {min(tickets, lo + CHUNK - 1):,} tickets", file=sys.stderr, flush=True)
    await seed_incidents(db, tickets)
    if db.is_postgres:
        async with db.engine.begin() as conn:
            for name in ("people", "tickets", "ticket_events"):
                await conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                                           f"(SELECT max(id) FROM {name}))")
            for name in ("people", "tickets", "ticket_events", "report_facts", "surveys", "incidents",
                         "incident_links"):
                await conn.exec_driver_sql(f"ANALYZE {name}")
    return events


async def seed_incidents(db: Database, tickets: int) -> None:
    """Every ``LINKED_EVERY``-th ticket linked to an incident, ``PER_INCIDENT`` to each (the first its anchor)."""
    linked = list(range(LINKED_EVERY, tickets + 1, LINKED_EVERY))
    groups = [linked[lo:lo + PER_INCIDENT] for lo in range(0, len(linked), PER_INCIDENT)]
    incidents = [{"id": n, "title": f"Outage {n}", "priority": "P1", "status": INCIDENT_RESOLVED,
                  "anchor_ticket_id": group[0], "created_at": NOW, "resolved_at": NOW, "revision": 0}
                 for n, group in enumerate(groups, start=1)]
    links = [{"ticket_id": ticket_id, "incident_id": n, "linked_at": NOW, "via": "agent"}
             for n, group in enumerate(groups, start=1) for ticket_id in group]
    async with db.transaction() as session:
        if incidents:
            await session.execute(insert(Incident), incidents)
            await session.execute(insert(IncidentLink), links)


async def copy_rows(db: Database, tables: list[tuple[Any, list[dict[str, Any]]]]) -> None:
    """PostgreSQL: the same rows through COPY (asyncpg's ``copy_records_to_table``), in the models' columns, so a
    million tickets seed in minutes. Values as the models' types bind them: naive UTC times, JSON as text."""
    async with db.engine.begin() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        for model, table_rows in tables:
            if not table_rows:
                continue
            given = {key for row in table_rows for key in row}
            columns = [c.name for c in model.__table__.columns if c.name in given]
            records = [tuple(_copy_value(row.get(name)) for name in columns) for row in table_rows]
            await raw.copy_records_to_table(model.__tablename__, records=records, columns=columns,
                                            schema_name=db.schema)


def _copy_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, dict):
        return json.dumps(value)
    return value


async def count_events(db: Database) -> int:
    async with db.reading() as session:
        return int(await session.scalar(select(func.count()).select_from(TicketEvent)) or 0)


def run_report(config: Path, extra: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MB) of one ``ithelp report`` subprocess. CPU (user + system) is the
    figure to compare on a shared machine: wall time there includes waiting for a core."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "bot", "report", "--config", str(config), "--since", "365d",
                                *extra], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"report failed: {process.stderr.read().decode() if process.stderr else ''}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


async def prepare(name: str, tickets: int, keep: Path | None, workdir: Path) -> tuple[Path, str | None, int]:
    """A config file for a seeded database of ``name`` (reused from ``keep`` when it holds one of this size)."""
    marker = keep / f"report-{name}-{tickets}.schema" if keep else None
    if name == "sqlite":
        path = (keep or workdir) / f"report-{tickets}.db"
        url, schema = f"sqlite+aiosqlite:///{path}", None
        fresh = not path.exists()
    else:
        url = POSTGRES_URL
        schema = marker.read_text().strip() if marker and marker.exists() else await make_schema("bench_report")
        fresh = not (marker and marker.exists())
        if marker:
            marker.write_text(schema)
    config = workdir / f"report-{name}.yaml"
    config.write_text(f'database: {{url: "{url}", schema_name: {schema or "null"}}}\n')
    db = Database(url, schema=schema)
    try:
        if fresh:
            started = time.perf_counter()
            events = await seed(db, tickets)
            print(f"{name}: seeded {tickets:,} tickets, {events:,} events in {time.perf_counter() - started:.0f} s",
                  file=sys.stderr)
        else:
            events = await count_events(db)
    finally:
        await db.dispose()
    return config, schema, events


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the seeded databases here")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    rows = [["database", "tickets", "events", "report", "wall s (runs)", "CPU s (runs)", "peak RSS MB"]]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name in args.databases.split(","):
            config, schema, events = await prepare(name, args.tickets, args.keep, workdir)
            try:
                for label, extra in (("table", []), ("by week, html", ["--by", "week", "--format", "html",
                                                                       "--output", str(workdir / "r.html")]),
                                     ("by agent", ["--by", "agent"])):
                    runs = [run_report(config, extra) for _ in range(args.runs)]
                    rows.append([name, f"{args.tickets:,}", f"{events:,}", label,
                                 " / ".join(f"{wall:.2f}" for wall, _, _ in runs),
                                 " / ".join(f"{cpu:.2f}" for _, cpu, _ in runs), f"{max(rss for *_, rss in runs):.0f}"])
                    print(table(rows[:1] + rows[-1:]), file=sys.stderr, flush=True)
            finally:
                if schema and not args.keep:
                    await drop_schema(schema)
    print(table(rows))


if __name__ == "__main__":
    asyncio.run(main())
