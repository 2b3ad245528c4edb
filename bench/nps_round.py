"""What an NPS round costs: N people who each filed a ticket in the period, one round, on SQLite and PostgreSQL.

Seeds N people and N resolved tickets through the store's models (a quarter of the people also had a CSAT poll
inside ``surveys.cooldown``, so their pulses wait), then runs the round's timer the way the engine does (the
clock moved to the period's end) and times it: the round transaction (one pulse row each, one outbox row for
everyone not cooling down, one timer for the rest) and a second tick that finds nothing to do.

    python bench/nps_round.py [--people 1000 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _support import POSTGRES_URL, drop_schema, make_schema, table
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.config import parse_config
from bot.desk import build_desk
from store.db import Database
from store.migrate import upgrade
from store.models import OutboxMessage, Person, Ticket, Timer
from store.nps_models import NpsPulse
from store.queries import schedule_timer
from store.survey_models import Survey
from surveys.nps import ROUND

CONFIG = """
nps: {enabled: true, every: 90d, expire_after: 14d, start: 2026-01-01}
surveys: {cooldown: 14d}
"""


async def seed(db: Database, people: int, at: datetime) -> None:
    async with db.transaction() as session:
        rows = [Person(platform="slack", platform_user_id=f"U{i:07d}", display_name=f"Person {i}",
                       timezone="Europe/London", created_at=at, updated_at=at) for i in range(people)]
        session.add_all(rows)
        await session.flush()
        tickets = [Ticket(requester_id=person.id, origin_platform="slack", summary="Laptop fan is loud",
                          priority="P3", status="resolved", calendar="default", created_at=at, updated_at=at,
                          resolved_at=at) for person in rows]
        session.add_all(tickets)
        await session.flush()
        session.add_all(Survey(ticket_id=ticket.id, requester_id=ticket.requester_id, status="sent",
                               created_at=at, sent_at=at + timedelta(days=85), revision=1)
                        for ticket in tickets[: people // 4])


async def one(name: str, url: str, schema: str | None, people: int) -> list[str]:
    db = Database(url, schema=schema)
    try:
        await upgrade(db)
        config = parse_config(CONFIG, env={})
        start = datetime(2026, 1, 1, tzinfo=UTC)
        clock = ManualClock(start + timedelta(days=1))
        desk = build_desk(config, db, clock)
        service = desk.nps
        await seed(db, people, clock.now())
        _, end = service.period(service.round_of(clock.now()))
        async with db.transaction() as session:
            await schedule_timer(session, kind=ROUND, due_at=end, now=clock.now(), payload={"round": 0},
                                 dedup_key=f"{ROUND}:0")
        clock.set(end)
        began = time.perf_counter()
        await desk.timers.tick()
        round_seconds = time.perf_counter() - began
        began = time.perf_counter()
        await desk.timers.tick()
        idle_seconds = time.perf_counter() - began
        async with db.reading() as session:
            pulses = await session.scalar(select(func.count()).select_from(NpsPulse))
            messages = await session.scalar(select(func.count()).select_from(OutboxMessage))
            waiting = await session.scalar(select(func.count()).select_from(Timer).where(
                Timer.kind == "nps.send", Timer.done_at.is_(None)))
        return [name, f"{people:,}", f"{round_seconds:.2f} s", f"{pulses:,}", f"{messages:,}", f"{waiting:,}",
                f"{idle_seconds * 1000:.1f} ms"]
    finally:
        await db.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, nargs="+", default=[1000, 5000])
    args = parser.parse_args()
    rows = [["database", "active requesters", "round", "pulses", "sent now", "waiting (cooldown)", "next tick"]]
    for people in args.people:
        with tempfile.TemporaryDirectory() as workdir:
            rows.append(await one("SQLite", f"sqlite+aiosqlite:///{Path(workdir) / 'nps.db'}", None, people))
        schema = await make_schema("bench_nps")
        try:
            rows.append(await one("PostgreSQL", POSTGRES_URL, schema, people))
        finally:
            await drop_schema(schema)
    print(table(rows))


if __name__ == "__main__":
    asyncio.run(main())
