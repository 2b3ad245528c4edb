"""Escalation chains: breach → page level by level until an agent acknowledges, claims or resolves.

Time is a ManualClock moved by hand; pagers are fake PagerDuty / Opsgenie / webhook servers on
loopback; chat pages are caught by a recording channel for ``slack:`` and ``teams:`` targets.
"""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from bot import messages
from bot.config import AppConfig
from bot.desk import Desk, build_desk
from bot.engine import Delivered, OutboxItem
from bot.escalation import STEP_TIMER, EscalationService
from bot.people import PersonRef
from bot.simulators.pagers import FakeOpsgenie, FakePagerDuty, FakeWebhookReceiver
from bot.text import plain
from bot.tickets import NotAllowed, TicketSnapshot
from store.escalation_models import Escalation
from store.models import OutboxMessage, Person, Ticket, TicketEvent, Timer
from store.queries import schedule_timer
from tests.outbox_views import body, headline, slack
from tests.statement_log import StatementLog

AGENT = PersonRef("slack", "UAGENT1", display_name="Alice")
REQUESTER = PersonRef("slack", "UREQ1", display_name="Person UREQ1")
ROUTING_KEY, GENIE_KEY, HOOK_SECRET = "rk-ops", "genie-key", "hook-secret"


class RecordingChannel:
    """Stands in for Slack/Teams delivery: keeps every item it is handed."""

    def __init__(self) -> None:
        self.items: list[OutboxItem] = []

    async def deliver(self, item: OutboxItem) -> Delivered:
        self.items.append(item)
        return Delivered(message_id=f"m{item.id}")

    def pacing_key(self, item: OutboxItem) -> str:
        return item.target

    def pages(self, target: str | None = None) -> list[OutboxItem]:
        return [i for i in self.items if i.kind == "page" and messages.read_notice(i.payload).view.actions
                and (target is None or i.target == target)]


@dataclass
class Pagers:
    pagerduty: FakePagerDuty
    opsgenie: FakeOpsgenie
    webhook: FakeWebhookReceiver

    def yaml(self, chains: str, *, policies: str = "breach: standard", cap: int = 6) -> str:
        policy_lines = "\n".join(f"    {p}: {{{policies}}}" for p in ("P1", "P2", "P3", "P4"))
        return f"""
pagers:
  pagerduty:
    ops: {{routing_key: {ROUTING_KEY}, events_url: "{self.pagerduty.events_url}"}}
  opsgenie:
    ops: {{api_key: {GENIE_KEY}, api_url: "{self.opsgenie.url}"}}
  webhook:
    hook: {{url: "{self.webhook.url}/hook", secret: {HOOK_SECRET}}}
escalation:
  max_chat_pages_per_hour: {cap}
  chains:
{chains}
  policies:
{policy_lines}
"""


STANDARD = """
    standard:
      levels:
        - {notify: ["slack:user:UONCALL1", "pagerduty:ops"], wait: 10m}
        - {notify: ["slack:user:UONCALL2", "opsgenie:ops", "webhook:hook"], wait: 10m}
        - {notify: ["slack:user:ULEAD"], wait: 10m}
"""


@pytest.fixture
async def pagers() -> AsyncIterator[Pagers]:
    async with FakePagerDuty(ROUTING_KEY) as pd, FakeOpsgenie(GENIE_KEY) as og, FakeWebhookReceiver(HOOK_SECRET) as wh:
        yield Pagers(pd, og, wh)


@dataclass
class Bed:
    desk: Desk
    service: EscalationService
    chat: RecordingChannel

    async def pump(self) -> None:
        """Run due timers, then deliver the outbox (twice, for messages the first pass enqueued)."""
        await self.desk.timers.tick()
        await self.desk.outbox.tick()
        await self.desk.outbox.tick()


def make_bed(config: AppConfig, db: Any, clock: Any, replica: str | None = None) -> Bed:
    desk = build_desk(config, db, clock, replica=replica)
    service = desk.escalation
    chat = RecordingChannel()
    desk.outbox.register("slack", chat)
    desk.outbox.register("teams", chat)
    return Bed(desk, service, chat)


@pytest.fixture
def bed_for(db: Any, clock: Any, make_config: Callable[..., AppConfig], pagers: Pagers) -> Callable[..., Bed]:
    made: list[Bed] = []

    def make(chains: str = STANDARD, **kwargs: Any) -> Bed:
        bed = make_bed(make_config(pagers.yaml(chains, **kwargs)), db, clock)
        made.append(bed)
        return bed

    return make


async def open_ticket(bed: Bed, summary: str = "VPN down for the whole sales team") -> TicketSnapshot:
    from bot.tickets import Origin

    result = await bed.desk.tickets.open(REQUESTER, summary, origin=Origin("slack", conversation="C0GENERAL"))
    return result.ticket


async def breach(bed: Bed, ticket_id: int, trigger: str = "breach", metric: str = "first_response") -> bool:
    """What the SLA hook does: start the escalation inside a transaction."""
    async with bed.desk.db.transaction() as session:
        ticket = await session.get(Ticket, ticket_id)
        assert ticket is not None
        return await bed.service.start(session, ticket, trigger, bed.desk.clock.now(), metric=metric)


async def escalation_of(bed: Bed, ticket_id: int) -> Escalation:
    async with bed.desk.db.transaction() as session:
        return (await session.execute(select(Escalation).where(Escalation.ticket_id == ticket_id)
                                      .order_by(Escalation.id.desc()).limit(1))).scalar_one()


async def test_a_breach_pages_level_one_and_then_level_two_when_nobody_acknowledges(
    bed_for: Callable[..., Bed], clock: Any, pagers: Pagers
) -> None:
    bed = bed_for()
    ticket = await open_ticket(bed)
    clock.advance(timedelta(minutes=20))
    assert await breach(bed, ticket.id)
    await bed.pump()

    [page] = bed.chat.pages()
    assert page.target == "slack:user:UONCALL1"
    assert headline(page).startswith(f"🚨 {ticket.number} breached its first response target")
    assert headline(page).endswith("level 1 of 3")
    assert "Person UREQ1" in (body(page) or "") and ticket.summary in (body(page) or "")
    assert [a.action.value for a in messages.read_notice(page.payload).view.actions] == [
        "escalation.acknowledge", "escalation.claim"]
    assert slack(page)[1].startswith(f"🚨 {ticket.number} breached")  # the number once, for its reader
    assert slack(page)[1].count(ticket.number) == 1
    assert pagers.pagerduty.actions_for(ticket.number) == ["trigger"]

    clock.advance(timedelta(minutes=9))
    await bed.pump()
    assert bed.chat.pages("slack:user:UONCALL2") == []
    clock.advance(timedelta(minutes=1))
    await bed.pump()
    [second] = bed.chat.pages("slack:user:UONCALL2")
    assert headline(second).endswith("level 2 of 3")
    assert [c.action for c in pagers.opsgenie.calls] == ["create"]
    assert pagers.opsgenie.calls[0].alias == ticket.number
    [hook] = pagers.webhook.received  # the fake checked the HMAC signature
    assert hook["event"] == "escalation.paged" and hook["level"] == 2 and pagers.webhook.rejected == []
    async with bed.desk.db.transaction() as session:
        state = await bed.service.escalation_state(session, ticket.id)
    assert state == "Escalated: level 2 of 3, paging UONCALL2, Opsgenie (ops), webhook (hook)"


async def test_acknowledging_at_level_two_stops_the_chain_and_acknowledges_pagerduty_with_the_same_key(
    bed_for: Callable[..., Bed], clock: Any, pagers: Pagers
) -> None:
    bed = bed_for()
    ticket = await open_ticket(bed)
    await breach(bed, ticket.id)
    await bed.pump()
    clock.advance(timedelta(minutes=10))
    await bed.pump()
    assert len(bed.chat.pages()) == 2

    said = await bed.service.acknowledge(ticket.id, AGENT)
    assert said == f"Acknowledged {ticket.number}; paging stopped."
    await bed.pump()
    clock.advance(timedelta(hours=2))
    await bed.pump()

    assert bed.chat.pages("slack:user:ULEAD") == []
    assert pagers.pagerduty.actions_for(ticket.number) == ["trigger", "acknowledge"]
    assert [c.action for c in pagers.opsgenie.calls] == ["create", "acknowledge"]
    follow_ups = [i for i in bed.chat.items if i.kind == "page" and "acknowledged by Alice" in headline(i)]
    assert sorted(i.target for i in follow_ups) == ["slack:user:UONCALL1", "slack:user:UONCALL2"]
    escalation = await escalation_of(bed, ticket.id)
    assert (escalation.status, escalation.acknowledged_by) == ("acknowledged", "Alice")
    assert escalation.acknowledged_at == clock.now() - timedelta(hours=2)
    async with bed.desk.db.transaction() as session:
        state = await bed.service.escalation_state(session, ticket.id)
    assert state is not None and plain(state) == "Acknowledged by Alice Mon 23 Nov 09:10 (London time)"
    # A double click changes nothing and says who got there first.
    again = await bed.service.acknowledge(ticket.id, PersonRef("slack", "UAGENT2", display_name="Bob"))
    assert again == f"{ticket.number} was already acknowledged by Alice at 09:10."


async def test_resolving_the_ticket_ends_the_escalation_and_resolves_every_pager_alert(
    bed_for: Callable[..., Bed], clock: Any, pagers: Pagers
) -> None:
    bed = bed_for()
    ticket = await open_ticket(bed)
    await breach(bed, ticket.id)
    clock.advance(timedelta(minutes=10))
    await bed.pump()
    await bed.desk.tickets.resolve(ticket.id, AGENT, "Restarted the VPN concentrator")
    await bed.pump()
    clock.advance(timedelta(hours=1))
    await bed.pump()

    assert pagers.pagerduty.actions_for(ticket.number) == ["trigger", "resolve"]
    assert [c.action for c in pagers.opsgenie.calls] == ["create", "close"]
    assert pagers.opsgenie.alerts[ticket.number].status == "closed"
    assert [e["event"] for e in pagers.webhook.received] == ["escalation.paged", "escalation.resolved"]
    assert bed.chat.pages("slack:user:ULEAD") == []
    assert (await escalation_of(bed, ticket.id)).status == "finished"


async def test_claim_on_a_page_assigns_the_ticket_acknowledges_and_stops_paging(
    bed_for: Callable[..., Bed], clock: Any, pagers: Pagers
) -> None:
    bed = bed_for()
    ticket = await open_ticket(bed)
    await breach(bed, ticket.id)
    await bed.pump()

    said = await bed.service.acknowledge(ticket.id, AGENT, claim=True)
    assert said == f"You claimed {ticket.number}; paging stopped."
    await bed.pump()
    clock.advance(timedelta(hours=1))
    await bed.pump()

    assert (await bed.desk.tickets.get(ticket.id)).assignee_address == "slack:UAGENT1"
    assert len(bed.chat.pages()) == 1
    assert pagers.pagerduty.actions_for(ticket.number) == ["trigger", "acknowledge"]
    assert (await escalation_of(bed, ticket.id)).acknowledged_by == "Alice"


async def test_a_repeating_chain_loops_exactly_the_configured_number_of_times(
    bed_for: Callable[..., Bed], clock: Any
) -> None:
    bed = bed_for("""
    standard:
      repeat: 2
      levels:
        - {notify: ["slack:user:UONCALL1"], wait: 5m}
        - {notify: ["slack:user:UONCALL2"], wait: 5m}
""")
    ticket = await open_ticket(bed)
    await breach(bed, ticket.id)
    for _ in range(12):
        await bed.pump()
        clock.advance(timedelta(minutes=5))
    headlines = [headline(p).split(" — ")[1] for p in bed.chat.pages()]
    assert headlines == [f"level {level} of 2 (round {loop} of 3)" for loop in (1, 2, 3) for level in (1, 2)]
    escalation = await escalation_of(bed, ticket.id)
    assert (escalation.status, escalation.finish_reason) == ("finished", "exhausted")


async def test_the_paging_window_delays_a_level_but_never_skips_it(bed_for: Callable[..., Bed], clock: Any) -> None:
    bed = bed_for("""
    standard:
      only_between: "09:00-17:00"
      calendar: london
      levels:
        - {notify: ["slack:user:UONCALL1"], wait: 15m}
        - {notify: ["slack:user:UONCALL2"], wait: 15m}
""")
    ticket = await open_ticket(bed)
    clock.set(datetime(2026, 11, 23, 16, 55, tzinfo=UTC))  # London is on GMT in November
    await breach(bed, ticket.id)
    await bed.pump()
    assert len(bed.chat.pages("slack:user:UONCALL1")) == 1
    clock.advance(timedelta(minutes=15))  # 17:10: level 2 is due but the window is shut
    await bed.pump()
    assert bed.chat.pages("slack:user:UONCALL2") == []
    assert (await escalation_of(bed, ticket.id)).next_step_at == datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    clock.set(datetime(2026, 11, 24, 8, 59, tzinfo=UTC))
    await bed.pump()
    assert bed.chat.pages("slack:user:UONCALL2") == []
    clock.set(datetime(2026, 11, 24, 9, 0, tzinfo=UTC))
    await bed.pump()
    [late] = bed.chat.pages("slack:user:UONCALL2")
    assert headline(late).endswith("level 2 of 2")

    # A breach at night waits for the morning before paging level 1.
    night = await open_ticket(bed, "Laptop will not boot")
    clock.set(datetime(2026, 11, 24, 21, 0, tzinfo=UTC))
    await breach(bed, night.id)
    await bed.pump()
    assert [p for p in bed.chat.pages() if p.ticket_id == night.id] == []
    clock.set(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))
    await bed.pump()
    assert len([p for p in bed.chat.pages() if p.ticket_id == night.id]) == 1


async def test_the_same_step_timer_fired_twice_pages_once(bed_for: Callable[..., Bed], db: Any, clock: Any) -> None:
    bed = bed_for()
    ticket = await open_ticket(bed)
    await breach(bed, ticket.id)
    await bed.pump()
    async with db.transaction() as session:
        step = (await session.execute(select(Timer).where(Timer.kind == STEP_TIMER, Timer.done_at.is_(None))
                                      )).scalar_one()
        for _copy in range(2):  # the same step queued again (a replayed schedule, a second replica)
            await schedule_timer(session, kind=STEP_TIMER, due_at=step.due_at, now=clock.now(),
                                 ticket_id=ticket.id, payload=dict(step.payload))
    clock.advance(timedelta(minutes=10))
    await bed.pump()
    await bed.pump()
    assert len(bed.chat.pages("slack:user:UONCALL2")) == 1
    # Running the first level again is also refused: its token is spent.
    async with db.transaction() as session:
        await schedule_timer(session, kind=STEP_TIMER, due_at=clock.now(), now=clock.now(), ticket_id=ticket.id,
                             payload=dict(step.payload))
    await bed.pump()
    assert len(bed.chat.pages()) == 2


async def test_a_pagerduty_429_is_retried_and_one_trigger_is_delivered(
    bed_for: Callable[..., Bed], clock: Any, pagers: Pagers
) -> None:
    bed = bed_for()
    ticket = await open_ticket(bed)
    pagers.pagerduty.fail_next(429, retry_after=5)
    await breach(bed, ticket.id)
    await bed.pump()
    assert pagers.pagerduty.events == []
    clock.advance(timedelta(seconds=6))
    await bed.pump()
    clock.advance(timedelta(seconds=6))
    await bed.pump()
    assert pagers.pagerduty.actions_for(ticket.number) == ["trigger"]


async def test_a_pagerduty_400_is_not_retried_and_is_kept_as_a_dead_letter(
    bed_for: Callable[..., Bed], db: Any, clock: Any, pagers: Pagers
) -> None:
    bed = bed_for()
    ticket = await open_ticket(bed)
    pagers.pagerduty.fail_next(400)
    await breach(bed, ticket.id)
    await bed.pump()
    clock.advance(timedelta(minutes=5))
    await bed.pump()
    async with db.transaction() as session:
        row = (await session.execute(select(OutboxMessage).where(OutboxMessage.kind == "pagerduty.trigger"))
               ).scalar_one()
    assert row.dead_at is not None and row.attempts == 1 and "HTTP 400" in (row.last_error or "")
    assert pagers.pagerduty.events == []


async def test_a_non_agent_pressing_acknowledge_is_refused_and_paging_goes_on(
    bed_for: Callable[..., Bed], clock: Any
) -> None:
    bed = bed_for()
    ticket = await open_ticket(bed)
    await breach(bed, ticket.id)
    await bed.pump()
    with pytest.raises(NotAllowed):
        await bed.service.acknowledge(ticket.id, REQUESTER)
    with pytest.raises(NotAllowed):
        await bed.service.acknowledge(ticket.id, REQUESTER, claim=True)
    clock.advance(timedelta(minutes=10))
    await bed.pump()
    assert len(bed.chat.pages("slack:user:UONCALL2")) == 1
    assert (await escalation_of(bed, ticket.id)).status == "active"


async def test_editing_the_config_mid_escalation_does_not_change_the_running_chain(
    bed_for: Callable[..., Bed], db: Any, clock: Any, make_config: Callable[..., AppConfig], pagers: Pagers
) -> None:
    bed = bed_for()
    ticket = await open_ticket(bed)
    await breach(bed, ticket.id)
    await bed.pump()
    # The admin edits app.yaml and the bot restarts with a different chain under the same name.
    edited = make_config(pagers.yaml("""
    standard:
      levels:
        - {notify: ["slack:user:UNEW1"], wait: 1h}
"""))
    restarted = make_bed(edited, db, clock)
    clock.advance(timedelta(minutes=10))
    await restarted.pump()
    clock.advance(timedelta(minutes=10))
    await restarted.pump()
    assert [p.target for p in restarted.chat.pages()] == ["slack:user:UONCALL2", "slack:user:ULEAD"]
    assert [headline(p)[-12:] for p in restarted.chat.pages()] == ["level 2 of 3", "level 3 of 3"]


async def test_only_one_escalation_runs_per_ticket_and_trigger(bed_for: Callable[..., Bed], clock: Any) -> None:
    bed = bed_for(policies="breach: standard, warn: standard")
    ticket = await open_ticket(bed)
    assert await breach(bed, ticket.id)
    assert not await breach(bed, ticket.id)
    assert not await breach(bed, ticket.id, metric="resolution")
    assert await breach(bed, ticket.id, trigger="warn")  # a different trigger is a different escalation
    await bed.pump()
    assert len(bed.chat.pages("slack:user:UONCALL1")) == 2
    await bed.service.acknowledge(ticket.id, AGENT)
    assert await breach(bed, ticket.id)  # once acknowledged, a later breach may start a new one


async def test_the_auditor_requeues_a_stuck_escalation_and_counts_it(
    bed_for: Callable[..., Bed], db: Any, clock: Any
) -> None:
    bed = bed_for()
    ticket = await open_ticket(bed)
    await breach(bed, ticket.id)
    await bed.pump()
    assert await bed.service.audit() == 0
    async with db.transaction() as session:  # the step timer is lost (failed for good, deleted by hand …)
        await session.execute(update(Timer).where(Timer.kind == STEP_TIMER).values(done_at=clock.now(),
                                                                                   outcome="failed"))
    assert await bed.service.audit() == 1
    assert bed.desk.metrics.escalations_stuck._value.get() == 1
    assert await bed.service.audit() == 0  # re-queued: it has a future step again
    clock.advance(timedelta(minutes=10))
    await bed.pump()
    assert len(bed.chat.pages("slack:user:UONCALL2")) == 1
    async with db.transaction() as session:  # the periodic audit timer keeps itself going while needed
        audits = await session.scalar(select(func.count()).select_from(Timer).where(Timer.kind == "escalation.audit"))
    assert audits and audits >= 1


async def test_chat_pages_over_the_hourly_cap_are_held_back_and_summarised(
    bed_for: Callable[..., Bed], clock: Any
) -> None:
    bed = bed_for("""
    standard:
      levels:
        - {notify: ["slack:user:UONCALL1", "slack:channel:C0PAGES"], wait: 2h}
""", cap=2)
    clock.set(datetime(2026, 11, 23, 10, 5, tzinfo=UTC))
    tickets = [await open_ticket(bed, f"Outage number {n}") for n in range(4)]
    for ticket in tickets:
        await breach(bed, ticket.id)
    await bed.pump()
    assert [p.ticket_id for p in bed.chat.pages("slack:user:UONCALL1")] == [tickets[0].id, tickets[1].id]
    assert len(bed.chat.pages("slack:channel:C0PAGES")) == 4  # channels are not capped
    clock.set(datetime(2026, 11, 23, 11, 0, tzinfo=UTC))
    await bed.pump()
    [summary] = [i for i in bed.chat.items if i.kind == "notice" and "held back" in headline(i)]
    assert summary.target == "slack:user:UONCALL1"
    assert headline(summary).startswith("🚨 2 more pages held back")
    assert f"{tickets[2].number}, {tickets[3].number}" in (body(summary) or "")


async def test_three_engines_over_five_hundred_breaching_tickets_page_each_level_exactly_once(
    databases: Any, db: Any, clock: Any, make_config: Callable[..., AppConfig], pagers: Pagers
) -> None:
    if not db.is_postgres:
        pytest.skip("the concurrency proof runs on PostgreSQL")
    config = make_config(pagers.yaml("""
    standard:
      levels:
        - {notify: ["pagerduty:ops"], wait: 10m}
        - {notify: ["webhook:hook"], wait: 10m}
""", cap=100000))
    beds = [make_bed(config, databases.another_handle(db), clock, replica=f"r{i}") for i in range(3)]
    count = 500
    async with db.transaction() as session:
        person = Person(platform="slack", platform_user_id="UREQ1", display_name="Requester", is_agent=False,
                        created_at=clock.now(), updated_at=clock.now())
        session.add(person)
        await session.flush()
        session.add_all(Ticket(requester_id=person.id, origin_platform="slack", summary=f"Outage {n}",
                               description="", priority="P2", status="new", calendar="london",
                               created_at=clock.now(), updated_at=clock.now(), paused_seconds=0.0,
                               updates_muted=False, reopen_count=0, version=1) for n in range(count))
    async with db.transaction() as session:
        ids = list((await session.execute(select(Ticket.id).order_by(Ticket.id))).scalars())

    async def start_all(bed: Bed) -> int:
        started_here = 0
        for chunk in range(0, count, 50):
            async with bed.desk.db.transaction() as session:
                rows = (await session.execute(select(Ticket).where(Ticket.id.in_(ids[chunk:chunk + 50]))
                                              .order_by(Ticket.id).with_for_update())).scalars().all()
                for ticket in rows:
                    started_here += await bed.service.start(session, ticket, "breach", clock.now())
        return started_here

    async def run_all() -> None:
        await asyncio.gather(*(bed.desk.timers.tick() for bed in beds))
        await asyncio.gather(*(bed.desk.timers.tick() for bed in beds))  # the same timers again: no-ops
        await asyncio.gather(*(bed.desk.outbox.tick() for bed in beds))

    assert sum(await asyncio.gather(*(start_all(bed) for bed in beds))) == count
    await run_all()
    clock.advance(timedelta(minutes=10))
    await run_all()
    clock.advance(timedelta(minutes=10))
    await run_all()

    numbers = [f"IT-{i}" for i in ids]
    triggers = Tally(e["dedup_key"] for e in pagers.pagerduty.events if e["event_action"] == "trigger")
    assert triggers == Tally({n: 1 for n in numbers})
    hooks = Tally(e["ticket"] for e in pagers.webhook.received if e["event"] == "escalation.paged")
    assert hooks == Tally({n: 1 for n in numbers})
    async with db.transaction() as session:
        statuses = Tally((await session.execute(select(Escalation.status))).scalars())
    assert statuses == Tally({"finished": count})


async def test_a_breach_timer_pages_without_reading_back_what_it_already_holds(
    bed_for: Callable[..., Bed], db: Any, clock: Any, pagers: Pagers
) -> None:
    # A breach storm runs this path thousands of times a minute: every statement in it counts.
    bed = bed_for()
    ticket = await open_ticket(bed)
    async with db.transaction() as session:
        due = (await session.get(Ticket, ticket.id)).first_response_due  # type: ignore[union-attr]
    await bed.pump()
    clock.set(due - timedelta(seconds=1))
    await bed.pump()  # whatever else fell due before the breach (the requester's progress digest) runs first
    clock.set(due + timedelta(seconds=1))
    with StatementLog(db) as log:
        await bed.desk.timers.tick()

    assert log.starting("SELECT people") == []  # the requester came with the ticket's lock
    assert log.starting("SELECT escalations") == []  # the new escalation came back from its INSERT
    # The breach event and the escalation's "started" and "paged" events go out in one flush, before
    # the triage card that is keyed on the breach event's id (SQLAlchemy writes them one by one on SQLite).
    assert len(log.starting("INSERT INTO ticket_events")) == (1 if db.is_postgres else 3)
    written = [s.split(" (")[0] for s in log.statements if s.startswith("INSERT INTO")]
    assert written[-1] == "INSERT INTO outbox" and "INSERT INTO ticket_events" in written[:-1]  # the card, last
    await bed.pump()
    assert bed.chat.pages("slack:user:UONCALL1") and pagers.pagerduty.actions_for(ticket.number) == ["trigger"]


async def test_breaches_rerun_one_by_one_after_a_failed_group_still_leave_the_audit_scheduled(
    bed_for: Callable[..., Bed], db: Any, clock: Any
) -> None:
    # Three breaches fall due together and share a transaction; the third one's hook fails, so the
    # group rolls back (taking the audit timer its first escalation scheduled) and each reruns alone.
    bed = bed_for()
    sla = bed.desk.sla
    tickets = [await open_ticket(bed, f"Dock {n} is dead") for n in range(3)]
    doomed = tickets[-1].id

    async def chat_api_down(_run: Any, ticket: Ticket, _metric: str, _level: str) -> None:
        if ticket.id == doomed:
            raise RuntimeError("chat API down")

    sla.on_breach.append(chat_api_down)
    async with db.transaction() as session:
        due = (await session.get(Ticket, tickets[0].id)).first_response_due  # type: ignore[union-attr]
    clock.set(due + timedelta(seconds=1))
    await bed.desk.timers.tick()

    async with db.reading() as session:
        escalated = set((await session.execute(select(Escalation.ticket_id))).scalars())
        audits = await session.scalar(select(func.count()).select_from(Timer).where(
            Timer.kind == "escalation.audit", Timer.done_at.is_(None)))
    assert escalated == {tickets[0].id, tickets[1].id}
    assert audits == 1  # the safety net for stuck escalations survived the rollback


async def test_a_group_of_breaches_locks_its_tickets_and_reads_their_marks_in_one_statement_each(
    bed_for: Callable[..., Bed], db: Any, clock: Any, pagers: Pagers
) -> None:
    bed = bed_for()
    tickets = [await open_ticket(bed, f"Laptop {n} will not boot") for n in range(10)]
    async with db.transaction() as session:
        due = (await session.get(Ticket, tickets[0].id)).first_response_due  # type: ignore[union-attr]
    clock.set(due - timedelta(seconds=1))
    await bed.pump()  # whatever else fell due before the breaches (the requesters' progress digests) runs first
    clock.set(due + timedelta(seconds=1))
    with StatementLog(db) as log:
        await bed.desk.timers.tick()

    assert len(log.starting("SELECT tickets")) == 1  # one per breach would be 10
    assert len(log.starting("SELECT ticket_events")) == 1
    await bed.pump()
    assert sorted(pagers.pagerduty.actions_for(t.number) for t in tickets) == [["trigger"]] * 10


async def test_a_breach_already_on_record_is_not_recorded_again_when_its_timer_runs_in_a_group(
    bed_for: Callable[..., Bed], db: Any, clock: Any, pagers: Pagers
) -> None:
    bed = bed_for()
    paged, fresh = await open_ticket(bed, "Dock is dead"), await open_ticket(bed, "Screen flickers")
    async with db.transaction() as session:
        due = (await session.get(Ticket, paged.id)).first_response_due  # type: ignore[union-attr]
    clock.set(due + timedelta(seconds=1))
    await bed.desk.timers.tick()  # both breach and page
    late = due + timedelta(minutes=1)
    async with db.transaction() as session:
        for ticket in (paged, fresh):  # a timer run twice (a replica's lease ran out), and a new one
            original = (await session.execute(select(Timer).where(
                Timer.ticket_id == ticket.id, Timer.kind == "sla.first_response"))).scalar_one()
            await schedule_timer(session, kind=original.kind, due_at=original.due_at, now=clock.now(),
                                 ticket_id=ticket.id, payload=original.payload, dedup_key=f"again:{ticket.id}")
    async with db.transaction() as session:  # `fresh` is due again: its first response is still open
        await session.execute(update(Ticket).where(Ticket.id == fresh.id).values(first_response_due=due))
        await session.execute(text("DELETE FROM ticket_events WHERE ticket_id = :t AND kind = 'sla_breached'"),
                              {"t": fresh.id})
        await session.execute(update(Escalation).where(Escalation.ticket_id == fresh.id).values(
            status="finished", active_key=str(fresh.id)))
    clock.set(late)
    with StatementLog(db) as log:
        await bed.desk.timers.tick()

    assert len(log.starting("SELECT tickets")) == 1  # the two ran as a group
    async with db.reading() as session:
        breaches = Tally((await session.execute(select(TicketEvent.ticket_id).where(
            TicketEvent.kind == "sla_breached"))).scalars())
    assert breaches == Tally({paged.id: 1, fresh.id: 1})


async def test_the_auditor_checks_every_active_escalation_in_one_query(
    bed_for: Callable[..., Bed], db: Any
) -> None:
    bed = bed_for()
    for n in range(12):
        ticket = await open_ticket(bed, f"Laptop {n} will not boot")
        await breach(bed, ticket.id)
    with StatementLog(db) as log:
        assert await bed.service.audit() == 0
    assert len(log.starting("SELECT")) <= 2  # one per escalation would be 12 more
