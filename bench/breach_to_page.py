"""Breach to page: 100k open P1 tickets, 5k of them breach first response within one minute.

Every open ticket is seeded as production leaves it after ``/ithelp``: a requester person, the ticket
row (with its SLA due times), its ``opened`` event and its pending ``sla.first_response`` and
``sla.resolution`` timer rows (kind, payload and dedup key exactly as ``bot/sla.py`` writes them).
The 5k breaching tickets' first-response timers fall due over one minute of real time; the rest are
far off. ``ithelp serve`` (real clock) then runs the real path: SLA timer → breach event →
escalation chain → outbox ``pagerduty.trigger`` → a fake PagerDuty in this process, which stamps
each arrival. Latency = arrival at the fake minus the timer's due time.

It also times an idle engine tick (timers + outbox, nothing due) at 10k and at 100k open tickets:
it should be flat (partial indexes on pending timers / unsent outbox rows).

    python bench/breach_to_page.py [--open 100000] [--breaching 5000] [--spread 60]
                                   [--min-interval 1s] [--sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _support import POSTGRES_URL, ROOT, drop_schema, free_port, make_schema, stop_process, table, wait_http
from sqlalchemy import func, insert, select

from bot.clock import SystemClock
from bot.config import parse_config
from bot.desk import build_desk
from bot.simulators.pagers import FakePagerDuty
from store.db import Database
from store.migrate import upgrade
from store.models import Person, Ticket, TicketEvent, Timer

ROUTING_KEY = "R0BENCHROUTINGKEY0000000000000000"
FIRST_RESPONSE = timedelta(minutes=30)
RESOLUTION = timedelta(hours=4)
CHUNK = 2000


def config_text(db_url: str, schema: str | None, events_url: str, *, min_interval: str = "1s",
                batch_size: int = 1000, engine_extra: str = "") -> str:
    # P1 runs on a 24x7 calendar so due = opened + target exactly. No warn_at / update_every: only the
    # first-response and resolution timers exist, so what falls due in the window is exactly the breaches.
    return f"""
database: {{url: "{db_url}", schema_name: {schema or "null"}, pool_size: 20}}
default_calendar: always
calendars: {{always: {{timezone: UTC, always_open: true}}}}
sla:
  policies:
    P1: {{calendar: always, first_response: 30m, resolution: 4h}}
escalation:
  chains:
    page: {{levels: [{{notify: ["pagerduty:bench"], wait: 30m}}]}}
  policies:
    P1: {{breach: page}}
pagers:
  pagerduty:
    bench: {{routing_key: {ROUTING_KEY}, events_url: "{events_url}"}}
surveys: {{enabled: false}}
engine: {{tick_interval: 1s, batch_size: {batch_size}, min_interval_per_channel: {min_interval}{engine_extra}}}
"""


def start_server(config: Path, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """``ithelp serve`` with its log in a file: a pipe nobody reads fills up (httpx logs every request at
    INFO) and then blocks the server mid-run."""
    log = (workdir / f"{config.stem}.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "bot", "serve", "--config", str(config), "--port", str(port)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=workdir, stdout=subprocess.DEVNULL,
                            stderr=log)


class TimedPagerDuty(FakePagerDuty):
    """FakePagerDuty that stamps each accepted event with its wall-clock arrival time."""

    def __init__(self, routing_key: str | None = None) -> None:
        super().__init__(routing_key)
        self.arrivals: list[tuple[float, dict[str, Any]]] = []

    async def _record(self, item: dict[str, Any]) -> None:
        self.arrivals.append((time.time(), item))
        await super()._record(item)


async def seed_open_tickets(db: Database, start: int, count: int, due_of: Any, *, priority: str = "P1",
                            calendar: str = "always", first_response: timedelta = FIRST_RESPONSE,
                            resolution: timedelta = RESOLUTION, timers: bool = True) -> None:
    """Insert ``count`` open tickets numbered from ``start`` (people, tickets, opened events, SLA timers).

    ``due_of(i)`` is ticket i's first-response due time; it was opened ``first_response`` before that.
    Timer payloads and dedup keys are the ones ``SlaClock._sync_timers`` writes for a fresh ticket
    (generation ``v1``).
    """
    now = datetime.now(UTC)
    for lo in range(start, start + count, CHUNK):
        hi = min(start + count, lo + CHUNK)
        people, tickets, events, timer_rows = [], [], [], []
        for i in range(lo, hi):
            due = due_of(i)
            opened = due - first_response
            people.append({"id": i, "platform": "slack", "platform_user_id": f"UB{i:07d}",
                           "display_name": f"Bench Person {i}", "timezone": "Europe/London",
                           "email": None, "is_agent": False, "created_at": opened, "updated_at": opened})
            resolution_due = opened + resolution
            tickets.append({"id": i, "requester_id": i, "origin_platform": "slack", "origin_conversation": None,
                            "origin_thread": None, "origin_link": None, "intake_key": f"bench:{i}",
                            "summary": f"Bench problem {i}: laptop will not charge", "description": "",
                            "category": "Hardware", "priority": priority, "status": "new", "assignee_id": None,
                            "calendar": calendar, "created_at": opened, "updated_at": opened,
                            "first_response_at": None, "resolved_at": None, "closed_at": None,
                            "paused_since": None, "paused_seconds": 0.0, "first_response_due": due,
                            "resolution_due": resolution_due, "next_update_due": None,
                            "last_requester_update_at": opened, "updates_muted": False, "reopen_count": 0,
                            "version": 1})
            events.append({"ticket_id": i, "at": opened, "actor_id": i, "kind": "opened",
                           "payload": {"summary": tickets[-1]["summary"], "priority": priority,
                                       "category": "Hardware", "origin": "slack",
                                       "sla_targets": {"first_response": first_response.total_seconds(),
                                                       "resolution": resolution.total_seconds()}}})
            if timers:
                for kind, metric, at in (("sla.first_response", "first_response", due),
                                         ("sla.resolution", "resolution", resolution_due)):
                    timer_rows.append({"kind": kind, "ticket_id": i, "due_at": at,
                                       "payload": {"metric": metric, "due": at.isoformat()},
                                       "dedup_key": f"sla:{i}:{kind}:{metric}:v1:{int(at.timestamp())}",
                                       "lease_owner": None, "lease_until": None, "attempts": 0,
                                       "done_at": None, "outcome": None, "last_error": None,
                                       "created_at": min(opened, now)})
        async with db.transaction() as session:
            await session.execute(insert(Person), people)
            await session.execute(insert(Ticket), tickets)
            await session.execute(insert(TicketEvent), events)
            if timer_rows:
                await session.execute(insert(Timer), timer_rows)
    if db.is_postgres:
        async with db.engine.begin() as conn:
            for name in ("people", "tickets", "ticket_events", "timers"):
                await conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                                           f"(SELECT max(id) FROM {name}))")
                await conn.exec_driver_sql(f"ANALYZE {name}")


async def idle_tick_ms(db: Database, config_yaml: str, rounds: int = 15) -> tuple[float, float]:
    """Median ms of an engine tick (timers then outbox) with nothing due, and of /metrics' count queries."""
    config = parse_config(config_yaml)
    desk = build_desk(config, db, SystemClock())
    ticks, counts = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        await desk.timers.tick()
        await desk.outbox.tick()
        ticks.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        async with db.reading() as session:
            await session.scalar(select(func.count()).select_from(Timer).where(
                Timer.done_at.is_(None), Timer.due_at <= datetime.now(UTC)))
        counts.append((time.perf_counter() - started) * 1000)
    return statistics.median(ticks), statistics.median(counts)


def timer_lateness(metrics_url: str) -> dict[str, str]:
    """p50/p99 of how late the server's timers ran (due -> handler start), read from the upper bounds of
    its ``ithelp_timer_lateness_seconds`` histogram: the part of breach-to-page spent before paging."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    buckets = []
    for line in text.splitlines():
        if line.startswith("ithelp_timer_lateness_seconds_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound), float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1] if buckets else 0.0

    def upper(q: float) -> str:
        bound = next((b for b, count in buckets if total and count >= q * total), None)
        return "n/a" if bound is None else f"<= {bound:g}"

    return {"p50": upper(0.5), "p99": upper(0.99)}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run(args: argparse.Namespace, workdir: Path) -> None:
    schema = None if args.sqlite else await make_schema("bench_breach")
    db_url = f"sqlite+aiosqlite:///{workdir / 'breach.db'}" if args.sqlite else POSTGRES_URL
    process = None
    db = Database(db_url, pool_size=5, schema=schema)
    try:
        async with TimedPagerDuty(ROUTING_KEY) as pagerduty:
            cfg = config_text(db_url, schema, pagerduty.events_url, min_interval=args.min_interval,
                              batch_size=args.batch_size)
            (workdir / "breach.yaml").write_text(cfg)
            await upgrade(db)
            far = datetime.now(UTC) + timedelta(minutes=29)
            quiet = args.open - args.breaching
            seeded = time.perf_counter()
            first = min(10_000, quiet)
            await seed_open_tickets(db, 1, first, lambda i: far + timedelta(milliseconds=i))
            tick_10k = await idle_tick_ms(db, cfg)
            await seed_open_tickets(db, 1 + first, quiet - first, lambda i: far + timedelta(milliseconds=i))
            tick_full = await idle_tick_ms(db, cfg)
            seed_s = time.perf_counter() - seeded

            port = free_port()
            process = start_server(workdir / "breach.yaml", port, workdir)
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz", process)
            # The breaching tickets: first response due over the next `spread` seconds, starting shortly.
            window_start = datetime.now(UTC) + timedelta(seconds=3)
            step = args.spread / max(1, args.breaching)
            due: dict[str, datetime] = {}

            def due_of(i: int) -> datetime:
                at = window_start + timedelta(seconds=(i - quiet - 1) * step)
                due[f"IT-{i}"] = at
                return at

            await seed_open_tickets(db, quiet + 1, args.breaching, due_of)
            if datetime.now(UTC) > window_start:
                late = (datetime.now(UTC) - window_start).total_seconds()
                print(f"note: seeding the breaching tickets ended {late:.1f} s after the first was due; "
                      "those pages start late", file=sys.stderr)
            deadline = window_start.timestamp() + args.spread + args.grace
            while time.time() < deadline and len(pagerduty.arrivals) < args.breaching:  # noqa: ASYNC110
                await asyncio.sleep(0.25)
            ended = time.time()
            lateness = await asyncio.to_thread(timer_lateness, f"http://127.0.0.1:{port}/metrics")
    finally:
        if process is not None:
            stop_process(process)
        await db.dispose()
        if schema is not None:
            await drop_schema(schema)

    latencies, seen = [], set()
    duplicates = 0
    first_arrival = min((at for at, _ in pagerduty.arrivals), default=ended)
    for at, event in pagerduty.arrivals:
        key = event.get("dedup_key", "")
        if event.get("event_action") != "trigger" or key not in due:
            continue
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        latencies.append(at - due[key].timestamp())
    missing = args.breaching - len(seen)
    last_arrival = max((at for at, _ in pagerduty.arrivals), default=ended)
    rows = [["store", "open", "breaching", "paged", "missing", "dupes", "p50 s", "p99 s", "max s", "pages/s"],
            ["SQLite" if args.sqlite else "PostgreSQL", str(args.open), str(args.breaching), str(len(seen)),
             str(missing), str(duplicates), f"{pct(latencies, 0.5):.2f}", f"{pct(latencies, 0.99):.2f}",
             f"{max(latencies, default=float('nan')):.2f}",
             f"{len(seen) / max(1e-9, last_arrival - first_arrival):.0f}"]]
    print(f"breach to page: {args.breaching} first-response breaches due over {args.spread:.0f} s among {args.open} "
          f"open P1 tickets; tick 1s, batch {args.batch_size}, min_interval_per_channel {args.min_interval}; "
          f"seeding {seed_s:.0f} s")
    print(table(rows))
    print(f"of which timer lateness (due -> handler ran, server histogram): p50 {lateness['p50']} s, "
          f"p99 {lateness['p99']} s")
    if missing:
        print(f"({missing} pages had not arrived {args.grace:.0f} s after the window closed: p99/max are lower bounds)")
    print()
    print(table([["idle engine tick (nothing due)", "median ms", "metrics count ms"],
                 [f"{min(10_000, args.open - args.breaching)} open", f"{tick_10k[0]:.1f}", f"{tick_10k[1]:.1f}"],
                 [f"{args.open - args.breaching} open", f"{tick_full[0]:.1f}", f"{tick_full[1]:.1f}"]]))
    if args.timeline:
        origin = min(due.values()).timestamp()
        buckets: dict[int, list[int]] = {}
        for at, event in pagerduty.arrivals:
            if event.get("dedup_key") in due:
                buckets.setdefault(int((at - origin) // 5), [0, 0])[0] += 1
        for when in due.values():
            buckets.setdefault(int((when.timestamp() - origin) // 5), [0, 0])[1] += 1
        print()
        print(table([["seconds after first due", "fell due", "paged"]] + [
            [f"{b * 5}-{b * 5 + 5}", str(buckets[b][1]), str(buckets[b][0])] for b in sorted(buckets)]))
    print("targets: breach-to-page p99 <= 2 s, none missing or doubled; idle tick flat from 10k to 100k open")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--open", type=int, default=100_000)
    parser.add_argument("--breaching", type=int, default=5000)
    parser.add_argument("--spread", type=float, default=60.0, help="seconds over which the breaches fall due")
    parser.add_argument("--grace", type=float, default=20.0, help="seconds to wait for pages after the window")
    parser.add_argument("--min-interval", default="1s", help="engine.min_interval_per_channel (product default 1s)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--timeline", action="store_true", help="print pages due/arrived per 5 s")
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL (try --open 20000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        await run(args, Path(tmp))


if __name__ == "__main__":
    asyncio.run(main())
