"""Ack latency of signed `/ithelp <text>` requests: `ithelp serve` (SQLite, PostgreSQL) vs a bare Bolt app.

Each request to ithelp really opens a ticket (row + event + outbox rows) and the outbox posts the
triage card to a fake Slack while the load runs. The bare Bolt app only acks: it is the floor.

    python bench/ack_latency.py [--requests 1000] [--concurrency 16] [--rounds 2] [--knowledge]

``--knowledge`` turns on the knowledge base (the shipped test collection; every request matches articles),
so the figures include the suggestions each opening writes.

This is a shared 2-core machine: the load generator, the server and PostgreSQL compete for it, and
one burst's figures swing by a third. So every target stays up and the rounds take turns, and each
ithelp round is compared with the bare floor of the same round. The load generator is kept light
(requests signed before the clock starts, raw keep-alive connections; its CPU per request is
printed) so that it takes as little as it can from the servers it measures.
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
from dataclasses import dataclass, field
from pathlib import Path

from _support import (
    POSTGRES_URL,
    ROOT,
    Result,
    client_cpu,
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

from bot.simulators.slack_api import FakeSlackApi
from store.db import Database
from store.models import OutboxMessage, Ticket

SECRET = "bench-signing-secret"
USERS = [f"UBENCH{i:03d}" for i in range(50)]


KNOWLEDGE = False
"""``--knowledge``: serve with the knowledge base on."""


def config_text(db_url: str, schema: str | None, slack_url: str) -> str:
    knowledge = f"knowledge: {{folder: \"{ROOT / 'tests' / 'data' / 'kb' / 'articles'}\"}}\n" if KNOWLEDGE else ""
    return f"""
database: {{url: "{db_url}", schema_name: {schema or "null"}, pool_size: 20}}
slack: {{bot_token: xoxb-bench, signing_secret: {SECRET}, api_url: "{slack_url}", triage_channel: C0TRIAGE}}
engine: {{min_interval_per_channel: 0s, tick_interval: 1s}}
{knowledge}"""


def make_request(index: int) -> rq.SignedRequest:
    return rq.slash_command(f"Bench problem number {index}: laptop will not charge", USERS[index % len(USERS)],
                            SECRET)


@dataclass
class Target:
    """One server under test, kept running across rounds."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    db: Database | None = None  # ithelp: where to see that every ticket's opening was written
    max_rounds: int = 1_000
    rounds: list[Result] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # server CPU per request, each round
    client_cpu_ms: list[float] = field(default_factory=list)  # the load generator's CPU per request, each round
    set_up_s: list[float] = field(default_factory=list)  # last opening written, after the last ack


async def start_ithelp(name: str, db_url: str, schema: str | None, slack: FakeSlackApi, workdir: Path) -> Target:
    config = workdir / f"{'postgresql' if schema else 'sqlite'}.yaml"
    config.write_text(config_text(db_url, schema, slack.url))
    port = free_port()
    process = start_process([sys.executable, "-m", "bot", "serve", "--config", str(config), "--port", str(port)],
                            {"PYTHONPATH": str(ROOT)}, workdir)
    await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz", process)
    return Target(name, process, f"http://127.0.0.1:{port}/slack/events", Database(db_url, pool_size=1, schema=schema))


async def start_bare(loop: str, slack: FakeSlackApi, workdir: Path) -> Target:
    port = free_port()
    process = start_process([sys.executable, str(ROOT / "bench" / "_bare_bolt.py"), str(port), SECRET, slack.url,
                             loop], {}, workdir)
    url = f"http://127.0.0.1:{port}/slack/events"
    await asyncio.to_thread(wait_http, url, process)
    return Target(f"bare slack-bolt, ack only ({loop})", process, url)


async def run_round(target: Target, first: int, total: int, concurrency: int, *, last: bool) -> None:
    """One burst; for ithelp, after the previous burst's openings are all written (a clean start)."""
    if target.db is not None:
        await all_set_up(target.db)

    def make(index: int) -> rq.SignedRequest:
        return make_request(first + index)

    cpu_before, client_before = process_cpu(target.process.pid), client_cpu()
    result = await fire(target.url, make, total, concurrency, target.name)
    target.cpu_ms.append((process_cpu(target.process.pid) - cpu_before) / total * 1000)
    target.client_cpu_ms.append((client_cpu() - client_before) / total * 1000)
    if target.db is not None:
        last_ack = time.monotonic()
        target.set_up_s.append(await all_set_up(target.db) - last_ack)
        if not last:
            await all_delivered(target.db)
    target.rounds.append(result)


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


async def all_delivered(db: Database, timeout: float = 120) -> None:  # noqa: ASYNC109
    """Wait until the outbox has nothing left to send, so the next target's round runs on a quiet machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with db.reading() as session:
            left = await session.scalar(select(func.count()).select_from(OutboxMessage).where(
                OutboxMessage.delivered_at.is_(None), OutboxMessage.dead_at.is_(None)))
        if not left:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{left} messages still not delivered after {timeout:.0f} s")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--knowledge", action="store_true", help="serve with the knowledge base on")
    args = parser.parse_args()
    global KNOWLEDGE
    KNOWLEDGE = args.knowledge
    targets: list[Target] = []
    schema: str | None = None
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        async with FakeSlackApi() as slack:
            for user in USERS:
                slack.add_user(user, real_name=f"Bench {user}", tz="Europe/London")
            try:
                # The floor on both event loops (ithelp serve runs on uvloop); each round compares with the faster.
                targets += [await start_bare("asyncio", slack, workdir), await start_bare("uvloop", slack, workdir)]
                if not args.skip_sqlite:
                    sqlite = await start_ithelp("ithelp serve (SQLite)", f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
                                                None, slack, workdir)
                    sqlite.max_rounds = 1  # its openings take longest to catch up: one round keeps us under 2 min
                    targets.append(sqlite)
                if not args.skip_postgres:
                    schema = await make_schema("bench_ack")
                    targets.append(await start_ithelp("ithelp serve (PostgreSQL)", POSTGRES_URL, schema, slack,
                                                      workdir))
                for target in targets:
                    await fire(target.url, make_request, 100, args.concurrency, "warm-up")
                    if target.db is not None:
                        await all_set_up(target.db)
                        await all_delivered(target.db)
                # Rounds interleave the targets, so a slow spell of this shared machine hits all of them.
                for number in range(args.rounds):
                    going = [t for t in targets if len(t.rounds) < t.max_rounds]
                    for target in going:
                        await run_round(target, (number + 1) * 100_000, args.requests, args.concurrency,
                                        last=number == args.rounds - 1 and target is going[-1])
            finally:
                for target in targets:
                    stop_process(target.process)
                    if target.db is not None:
                        await target.db.dispose()
                if schema is not None:
                    await drop_schema(schema)
    print(report(targets, args))


def report(targets: list[Target], args: argparse.Namespace) -> str:
    # The floor is the bare app on the event loop ithelp serve runs on (uvloop): the same loop, the same
    # aiohttp, only the work differs. The stricter "faster of the two bare rows" is shown beside it.
    same_loop = [r.rps for r in targets[1].rounds]
    faster = [max(t.rounds[i].rps for t in targets[:2]) for i in range(args.rounds)]
    rows = [["target", "requests", "errors", "req/s (median, range)", "p50 ms", "p99 ms",
             "vs bare uvloop, each round", "vs faster bare", "server CPU ms/req", "load gen. CPU ms/req",
             "all tickets set up"]]
    for target in targets:
        rps = [r.rps for r in target.rounds]
        latencies = [ms for r in target.rounds for ms in r.latencies_ms]
        pooled = Result(target.name, len(latencies), 0, 1.0, latencies)
        rows.append([
            target.name, f"{len(target.rounds)} x {args.requests}", str(sum(r.errors for r in target.rounds)),
            f"{statistics.median(rps):.0f} ({min(rps):.0f}-{max(rps):.0f})", f"{pooled.p50:.1f}",
            f"{pooled.pct(0.99):.1f}", ratios(target, same_loop, each=True), ratios(target, faster, each=False),
            f"{statistics.median(target.cpu_ms):.2f}", f"{statistics.median(target.client_cpu_ms):.2f}",
            f"{max(target.set_up_s):.1f} s after last ack (worst)" if target.set_up_s else "-",
        ])
    return "\n".join([
        f"ack latency: {args.rounds} rounds of {args.requests} signed /ithelp requests at concurrency "
        f"{args.concurrency}, the targets taking turns",
        table(rows),
        "targets: ithelp >= 50% of the bare floor's req/s (the bare app on uvloop, as ithelp serve runs, in the "
        "same round); p99 < 150 ms on PostgreSQL",
        "each ithelp ack follows a committed ticket row; its opening (event, SLA timers, card outbox rows) is",
        "written just after, stepping aside during the burst: 'all tickets set up' = the last opening committed",
        "server CPU ms/req: the server process's CPU time while a round's requests ran, per request (median);",
        "load gen. CPU ms/req: the same for this process, which sends the (pre-signed) requests and is also the",
        "fake Slack that ithelp's outbox posts triage cards to",
    ])


def ratios(target: Target, floors: list[float], *, each: bool) -> str:
    values = [r.rps / floor * 100 for r, floor in zip(target.rounds, floors, strict=False)]
    listed = " / ".join(f"{value:.0f}%" for value in values) + " " if each else ""
    return f"{listed}(median {statistics.median(values):.0f}%)"


if __name__ == "__main__":
    asyncio.run(main())
