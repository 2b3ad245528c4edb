"""Cost of one engine tick as the number of open tickets grows: it should stay flat.

Timers are rows and a tick claims only the due ones through the partial index on pending ``due_at``,
so an idle tick costs the same with 1k or 100k open tickets, and 100 due timers cost about the same
whatever else is pending. The bench builds a real desk (SLA clock installed) on a fresh PostgreSQL
schema (dropped at the end), bulk-loads open tickets with their two pending SLA timers each (COPY, not
through the service), then measures ``desk.timers.tick()`` + ``desk.outbox.tick()`` (no-op Slack
channel) when nothing is due and when 100 first-response breaches are due (each writes an event and a
triage card that the outbox delivers).

    python bench/sla_tick_cost.py [--sizes 1000,10000,100000] [--repeat 15] [--sqlite]

PostgreSQL URL: ``ITHELP_BENCH_POSTGRES_URL`` (default postgresql+asyncpg://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _support import POSTGRES_URL, drop_schema, make_schema, table
from sqlalchemy import insert, select, text, update

from bot.clock import ManualClock
from bot.config import parse_config
from bot.desk import Desk, build_desk
from bot.engine import Delivered, OutboxItem
from store.db import Database
from store.migrate import upgrade
from store.models import Person, Ticket, Timer

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday, inside London business hours
DUE_PER_ROUND = 100
ROUNDS_WITH_DUE = 3
BATCH = 10_000
PEOPLE = 1_000

CONFIG = """
slack: {bot_token: xoxb-bench, signing_secret: bench, triage_channel: C0TRIAGE}
default_calendar: london
calendars:
  london: {timezone: Europe/London, hours: {mon-fri: ["09:00-17:00"]}, country: GB, subdivision: ENG}
sla:
  policies:
    P3: {first_response: 4h, update_every: 1d, resolution: 3d}
engine: {min_interval_per_channel: 0s}
"""

TICKET_COLUMNS = ["requester_id", "origin_platform", "summary", "description", "priority", "status", "calendar",
                  "created_at", "updated_at", "paused_seconds", "first_response_due", "resolution_due",
                  "last_requester_update_at", "updates_muted", "reopen_count", "version"]
TIMER_COLUMNS = ["kind", "ticket_id", "due_at", "payload", "attempts", "created_at"]


class NoopChannel:
    """Accepts every message at once: the bench measures the engine, not Slack."""

    async def deliver(self, item: OutboxItem) -> Delivered:
        return Delivered(message_id=f"noop-{item.id}")

    def pacing_key(self, item: OutboxItem) -> str:
        return item.target


def _first_due(index: int) -> datetime:
    # Spread over the coming weeks, all after NOW: an idle tick has nothing to claim.
    return NOW + timedelta(minutes=30 + index % 40_000)


def ticket_row(index: int, person_id: int) -> dict[str, Any]:
    created = NOW - timedelta(minutes=5)
    return {"requester_id": person_id, "origin_platform": "slack", "summary": f"Bench ticket {index}",
            "description": "", "priority": "P3", "status": "new", "calendar": "london", "created_at": created,
            "updated_at": created, "paused_seconds": 0.0, "first_response_due": _first_due(index),
            "resolution_due": _first_due(index) + timedelta(days=3), "last_requester_update_at": created,
            "updates_muted": False, "reopen_count": 0, "version": 1}


def timer_rows(ticket_id: int, ticket: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"kind": kind, "ticket_id": ticket_id, "due_at": due, "attempts": 0, "created_at": ticket["created_at"],
             "payload": {"metric": metric, "due": due.isoformat()}}
            for kind, metric, due in (("sla.first_response", "first_response", ticket["first_response_due"]),
                                      ("sla.resolution", "resolution", ticket["resolution_due"]))]


# -- bulk loading -------------------------------------------------------------------------------------
class Loader:
    """Adds open tickets and their pending timers in batches, outside the service."""

    def __init__(self, db: Database, schema: str | None) -> None:
        self.db = db
        self.schema = schema
        self.count = 0
        self.ticket_ids: list[int] = []

    async def people(self) -> None:
        rows = [{"platform": "slack", "platform_user_id": f"UBENCH{i:05d}", "display_name": f"Bench {i}",
                 "timezone": "Europe/London", "is_agent": False, "created_at": NOW, "updated_at": NOW}
                for i in range(PEOPLE)]
        async with self.db.transaction() as session:
            await session.execute(insert(Person.__table__), rows)

    async def grow_to(self, total: int) -> None:
        while self.count < total:
            size = min(BATCH, total - self.count)
            tickets = [ticket_row(self.count + i, 1 + (self.count + i) % PEOPLE) for i in range(size)]
            if self.db.is_postgres:
                await self._copy(tickets)
            else:
                await self._insert(tickets)
            self.count += size
        async with self.db.transaction() as session:
            await session.execute(text("ANALYZE"))

    async def _insert(self, tickets: list[dict[str, Any]]) -> None:
        async with self.db.transaction() as session:
            await session.execute(insert(Ticket.__table__), tickets)
            ids = list((await session.execute(select(Ticket.id).order_by(Ticket.id.desc()).limit(len(tickets))))
                       .scalars())[::-1]
            await session.execute(insert(Timer.__table__),
                                  [row for tid, t in zip(ids, tickets, strict=True) for row in timer_rows(tid, t)])
        self.ticket_ids.extend(ids)

    async def _copy(self, tickets: list[dict[str, Any]]) -> None:
        def naive(value: Any) -> Any:
            return value.astimezone(UTC).replace(tzinfo=None) if isinstance(value, datetime) else value

        async with self.db.engine.connect() as conn:
            raw: Any = (await conn.get_raw_connection()).driver_connection
            async with raw.transaction():
                await raw.copy_records_to_table(
                    "tickets", schema_name=self.schema, columns=TICKET_COLUMNS,
                    records=[tuple(naive(t[c]) for c in TICKET_COLUMNS) for t in tickets])
                ids = [r["id"] for r in await raw.fetch(
                    f'SELECT id FROM "{self.schema}".tickets ORDER BY id DESC LIMIT {len(tickets)}')][::-1]
                timers = [row for tid, t in zip(ids, tickets, strict=True) for row in timer_rows(tid, t)]
                await raw.copy_records_to_table(
                    "timers", schema_name=self.schema, columns=TIMER_COLUMNS,
                    records=[tuple(json.dumps(r[c]) if c == "payload" else naive(r[c]) for c in TIMER_COLUMNS)
                             for r in timers])
        self.ticket_ids.extend(ids)

    async def make_due(self, round_no: int) -> None:
        """100 tickets whose first response is due now, each with its due timer (as the SLA clock leaves them)."""
        due = NOW - timedelta(seconds=1)
        start = round_no * DUE_PER_ROUND
        chosen = self.ticket_ids[start : start + DUE_PER_ROUND]
        async with self.db.transaction() as session:
            await session.execute(update(Ticket).where(Ticket.id.in_(chosen)).values(first_response_due=due))
            await session.execute(insert(Timer.__table__), [
                {"kind": "sla.first_response", "ticket_id": tid, "due_at": due, "attempts": 0, "created_at": NOW,
                 "payload": {"metric": "first_response", "due": due.isoformat()}} for tid in chosen])


# -- measuring ----------------------------------------------------------------------------------------
async def timed(step: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await step()
    return (time.perf_counter() - started) * 1000


async def measure(name: str, db: Database, schema: str | None, sizes: list[int], repeat: int) -> list[list[str]]:
    config = parse_config(CONFIG, env={})
    await upgrade(db)
    desk: Desk = build_desk(config, db, ManualClock(NOW), replica="bench")
    desk.outbox.register("slack", NoopChannel())
    loader = Loader(db, schema)
    await loader.people()

    async def tick() -> None:
        await desk.timers.tick()
        await desk.outbox.tick()

    rows = []
    round_no = 0
    for size in sizes:
        load_started = time.perf_counter()
        await loader.grow_to(size)
        load_s = time.perf_counter() - load_started
        await tick()  # warm up (connections, statement cache)
        idle = [await timed(tick) for _ in range(repeat)]
        busy, timers_only = [], []
        for _ in range(ROUNDS_WITH_DUE):
            await loader.make_due(round_no)
            round_no += 1
            started = time.perf_counter()
            ran = await desk.timers.tick()
            timers_done = time.perf_counter()
            await desk.outbox.tick()
            busy.append((time.perf_counter() - started) * 1000)
            timers_only.append((timers_done - started) * 1000)
            assert ran == DUE_PER_ROUND, f"expected {DUE_PER_ROUND} timers to run, ran {ran}"
        idle_ms, busy_ms, timers_ms = statistics.median(idle), statistics.median(busy), statistics.median(timers_only)
        rows.append([name, f"{size:,}", f"{size * 2:,}", f"{load_s:.1f}", f"{idle_ms:.2f}",
                     f"{busy_ms:.0f}", f"{timers_ms:.0f}", f"{DUE_PER_ROUND / (timers_ms / 1000):.0f}"])
        print(f"  {name} {size:>7,} open: idle {idle_ms:.2f} ms, 100 due {busy_ms:.0f} ms", flush=True)
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=15, help="idle ticks measured per size (median shown)")
    parser.add_argument("--sqlite", action="store_true", help="also run on SQLite (a temp file)")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    header = ["db", "open tickets", "pending timers", "load s", "idle tick ms", "tick with 100 due ms",
              "of which timers ms", "timers/s"]
    results: list[list[str]] = [header]

    schema = await make_schema("bench_tick")
    db = Database(POSTGRES_URL, schema=schema)
    try:
        results += await measure("postgresql", db, schema, sizes, args.repeat)
    finally:
        await db.dispose()
        await drop_schema(schema)
    if args.sqlite:
        with tempfile.TemporaryDirectory() as workdir:
            lite = Database(f"sqlite+aiosqlite:///{Path(workdir) / 'bench.db'}")
            try:
                results += await measure("sqlite", lite, None, sizes, args.repeat)
            finally:
                await lite.dispose()
    print()
    print(table(results))


if __name__ == "__main__":
    asyncio.run(main())
