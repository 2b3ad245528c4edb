"""RSS of ``ithelp serve``: idle, then with 100k open tickets (SQLite and PostgreSQL).

The server starts on an empty database with Slack pointed at a fake; RSS (VmRSS from /proc) is read
after a few idle engine ticks. Then 100k open tickets are bulk-inserted as production leaves them
(requester person, ticket, ``opened`` event, pending first-response and resolution SLA timers; see
``breach_to_page.seed_open_tickets``), the engine ticks over them, /metrics is scraped and signed
``/ithelp`` requests open more tickets; RSS and the peak (VmHWM) are read again.

    python bench/memory.py [--tickets 100000] [--skip-postgres] [--skip-sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from _support import POSTGRES_URL, drop_schema, fire, free_port, make_schema, rq, stop_process, table, wait_http
from breach_to_page import seed_open_tickets, start_server

from bot.simulators.slack_api import FakeSlackApi
from store.db import Database
from store.migrate import upgrade

SECRET = "bench-signing-secret"
USERS = [f"UMEM{i:03d}" for i in range(20)]


def config_text(db_url: str, schema: str | None, slack_url: str) -> str:
    return f"""
database: {{url: "{db_url}", schema_name: {schema or "null"}, pool_size: 10}}
slack: {{bot_token: xoxb-bench, signing_secret: {SECRET}, api_url: "{slack_url}", triage_channel: C0TRIAGE}}
engine: {{tick_interval: 1s, min_interval_per_channel: 0s}}
"""


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


async def measure(name: str, db_url: str, schema: str | None, slack: FakeSlackApi, tickets: int,
                  workdir: Path) -> list[str]:
    config = workdir / f"memory-{name.lower()}.yaml"
    config.write_text(config_text(db_url, schema, slack.url))
    db = Database(db_url, pool_size=5, schema=schema)
    port = free_port()
    process = None
    try:
        await upgrade(db)
        process = start_server(config, port, workdir)
        base = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(wait_http, f"{base}/healthz", process)
        await asyncio.sleep(3)  # a few idle ticks
        idle, _ = rss_mb(process.pid)
        far = datetime.now(UTC) + timedelta(hours=2)
        await seed_open_tickets(db, 1, tickets, lambda i: far + timedelta(milliseconds=i))
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                async with http.get(f"{base}/metrics") as response:
                    await response.read()
                await asyncio.sleep(1)
        result = await fire(f"{base}/slack/events",
                            lambda i: rq.slash_command(f"Memory bench problem {i}", USERS[i % len(USERS)], SECRET),
                            200, 8, "requests")
        await asyncio.sleep(3)  # let the outbox post the new cards and the engine tick a few times
        loaded, peak = rss_mb(process.pid)
        return [name, f"{idle:.0f}", f"{loaded:.0f}", f"{peak:.0f}", f"{result.errors}"]
    finally:
        if process is not None:
            stop_process(process)
        await db.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    rows = [["store", "idle RSS MB", f"RSS MB, {args.tickets} open", "peak MB", "request errors"]]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        async with FakeSlackApi() as slack:
            for user in USERS:
                slack.add_user(user, real_name=f"Bench {user}", tz="Europe/London")
            if not args.skip_sqlite:
                rows.append(await measure("SQLite", f"sqlite+aiosqlite:///{workdir / 'memory.db'}", None, slack,
                                          args.tickets, workdir))
            if not args.skip_postgres:
                schema = await make_schema("bench_memory")
                try:
                    rows.append(await measure("PostgreSQL", POSTGRES_URL, schema, slack, args.tickets, workdir))
                finally:
                    await drop_schema(schema)
    print(f"memory of ithelp serve: idle, then {args.tickets} open tickets + 3 /metrics scrapes + 200 signed /ithelp")
    print(table(rows))
    print("target: RSS < 200 MB with 100k open tickets")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    asyncio.run(main())
