"""``ithelp audit export`` over 1M ticket events: wall time and peak RSS, on SQLite and PostgreSQL.

Seeds a year of history through the store's models (people, 50,000 tickets, 20 events each with payloads as the
desk writes them: summaries, comments, notes, status changes), then runs ``ithelp audit export`` as a subprocess
twice per database: over a tenth of the year (about 100k events) and over all of it (1M). The child's peak RSS
comes from ``wait4`` (the kernel's high-water mark), so nothing samples it; the two peaks side by side show whether
memory grows with the number of events. The output's line count is checked against the events in the window.

    python bench/audit_export.py [--events 1000000] [--skip-postgres] [--skip-sqlite]

Seeding the events takes most of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _support import POSTGRES_URL, ROOT, drop_schema, make_schema, table
from sqlalchemy import Table, func, insert, select

from store.db import Database
from store.migrate import upgrade
from store.models import Person, Ticket, TicketEvent

EVENTS_PER_TICKET = 20
PEOPLE = 2_000
BATCH = 10_000
START = datetime(2025, 12, 1, tzinfo=UTC)
KINDS = ("claimed", "commented", "status_changed", "commented", "priority_changed")
# Core inserts of the store's tables (executemany): the ORM's bulk insert would double the seeding time.
_TICKETS: Table = Ticket.__table__  # type: ignore[assignment]
_EVENTS: Table = TicketEvent.__table__  # type: ignore[assignment]


def event_rows(ticket_id: int, opened: datetime, requester: int, agent: int) -> list[dict[str, object]]:
    """One ticket's life as the desk records it: opened, worked with comments and changes, resolved."""
    rows: list[dict[str, object]] = [{"ticket_id": ticket_id, "at": opened, "actor_id": requester, "kind": "opened",
                                      "payload": {"summary": f"Laptop {ticket_id} will not boot after the update",
                                                  "priority": "P3", "category": "Hardware", "origin": "slack"}}]
    for n in range(1, EVENTS_PER_TICKET - 1):
        kind = KINDS[n % len(KINDS)]
        payload: dict[str, object] = {
            "claimed": {"assignee": f"slack:UAGENT{agent}", "from_status": "new", "to_status": "claimed"},
            "commented": {"text": f"Tried step {n}: reseated the RAM and reset the BIOS, still beeping",
                          "role": "agent" if n % 2 else "requester", "source": None},
            "status_changed": {"status": "in_progress", "note": None, "from_status": "claimed",
                               "to_status": "in_progress"},
            "priority_changed": {"from": "P3", "to": "P2"},
        }[kind]
        actor = agent if kind != "commented" or n % 2 else requester
        rows.append({"ticket_id": ticket_id, "at": opened + timedelta(minutes=7 * n), "actor_id": actor, "kind": kind,
                     "payload": payload})
    rows.append({"ticket_id": ticket_id, "at": opened + timedelta(hours=4), "actor_id": agent, "kind": "resolved",
                 "payload": {"note": "Replaced the SSD", "from_status": "in_progress", "to_status": "resolved"}})
    return rows


async def seed(db: Database, events: int) -> None:
    await upgrade(db)
    tickets = events // EVENTS_PER_TICKET
    step = timedelta(days=365) / tickets
    async with db.transaction() as session:
        await session.execute(insert(Person), [{
            "platform": "slack", "platform_user_id": f"UBENCH{i:05d}", "display_name": f"Person {i}",
            "is_agent": i < 20, "created_at": START, "updated_at": START} for i in range(PEOPLE)])
    for first in range(0, tickets, BATCH // EVENTS_PER_TICKET):
        ids = range(first + 1, min(first + BATCH // EVENTS_PER_TICKET, tickets) + 1)
        async with db.transaction() as session:
            await session.execute(insert(_TICKETS), [{
                "id": i, "requester_id": 21 + i % (PEOPLE - 20), "assignee_id": 1 + i % 20, "origin_platform": "slack",
                "summary": f"Laptop {i} will not boot after the update", "description": "", "priority": "P2",
                "status": "resolved", "calendar": "default", "created_at": START + step * i,
                "updated_at": START + step * i, "resolved_at": START + step * i + timedelta(hours=4)} for i in ids])
            await session.execute(insert(_EVENTS), [
                row for i in ids for row in event_rows(i, START + step * i, 21 + i % (PEOPLE - 20), 1 + i % 20)])


def run_export(config: Path, since: datetime, until: datetime, output: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MB, lines written) of one ``ithelp audit export`` subprocess."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "audit", "export", "--since", since.isoformat(), "--until", until.isoformat(),
         "--format", "jsonl", "--output", str(output), "--config", str(config)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ithelp audit export failed: {process.stderr.read().decode() if process.stderr else ''}")
    with output.open("rb") as lines:
        count = sum(chunk.count(b"\n") for chunk in iter(lambda: lines.read(1 << 20), b""))
    return wall, usage.ru_maxrss / 1024, count


async def measure(name: str, url: str, schema: str | None, events: int, workdir: Path) -> list[list[str]]:
    db = Database(url, schema=schema)
    try:
        started = time.monotonic()
        await seed(db, events)
        seeded = time.monotonic() - started
        async with db.reading() as session:
            stored = int(await session.scalar(select(func.count()).select_from(TicketEvent)) or 0)
    finally:
        await db.dispose()
    config = workdir / f"{name}.yaml"
    config.write_text(f'database: {{url: "{url}", schema_name: {schema or "null"}}}\n')
    rows = []
    end = START + timedelta(days=366)
    for label, until in (("a tenth", START + timedelta(days=36.5)), ("all", end)):
        output = workdir / f"{name}-{label}.jsonl"
        wall, peak, lines = run_export(config, START, until, output)
        rows.append([name, label, f"{lines:,}", f"{wall:.1f}", f"{lines / wall:,.0f}", f"{peak:.0f}",
                     f"{output.stat().st_size / 1e6:.0f}", f"{seeded:.0f}"])
        output.unlink()
    if int(rows[-1][2].replace(",", "")) != stored:
        raise SystemExit(f"{name}: exported {rows[-1][2]} events, the store holds {stored:,}")
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    rows = [["store", "period", "events", "wall s", "events/s", "peak RSS MB", "output MB", "seeding s"]]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if not args.skip_sqlite:
            rows += await measure("SQLite", f"sqlite+aiosqlite:///{workdir / 'audit.db'}", None, args.events, workdir)
        if not args.skip_postgres:
            schema = await make_schema("bench_audit")
            try:
                rows += await measure("PostgreSQL", POSTGRES_URL, schema, args.events, workdir)
            finally:
                await drop_schema(schema)
    print(f"ithelp audit export (jsonl) as a subprocess over {args.events:,} events; peak RSS from wait4")
    print(table(rows))
    print("flat memory: the peak over all the events stays within a few MB of the peak over a tenth")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    asyncio.run(main())
