"""Ack latency of signed `/ithelp <text>` requests: `ithelp serve` (SQLite, PostgreSQL) vs a bare Bolt app.

Each request to ithelp really opens a ticket (row + event + outbox rows) and the outbox posts the
triage card to a fake Slack while the load runs. The bare Bolt app only acks: it is the floor.

    python bench/ack_latency.py [--requests 1000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from _support import (
    POSTGRES_URL,
    ROOT,
    Result,
    drop_schema,
    fire,
    free_port,
    make_schema,
    rq,
    start_process,
    stop_process,
    table,
    wait_http,
)
from sqlalchemy import func, select

from store.db import Database
from store.models import Ticket
from tests.fakes.slack_api import FakeSlackApi

SECRET = "bench-signing-secret"
USERS = [f"UBENCH{i:03d}" for i in range(50)]


def config_text(db_url: str, schema: str | None, slack_url: str) -> str:
    return f"""
database: {{url: "{db_url}", schema_name: {schema or "null"}, pool_size: 20}}
slack: {{bot_token: xoxb-bench, signing_secret: {SECRET}, api_url: "{slack_url}", triage_channel: C0TRIAGE}}
engine: {{min_interval_per_channel: 0s, tick_interval: 1s}}
"""


def make_request(index: int) -> rq.SignedRequest:
    return rq.slash_command(f"Bench problem number {index}: laptop will not charge", USERS[index % len(USERS)],
                            SECRET)


async def run_ithelp(name: str, db_url: str, schema: str | None, slack: FakeSlackApi, total: int,
                     concurrency: int, workdir: Path) -> Result:
    config = workdir / f"{name}.yaml"
    config.write_text(config_text(db_url, schema, slack.url))
    port = free_port()
    process = start_process([sys.executable, "-m", "bot", "serve", "--config", str(config), "--port", str(port)],
                            {"PYTHONPATH": str(ROOT)}, workdir)
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz", process)
        url = f"http://127.0.0.1:{port}/slack/events"
        await fire(url, make_request, 100, concurrency, "warm-up")
        db = Database(db_url, pool_size=1, schema=schema)
        try:
            await all_set_up(db)
            cpu_before = process_cpu(process.pid)
            result = await fire(url, make_request, total, concurrency, name)
            result.extra["cpu"] = f"{(process_cpu(process.pid) - cpu_before) / total * 1000:.2f}"
            last_ack = time.monotonic()
            result.extra["set up"] = f"{await all_set_up(db) - last_ack:.1f}"
        finally:
            await db.dispose()
        return result
    finally:
        stop_process(process)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def all_set_up(db: Database, timeout: float = 120) -> float:  # noqa: ASYNC109
    """Wait until no ticket awaits its opening (event, SLA timers, card rows); when that was seen (monotonic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with db.reading() as session:
            pending = await session.scalar(select(func.count()).select_from(Ticket).where(Ticket.setup_pending))
        if not pending:
            return time.monotonic()
        await asyncio.sleep(0.02)
    raise RuntimeError(f"{pending} tickets still not set up after {timeout:.0f} s")


async def run_bare(loop: str, slack: FakeSlackApi, total: int, concurrency: int, workdir: Path) -> Result:
    port = free_port()
    process = start_process([sys.executable, str(ROOT / "bench" / "_bare_bolt.py"), str(port), SECRET, slack.url,
                             loop], {}, workdir)
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/slack/events", process)
        url = f"http://127.0.0.1:{port}/slack/events"
        await fire(url, make_request, 100, concurrency, "warm-up")
        cpu_before = process_cpu(process.pid)
        result = await fire(url, make_request, total, concurrency, f"bare slack-bolt, ack only ({loop})")
        result.extra["cpu"] = f"{(process_cpu(process.pid) - cpu_before) / total * 1000:.2f}"
        return result
    finally:
        stop_process(process)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        async with FakeSlackApi() as slack:
            for user in USERS:
                slack.add_user(user, real_name=f"Bench {user}", tz="Europe/London")
            # The floor on both event loops; ithelp serve runs on uvloop, and is compared with the faster.
            for loop in ("asyncio", "uvloop"):
                results.append(await run_bare(loop, slack, args.requests, args.concurrency, workdir))
            results.append(await run_ithelp("ithelp serve (SQLite)", f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
                                            None, slack, args.requests, args.concurrency, workdir))
            if not args.skip_postgres:
                schema = await make_schema("bench_ack")
                try:
                    results.append(await run_ithelp("ithelp serve (PostgreSQL)", POSTGRES_URL, schema, slack,
                                                    args.requests, args.concurrency, workdir))
                finally:
                    await drop_schema(schema)
    floor = max(results[:2], key=lambda r: r.rps)
    rows = [["target", "requests", "errors", "req/s", "p50 ms", "p99 ms", "req/s vs bare", "server CPU ms/req",
             "all tickets set up"]]
    for result in results:
        rows.append([result.name, str(result.count), str(result.errors), f"{result.rps:.0f}", f"{result.p50:.1f}",
                     f"{result.pct(0.99):.1f}", f"{result.rps / floor.rps * 100:.0f}%", result.extra["cpu"],
                     f"{result.extra['set up']} s after last ack" if "set up" in result.extra else "-"])
    print(f"ack latency: {args.requests} signed /ithelp requests at concurrency {args.concurrency}")
    print(table(rows))
    print("targets: ithelp >= 50% of the bare floor's req/s (the faster bare row); p99 < 150 ms on PostgreSQL")
    print("each ithelp ack follows a committed ticket row; its opening (event, SLA timers, card outbox rows) is")
    print("written just after, yielding to requests in flight: 'all tickets set up' = the last opening committed")
    print("server CPU ms/req: the server process's CPU time while the measured requests ran, per request")


if __name__ == "__main__":
    asyncio.run(main())
