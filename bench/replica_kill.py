"""Replica kill: three ``ithelp serve`` replicas page a breach storm; one is killed (``kill -9``) mid-storm.

20k open P1 tickets are seeded on PostgreSQL (as ``breach_to_page`` seeds them), 1,500 of them breaching
first response over 60 s (25 a second: a storm three replicas keep up with on the 2-core machine, so
what is measured is the kill, not a backlog). Three replicas (real clock, shipped engine settings:
lease 60 s, urgent lease 5 s, 1 s pacing) run the storm against a fake PagerDuty in this process that
answers in 50 ms; halfway through, at a moment it holds pages or breach timers, one replica is sent
SIGKILL. Printed: page delay (arrival at the fake minus the breach's due time) p50 / p99 / max over all
pages and over the pages the killed replica held at the kill (its leased page rows and breach timers),
pages lost (a breach never paged) and duplicates (a breach paged twice: a page the dead replica had
sent but not yet recorded).

    python bench/replica_kill.py [--open 20000] [--breaching 1500] [--spread 60] [--urgent-lease 5s]
                                 [--pager-latency 0.05]

``--urgent-lease 60s`` shows the behaviour before short urgent leases (a dead replica's pages waited
for its 60 s lease).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _support import (
    POSTGRES_URL,
    ROOT,
    drop_schema,
    free_port,
    make_schema,
    start_process,
    stop_process,
    table,
    wait_http,
)
from breach_to_page import ROUTING_KEY, TimedPagerDuty, config_text, pct, seed_open_tickets
from sqlalchemy import select

from store.db import Database
from store.migrate import upgrade
from store.models import OutboxMessage, Timer, ticket_number

REPLICAS = ("replica-a", "replica-b", "replica-c")


async def held_by(db: Database, replica: str) -> set[str]:
    """Tickets whose page (an unsent PagerDuty trigger) or breach timer ``replica`` holds a live lease on."""
    now = datetime.now(UTC)
    async with db.reading() as session:
        pages = (await session.execute(select(OutboxMessage.ticket_id).where(
            OutboxMessage.kind == "pagerduty.trigger", OutboxMessage.lease_owner == f"{replica}-outbox",
            OutboxMessage.delivered_at.is_(None), OutboxMessage.lease_until > now))).scalars()
        timers = (await session.execute(select(Timer.ticket_id).where(
            Timer.kind == "sla.first_response", Timer.lease_owner == f"{replica}-timers", Timer.done_at.is_(None),
            Timer.lease_until > now))).scalars()
        return {ticket_number(ticket_id) for ticket_id in (*pages, *timers) if ticket_id is not None}


def paged(pagerduty: TimedPagerDuty) -> set[str]:
    return {str(event.get("dedup_key")) for _, event in pagerduty.arrivals if event.get("event_action") == "trigger"}


async def run(args: argparse.Namespace, workdir: Path) -> None:
    # The killed replica's connections to the fake pager reset mid-request: expected, not worth a traceback.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    schema = await make_schema("bench_kill")
    db = Database(POSTGRES_URL, pool_size=5, schema=schema)
    processes = []
    try:
        async with TimedPagerDuty(ROUTING_KEY) as pagerduty:
            if args.pager_latency:
                pagerduty.delay_next(args.pager_latency, times=10 * args.breaching)
            cfg = config_text(POSTGRES_URL, schema, pagerduty.events_url, min_interval="1s", batch_size=200,
                              engine_extra=f", urgent_lease: {args.urgent_lease}")
            (workdir / "kill.yaml").write_text(cfg)
            await upgrade(db)
            far = datetime.now(UTC) + timedelta(minutes=29)
            quiet = args.open - args.breaching
            await seed_open_tickets(db, 1, quiet, lambda i: far + timedelta(milliseconds=i))
            ports = [free_port() for _ in REPLICAS]
            for name, port in zip(REPLICAS, ports, strict=True):
                processes.append(start_process(
                    [sys.executable, "-m", "bot", "serve", "--config", str(workdir / "kill.yaml"), "--port", str(port),
                     "--replica", name], {"PYTHONPATH": str(ROOT)}, workdir))
            for process, port in zip(processes, ports, strict=True):
                await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz", process)
            window_start = datetime.now(UTC) + timedelta(seconds=3)
            step = args.spread / max(1, args.breaching)
            due: dict[str, datetime] = {}

            def due_of(i: int) -> datetime:
                at = window_start + timedelta(seconds=(i - quiet - 1) * step)
                due[f"IT-{i}"] = at
                return at

            await seed_open_tickets(db, quiet + 1, args.breaching, due_of)
            kill_at = window_start.timestamp() + args.spread / 2
            await asyncio.sleep(max(0.0, kill_at - time.time()))
            held = await held_by(db, REPLICAS[0])
            while not held and time.time() < kill_at + 10:  # kill it with work in hand
                held = await held_by(db, REPLICAS[0])
            processes[0].kill()
            processes[0].wait()
            killed = time.time()
            deadline = window_start.timestamp() + args.spread + args.grace
            while time.time() < deadline and len(paged(pagerduty)) < args.breaching:  # noqa: ASYNC110
                await asyncio.sleep(0.25)
    finally:
        for process in processes:
            stop_process(process)
        await db.dispose()
        await drop_schema(schema)

    first: dict[str, float] = {}
    pages: dict[str, int] = {}
    for at, event in pagerduty.arrivals:
        key = str(event.get("dedup_key"))
        if event.get("event_action") != "trigger" or key not in due:
            continue
        pages[key] = pages.get(key, 0) + 1
        first.setdefault(key, at)
    delays = [first[key] - due[key].timestamp() for key in first]
    held_delays = [first[key] - due[key].timestamp() for key in held if key in first]
    after_kill = [max(0.0, first[key] - killed) for key in held if key in first]  # 0: it had just sent it
    lost = args.breaching - len(first)
    duplicates = sum(count - 1 for count in pages.values())
    print(f"replica kill: {args.breaching} first-response breaches due over {args.spread:.0f} s among {args.open} open "
          f"P1 tickets, 3 replicas on PostgreSQL (lease 60s, urgent_lease {args.urgent_lease}, pacing 1s), pager "
          f"answering in {args.pager_latency:g} s; "
          f"kill -9 of {REPLICAS[0]} {killed - window_start.timestamp():.1f} s into the storm, holding "
          f"{len(held)} page(s)/breach timer(s)")
    print(table([
        ["pages", "count", "p50 s", "p99 s", "max s"],
        ["all (delay after due)", str(len(delays)), f"{pct(delays, 0.5):.2f}", f"{pct(delays, 0.99):.2f}",
         f"{max(delays, default=float('nan')):.2f}"],
        ["held by the killed replica (after due)", str(len(held_delays)), f"{pct(held_delays, 0.5):.2f}",
         f"{pct(held_delays, 0.99):.2f}", f"{max(held_delays, default=float('nan')):.2f}"],
        ["held by the killed replica (after kill)", str(len(after_kill)), f"{pct(after_kill, 0.5):.2f}",
         f"{pct(after_kill, 0.99):.2f}", f"{max(after_kill, default=float('nan')):.2f}"],
    ]))
    arrived = sorted(first.values())
    rate = len(arrived) / max(1e-9, arrived[-1] - arrived[0]) if len(arrived) > 1 else float("nan")
    print(f"lost (never paged): {lost}; duplicates (paged twice): {duplicates}; {rate:.0f} pages/s "
          f"({args.breaching / args.spread:.0f}/s fell due)")
    print("target: a killed replica's pages out within ~10 s of the kill, none lost")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--open", type=int, default=20_000)
    parser.add_argument("--breaching", type=int, default=1500)
    parser.add_argument("--spread", type=float, default=60.0, help="seconds over which the breaches fall due")
    parser.add_argument("--grace", type=float, default=90.0, help="seconds to wait for pages after the window")
    parser.add_argument("--urgent-lease", default="5s", help="engine.urgent_lease (shipped 5s; 60s = as before)")
    parser.add_argument("--pager-latency", type=float, default=0.05,
                        help="seconds the fake PagerDuty takes to answer (50 ms; at 0.2 s the 4 lanes per "
                             "pager per replica cap each replica at 20 pages/s, below this storm's rate)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        await run(args, Path(tmp))


if __name__ == "__main__":
    asyncio.run(main())
