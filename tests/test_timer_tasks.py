"""Timer tasks: timers whose work waits on a platform, run outside any transaction and beside the tick."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from bot.engine import TimerEngine, TimerJob, TimerRun
from bot.metrics import Metrics
from store.models import Timer
from store.queries import schedule_timer


async def _due(db: Any, clock: Any, kind: str, **payload: Any) -> None:
    async with db.transaction() as session:
        await schedule_timer(session, kind=kind, due_at=clock.now(), now=clock.now(), payload=payload)


async def _timers(db: Any) -> dict[str, Timer]:
    async with db.reading() as session:
        return {timer.kind: timer for timer in (await session.execute(select(Timer))).scalars()}


async def test_a_timer_task_holds_no_transaction_and_no_tick_while_it_waits_on_a_platform(
        db: Any, clock: Any, config: Any) -> None:
    woken: list[str] = []
    engine = TimerEngine(db, clock, config.engine, Metrics(), owner="w", wake=lambda: woken.append("woken"))
    slack_answers = asyncio.Event()
    started = asyncio.Event()
    ran: list[str] = []

    async def read_slack_then_write(job: TimerJob) -> None:
        started.set()
        await slack_answers.wait()  # a slow Web API call
        async with db.transaction() as session:  # SQLite's one writer: free, since the task holds no transaction
            await schedule_timer(session, kind="followup", due_at=clock.now(), now=clock.now())
        ran.append(str(job.payload["message"]))

    async def page(run: TimerRun) -> None:
        ran.append("page")

    engine.register_task("slack.read", read_slack_then_write)
    engine.register("page", page)
    await _due(db, clock, "slack.read", message="wifi down")
    await _due(db, clock, "page")

    await asyncio.wait_for(engine.tick(), 5)  # returns while the task still waits on Slack
    await asyncio.wait_for(started.wait(), 5)
    assert ran == ["page"] and len(engine.tasks.running) == 1
    timer = (await _timers(db))["slack.read"]
    assert timer.done_at is None and timer.lease_until == clock.now() + config.engine.urgent_lease

    slack_answers.set()
    await asyncio.wait_for(engine.tasks.drain(), 5)
    assert ran == ["page", "wifi down"] and woken == ["woken"]
    timers = await _timers(db)
    assert timers["slack.read"].outcome == "done" and timers["followup"].done_at is None


async def test_a_failing_timer_task_runs_again_after_its_backoff_and_is_marked_failed_at_the_limit(
        db: Any, clock: Any, config: Any) -> None:
    engine = TimerEngine(db, clock, config.engine, Metrics(), owner="w", task_max_attempts=2)
    attempts: list[int] = []

    async def slack_down(job: TimerJob) -> None:
        attempts.append(job.attempt)
        raise ConnectionError("Slack unreachable")

    engine.register_task("slack.read", slack_down)
    await _due(db, clock, "slack.read")
    for _ in range(3):
        await engine.tick()
        await engine.tasks.drain()
        clock.advance(timedelta(minutes=10))
    assert attempts == [1, 2]
    timer = (await _timers(db))["slack.read"]
    assert timer.outcome == "failed" and "Slack unreachable" in (timer.last_error or "")


async def test_a_timer_task_outlasts_a_platform_failing_for_half_an_hour(db: Any, clock: Any, config: Any) -> None:
    engine = TimerEngine(db, clock, config.engine, Metrics(), owner="w")
    attempts: list[int] = []

    async def slack_back_after_half_an_hour(job: TimerJob) -> None:
        attempts.append(job.attempt)
        if job.now < started + timedelta(minutes=30):
            raise ConnectionError("Slack unreachable")

    engine.register_task("slack.read", slack_back_after_half_an_hour)
    started = clock.now()
    await _due(db, clock, "slack.read")
    for _ in range(60 * 6):  # an hour, the engine running every 10 s
        await engine.tick()
        await engine.tasks.drain()
        clock.advance(timedelta(seconds=10))
    timer = (await _timers(db))["slack.read"]
    assert timer.outcome == "done", f"gave up after {len(attempts)} attempts"
    assert 5 < len(attempts) < 20
