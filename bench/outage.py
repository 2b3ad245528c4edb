"""An outage: N reports of the same fault from N people in 5 minutes, end to end in one process.

``ithelp serve`` runs in this process on a moved clock (SQLite by default, ``--postgres`` for PostgreSQL) against
a fake Slack enforcing 1 msg/s per conversation plus a workspace budget (``--budget`` a minute; 429 +
Retry-After past it, counted on the same moved clock) and a fake PagerDuty. Steps:

1. Reports: N signed ``/ithelp`` commands from N distinct people, each sent at its own moment of a Poisson
   process over ``--span`` real seconds (default 300: the issue's "2,000 people in 5 minutes"), the clock
   following the wall clock and the server's engine ticking beside them. After the suggestion card appears an
   agent presses "Create incident" (as soon as the card is out); later reports are linked at intake. Printed:
   ack p50/p99 (wall clock, the target of ``bench/ack_latency.py``: p99 < 150 ms), suggestions made, triage
   cards posted, incident cards posted and edits, reports linked. A shorter ``--span`` squeezes the outage.
2. Fan-out: an agent posts one update; the clock moves 1 s per engine pass until every requester has it.
   Printed: delivered / lost / duplicated, simulated drain time against the ideal the limits allow, i.e. the
   rate as a share of the allowed rate. The ideal starts from the fake's window as the update is posted (the
   incident card edits and triage cards of the last minute still count against the budget) and counts the
   bot's other messages during the drain (the incident card showing the update): each message takes the
   earliest slot the sliding window frees, and frees its own 60 s later.
3. Pages: the clock moves 2 hours, past every report's 1-hour first-response target; the incident's clock (its
   anchor report's) breaches and its two-level chain pages; the other reports' clocks are covered by it.
   Printed: chat pages per level and PagerDuty triggers per dedup key.

    python bench/outage.py [--reports 2000] [--budget 1000] [--span 300] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _support import POSTGRES_URL, drop_schema, make_schema
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.config import parse_config
from bot.routing import Action, Form
from bot.server import Server, freeze_startup_heap
from bot.simulators import slack_requests as rq
from bot.simulators.http import post
from bot.simulators.pagers import FakePagerDuty
from bot.simulators.slack_api import FakeSlackApi
from store.db import Database
from store.incident_models import IncidentLink, IncidentSuggestion
from store.migrate import upgrade
from store.models import OutboxMessage, TicketEvent

SECRET = "bench-signing-secret"
TRIAGE, AGENT, ONCALL1, ONCALL2 = "CBENCHTRIAGE", "UAGENT1", "UONCALL1", "UONCALL2"
START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
WORDINGS = ("email is down", "Email down in Pune", "email down again", "EMAIL IS DOWN!!", "email not working, down")


def config_text(db_url: str, schema: str | None, slack_url: str, pagerduty_url: str) -> str:
    policies = "\n".join(f"    {p}: {{breach: urgent}}" for p in ("P1", "P2", "P3", "P4"))
    sla = "\n".join(f"    {p}: {{first_response: 1h, resolution: 24h}}" for p in ("P1", "P2", "P3", "P4"))
    return f"""
database: {{url: "{db_url}", schema_name: {schema or "null"}, pool_size: 20}}
slack: {{bot_token: xoxb-bench, signing_secret: {SECRET}, api_url: "{slack_url}", triage_channel: {TRIAGE}}}
agents: {{slack_users: [{AGENT}, {ONCALL1}, {ONCALL2}]}}
surveys: {{enabled: false}}
engine: {{batch_size: 200, min_interval_per_channel: 1s}}
server: {{request_deadline: 20s}}
incidents: {{suggest_after: 5, window: 15m, similarity: 80}}
default_calendar: always
calendars: {{always: {{timezone: UTC, always_open: true}}}}
sla:
  policies:
{sla}
pagers:
  pagerduty:
    ops: {{routing_key: rk-bench, events_url: "{pagerduty_url}"}}
escalation:
  max_chat_pages_per_hour: 1000
  chains:
    urgent:
      levels:
        - {{notify: ["slack:user:{ONCALL1}", "pagerduty:ops"], wait: 10m}}
        - {{notify: ["slack:user:{ONCALL2}"], wait: 10m}}
  policies:
{policies}
"""


class Outage:
    def __init__(self, server: Server, slack: FakeSlackApi, clock: ManualClock, db: Database) -> None:
        self.server, self.slack, self.clock, self.db = server, slack, clock, db
        self.url = f"{server.url}/slack/events"

    async def tick(self) -> None:
        assert self.server.engine is not None
        await self.server.engine.tick()

    async def send(self, request: rq.SignedRequest) -> tuple[int, object]:
        return await post(self.url, request.body, request.headers)

    async def report(self, user: str, text: str) -> float:
        started = time.perf_counter()
        status, _ = await self.send(rq.slash_command(text, user, SECRET))
        assert status == 200, status
        return (time.perf_counter() - started) * 1000

    def triage_posts(self, marker: str | None = None) -> list[dict[str, object]]:
        return [c for c in self.slack.calls_to("chat.postMessage")
                if c["channel"] == TRIAGE and (marker is None or marker in str(c["text"]))]

    async def scalar(self, statement: object) -> int:
        async with self.db.reading() as session:
            return int(await session.scalar(statement) or 0)  # type: ignore[call-overload]


async def reports(outage: Outage, n: int, span: float, seed: int) -> tuple[list[float], int | None, float]:
    """Step 1, open loop: n people each send their report at their own moment, arrivals spread at random
    (a Poisson process) over ``span`` real seconds; the moved clock follows the wall clock, and the engine runs
    once a second beside the requests (``ithelp serve``'s own scheduler). Returns the ack latencies, the incident id
    and the wall time of the step."""
    arrivals = poisson_arrivals(n, span, seed)
    latencies: list[float] = []
    incident_id: int | None = None
    started = time.perf_counter()

    def follow_wall_clock() -> None:
        outage.clock.set(START + timedelta(seconds=time.perf_counter() - started))

    async def one(index: int, at: float) -> None:
        await asyncio.sleep(max(0.0, at - (time.perf_counter() - started)))
        follow_wall_clock()
        latencies.append(await outage.report(f"UP{index:05d}", WORDINGS[index % len(WORDINGS)]))

    sending = asyncio.gather(*(one(index, at) for index, at in enumerate(arrivals)))
    while not sending.done():  # the server's own engine ticks every second; the agent watches the triage channel
        await asyncio.wait([sending], timeout=0.25)
        follow_wall_clock()
        incident_id = incident_id or await accept_when_shown(outage)
    await sending  # a failed report fails the bench
    for _ in range(120):  # the last reports' set-up; a suggestion card still waiting in the triage channel
        if incident_id is not None:
            break
        outage.clock.advance(timedelta(seconds=1))
        await outage.tick()
        incident_id = await accept_when_shown(outage)
    return latencies, incident_id, time.perf_counter() - started


def poisson_arrivals(n: int, span: float, seed: int) -> list[float]:
    """n arrival times (seconds from the start) of a Poisson process at n/span per second, scaled to end by span:
    people notice an outage independently, so reports come in random clumps, not evenly spaced."""
    rng = random.Random(seed)
    gaps = [rng.expovariate(1.0) for _ in range(n)]
    total = sum(gaps)
    moments, elapsed = [], 0.0
    for gap in gaps:
        elapsed += gap
        moments.append(elapsed / total * span)
    return moments


async def accept_when_shown(outage: Outage) -> int | None:
    """The agent presses "Create incident" once the suggestion card is in the triage channel; the incident id."""
    if not outage.triage_posts("similar reports"):
        return None
    suggestion = await outage.scalar(select(func.min(IncidentSuggestion.id)))
    anchor = await outage.scalar(select(IncidentSuggestion.anchor_ticket_id).where(IncidentSuggestion.id == suggestion))
    await outage.send(rq.block_action(Action.INCIDENT_ACCEPT.value, f"{anchor}:{suggestion}", AGENT, SECRET,
                                      channel_id=TRIAGE, message_ts="1.0"))
    await outage.tick()
    return await outage.scalar(select(IncidentLink.incident_id).limit(1))


async def drain(outage: Outage, seconds: int) -> None:
    """Run the engine once a simulated second (as ``ithelp serve`` does) for ``seconds``."""
    for _ in range(seconds):
        outage.clock.advance(timedelta(seconds=1))
        await outage.tick()


async def fan_out(outage: Outage, incident_id: int, n: int, budget: int) -> dict[str, float]:
    """Step 2: one update to everyone affected, the clock moved 1 s per engine pass until all have it."""
    def delivered() -> Counter[str]:
        return Counter(str(c["channel"]) for c in outage.slack.calls_to("chat.postMessage")
                       if str(c["channel"]).startswith("DUP") and "Update on" in str(c["text"]))

    affected = await outage.scalar(select(func.count()).select_from(IncidentLink).where(
        IncidentLink.incident_id == incident_id))
    began = outage.clock.now()
    in_window = [c.at for c in outage.slack.calls if c.ok and c.method in ("chat.postMessage", "chat.update")
                 and c.at > began.timestamp() - 60]
    status, _ = await outage.send(rq.view_submission(
        Form.INCIDENT_UPDATE.value, {"incident_note": {"input": "Mail relay restarting; next update in 15 minutes"}},
        AGENT, SECRET, private_metadata=str(incident_id)))
    assert status == 200
    wall = time.perf_counter()
    last_count, last_at = 0, began
    quiet = 0
    for _ in range(3600):
        await outage.tick()
        count = sum(delivered().values())
        if count != last_count:
            last_count, last_at, quiet = count, outage.clock.now(), 0
        elif count >= affected - 1:  # a declared incident's anchor may be the agent's own ticket, not one of the N
            quiet += 1
            if count >= affected or quiet > 90:  # longer than a Retry-After of the workspace's minute
                break
        outage.clock.advance(timedelta(seconds=1))
    got = delivered()
    drain = (last_at - began).total_seconds()
    sent = [c for c in outage.slack.calls if c.ok and c.method in ("chat.postMessage", "chat.update")
            and began.timestamp() <= c.at <= last_at.timestamp()]
    updates = [c for c in sent if c.method == "chat.postMessage"
               and str(c.args.get("channel", "")).startswith("DUP") and "Update on" in str(c.args.get("text"))]
    # The bot's other messages meanwhile (the incident card showing the update, ticket cards) take slots too.
    others = len(sent) - len(updates)
    ideal = allowed_drain(in_window, began.timestamp(), len(got) + others, budget)
    late = sorted(updates, key=lambda c: c.at)[-3:]
    print("  last updates accepted: " + ", ".join(f"{c.args['channel']} at +{c.at - began.timestamp():.1f} s"
                                                 for c in late), file=sys.stderr)
    missing = sorted({f"DUP{i:05d}" for i in range(n)} - set(got))
    if missing:
        print(f"  not reached by the update: {', '.join(missing[:10])}", file=sys.stderr)
    return {"affected": affected, "people": len(got), "messages": sum(got.values()),
            "duplicates": sum(c - 1 for c in got.values() if c > 1), "lost": n - len(got) if n >= len(got) else 0,
            "drain_s": drain, "ideal_s": ideal, "wall_s": time.perf_counter() - wall,
            "rejected_429": outage.slack.rejected_429, "others": others}


def allowed_drain(in_window: list[float], began: float, n: int, budget: int) -> float:
    """Seconds from ``began`` until the limits let ``n`` more messages through, given the messages already
    accepted in the sliding minute (``in_window``): each takes the earliest free slot, freeing its own 60 s on."""
    slots = [began] * max(0, budget - len(in_window)) + sorted(max(began, at + 60.0) for at in in_window)
    heapq.heapify(slots)
    last = began
    for _ in range(n):
        last = heapq.heappop(slots)
        heapq.heappush(slots, last + 60.0)
    return last - began


async def pages(outage: Outage, pagerduty: FakePagerDuty) -> dict[str, object]:
    """Step 3: 2 simulated hours in 10-minute engine passes."""
    for _ in range(12):  # past the first-response target (1 h) of the incident and of every report it covers
        outage.clock.advance(timedelta(minutes=10))
        await outage.tick()
    per_level: Counter[int] = Counter()
    for call in outage.slack.calls_to("chat.postMessage"):
        text = json.dumps(call)
        for level in (1, 2):
            if f"level {level} of 2" in text and call["channel"] in (ONCALL1, ONCALL2):
                per_level[level] += 1
    triggers = Counter(str(e["dedup_key"]) for e in pagerduty.events if e["event_action"] == "trigger")
    return {"chat pages per level": dict(per_level), "PagerDuty triggers per dedup key": dict(triggers)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=2000, help="reports from distinct people (default 2000)")
    parser.add_argument("--budget", type=int, default=1000, help="workspace messages per minute at the fake")
    parser.add_argument("--span", type=float, default=300.0,
                        help="real seconds over which the reports arrive (default 300: 2,000 people in 5 minutes)")
    parser.add_argument("--seed", type=int, default=20, help="seed of the arrival moments")
    parser.add_argument("--debug", action="store_true", help="print the triage channel's posts")
    parser.add_argument("--postgres", action="store_true", help=f"PostgreSQL ({POSTGRES_URL}) instead of SQLite")
    args = parser.parse_args()
    logging.getLogger("ithelp").setLevel(logging.ERROR)  # 429s are expected here; the figures say how many

    clock = ManualClock(START)
    schema = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.postgres:
            schema = await make_schema("outage")
            url = POSTGRES_URL
        else:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'outage.db'}"
        try:
            async with FakeSlackApi(clock=lambda: clock.now().timestamp()) as slack, \
                    FakePagerDuty("rk-bench") as pagerduty:
                slack.set_rate_limit(1.0, args.budget)
                for user in (AGENT, ONCALL1, ONCALL2, *(f"UP{i:05d}" for i in range(args.reports))):
                    slack.add_user(user, name=user.lower(), real_name=user, tz="Asia/Kolkata")
                config = parse_config(config_text(url, schema, slack.url, pagerduty.events_url), env={})
                db = Database(url, pool_size=20, schema=schema)
                await upgrade(db)
                server = Server(config, clock=clock, db=db, host="127.0.0.1", port=0)
                await server.start()
                freeze_startup_heap()  # as `ithelp serve` does once started
                try:
                    outage = Outage(server, slack, clock, db)
                    latencies, incident_id, report_wall = await reports(outage, args.reports, args.span, args.seed)
                    await drain(outage, 120)  # the triage channel's backlog at 1 msg/s
                    linked = await outage.scalar(select(func.count()).select_from(IncidentLink))
                    suggestions = await outage.scalar(select(func.count()).select_from(IncidentSuggestion))
                    triage, incident_cards = outage.triage_posts(), outage.triage_posts("Incident:")
                    edits = [c for c in slack.calls_to("chat.update") if "Incident:" in str(c["text"])]
                    assert incident_id is not None, "no incident was suggested"
                    fanout = await fan_out(outage, incident_id, args.reports, args.budget)
                    paged = await pages(outage, pagerduty)
                    final_triage, final_incident_cards = outage.triage_posts(), outage.triage_posts("Incident:")
                    if args.debug:
                        async with db.reading() as session:
                            for row in (await session.execute(select(OutboxMessage).where(
                                    OutboxMessage.delivered_at.is_(None)))).scalars():
                                print(row.id, row.kind, row.idempotency_key, row.next_attempt_at, row.last_error)
                    breached = await outage.scalar(select(func.count(func.distinct(TicketEvent.ticket_id))).where(
                        TicketEvent.kind == "sla_breached"))
                finally:
                    await server.stop()
                    await db.dispose()
        finally:
            if schema:
                await drop_schema(schema)

    q = statistics.quantiles(latencies, n=100)
    rate = fanout["ideal_s"] / fanout["drain_s"] if fanout["drain_s"] and fanout["ideal_s"] else float("nan")
    lines = [
        f"outage: {args.reports} reports from {args.reports} people arriving over {args.span:.0f} s "
        f"({'PostgreSQL' if args.postgres else 'SQLite'}; fake Slack 1 msg/s/conversation + {args.budget}/min)",
        f"  acks: p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms, max {max(latencies):.1f} ms (target p99 < 150 ms); "
        f"step wall time {report_wall:.1f} s",
        f"  suggestions: {suggestions}; triage posts: {len(triage)} ({len(triage) - len(incident_cards)} ticket "
        f"and suggestion cards, {len(incident_cards)} incident card), incident card edits: {len(edits)}; "
        f"tickets linked: {linked}",
        f"  update fan-out: {fanout['people']:.0f}/{args.reports} people, {fanout['messages']:.0f} messages, "
        f"{fanout['duplicates']:.0f} duplicates, {fanout['lost']:.0f} lost, {fanout['rejected_429']:.0f} answered 429; "
        f"drained in {fanout['drain_s']:.0f} simulated s against the ideal {fanout['ideal_s']:.0f} s for them and the "
        f"{fanout['others']:.0f} other messages the bot sent meanwhile "
        f"({rate:.0%} of the allowed rate; {fanout['wall_s']:.1f} s wall)",
        f"  at the end (2 simulated hours later): triage posts {len(final_triage)}, of them incident cards "
        f"{len(final_incident_cards)}; tickets breached: {breached}",
        f"  pages: {paged}",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
