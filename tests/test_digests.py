"""Scheduled digests, on both databases: requesters at their local slots, agents each morning.

Time only moves when the test moves it (``clock.set``), then the timer rows due by then run.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.config import AppConfig
from bot.desk import Desk
from bot.digests import DIGEST_SENT, REQUESTER_TIMER, TRIAGE_JOB_ID, TRIAGE_TIMER, Digests
from bot.people import PersonRef
from bot.routing import Action
from bot.scheduler import EngineRunner
from bot.tickets import Origin, TicketSnapshot
from store.models import OutboxMessage, TicketEvent, Timer
from tests.outbox_views import slack, teams

ALICE = PersonRef("slack", "UAGENT1", display_name="Alice")
ONLY_15 = "updates:\n  digest_times: ['15:00']\n"


def utc(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def person(user: str = "UREQ1", tz: str | None = "Europe/London", platform: str = "slack") -> PersonRef:
    return PersonRef(platform, user, display_name=f"Person {user}", timezone=tz)


def with_digests(desk: Desk, runner: EngineRunner | None = None) -> Digests:
    """The desk's digests; with ``runner``, its cron jobs registered as the server does."""
    for cron in desk.cron_jobs if runner is not None else []:
        runner.add_cron(cron)
    return desk.digests


async def open_ticket(desk: Desk, who: PersonRef, priority: str = "P4", summary: str = "Laptop won't boot"
                      ) -> TicketSnapshot:
    return (await desk.tickets.open(who, summary, origin=Origin("slack"), priority=priority)).ticket


async def run_at(desk: Desk, clock: ManualClock, when: datetime) -> None:
    clock.set(when)
    await desk.timers.tick()


async def digests_sent(desk: Desk, kinds: tuple[str, ...] = ("digest",)) -> list[OutboxMessage]:
    async with desk.db.transaction() as session:
        return list((await session.execute(select(OutboxMessage).where(
            OutboxMessage.kind.in_(kinds), OutboxMessage.idempotency_key.like("digest%"))
            .order_by(OutboxMessage.id))).scalars())


async def digest_events(desk: Desk, ticket_id: int) -> list[TicketEvent]:
    async with desk.db.transaction() as session:
        return list((await session.execute(select(TicketEvent).where(
            TicketEvent.ticket_id == ticket_id, TicketEvent.kind == DIGEST_SENT).order_by(TicketEvent.id))).scalars())


async def pending_slots(desk: Desk, kind: str = REQUESTER_TIMER) -> list[tuple[int, datetime]]:
    async with desk.db.transaction() as session:
        rows = (await session.execute(select(Timer).where(Timer.kind == kind, Timer.done_at.is_(None))
                                      .order_by(Timer.due_at))).scalars()
        return [(int(row.payload.get("person_id", 0)), row.due_at) for row in rows]


def listed(message: OutboxMessage) -> list[int]:
    """The ticket ids a Slack digest lists (its per-ticket sections)."""
    return [int(block["block_id"].split(":")[1]) for block in slack(message)[0]
            if block.get("block_id", "").endswith(":digest")]


def slack_text(message: OutboxMessage) -> str:
    """What Slack shows: the blocks' mrkdwn with each date token's written-out fallback."""
    text = "\n".join(block["text"]["text"] if "text" in block else block["elements"][0]["text"]
                     for block in slack(message)[0])
    return re.sub(r"<!date\^\d+\^[^|]*\|([^>]*)>", r"\1", text)


# -- requester digests ------------------------------------------------------------------------------
async def test_digest_at_15_requester_local_in_kolkata_and_los_angeles(
    make_desk: Callable[..., Any], make_config: Callable[..., AppConfig], clock: ManualClock,
) -> None:
    desk = make_desk(app_config=make_config(ONLY_15))
    with_digests(desk)
    kolkata = await open_ticket(desk, person("UKOL", "Asia/Kolkata"))          # Mon 14:30 in Kolkata
    angeles = await open_ticket(desk, person("ULAX", "America/Los_Angeles"))   # Mon 01:00 in Los Angeles
    # One pending row per requester, at their Monday 15:00.
    assert [due for _, due in await pending_slots(desk)] == [utc(23, 9, 30), utc(23, 23)]

    # Monday 15:00 each: they heard from the desk (the acknowledgement) since the previous slot.
    await run_at(desk, clock, utc(23, 9, 30))
    await run_at(desk, clock, utc(23, 23))
    assert await digests_sent(desk) == []
    assert [due for _, due in await pending_slots(desk)] == [utc(24, 9, 30), utc(24, 23)]

    await run_at(desk, clock, utc(24, 9, 29))
    assert await digests_sent(desk) == []
    await run_at(desk, clock, utc(24, 9, 30))                  # Tuesday 15:00 in Kolkata
    [first] = await digests_sent(desk)
    assert (first.target, first.kind, first.created_at) == ("slack:user:UKOL", "digest", utc(24, 9, 30))
    assert listed(first) == [kolkata.id]
    await run_at(desk, clock, utc(24, 23))                     # Tuesday 15:00 in Los Angeles
    second = (await digests_sent(desk))[1]
    assert (second.target, second.created_at, listed(second)) == ("slack:user:ULAX", utc(24, 23), [angeles.id])
    assert [e.payload["slot"] for e in await digest_events(desk, angeles.id)] == [utc(24, 23).isoformat()]


async def test_no_digest_on_a_weekend_or_a_holiday(
    make_desk: Callable[..., Any], make_config: Callable[..., AppConfig], clock: ManualClock,
) -> None:
    desk = make_desk(app_config=make_config(ONLY_15))
    with_digests(desk)
    clock.set(utc(24, 10, month=12))                           # Thu 24 Dec, London
    ticket = await open_ticket(desk, person())
    await run_at(desk, clock, utc(24, 15, month=12))           # heard from the desk at 10:00: nothing
    # Fri 25 Christmas, the weekend, Mon 28 the Boxing Day substitute: next slot Tue 29.
    assert [due for _, due in await pending_slots(desk)] == [utc(29, 15, month=12)]
    for day in (25, 26, 27, 28):
        await run_at(desk, clock, utc(day, 15, month=12))
    assert await digests_sent(desk) == []
    await run_at(desk, clock, utc(29, 15, month=12))
    assert [listed(m) for m in await digests_sent(desk)] == [[ticket.id]]



async def test_no_digest_on_a_weekend_on_the_requesters_own_clock(
    make_desk: Callable[..., Any], make_config: Callable[..., AppConfig], clock: ManualClock,
) -> None:
    desk = make_desk(app_config=make_config(ONLY_15))
    with_digests(desk)
    clock.set(utc(27, 18))                                     # Fri 27 Nov, 10:00 in Los Angeles
    ticket = await open_ticket(desk, person("ULAX", "America/Los_Angeles"))
    await run_at(desk, clock, utc(27, 23))                     # Friday 15:00 there: heard at 10:00
    assert [due for _, due in await pending_slots(desk)] == [utc(30, 23)]  # Monday 15:00 there, not Sat/Sun
    for when in (utc(28, 23), utc(29, 23)):
        await run_at(desk, clock, when)
    assert await digests_sent(desk) == []
    await run_at(desk, clock, utc(30, 23))
    assert [listed(m) for m in await digests_sent(desk)] == [[ticket.id]]


async def test_no_digest_for_a_ticket_the_desk_updated_within_the_window(
    make_desk: Callable[..., Any], make_config: Callable[..., AppConfig], clock: ManualClock,
) -> None:
    desk = make_desk(app_config=make_config(ONLY_15))
    with_digests(desk)
    answered = await open_ticket(desk, person(), summary="VPN drops")
    quiet = await open_ticket(desk, person(), summary="Monitor flickers")
    await run_at(desk, clock, utc(23, 15))
    clock.set(utc(24, 12))
    await desk.tickets.comment(answered.id, ALICE, "Can you try the new client?")
    await run_at(desk, clock, utc(24, 15))
    [tuesday] = await digests_sent(desk)
    assert listed(tuesday) == [quiet.id]
    assert await digest_events(desk, answered.id) == []
    await run_at(desk, clock, utc(25, 15))                     # nothing since Tuesday's slot: both
    assert listed((await digests_sent(desk))[-1]) == [answered.id, quiet.id]


async def test_mute_stops_digests_for_that_ticket_only(
    make_desk: Callable[..., Any], make_config: Callable[..., AppConfig], clock: ManualClock,
) -> None:
    desk = make_desk(app_config=make_config(ONLY_15))
    with_digests(desk)
    muted = await open_ticket(desk, person(), summary="VPN drops")
    kept = await open_ticket(desk, person(), summary="Monitor flickers")
    await run_at(desk, clock, utc(23, 15))
    clock.set(utc(24, 9))
    await desk.tickets.mute_updates(muted.id, person())
    await run_at(desk, clock, utc(24, 15))
    [tuesday] = await digests_sent(desk)
    assert listed(tuesday) == [kept.id]
    assert await digest_events(desk, muted.id) == [] and len(await digest_events(desk, kept.id)) == 1

    clock.set(utc(24, 16))
    await desk.tickets.mute_updates(kept.id, person())
    await run_at(desk, clock, utc(25, 15))
    assert len(await digests_sent(desk)) == 1
    assert await pending_slots(desk) == []                     # nothing left to digest: no timer either
    clock.set(utc(25, 16))
    await desk.tickets.mute_updates(muted.id, person(), muted=False)
    assert [due for _, due in await pending_slots(desk)] == [utc(26, 15)]
    await run_at(desk, clock, utc(26, 15))
    assert listed((await digests_sent(desk))[-1]) == [muted.id]


async def test_the_digest_lists_status_assignee_and_next_target_with_a_mute_button(
    make_desk: Callable[..., Any], make_config: Callable[..., AppConfig], clock: ManualClock,
) -> None:
    desk = make_desk(app_config=make_config(ONLY_15))
    with_digests(desk)
    claimed = await open_ticket(desk, person(), "P3", summary="Printer <jammed> & smoking")
    waiting = await open_ticket(desk, person(), "P4", summary="New mouse")
    await desk.tickets.claim(claimed.id, ALICE)
    teams_user = person("aad-req-1", "Europe/Berlin", platform="teams")
    teams_ticket = await open_ticket(desk, teams_user, "P4")
    for when in (utc(23, 14), utc(23, 15)):                    # Monday's slots: heard from the desk today
        await run_at(desk, clock, when)
    await run_at(desk, clock, utc(24, 14))                     # Tuesday 15:00 in Berlin
    await run_at(desk, clock, utc(24, 15))                     # Tuesday 15:00 in London
    card, blocks = await digests_sent(desk)

    assert (card.target, card.kind, card.ticket_id) == ("teams:user:aad-req-1", "digest", teams_ticket.id)
    body = teams(card)["body"]
    [action_set] = [item for c in body if c["type"] == "Container" for item in c["items"]
                    if item["type"] == "ActionSet"]
    assert action_set["actions"][0]["data"] == {"action": Action.MUTE.value, "value": str(teams_ticket.id),
                                                "ticket_id": teams_ticket.id}

    assert (blocks.target, blocks.kind, blocks.ticket_id) == ("slack:user:UREQ1", "digest", claimed.id)
    text = slack_text(blocks)
    assert (f"*{claimed.number}* · Printer &lt;jammed&gt; &amp; smoking\n"
            "Claimed · with Alice · resolution by") in text
    assert f"*{waiting.number}* · New mouse\nNew · waiting for an agent to pick it up · first response by" in text
    assert "(London time)" in text
    buttons = [b["accessory"] for b in slack(blocks)[0] if "accessory" in b]
    assert [(b["action_id"], b["value"]) for b in buttons] == [(Action.MUTE.value, str(claimed.id)),
                                                                (Action.MUTE.value, str(waiting.id))]
    assert slack(blocks)[1] == "Your open IT tickets: where things stand (2 tickets)"


async def test_at_most_n_digests_per_ticket_per_day(
    make_desk: Callable[..., Any], make_config: Callable[..., AppConfig], clock: ManualClock,
) -> None:
    desk = make_desk(app_config=make_config(
        "updates:\n  digest_times: ['10:00', '15:00']\n  max_per_ticket_per_day: 1\n"))
    with_digests(desk)
    ticket = await open_ticket(desk, person())
    for when in (utc(23, 10), utc(23, 15), utc(24, 10), utc(24, 15), utc(25, 10)):
        await run_at(desk, clock, when)
    assert [e.at for e in await digest_events(desk, ticket.id)] == [utc(23, 15), utc(24, 10), utc(25, 10)]


async def test_p1_digests_go_out_outside_working_hours_and_others_wait(
    make_desk: Callable[..., Any], make_config: Callable[..., AppConfig], clock: ManualClock,
) -> None:
    config = make_config("updates:\n  digest_times: ['10:00']\n")
    policies = dict(config.sla.policies)
    policies["P1"] = policies["P1"].model_copy(update={"update_every": None})  # no hourly automatic updates
    desk = make_desk(app_config=config.model_copy(update={"sla": config.sla.model_copy(update={"policies": policies})}))
    with_digests(desk)
    clock.set(utc(27, 9))                                      # Friday
    urgent = await open_ticket(desk, person(), "P1")
    routine = await open_ticket(desk, person(), "P4")
    await run_at(desk, clock, utc(27, 10))
    await run_at(desk, clock, utc(28, 10))                     # Saturday: the P1 only
    assert [listed(m) for m in await digests_sent(desk)] == [[urgent.id]]
    await run_at(desk, clock, utc(29, 10))                     # Sunday: the P1 again (nothing new since Saturday)
    await run_at(desk, clock, utc(30, 10))                     # Monday: both
    assert [listed(m) for m in await digests_sent(desk)] == [[urgent.id], [urgent.id], [urgent.id, routine.id]]


async def test_a_slot_run_long_after_its_time_is_skipped_not_sent_late(
    make_desk: Callable[..., Any], make_config: Callable[..., AppConfig], clock: ManualClock,
) -> None:
    desk = make_desk(app_config=make_config(ONLY_15))
    with_digests(desk)
    await open_ticket(desk, person())
    await run_at(desk, clock, utc(23, 15))
    await run_at(desk, clock, utc(24, 16, 30))                 # the engine was down over Tuesday's 15:00
    assert await digests_sent(desk) == []
    assert [due for _, due in await pending_slots(desk)] == [utc(25, 15)]
    await run_at(desk, clock, utc(25, 15, 40))                 # late, but within the hour: still sent
    assert len(await digests_sent(desk)) == 1


# -- triage digest ----------------------------------------------------------------------------------
async def test_morning_triage_digest_lists_unclaimed_and_breaching_today(desk: Desk, clock: ManualClock) -> None:
    digests = with_digests(desk)
    clock.set(utc(24, 8, 30))                                  # Tuesday, before opening
    unclaimed = await open_ticket(desk, person(), "P3", summary="Unclaimed, first response due 13:00")
    due_today = await open_ticket(desk, person(), "P2", summary="Resolution due 17:00")
    later = await open_ticket(desk, person(), "P4", summary="Due later this week")
    await desk.tickets.claim(due_today.id, ALICE)
    await desk.tickets.claim(later.id, ALICE)

    clock.set(utc(24, 9))
    assert await digests.enqueue_triage_digest()
    assert not await digests.enqueue_triage_digest()          # again (another replica, a retry): no second row
    await desk.timers.tick()
    [message] = await digests_sent(desk)
    assert (message.target, message.kind) == ("slack:channel:C0TRIAGE", "digest")
    text = slack_text(message)
    assert "*Morning triage — Tue 24 Nov*" in text
    assert "1 unclaimed, 2 with a target before Tue 24 Nov 17:00 (London time)." in text
    unclaimed_part, breaching_part = text.split("*Breaching today (2)*")
    assert unclaimed.number in unclaimed_part and due_today.number not in unclaimed_part
    assert unclaimed.number in breaching_part and due_today.number in breaching_part
    assert later.number not in text
    assert "resolution due Tue 24 Nov 17:00 (London time)" in breaching_part and "Alice" in breaching_part
    claims = [b["accessory"]["value"] for b in slack(message)[0]
              if b.get("accessory", {}).get("action_id") == Action.CLAIM.value]
    assert claims == [str(unclaimed.id), str(unclaimed.id)]    # the claimed one gets no Claim button


async def test_no_triage_digest_on_a_weekend_or_when_there_is_nothing_to_say(desk: Desk, clock: ManualClock) -> None:
    digests = with_digests(desk)
    clock.set(utc(24, 9))
    assert await digests.enqueue_triage_digest()
    await desk.timers.tick()                                   # nothing open: nothing posted
    clock.set(utc(28, 8, 30))
    await open_ticket(desk, person(), "P3")
    clock.set(utc(28, 9))                                      # Saturday
    assert await digests.enqueue_triage_digest()
    await desk.timers.tick()
    assert await digests_sent(desk) == []
    async with desk.db.transaction() as session:
        outcomes = (await session.execute(select(Timer.payload, Timer.outcome).where(Timer.kind == TRIAGE_TIMER)
                                          .order_by(Timer.id))).all()
    assert [(p["date"], o) for p, o in outcomes] == [("2026-11-24", "done"), ("2026-11-28", "skipped")]


async def test_every_replica_runs_the_cron_job_but_the_triage_digest_is_posted_once(
    databases: Any, db: Any, make_desk: Callable[..., Any], clock: ManualClock,
) -> None:
    replicas = [make_desk(replica="a"), make_desk(database=databases.another_handle(db), replica="b")]
    services = [with_digests(d) for d in replicas]
    clock.set(utc(24, 8, 30))
    await open_ticket(replicas[0], person(), "P3")
    clock.set(utc(24, 9))
    added = await asyncio.gather(*(s.enqueue_triage_digest() for s in services))
    assert sorted(added) == [False, True]
    await asyncio.gather(*(d.timers.tick() for d in replicas))
    assert len(await digests_sent(replicas[0])) == 1
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Timer).where(Timer.kind == TRIAGE_TIMER)) == 1


async def test_the_server_adds_the_triage_cron_job_in_the_default_calendars_zone(
    desk: Desk, clock: ManualClock,
) -> None:
    runner = EngineRunner(desk)
    with_digests(desk, runner)
    job = runner.scheduler.get_job(TRIAGE_JOB_ID)
    assert job is not None
    assert str(job.trigger.timezone) == "Europe/London"
    assert job.trigger.get_next_fire_time(None, utc(23, 10)) == datetime(2026, 11, 24, 9, 0, tzinfo=UTC).astimezone(
        job.trigger.timezone)
    clock.set(utc(24, 8, 30))
    await open_ticket(desk, person(), "P3")
    clock.set(utc(24, 9))
    await job.func()                                           # what APScheduler calls at 09:00: enqueue and kick
    for _ in range(100):                                       # the kicked tick runs in the background
        if await digests_sent(desk):
            break
        await asyncio.sleep(0.05)
    await runner.stop()
    assert len(await digests_sent(desk)) == 1
