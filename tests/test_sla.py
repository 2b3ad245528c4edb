"""The SLA clock, on both databases: time only moves when the test moves it, then timers tick."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.calendars import TWENTY_FOUR_SEVEN, build_calendars, calendar_for
from bot.clock import ManualClock
from bot.config import AppConfig, ConfigError
from bot.engine import TimerRun
from bot.people import PersonRef
from bot.sla import (
    FIRST_RESPONSE_TIMER,
    RESOLUTION_TIMER,
    UPDATE_DUE_TIMER,
    WARN_TIMER,
    SlaClock,
    acknowledgement,
    sla_lines,
    sla_outcomes,
)
from bot.text import plain
from bot.tickets import Origin, TicketSnapshot
from bot.views import Moment
from store.models import OutboxMessage, Ticket, TicketEvent, Timer
from store.queries import schedule_timer
from tests.outbox_views import body, headline

ALICE = PersonRef("slack", "UAGENT1", display_name="Alice")
MONDAY_9 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def utc(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def person(user: str = "UREQ1", tz: str | None = "Europe/London") -> PersonRef:
    return PersonRef("slack", user, display_name=f"Person {user}", timezone=tz)


@pytest.fixture
def make_sla_desk(make_desk: Callable[..., Any]) -> Callable[..., Any]:
    """A desk as ``build_desk`` makes it: the SLA clock is part of the core."""

    def make(*, app_config: AppConfig | None = None, database: Any = None) -> Any:
        desk = make_desk(app_config=app_config, database=database)
        assert isinstance(desk.sla, SlaClock)
        return desk

    return make


@pytest.fixture
def sla_desk(make_sla_desk: Callable[..., Any]) -> Any:
    return make_sla_desk()


async def open_ticket(
    desk: Any, priority: str, *, user: str = "UREQ1", tz: str | None = "Europe/London"
) -> TicketSnapshot:
    result = await desk.tickets.open(person(user, tz), "Laptop won't boot", origin=Origin("slack"), priority=priority)
    return result.ticket


async def load(desk: Any, ticket_id: int) -> Ticket:
    async with desk.db.transaction() as session:
        ticket = await session.get(Ticket, ticket_id)
        assert ticket is not None
        return ticket


async def events(desk: Any, ticket_id: int, *kinds: str) -> list[TicketEvent]:
    async with desk.db.transaction() as session:
        query = select(TicketEvent).where(TicketEvent.ticket_id == ticket_id).order_by(TicketEvent.id)
        if kinds:
            query = query.where(TicketEvent.kind.in_(kinds))
        return list((await session.execute(query)).scalars())


async def notices(desk: Any, thread: str, ticket_id: int | None = None) -> list[OutboxMessage]:
    async with desk.db.transaction() as session:
        rows = (await session.execute(select(OutboxMessage).where(OutboxMessage.kind == "notice")
                                      .order_by(OutboxMessage.id))).scalars()
        return [row for row in rows if row.payload["thread"] == thread
                and (ticket_id is None or row.ticket_id == ticket_id)]


async def pending(desk: Any, ticket_id: int) -> list[tuple[str, datetime]]:
    async with desk.db.transaction() as session:
        rows = (await session.execute(select(Timer).where(Timer.ticket_id == ticket_id, Timer.done_at.is_(None))
                                      .order_by(Timer.due_at, Timer.kind))).scalars()
        return [(row.kind, row.due_at) for row in rows]


async def run_at(desk: Any, clock: ManualClock, when: datetime) -> None:
    clock.set(when)
    await desk.timers.tick()


def metrics(rows: list[TicketEvent]) -> list[str]:
    return [row.payload["metric"] for row in rows]


# -- calendars --------------------------------------------------------------------------------------
def test_calendars_come_from_config_with_a_built_in_round_the_clock_one(config: AppConfig,
                                                                      make_config: Callable[..., AppConfig]) -> None:
    calendars = build_calendars(config)
    assert set(calendars) == {"london", "always", TWENTY_FOUR_SEVEN}
    assert calendars["always"].always_open and calendars[TWENTY_FOUR_SEVEN].always_open
    assert not calendars["london"].is_open(utc(28, 12))  # a Saturday
    assert calendar_for(config, calendars, "gone") is calendars["london"]
    broken = make_config().model_copy(update={"calendars": {
        **config.calendars, "night": config.calendars["london"].model_copy(update={"hours": {"mon": ["22:00-06:00"]}}),
    }})
    with pytest.raises(ConfigError, match=r"calendars\.night"):
        build_calendars(broken)


# -- targets ----------------------------------------------------------------------------------------
async def test_friday_half_past_four_ticket_gets_its_first_response_target_on_monday(
    sla_desk: Any, clock: ManualClock
) -> None:
    clock.set(utc(27, 16, 30))
    ticket = await open_ticket(sla_desk, "P2")
    # 1h of business time: 30m on Friday, 30m on Monday; 8h resolution: 30m Friday, 7h30 Monday.
    assert ticket.first_response_due == utc(30, 9, 30)
    assert ticket.resolution_due == utc(30, 16, 30)
    assert (FIRST_RESPONSE_TIMER, utc(30, 9, 30)) in await pending(sla_desk, ticket.id)
    await run_at(sla_desk, clock, utc(29, 12))  # Sunday noon: nothing is late at the weekend
    assert await events(sla_desk, ticket.id, "sla_breached", "sla_warning") == []


async def test_p1_at_two_on_saturday_morning_runs_round_the_clock(sla_desk: Any, clock: ManualClock) -> None:
    clock.set(utc(28, 2))
    ticket = await open_ticket(sla_desk, "P1")
    assert (ticket.first_response_due, ticket.resolution_due) == (utc(28, 2, 15), utc(28, 6))
    await run_at(sla_desk, clock, utc(28, 2, 12))  # 75% of 15m is 02:11:15
    assert metrics(await events(sla_desk, ticket.id, "sla_warning")) == ["first_response"]
    await run_at(sla_desk, clock, utc(28, 2, 16))
    breaches = await events(sla_desk, ticket.id, "sla_breached")
    assert metrics(breaches) == ["first_response"]
    async with sla_desk.db.transaction() as session:
        cards = (await session.execute(select(OutboxMessage).where(
            OutboxMessage.kind == "ticket_card", OutboxMessage.target == "slack:channel:C0TRIAGE"))).scalars().all()
    assert breaches[0].id in [card.payload["event_id"] for card in cards]


async def test_claim_meets_the_first_response_and_its_timer_never_fires(sla_desk: Any, clock: ManualClock) -> None:
    ticket = await open_ticket(sla_desk, "P2")
    clock.advance(timedelta(minutes=20))
    await sla_desk.tickets.claim(ticket.id, ALICE)
    met = await events(sla_desk, ticket.id, "sla_met")
    assert [(e.payload["metric"], e.payload["elapsed_seconds"]) for e in met] == [("first_response", 1200.0)]
    kinds = [kind for kind, _ in await pending(sla_desk, ticket.id)]
    assert FIRST_RESPONSE_TIMER not in kinds and RESOLUTION_TIMER in kinds
    await run_at(sla_desk, clock, utc(23, 10, 30))  # well past the 10:00 first-response target
    assert metrics(await events(sla_desk, ticket.id, "sla_breached", "sla_warning")) == []
    row = await load(sla_desk, ticket.id)
    calendar = sla_desk.sla.calendar(row.calendar)
    assert plain(sla_lines(row, clock.now(), calendar, "Europe/London")[0]) == "First response: met in 20m"


async def test_waiting_on_the_requester_is_left_out_of_the_resolution_clock(sla_desk: Any, clock: ManualClock) -> None:
    ticket = await open_ticket(sla_desk, "P2")  # Mon 09:00, resolution 8h: due Mon 17:00
    await sla_desk.tickets.claim(ticket.id, ALICE)
    clock.set(utc(23, 10))
    await sla_desk.tickets.set_status(ticket.id, ALICE, "waiting_on_requester")
    assert await pending(sla_desk, ticket.id) == []
    row = await load(sla_desk, ticket.id)
    assert row.paused_since == utc(23, 10)
    calendar = sla_desk.sla.calendar(row.calendar)
    assert "Resolution: paused — waiting on the requester" in sla_lines(row, clock.now(), calendar, None)
    assert "Resolution: paused — waiting on you" in sla_lines(row, clock.now(), calendar, None, "requester")

    await run_at(sla_desk, clock, utc(23, 17, 30))  # past the original target, but the ball is with the requester
    assert await events(sla_desk, ticket.id, "sla_breached") == []

    clock.set(utc(24, 10))
    resumed = await sla_desk.tickets.comment(ticket.id, person(), "Here is the serial number")
    # Paused Mon 10:00-17:00 and Tue 09:00-10:00 = 8h of business time; 7h of the 8h budget is left (1h was
    # used on Monday morning): Tue 10:00 + 7h = Tue 17:00.
    assert resumed.status == "in_progress" and resumed.resolution_due == utc(24, 17)
    row = await load(sla_desk, ticket.id)
    assert row.paused_since is None and row.paused_seconds == 8 * 3600
    comment = (await events(sla_desk, ticket.id, "commented"))[-1]
    assert comment.payload["paused_business_seconds"] == 8 * 3600

    clock.set(utc(24, 16))
    await sla_desk.tickets.resolve(ticket.id, ALICE, "Reimaged")
    met = (await events(sla_desk, ticket.id, "sla_met"))[-1]
    assert (met.payload["metric"], met.payload["elapsed_seconds"]) == ("resolution", 7 * 3600.0)
    outcomes = sla_outcomes(await load(sla_desk, ticket.id), await events(sla_desk, ticket.id), calendar, clock.now())
    assert outcomes["resolution"].elapsed_business == timedelta(hours=7) and outcomes["resolution"].met is True
    assert outcomes["first_response"].elapsed_business == timedelta(0) and outcomes["first_response"].met is True


async def test_reopening_resumes_the_resolution_clock_with_the_budget_that_was_left(
    sla_desk: Any, clock: ManualClock
) -> None:
    ticket = await open_ticket(sla_desk, "P2")
    await sla_desk.tickets.claim(ticket.id, ALICE)
    clock.set(utc(23, 12))
    await sla_desk.tickets.resolve(ticket.id, ALICE, "Reset the BIOS")  # 3h used, 5h left
    clock.set(utc(24, 9))
    reopened = await sla_desk.tickets.reopen(ticket.id, person(), "Dead again")
    assert reopened.resolution_due == utc(24, 14)
    assert (RESOLUTION_TIMER, utc(24, 14)) in await pending(sla_desk, ticket.id)
    row = await load(sla_desk, ticket.id)
    calendar = sla_desk.sla.calendar(row.calendar)
    outcome = sla_outcomes(row, await events(sla_desk, ticket.id), calendar, utc(24, 10))["resolution"]
    assert outcome.elapsed_business == timedelta(hours=4) and outcome.met is None


async def test_a_priority_change_recomputes_every_unmet_target(sla_desk: Any, clock: ManualClock) -> None:
    ticket = await open_ticket(sla_desk, "P3")
    # 72h of business time is nine 8-hour days.
    assert (ticket.first_response_due, ticket.resolution_due) == (utc(23, 13), utc(3, 17, month=12))
    clock.set(utc(23, 9, 30))
    raised = await sla_desk.tickets.set_priority(ticket.id, ALICE, "P2")
    assert (raised.first_response_due, raised.resolution_due) == (utc(23, 10), utc(23, 17))
    timers = await pending(sla_desk, ticket.id)
    assert (FIRST_RESPONSE_TIMER, utc(23, 10)) in timers and (FIRST_RESPONSE_TIMER, utc(23, 13)) not in timers
    assert (WARN_TIMER, utc(23, 9, 45)) in timers

    clock.set(utc(23, 9, 40))
    critical = await sla_desk.tickets.set_priority(ticket.id, ALICE, "P1")
    # P1 counts round the clock from the opening: 15m was already spent at 09:15.
    assert (critical.calendar, critical.first_response_due, critical.resolution_due) == (
        "always", utc(23, 9, 15), utc(23, 13))
    await sla_desk.timers.tick()
    await sla_desk.timers.tick()
    assert metrics(await events(sla_desk, ticket.id, "sla_breached")) == ["first_response"]


async def test_a_breach_is_written_once_even_when_its_timer_runs_twice(
    databases: Any, db: Any, make_sla_desk: Callable[..., Any], clock: ManualClock
) -> None:
    desk = make_sla_desk()
    other = make_sla_desk(database=databases.another_handle(db))  # a second replica
    calls: list[tuple[str, str]] = []

    async def escalate(run: TimerRun, ticket: Ticket, metric: str, level: str) -> None:
        calls.append((metric, level))

    desk.sla.on_breach.append(escalate)
    other.sla.on_breach.append(escalate)
    ticket = await open_ticket(desk, "P2")
    async with desk.db.transaction() as session:  # a stray copy of the breach timer, as after a lost lease
        await schedule_timer(session, kind=FIRST_RESPONSE_TIMER, due_at=utc(23, 10), now=clock.now(),
                             ticket_id=ticket.id, payload={"metric": "first_response", "due": utc(23, 10).isoformat()},
                             dedup_key="stray-copy")
    clock.set(utc(23, 10, 1))
    await asyncio.gather(desk.timers.tick(), other.timers.tick())
    await asyncio.gather(desk.timers.tick(), other.timers.tick())
    assert metrics(await events(desk, ticket.id, "sla_breached")) == ["first_response"]
    assert calls.count(("first_response", "breach")) == 1


# -- progress updates -------------------------------------------------------------------------------
async def test_an_overdue_update_sends_one_update_to_the_requester_and_one_nudge(
    sla_desk: Any, clock: ManualClock
) -> None:
    ticket = await open_ticket(sla_desk, "P2")
    clock.set(utc(23, 9, 10))
    await sla_desk.tickets.claim(ticket.id, ALICE)  # "Alice is on it" counts as an update: next due 11:10
    await run_at(sla_desk, clock, utc(23, 11, 10))
    await sla_desk.timers.tick()
    updates = [n for n in await notices(sla_desk, "requester") if headline(n).startswith("Update on")]
    assert [headline(n) for n in updates] == [f"Update on {ticket.number}: still in progress with Alice."]
    assert "Next target: resolution by Mon 23 Nov 17:00 (your time)." in (body(updates[0]) or "")
    assert updates[0].target == "slack:user:UREQ1"
    nudges = await notices(sla_desk, "assignee")
    assert [(n.target, headline(n)) for n in nudges] == [
        ("slack:user:UAGENT1", f"{ticket.number} is due a progress update to Person UREQ1.")]
    assert len(await events(sla_desk, ticket.id, "auto_update")) == 1
    assert metrics(await events(sla_desk, ticket.id, "sla_breached")) == ["update"]
    assert (UPDATE_DUE_TIMER, utc(23, 13, 10)) in await pending(sla_desk, ticket.id)


async def test_muting_stops_updates_for_that_ticket_only(sla_desk: Any, clock: ManualClock) -> None:
    muted = await open_ticket(sla_desk, "P2")
    other = await open_ticket(sla_desk, "P2", user="UREQ2")
    await sla_desk.tickets.mute_updates(muted.id, person())
    await run_at(sla_desk, clock, utc(23, 11))
    assert await notices(sla_desk, "requester", muted.id) == []
    [update] = await notices(sla_desk, "requester", other.id)
    assert headline(update) == f"Update on {other.number}: still waiting for an agent to pick it up."
    assert "You are 2nd in the queue." in (body(update) or "")


async def test_no_update_outside_the_requesters_hours_for_p3_but_p1_at_night_still_updates(
    sla_desk: Any, clock: ManualClock
) -> None:
    # P3 updates every business day (8h x 3): due Wed 17:00 UTC, 22:30 for a requester in Kolkata.
    normal = await open_ticket(sla_desk, "P3", tz="Asia/Kolkata")
    await run_at(sla_desk, clock, utc(25, 17))
    assert await notices(sla_desk, "requester", normal.id) == []
    await run_at(sla_desk, clock, utc(26, 3, 30))  # 09:00 in Kolkata
    assert len(await notices(sla_desk, "requester", normal.id)) == 1

    clock.set(utc(28, 2))
    urgent = await open_ticket(sla_desk, "P1", user="UREQ2")
    await run_at(sla_desk, clock, utc(28, 3))
    assert len(await notices(sla_desk, "requester", urgent.id)) == 1


async def test_at_most_n_automatic_updates_a_day(make_sla_desk: Callable[..., Any], clock: ManualClock,
                                                 make_config: Callable[..., AppConfig]) -> None:
    desk = make_sla_desk(app_config=make_config("updates:\n  max_per_ticket_per_day: 2\n"))
    ticket = await open_ticket(desk, "P1")  # an update due every hour
    for hour in (10, 11, 12, 13):
        await run_at(desk, clock, utc(23, hour))
    assert len(await notices(desk, "requester", ticket.id)) == 2
    assert len(await events(desk, ticket.id, "sla_breached")) == 1 + 1 + 4  # first response, resolution, 4 updates
    await run_at(desk, clock, utc(24, 0, 5))  # a new day in London
    assert len(await notices(desk, "requester", ticket.id)) == 3


# -- wording ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("tz", "expected"), [
    ("Asia/Kolkata",
     "first response by Mon 23 Nov 18:30 (your time), resolution target Thu 3 Dec 22:30 (your time)."),
    ("America/Los_Angeles",
     "first response by Mon 23 Nov 05:00 (your time), resolution target Thu 3 Dec 09:00 (your time)."),
    (None, "first response by Mon 23 Nov 13:00 (London time), resolution target Thu 3 Dec 17:00 (London time)."),
])
async def test_the_acknowledgement_speaks_the_requesters_clock(sla_desk: Any, tz: str | None, expected: str) -> None:
    ticket = await open_ticket(sla_desk, "P3", tz=tz)
    calendar = sla_desk.sla.calendar(ticket.calendar)
    said = acknowledgement(ticket, tz, calendar)
    assert plain(said) == f"{ticket.number} opened — {expected}"
    # Each time is a moment the platforms show on the reader's own clock, never a frozen string.
    assert [span.at for span in said if isinstance(span, Moment)] == [ticket.first_response_due, ticket.resolution_due]


async def test_card_lines_give_absolute_times_that_never_go_stale_and_then_say_it_breached(
        sla_desk: Any, clock: ManualClock) -> None:
    ticket = await open_ticket(sla_desk, "P2", tz="Asia/Kolkata")
    calendar = sla_desk.sla.calendar(ticket.calendar)
    row = await load(sla_desk, ticket.id)
    early = sla_lines(row, utc(23, 9, 15), calendar, "Asia/Kolkata")
    assert early == sla_lines(row, utc(23, 9, 55), calendar, "Asia/Kolkata")  # no countdown to freeze
    assert [plain(line) for line in early] == [
        "First response due by Mon 23 Nov 15:30 (Kolkata time)", "Resolution due by Mon 23 Nov 22:30 (Kolkata time)",
        "Next update by Mon 23 Nov 16:30 (Kolkata time)"]
    assert plain(sla_lines(row, utc(23, 10, 20), calendar, None)[0]) == (
        "First response: breached — was due Mon 23 Nov 10:00 (London time)")
