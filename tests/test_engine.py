"""Timer rows and the outbox: exactly-once claims across workers, leases, retries, dead letters."""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects import postgresql

from bot.channels import PermanentDeliveryError, TransientDeliveryError
from bot.engine import Delivered, GroupCommit, OutboxItem, OutboxWorker, TimerEngine, TimerRun
from bot.metrics import Metrics
from store.models import OutboxMessage, Timer
from store.queries import (
    claim_outbox,
    claim_outbox_statement,
    enqueue_message,
    enqueue_messages,
    schedule_timer,
)
from store.queries import outbox_row as outbox_values
from tests.statement_log import StatementLog


async def seed_timers(db: Any, clock: Any, count: int, kind: str = "test.kind") -> None:
    async with db.transaction() as session:
        for index in range(count):
            await schedule_timer(session, kind=kind, due_at=clock.now() - timedelta(seconds=index % 7),
                                 now=clock.now(), payload={"n": index})


def make_engine(db: Any, clock: Any, config: Any, name: str, ran: list[int], *, batch: int = 50) -> TimerEngine:
    engine = TimerEngine(db, clock, config.engine.model_copy(update={"batch_size": batch}), Metrics(), owner=name)

    async def handler(run: TimerRun) -> None:
        ran.append(run.timer.payload["n"])

    engine.register("test.kind", handler)
    return engine


async def test_four_workers_claim_a_thousand_due_timers_exactly_once(
    databases: Any, db: Any, clock: Any, config: Any
) -> None:
    await seed_timers(db, clock, 1000)
    ran: list[int] = []
    engines = [make_engine(databases.another_handle(db), clock, config, f"w{i}", ran) for i in range(4)]
    counts = await asyncio.gather(*(engine.tick() for engine in engines))
    assert sum(counts) == 1000
    duplicates = [n for n, seen in Tally(ran).items() if seen > 1]
    assert duplicates == [] and sorted(ran) == list(range(1000))
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Timer).where(Timer.done_at.is_(None))) == 0


async def test_a_crashed_workers_lease_expires_and_another_worker_runs_the_timer(
    db: Any, clock: Any, config: Any
) -> None:
    await seed_timers(db, clock, 3)
    from store.queries import claim_due_timers

    async with db.transaction() as session:  # the "crashed" replica claims and never finishes
        claimed = await claim_due_timers(session, owner="crashed", now=clock.now(), lease=config.engine.lease, limit=10)
    assert len(claimed) == 3
    ran: list[int] = []
    survivor = make_engine(db, clock, config, "survivor", ran)
    assert await survivor.tick() == 0 and ran == []  # leased: not yours yet
    clock.advance(config.engine.lease + timedelta(seconds=1))
    assert await survivor.tick() == 3 and sorted(ran) == [0, 1, 2]


async def test_a_timer_fired_twice_runs_once(db: Any, clock: Any, config: Any) -> None:
    await seed_timers(db, clock, 1)
    ran: list[int] = []
    engine = make_engine(db, clock, config, "only", ran)
    await engine.tick()
    await engine.tick()
    clock.advance(timedelta(hours=1))
    await engine.tick()
    assert ran == [0]


async def test_a_failing_handler_is_retried_then_marked_failed(db: Any, clock: Any, config: Any) -> None:
    async with db.transaction() as session:
        await schedule_timer(session, kind="flaky", due_at=clock.now(), now=clock.now())
    engine = TimerEngine(db, clock, config.engine, Metrics(), owner="w", max_attempts=2)
    calls = 0

    async def flaky(run: TimerRun) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("pager down")

    engine.register("flaky", flaky)
    await engine.tick()
    clock.advance(timedelta(minutes=10))
    await engine.tick()
    clock.advance(timedelta(minutes=10))
    await engine.tick()
    assert calls == 2
    async with db.transaction() as session:
        timer = (await session.execute(select(Timer))).scalar_one()
    assert timer.outcome == "failed" and "pager down" in (timer.last_error or "")


SHARED = "test.shared"


async def seed_ticket_timers(db: Any, clock: Any, ticket_ids: list[int]) -> None:
    """One due timer of the shareable test kind per entry (a ticket listed twice gets two)."""
    async with db.transaction() as session:
        for n, ticket_id in enumerate(ticket_ids):
            await schedule_timer(session, kind=SHARED, due_at=clock.now() - timedelta(seconds=1), now=clock.now(),
                                 ticket_id=ticket_id, payload={"n": n})


def storm_engine(db: Any, clock: Any, config: Any, ran: list[tuple[int, Any]], *, fail_for: int | None = None
                 ) -> TimerEngine:
    """An engine whose shareable handler records (ticket, session) and leaves one row per run, which
    only a committed transaction keeps; it raises for ticket ``fail_for``."""
    engine = TimerEngine(db, clock, config.engine, Metrics(), owner="storm")

    async def handler(run: TimerRun) -> None:
        assert run.timer.ticket_id is not None
        ran.append((run.timer.ticket_id, run.session))
        if run.timer.ticket_id == fail_for:
            raise RuntimeError("pager down")
        await schedule_timer(run.session, kind="test.effect", due_at=run.now + timedelta(days=7), now=run.now,
                             ticket_id=run.timer.ticket_id, payload={"of": run.timer.id})

    engine.register(SHARED, handler, shares_transaction=True)
    return engine


async def kinds_per_ticket(db: Any, kind: str, *, pending: bool) -> Tally[int]:
    async with db.reading() as session:
        query = select(Timer.ticket_id).where(Timer.kind == kind)
        query = query.where(Timer.done_at.is_(None) if pending else Timer.done_at.is_not(None))
        return Tally((await session.execute(query)).scalars())


async def test_a_storm_of_shareable_timers_commits_a_group_at_a_time_not_a_timer_at_a_time(
    db: Any, clock: Any, config: Any, make_ticket: Any
) -> None:
    tickets = [(await make_ticket(f"Laptop {n} will not charge")).id for n in range(30)]
    await seed_ticket_timers(db, clock, tickets)
    ran: list[tuple[int, Any]] = []
    engine = storm_engine(db, clock, config, ran)
    with StatementLog(db) as log:
        assert await engine.tick() == 30
    assert sorted(ticket for ticket, _ in ran) == sorted(tickets)
    assert log.commits <= 3  # the claim and two groups of up to 25; a transaction per timer would be 31
    assert await kinds_per_ticket(db, SHARED, pending=False) == Tally(tickets)
    assert await kinds_per_ticket(db, "test.effect", pending=True) == Tally(tickets)


async def test_two_timers_of_one_ticket_never_share_a_transaction(
    db: Any, clock: Any, config: Any, make_ticket: Any
) -> None:
    busy, other = (await make_ticket("VPN drops")).id, (await make_ticket("Printer jam")).id
    await seed_ticket_timers(db, clock, [busy, other, busy, busy, other])
    ran: list[tuple[int, Any]] = []
    await storm_engine(db, clock, config, ran).tick()
    sessions_of = {ticket: [session for t, session in ran if t == ticket] for ticket in (busy, other)}
    assert len(sessions_of[busy]) == len(set(sessions_of[busy])) == 3
    assert len(sessions_of[other]) == len(set(sessions_of[other])) == 2
    assert await kinds_per_ticket(db, "test.effect", pending=True) == Tally({busy: 3, other: 2})


async def test_one_failing_timer_in_a_group_leaves_the_others_done_once_and_is_retried_alone(
    db: Any, clock: Any, config: Any, make_ticket: Any
) -> None:
    tickets = [(await make_ticket(f"Monitor {n} flickers")).id for n in range(10)]
    doomed = tickets[6]
    await seed_ticket_timers(db, clock, tickets)
    ran: list[tuple[int, Any]] = []
    await storm_engine(db, clock, config, ran, fail_for=doomed).tick()

    fine = [t for t in tickets if t != doomed]
    # The group's work rolled back with it; each timer then ran on its own, so every effect is there once.
    assert await kinds_per_ticket(db, "test.effect", pending=True) == Tally(fine)
    assert await kinds_per_ticket(db, SHARED, pending=False) == Tally(fine)
    async with db.reading() as session:
        failed = (await session.execute(select(Timer).where(Timer.ticket_id == doomed, Timer.kind == SHARED))
                  ).scalar_one()
    assert failed.done_at is None and "pager down" in (failed.last_error or "")  # retried after its backoff


class ScriptedChannel:
    """A delivery channel that fails as scripted, then succeeds; records what it delivered."""

    def __init__(self, script: list[Exception | None]) -> None:
        self.script = list(script)
        self.delivered: list[int] = []
        self.attempts = 0
        self._changed = asyncio.Condition()

    async def deliver(self, item: OutboxItem) -> Delivered:
        self.attempts += 1
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        async with self._changed:
            self.delivered.append(item.id)
            self._changed.notify_all()
        return Delivered(message_id=f"m{item.id}")

    async def wait_delivered(self, count: int) -> list[int]:
        """Return the delivered ids once there are ``count`` of them (fail after 5 s)."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.delivered) >= count), 5)
        return self.delivered

    def pacing_key(self, item: OutboxItem) -> str:
        return item.target


def make_worker(db: Any, clock: Any, config: Any, channel: ScriptedChannel, *, max_attempts: int = 4) -> OutboxWorker:
    engine_config = config.engine.model_copy(update={"outbox_max_attempts": max_attempts})
    worker = OutboxWorker(db, clock, engine_config, Metrics(), min_interval=0)
    worker.register("test", channel)
    return worker


async def enqueue(db: Any, clock: Any, key: str, target: str = "test:target") -> None:
    async with db.transaction() as session:
        await enqueue_message(session, target=target, kind="notice", payload={"text": key},
                              idempotency_key=key, now=clock.now())


async def outbox_row(db: Any) -> OutboxMessage:
    async with db.transaction() as session:
        return (await session.execute(select(OutboxMessage))).scalar_one()


async def test_delivery_is_retried_after_a_failing_target_honouring_retry_after(
    db: Any, clock: Any, config: Any
) -> None:
    channel = ScriptedChannel([TransientDeliveryError("429 rate limited", retry_after=30)])
    worker = make_worker(db, clock, config, channel)
    await enqueue(db, clock, "k1")
    await worker.tick()
    row = await outbox_row(db)
    assert channel.delivered == [] and row.last_error == "429 rate limited"
    assert row.next_attempt_at >= clock.now() + timedelta(seconds=30)
    clock.advance(timedelta(seconds=29))
    await worker.tick()
    assert channel.attempts == 1  # Retry-After not yet passed
    clock.advance(timedelta(seconds=2))
    await worker.tick()
    assert len(channel.delivered) == 1 and (await outbox_row(db)).delivered_message_id == f"m{row.id}"


async def test_delivery_is_dead_lettered_after_the_limit_with_the_error_kept(
    db: Any, clock: Any, config: Any
) -> None:
    channel = ScriptedChannel([TransientDeliveryError("500 boom")] * 10)
    worker = make_worker(db, clock, config, channel, max_attempts=3)
    await enqueue(db, clock, "k1")
    for _ in range(6):
        await worker.tick()
        clock.advance(timedelta(hours=1))
    row = await outbox_row(db)
    assert channel.attempts == 3 and row.dead_at is not None and row.last_error == "500 boom"
    assert worker.metrics.outbox_dead.labels("test")._value.get() == 1


async def test_a_permanent_refusal_is_not_retried(db: Any, clock: Any, config: Any) -> None:
    channel = ScriptedChannel([PermanentDeliveryError("400 invalid_blocks")])
    worker = make_worker(db, clock, config, channel)
    await enqueue(db, clock, "k1")
    await worker.tick()
    clock.advance(timedelta(hours=1))
    await worker.tick()
    assert channel.attempts == 1 and (await outbox_row(db)).dead_at is not None


async def test_nothing_is_lost_when_the_worker_restarts_mid_flight(db: Any, clock: Any, config: Any) -> None:
    for key in ("a", "b", "c"):
        await enqueue(db, clock, key, target=f"test:{key}")
    async with db.transaction() as session:  # a worker claims, then dies before delivering
        assert len(await claim_outbox(session, owner="dead", now=clock.now(), lease=config.engine.lease, limit=10)) == 3
    channel = ScriptedChannel([])
    restarted = make_worker(db, clock, config, channel)
    assert await restarted.tick() == 0
    clock.advance(config.engine.lease + timedelta(seconds=1))
    assert await restarted.tick() == 3
    assert len(channel.delivered) == 3
    await restarted.tick()
    assert len(channel.delivered) == 3  # and never twice


async def test_a_ticket_thread_is_delivered_in_order_even_after_a_failure(db: Any, clock: Any, config: Any) -> None:
    channel = ScriptedChannel([TransientDeliveryError("timeout")])
    worker = make_worker(db, clock, config, channel)
    await enqueue(db, clock, "root")
    await enqueue(db, clock, "reply")
    await worker.tick()
    assert channel.delivered == []  # the reply waits for its root
    clock.advance(timedelta(minutes=5))
    await worker.tick()
    async with db.transaction() as session:
        order = {row.id: row.idempotency_key for row in (await session.execute(select(OutboxMessage))).scalars()}
    assert [order[i] for i in channel.delivered] == ["root", "reply"]


async def test_duplicate_idempotency_key_is_enqueued_once(db: Any, clock: Any) -> None:
    await enqueue(db, clock, "same")
    await enqueue(db, clock, "same")
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(OutboxMessage)) == 1


@pytest.mark.parametrize("attempts", [1, 3, 6])
def test_backoff_grows_and_never_undercuts_retry_after(clock: Any, config: Any, attempts: int) -> None:
    worker = OutboxWorker(None, clock, config.engine, Metrics())  # type: ignore[arg-type]
    cap = config.engine.outbox_backoff_base.total_seconds() * 2 ** (attempts - 1)
    delays = [worker.ledger.backoff(attempts, None).total_seconds() for _ in range(50)]
    assert all(cap / 2 <= d <= cap for d in delays)
    assert worker.ledger.backoff(attempts, 120).total_seconds() >= 120


async def test_an_older_card_refresh_is_skipped_when_a_newer_one_is_queued(
    db: Any, clock: Any, config: Any, make_ticket: Any,
) -> None:
    ticket = await make_ticket()
    channel = ScriptedChannel([])
    worker = make_worker(db, clock, config, channel)
    async with db.transaction() as session:
        for n, target in enumerate(["test:triage", "test:triage", "test:triage", "test:requester"]):
            await enqueue_message(session, target=target, kind="ticket_card", payload={"n": n}, ticket_id=ticket.id,
                                  idempotency_key=f"card-{n}", now=clock.now())
    while await worker.tick():
        pass
    async with db.transaction() as session:
        rows = {row.idempotency_key: row for row in (await session.execute(select(OutboxMessage).where(
            OutboxMessage.target.like("test:%")))).scalars()}
    # One render per card showing the ticket as it is now; the two stale refreshes were never sent.
    assert sorted(channel.delivered) == sorted([rows["card-2"].id, rows["card-3"].id])
    assert [rows[f"card-{n}"].delivered_message_id for n in (0, 1)] == ["superseded", "superseded"]


async def test_notices_queued_between_card_refreshes_are_all_delivered_in_order(
    db: Any, clock: Any, config: Any, make_ticket: Any,
) -> None:
    # Claim, In progress, Waiting in quick succession: each change queues a refresh of the triage card,
    # of the requester's card, and a notice for the requester. Only stale refreshes of one card may be
    # skipped; every notice goes out.
    ticket = await make_ticket()
    channel = ScriptedChannel([])
    worker = make_worker(db, clock, config, channel)
    async with db.transaction() as session:
        for change in (1, 2, 3):
            queued = [("test:triage", f"triage-card-{change}", "ticket_card", {"audience": "triage"}),
                      ("test:requester", f"card-{change}", "ticket_card", {"audience": "requester"}),
                      ("test:requester", f"notice-{change}", "notice", {"thread": "requester"})]
            if change == 2:  # another card of the ticket shown in the requester's place (a different audience)
                queued.append(("test:requester", "other-card", "ticket_card", {"audience": "watcher"}))
            for target, key, kind, payload in queued:
                await enqueue_message(session, target=target, kind=kind, payload=payload, ticket_id=ticket.id,
                                      idempotency_key=key, now=clock.now())
    while await worker.tick():
        pass
    async with db.transaction() as session:
        rows = (await session.execute(select(OutboxMessage).where(OutboxMessage.target.like("test:%")))).scalars()
        keys = {row.id: (row.target, row.idempotency_key) for row in rows}
        skipped = set((await session.execute(select(OutboxMessage.idempotency_key).where(
            OutboxMessage.delivered_message_id == "superseded"))).scalars())
    to_requester = [key for target, key in (keys[i] for i in channel.delivered) if target == "test:requester"]
    assert to_requester == ["notice-1", "notice-2", "other-card", "card-3", "notice-3"]
    assert skipped == {"card-1", "card-2", "triage-card-1", "triage-card-2"}


class LaneChannel(ScriptedChannel):
    """A ScriptedChannel whose script applies to one target only; every other target always succeeds."""

    def __init__(self, target: str, script: list[Exception | None]) -> None:
        super().__init__(script)
        self.target = target
        self.calls: list[str] = []

    async def deliver(self, item: OutboxItem) -> Delivered:
        self.calls.append(item.payload["text"])
        if item.target != self.target:
            self.delivered.append(item.id)
            return Delivered(message_id=f"m{item.id}")
        return await super().deliver(item)


async def test_a_rate_limited_conversation_holds_back_only_its_own_messages(db: Any, clock: Any, config: Any) -> None:
    triage = "test:channel:TRIAGE"
    channel = LaneChannel(triage, [TransientDeliveryError("429 ratelimited", retry_after=25)])
    worker = make_worker(db, clock, config, channel)
    await enqueue(db, clock, "card refresh", target=triage)
    await worker.tick()
    assert channel.calls == ["card refresh"]  # refused: Slack wants 25 s of quiet in that channel
    await enqueue(db, clock, "relayed reply", target=triage)
    await enqueue(db, clock, "page for Bob", target="test:user:BOB")
    clock.advance(timedelta(seconds=1))
    await worker.tick()
    assert channel.calls == ["card refresh", "page for Bob"]  # out at once; the channel is left alone
    clock.advance(timedelta(seconds=26))
    while await worker.tick():
        pass
    assert channel.calls == ["card refresh", "page for Bob", "card refresh", "relayed reply"]


async def test_being_told_to_slow_down_again_and_again_never_uses_up_a_messages_attempts(
    db: Any, clock: Any, config: Any,
) -> None:
    from bot.channels import RateLimited

    channel = ScriptedChannel([RateLimited("429 ratelimited", retry_after=2)] * 10)
    worker = make_worker(db, clock, config, channel, max_attempts=3)
    await enqueue(db, clock, "k1")
    for _ in range(11):
        await worker.tick()
        clock.advance(timedelta(seconds=4))
    row = await outbox_row(db)
    assert channel.attempts == 11 and row.dead_at is None and row.delivered_message_id == f"m{row.id}"


class Sleeps:
    """An injected ``sleep`` that returns only when the test says so; records what was asked for."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self._waiting: list[asyncio.Future[None]] = []
        self._changed = asyncio.Condition()

    async def __call__(self, seconds: float) -> None:
        done = asyncio.get_running_loop().create_future()
        async with self._changed:
            self.asked.append(seconds)
            self._waiting.append(done)
            self._changed.notify_all()
        await done

    async def sleeping(self, count: int = 1) -> None:
        """Return once ``count`` sleeps are in progress."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self._waiting) >= count), 5)

    def end_all(self) -> None:
        """Every sleep in progress ends now (the time it asked for has passed)."""
        for done in self._waiting:
            if not done.done():
                done.set_result(None)
        self._waiting.clear()


async def test_a_message_for_someone_else_goes_out_while_a_conversation_waits_out_its_pacing(
    db: Any, clock: Any, config: Any,
) -> None:
    sleeps = Sleeps()
    channel = ScriptedChannel([])
    worker = OutboxWorker(db, clock, config.engine, Metrics(), min_interval=1.0, sleep=sleeps,
                          monotonic=lambda: 100.0)  # the clock stands still: every second send has to wait
    worker.register("test", channel)
    async with db.transaction() as session:
        for n in range(3):  # three tickets' cards for the triage channel: one lane, one a second
            await enqueue_message(session, target="test:triage", kind="notice", payload={"text": f"t{n}"},
                                  idempotency_key=f"triage-{n}", ordering_key=f"triage#{n}", now=clock.now())
    delivering = asyncio.ensure_future(worker.tick())
    await sleeps.sleeping()
    assert len(channel.delivered) == 1  # the first card went; the second waits for its second
    await enqueue(db, clock, "reply to the requester", target="test:user:U1")
    worker.wake()  # what the engine runner does when a change has queued messages
    delivered = await channel.wait_delivered(2)
    async with db.reading() as session:
        dm = await session.scalar(select(OutboxMessage.id).where(OutboxMessage.target == "test:user:U1"))
    assert delivered[1] == dm and sleeps.asked == [1.0], "the DM waited for the triage channel's pacing"
    for sent in (3, 4):  # the triage channel's seconds pass, one card each
        sleeps.end_all()
        await channel.wait_delivered(sent)
        if sent == 3:
            await sleeps.sleeping()
    assert await asyncio.wait_for(delivering, 5) == 4


async def runner_with_a_timer_due_soon(desk: Any, clock: Any) -> tuple[Any, list[int], list[tuple[float, Any]]]:
    """An EngineRunner whose wake-ups are recorded as (delay, callback) instead of scheduled, and a
    timer due in 300 ms whose handler records its id in the returned list when it runs."""
    from bot.scheduler import EngineRunner

    ran: list[int] = []

    async def handler(run: TimerRun) -> None:
        ran.append(run.timer.id)

    desk.timers.register("test.soon", handler)
    wakeups: list[tuple[float, Any]] = []
    runner = EngineRunner(desk, call_later=lambda delay, callback: wakeups.append((delay, callback)) or Handle())
    async with desk.db.transaction() as session:
        await schedule_timer(session, kind="test.soon", due_at=clock.now() + timedelta(milliseconds=300),
                             now=clock.now())
    return runner, ran, wakeups


async def test_the_engine_wakes_when_the_next_timer_falls_due_not_a_whole_tick_later(
    desk: Any, clock: Any,
) -> None:
    runner, ran, wakeups = await runner_with_a_timer_due_soon(desk, clock)
    await runner.tick()
    assert ran == [] and len(wakeups) == 1
    delay, wake = wakeups[0]
    assert 0.3 <= delay < 0.31  # at the due time, not at the next 1 s interval tick
    clock.advance(timedelta(milliseconds=300))
    wake()  # what the event loop does after `delay` seconds
    await asyncio.gather(*runner._inflight)
    assert len(ran) == 1


async def test_no_early_wake_up_is_scheduled_for_a_timer_beyond_the_interval(desk: Any, clock: Any) -> None:
    from bot.scheduler import EngineRunner

    wakeups: list[float] = []
    runner = EngineRunner(desk, call_later=lambda delay, callback: wakeups.append(delay) or Handle())
    async with desk.db.transaction() as session:
        await schedule_timer(session, kind="test.later", due_at=clock.now() + timedelta(minutes=5), now=clock.now())
    await runner.tick()
    assert wakeups == []  # the interval tick gets there first


class Handle:
    """Stands in for the asyncio.TimerHandle that call_later returns."""

    def cancel(self) -> None:
        pass


class GatedChannel:
    """Holds every delivery until released; counts how many are in flight at once."""

    def __init__(self, *, urgent: bool = False) -> None:
        self.urgent = urgent
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.in_flight = 0
        self.most = 0
        self.delivered: list[str] = []

    async def deliver(self, item: OutboxItem) -> Delivered:
        self.in_flight += 1
        self.entered.set()
        self.most = max(self.most, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        self.delivered.append(item.target)
        return Delivered(message_id=f"m{item.id}")

    def pacing_key(self, item: OutboxItem) -> str:
        return item.target


async def test_a_timer_falling_due_while_pages_are_still_going_out_runs_without_waiting_for_them(
    desk: Any, clock: Any,
) -> None:
    pager = GatedChannel(urgent=True)
    desk.outbox.register("pager", pager)
    await enqueue(desk.db, clock, "first breach page", target="pager:oncall")
    runner, ran, wakeups = await runner_with_a_timer_due_soon(desk, clock)
    ticking = asyncio.ensure_future(runner.tick())
    for _ in range(100):
        await asyncio.sleep(0.01)
        if pager.in_flight == 1 and wakeups:
            break
    assert pager.in_flight == 1 and ran == [] and len(wakeups) == 1
    clock.advance(timedelta(milliseconds=300))
    wakeups[0][1]()  # the next breach falls due while the first page is still on its way
    for _ in range(100):
        await asyncio.sleep(0.01)
        if ran:
            break
    assert len(ran) == 1 and pager.in_flight == 1 and not ticking.done()
    pager.release.set()
    await asyncio.wait_for(ticking, 5)  # and the tick still ends only once the page is delivered
    assert pager.delivered == ["pager:oncall"]


def four_slot_worker(db: Any, clock: Any, config: Any, **channels: Any) -> OutboxWorker:
    """An outbox with four delivery slots, no pacing, and a channel per prefix."""
    worker = OutboxWorker(db, clock, config.engine.model_copy(update={"outbox_concurrency": 4}), Metrics(),
                          min_interval=0)
    for prefix, channel in channels.items():
        worker.register(prefix, channel)
    return worker


async def test_outbox_caps_messages_in_flight_but_a_page_never_waits_for_a_slot(
    db: Any, clock: Any, config: Any,
) -> None:
    chat, pager = GatedChannel(), GatedChannel(urgent=True)
    worker = four_slot_worker(db, clock, config, chat=chat, pager=pager)
    for n in range(12):
        await enqueue(db, clock, f"dm-{n}", target=f"chat:user:U{n}")
    await enqueue(db, clock, "page", target="pager:oncall")
    delivering = asyncio.ensure_future(worker.tick())
    for _ in range(50):
        await asyncio.sleep(0.01)
        if chat.in_flight == 4 and pager.in_flight == 1:
            break
    assert (chat.in_flight, pager.in_flight) == (4, 1)  # four chat slots full, and the page is out anyway
    pager.release.set()
    chat.release.set()
    assert await asyncio.wait_for(delivering, 5) == 13
    assert chat.most == 4 and len(chat.delivered) == 12 and pager.delivered == ["pager:oncall"]


class WorkspaceLimitedChannel:
    """A platform whose whole workspace is over its budget: every call is answered 429 + Retry-After 30."""

    def __init__(self) -> None:
        self.calls = 0

    async def deliver(self, item: OutboxItem) -> Delivered:
        from bot.channels import RateLimited

        self.calls += 1
        await asyncio.sleep(0)
        raise RateLimited("429 ratelimited", retry_after=30)

    def pacing_key(self, item: OutboxItem) -> str:
        return item.target


async def test_a_workspace_limit_on_one_platform_costs_it_few_calls_and_holds_up_no_other_platform(
    db: Any, clock: Any, config: Any,
) -> None:
    limited, other = WorkspaceLimitedChannel(), GatedChannel()
    other.release.set()
    worker = four_slot_worker(db, clock, config, chat=limited, teams=other)
    for n in range(40):
        await enqueue(db, clock, f"dm-{n}", target=f"chat:user:U{n}")
    for n in range(3):
        await enqueue(db, clock, f"teams-{n}", target=f"teams:user:T{n}")
    await asyncio.wait_for(worker.tick(), 5)
    # Two conversations refused in a row is the workspace's limit: the rest wait out its Retry-After uncalled.
    assert limited.calls <= 4 + 2, f"{limited.calls} calls to a platform that refused the whole workspace"
    assert sorted(other.delivered) == [f"teams:user:T{n}" for n in range(3)]
    clock.advance(timedelta(seconds=31))  # the budget is back; calls go a couple at a time for a while
    for n in range(3, 6):
        await enqueue(db, clock, f"teams-{n}", target=f"teams:user:T{n}")
    calls_before = limited.calls
    await asyncio.wait_for(worker.tick(), 5)
    assert limited.calls - calls_before <= 2 + 2
    assert len(other.delivered) == 6  # the other platform never waited for the careful one's turns


async def test_a_conversation_with_more_queued_than_it_may_send_in_half_a_lease_waits_in_the_store_for_its_turn(
    db: Any, clock: Any, config: Any,
) -> None:
    # An intake burst: ten tickets' cards for one channel paced at 1 s, with a 10 s lease. Holding all
    # ten in hand would outlive the lease (another replica would send them again); five are put back.
    sleeps = Sleeps()
    channel = ScriptedChannel([])
    engine = config.engine.model_copy(update={"lease": timedelta(seconds=10)})
    worker = OutboxWorker(db, clock, engine, Metrics(), min_interval=1.0, sleep=sleeps, monotonic=lambda: 100.0)
    worker.register("test", channel)
    async with db.transaction() as session:
        for n in range(10):
            await enqueue_message(session, target="test:triage", kind="notice", payload={"n": n},
                                  idempotency_key=f"card-{n}", ordering_key=f"triage#{n}", now=clock.now())
    delivering = asyncio.ensure_future(worker.tick())
    await sleeps.sleeping()
    async with db.reading() as session:
        rows = {row.idempotency_key: row for row in (await session.execute(select(OutboxMessage))).scalars()}
    put_back = sorted((row for row in rows.values() if row.lease_owner is None and row.delivered_at is None),
                      key=lambda row: row.id)
    assert [row.idempotency_key for row in put_back] == [f"card-{n}" for n in range(6, 10)]
    waits = [(row.next_attempt_at - clock.now()).total_seconds() for row in put_back]
    assert waits == sorted(waits) and waits[0] >= 5 and all(row.attempts == 0 for row in put_back)
    while not delivering.done():  # the six in hand go out, a second apart
        sleeps.end_all()
        await asyncio.wait([delivering, asyncio.ensure_future(sleeps.sleeping())], return_when=asyncio.FIRST_COMPLETED)
    assert await delivering == 10 and len(channel.delivered) == 6
    clock.advance(timedelta(seconds=waits[-1] + 1))  # their turns have come
    finishing = asyncio.ensure_future(worker.tick())
    while not finishing.done():
        sleeps.end_all()
        await asyncio.wait([finishing, asyncio.ensure_future(sleeps.sleeping())], return_when=asyncio.FIRST_COMPLETED)
    assert await finishing == 4
    assert sorted(channel.delivered) == sorted(row.id for row in rows.values())  # each once


async def leases(db: Any) -> dict[str, Any]:
    """target -> lease_until of each outbox row."""
    async with db.reading() as session:
        return dict((await session.execute(select(OutboxMessage.target, OutboxMessage.lease_until))).tuples().all())


async def test_a_frozen_workers_page_goes_out_from_another_after_the_short_lease_not_the_long_one(
    db: Any, clock: Any, config: Any,
) -> None:
    # Worker A claims a page and a chat message, starts delivering both, and then its process stops
    # dead (kill -9, a frozen node): no heartbeat renews anything any more.
    frozen_chat, frozen_pager = GatedChannel(), GatedChannel(urgent=True)
    a = OutboxWorker(db, clock, config.engine, Metrics(), owner="a", min_interval=0, sleep=Sleeps())
    a.register("chat", frozen_chat)
    a.register("pager", frozen_pager)
    await enqueue(db, clock, "page", target="pager:oncall")
    await enqueue(db, clock, "dm", target="chat:user:U1")
    stuck = asyncio.ensure_future(a.tick())
    await asyncio.wait_for(frozen_pager.entered.wait(), 5)
    await asyncio.wait_for(frozen_chat.entered.wait(), 5)
    assert (await leases(db))["pager:oncall"] == clock.now() + config.engine.urgent_lease
    assert (await leases(db))["chat:user:U1"] == clock.now() + config.engine.lease

    chat, pager = ScriptedChannel([]), ScriptedChannel([])
    b = OutboxWorker(db, clock, config.engine, Metrics(), owner="b", min_interval=0)
    b.register("chat", chat)
    b.register("pager", pager)
    clock.advance(config.engine.urgent_lease + timedelta(seconds=1))
    assert await b.tick() == 1 and len(pager.delivered) == 1 and chat.delivered == []  # the page, within seconds
    clock.advance(config.engine.lease)
    assert await b.tick() == 1 and len(chat.delivered) == 1  # ordinary work keeps its long lease

    frozen_chat.release.set()
    frozen_pager.release.set()
    await asyncio.wait_for(stuck, 5)


async def test_a_live_workers_slow_page_keeps_its_lease_however_long_it_takes(
    db: Any, clock: Any, config: Any,
) -> None:
    heartbeat = Sleeps()
    slow = GatedChannel(urgent=True)
    a = OutboxWorker(db, clock, config.engine, Metrics(), owner="a", min_interval=0, sleep=heartbeat)
    a.register("pager", slow)
    await enqueue(db, clock, "page", target="pager:oncall")
    delivering = asyncio.ensure_future(a.tick())
    await asyncio.wait_for(slow.entered.wait(), 5)
    other = ScriptedChannel([])
    b = OutboxWorker(db, clock, config.engine, Metrics(), owner="b", min_interval=0)
    b.register("pager", other)
    for _ in range(4):  # 16 s of a pager that takes its time to answer
        await heartbeat.sleeping()
        assert heartbeat.asked[-1] == pytest.approx(config.engine.urgent_lease.total_seconds() / 3)
        clock.advance(timedelta(seconds=4))
        heartbeat.end_all()  # a third of the lease has passed: renew it
        await heartbeat.sleeping()  # renewed, waiting for the next beat
        assert (await leases(db))["pager:oncall"] == clock.now() + config.engine.urgent_lease
        assert await b.tick() == 0  # still ours: nobody sends the page a second time
    slow.release.set()
    assert await asyncio.wait_for(delivering, 5) == 1
    assert other.delivered == [] and len(slow.delivered) == 1 and a.urgent_leases.held == frozenset()


async def test_breach_timers_are_claimed_with_the_short_lease_and_ordinary_timers_with_the_long_one(
    db: Any, clock: Any, config: Any,
) -> None:
    engine = TimerEngine(db, clock, config.engine, Metrics(), owner="w")
    seen: dict[str, Any] = {}

    async def record(run: TimerRun) -> None:
        seen[run.timer.kind] = run.timer.lease_until - run.now if run.timer.lease_until else None

    engine.register("test.breach", record, urgent=True)
    engine.register("test.digest", record)
    async with db.transaction() as session:
        for kind in ("test.breach", "test.digest"):
            await schedule_timer(session, kind=kind, due_at=clock.now(), now=clock.now())
    assert await engine.tick() == 2
    assert seen == {"test.breach": config.engine.urgent_lease, "test.digest": config.engine.lease}


async def test_the_heartbeat_extends_only_unfinished_rows_still_ours_and_never_shortens_a_backoff(
    db: Any, clock: Any, config: Any,
) -> None:
    from bot.engine import LeaseKeeper
    from store.queries import claim_due_timers

    async with db.transaction() as session:
        for n in range(4):
            await schedule_timer(session, kind="test.breach", due_at=clock.now(), now=clock.now(), payload={"n": n})
        claimed = [t.id for t in await claim_due_timers(session, owner="me", now=clock.now(), lease=config.engine.lease,
                                                        limit=10, urgent_kinds={"test.breach"},
                                                        urgent_lease=config.engine.urgent_lease)]
        running, done, backing_off, stolen = claimed
        await session.execute(update(Timer).where(Timer.id == done).values(done_at=clock.now()))
        await session.execute(update(Timer).where(Timer.id == backing_off).values(
            lease_until=clock.now() + timedelta(minutes=5)))
        await session.execute(update(Timer).where(Timer.id == stolen).values(lease_owner="someone-else"))
    beats = Sleeps()
    keeper = LeaseKeeper(db, clock, Timer, "me", config.engine.urgent_lease, sleep=beats)
    keeper.keep(claimed)
    await beats.sleeping()
    clock.advance(timedelta(seconds=3))
    beats.end_all()
    await beats.sleeping()
    async with db.reading() as session:
        until = dict((await session.execute(select(Timer.id, Timer.lease_until))).tuples().all())
    assert until[running] == clock.now() + config.engine.urgent_lease
    assert until[done] == until[stolen] == clock.now() - timedelta(seconds=3) + config.engine.urgent_lease
    assert until[backing_off] == clock.now() - timedelta(seconds=3) + timedelta(minutes=5)
    keeper.drop(claimed)
    beats.end_all()


async def test_hourly_pruning_deletes_only_what_has_served_its_purpose(
    desk: Any, clock: Any, make_ticket: Any, monkeypatch: Any,
) -> None:
    from sqlalchemy import insert

    from bot import scheduler
    from bot.scheduler import EngineRunner
    from store.models import Counter, InboundDedup

    monkeypatch.setattr(scheduler, "PRUNE_BATCH", 2)  # several batches, as with a big backlog
    ticket = await make_ticket()
    now = clock.now()
    old, recent = now - timedelta(days=31), now - timedelta(days=1)
    async with desk.db.transaction() as session:
        await session.execute(insert(InboundDedup), [
            {"source": "slack", "key": f"old-{n}", "expires_at": now - timedelta(minutes=1)} for n in range(5)]
            + [{"source": "slack", "key": "fresh", "expires_at": now + timedelta(days=1)}])
        await session.execute(insert(Counter), [
            {"key": "cap:old", "value": 3, "expires_at": now - timedelta(hours=1)},
            {"key": "cap:now", "value": 1, "expires_at": now + timedelta(hours=1)},
            {"key": "forever", "value": 9, "expires_at": None}])
        for key, delivered, dead in (("sent-old", old, None), ("sent-recent", recent, None), ("dead-old", None, old),
                                     ("pending", None, None)):
            await enqueue_message(session, target="test:x", kind="notice", payload={}, idempotency_key=key,
                                  now=old, ticket_id=ticket.id)
            await session.execute(update(OutboxMessage).where(OutboxMessage.idempotency_key == key).values(
                delivered_at=delivered, dead_at=dead))
        for key, done in (("done-old", old), ("done-recent", recent), ("waiting", None)):
            await schedule_timer(session, kind="test.kind", due_at=old, now=old, dedup_key=key)
            await session.execute(update(Timer).where(Timer.dedup_key == key).values(done_at=done))

    pruned = await EngineRunner(desk).prune()

    assert pruned == {"inbound_dedup": 5, "counters": 1, "outbox": 1, "timers": 1}
    async with desk.db.reading() as session:
        assert set((await session.execute(select(InboundDedup.key))).scalars()) == {"fresh"}
        assert set((await session.execute(select(Counter.key))).scalars()) == {"cap:now", "forever"}
        keys = set((await session.execute(select(OutboxMessage.idempotency_key).where(
            OutboxMessage.target == "test:x"))).scalars())
        assert keys == {"sent-recent", "dead-old", "pending"}
        assert set((await session.execute(select(Timer.dedup_key).where(Timer.kind == "test.kind"))).scalars()) == {
            "done-recent", "waiting"}


async def test_a_burst_of_fresh_outbox_rows_is_claimed_with_an_index_probe_per_row_not_a_comparison_of_every_pair(
    db: Any, clock: Any, config: Any
) -> None:
    # A fan-out or a breach storm writes thousands of unsent rows at once, and the worker claims them
    # before autovacuum has analyzed the table. On those stale statistics PostgreSQL once planned
    # "is an earlier row of this thread still unsent?" as a nested loop over every pair: 4 million
    # comparisons and 1.5 s per claim for 2,000 rows.
    if not db.is_postgres:
        pytest.skip("the plan under test is PostgreSQL's")
    burst = 2000
    async with db.transaction() as session:
        await session.execute(text("ALTER TABLE outbox SET (autovacuum_enabled = off)"))  # stay unanalyzed
        await enqueue_messages(session, [
            outbox_values(target=f"slack:dm:U{n:05d}", kind="notice", payload={}, idempotency_key=f"burst:{n}",
                          now=clock.now())
            for n in range(burst)])
    statement = claim_outbox_statement("postgresql", owner="w", now=clock.now(), lease=config.engine.lease,
                                       limit=200)
    sql = str(statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    async with db.transaction() as session:
        plan = (await session.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}"))).scalar_one()
        await session.rollback()  # EXPLAIN ANALYZE really claimed them

    def rows_compared_and_dropped(node: dict[str, Any]) -> float:
        dropped = (node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Join Filter", 0)) * node.get(
            "Actual Loops", 1)
        return float(dropped) + sum(rows_compared_and_dropped(child) for child in node.get("Plans", []))

    assert plan[0]["Plan"]["Actual Rows"] == 200
    assert rows_compared_and_dropped(plan[0]["Plan"]) < 10 * burst
    async with db.transaction() as session:
        claimed = await claim_outbox(session, owner="w", now=clock.now(), lease=config.engine.lease, limit=200)
        first = list((await session.execute(
            select(OutboxMessage.id).order_by(OutboxMessage.id).limit(200))).scalars())
    assert sorted(claimed) == first


async def test_the_bots_postgresql_sessions_never_jit_compile_their_short_queries(db: Any) -> None:
    # A claim over a large backlog crosses jit_above_cost and then spent ~25 ms compiling a 50 ms query.
    if not db.is_postgres:
        pytest.skip("JIT is PostgreSQL's")
    async with db.reading() as session:
        assert await session.scalar(text("SHOW jit")) == "off"


class SlowChannel(ScriptedChannel):
    """Delivers after a pause, so deliveries on different targets finish while others are being recorded."""

    async def deliver(self, item: OutboxItem) -> Delivered:
        await asyncio.sleep(0.01)
        return await super().deliver(item)


async def test_deliveries_that_finish_together_are_recorded_in_one_transaction_each_with_its_own_message_id(
    db: Any, clock: Any, config: Any
) -> None:
    channel = SlowChannel([])
    worker = make_worker(db, clock, config, channel)
    for n in range(12):
        await enqueue(db, clock, f"k{n}", target=f"test:lane{n}")
    with StatementLog(db) as log:
        assert await worker.tick() == 12
    records = [s for s in log.starting("UPDATE outbox SET") if "delivered_at" in s]

    assert len(channel.delivered) == 12
    assert 1 <= len(records) <= 3  # twelve deliveries finishing together: one write each would be 12
    async with db.transaction() as session:
        rows = (await session.execute(select(OutboxMessage.id, OutboxMessage.delivered_message_id,
                                             OutboxMessage.lease_owner, OutboxMessage.delivered_at))).all()
    assert {(row_id, message_id) for row_id, message_id, _, _ in rows} == {(i, f"m{i}") for i in channel.delivered}
    assert all(owner is None and at is not None for _, _, owner, at in rows)
    assert worker.metrics.outbox_delivered.labels("test")._value.get() == 12


async def test_a_failed_group_write_reaches_every_caller_in_it_and_the_next_group_still_writes() -> None:
    written: list[list[int]] = []
    fail_next = [True]

    async def write(items: list[int]) -> None:
        await asyncio.sleep(0)
        if fail_next[0]:
            fail_next[0] = False
            raise OSError("database restarting")
        written.append(items)

    group: GroupCommit[int] = GroupCommit(write)
    first = await asyncio.gather(*(group.record(n) for n in range(3)), return_exceptions=True)
    assert [type(outcome) for outcome in first] == [OSError, OSError, OSError]
    assert await asyncio.gather(*(group.record(n) for n in range(3, 7))) == [None] * 4
    assert written == [[3, 4, 5, 6]]


async def test_callers_of_a_group_write_are_not_left_waiting_when_shutdown_cancels_the_writer() -> None:
    started = asyncio.Event()

    async def write(items: list[int]) -> None:
        started.set()
        await asyncio.Event().wait()  # a write that never finishes on its own

    group: GroupCommit[int] = GroupCommit(write)
    callers = asyncio.gather(*(group.record(n) for n in range(2)), return_exceptions=True)
    await started.wait()
    late = asyncio.ensure_future(group.record(2))  # queued behind the write in flight
    await asyncio.sleep(0)
    assert group._writer is not None
    group._writer.cancel()  # what the event loop's shutdown does to every task still running
    outcomes = await asyncio.wait_for(callers, timeout=5)
    assert [type(outcome) for outcome in outcomes] == [asyncio.CancelledError, asyncio.CancelledError]
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(late, timeout=5)
