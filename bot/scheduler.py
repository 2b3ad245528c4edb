"""Drives the engine: an APScheduler interval tick (in-memory job store) plus cron jobs.

Ticket timers are rows (``store``), not APScheduler jobs: APScheduler's persistent job stores are
not safe across processes. ``kick()`` runs a tick now, so a freshly written outbox row goes out at
once instead of waiting for the next interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import time

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from bot.core import CronJob
from bot.desk import Desk
from store.queries import prune

log = logging.getLogger("ithelp.scheduler")
CallLater = Callable[[float, Callable[[], None]], asyncio.TimerHandle]
PRUNE_BATCH = 5000


class EngineRunner:
    """Runs timer and outbox ticks on an interval, on demand, and cron jobs in a configured zone."""

    def __init__(self, desk: Desk, *, call_later: CallLater | None = None) -> None:
        """``call_later`` (default: the event loop's) schedules the wake-up for the next due timer."""
        self.desk = desk
        self._call_later = call_later
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self._tick_lock = asyncio.Lock()
        self._pending_kick = False
        self._kicked = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._outbox_task: asyncio.Task[None] | None = None
        self._outbox_again = False
        self._stopping = False
        self._wakeup: asyncio.TimerHandle | None = None

    def start(self) -> None:
        interval = self.desk.config.engine.tick_interval.total_seconds()
        self.scheduler.add_job(self._interval, "interval", seconds=interval, id="engine-tick", max_instances=1,
                               coalesce=True, misfire_grace_time=None)
        self.scheduler.add_job(self._prune_job, "interval", hours=1, id="engine-prune", max_instances=1,
                               coalesce=True)
        self.scheduler.start()

    async def _interval(self) -> None:
        # Ticks run as tasks we track, never inside APScheduler's job: its shutdown cancels running
        # jobs, which would cut a delivery off between Slack's answer and our record of it.
        self.kick()

    async def prune(self) -> dict[str, int]:
        """Delete what only ever grows (``store.queries.prune``), a batch at a time; returns the counts."""
        totals: dict[str, int] = {}
        while True:
            async with self.desk.db.transaction() as session:
                counts = await prune(session, now=self.desk.clock.now(),
                                     keep=self.desk.config.engine.keep_history, limit=PRUNE_BATCH)
            for table, count in counts.items():
                totals[table] = totals.get(table, 0) + count
            if max(counts.values(), default=0) < PRUNE_BATCH or self._stopping:
                return totals

    async def _prune_job(self) -> None:
        try:
            pruned = await self.prune()
        except Exception:
            log.exception("pruning old rows failed; the next hour tries again")
            return
        if any(pruned.values()):
            log.info("pruned %s", ", ".join(f"{count} {table}" for table, count in pruned.items() if count))

    def add_cron(self, job: CronJob) -> None:
        """Run ``job`` at its wall-clock time; when it queued work, the engine runs at once."""
        async def run() -> None:
            if await job.run():
                self.kick()

        if job.day is None:
            self.add_daily(job.job_id, job.at, job.zone, run)
        else:
            self.add_weekly(job.job_id, job.day, job.at, job.zone, run)

    def add_daily(self, job_id: str, at: time, zone: str, job: Callable[[], Awaitable[object]]) -> None:
        """Run ``job`` every day at ``at`` in ``zone`` (e.g. the morning triage digest)."""
        self.scheduler.add_job(job, CronTrigger(hour=at.hour, minute=at.minute, timezone=zone), id=job_id,
                               max_instances=1, coalesce=True, replace_existing=True)

    def add_weekly(self, job_id: str, day: str, at: time, zone: str, job: Callable[[], Awaitable[object]]) -> None:
        """Run ``job`` every week on ``day`` (``mon``…``sun``) at ``at`` in ``zone``."""
        self.scheduler.add_job(job, CronTrigger(day_of_week=day, hour=at.hour, minute=at.minute, timezone=zone),
                               id=job_id, max_instances=1, coalesce=True, replace_existing=True)

    def kick(self) -> None:
        """Tick as soon as possible (coalesced: many kicks during a tick cause one more tick)."""
        if self._stopping:
            return
        if self._tick_lock.locked():
            self._pending_kick = True
            self._kicked.set()
            return
        task = asyncio.get_running_loop().create_task(self.tick())
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def tick(self) -> None:
        if self._stopping:
            return
        async with self._tick_lock:
            if self._stopping:
                return
            while True:
                self._pending_kick = False
                self._kicked.clear()
                try:
                    more_to_set_up = await self._finish_setup_batch()
                    self._drain_outbox()  # triage cards go out while the rest of a burst is set up
                    # Timers get a turn after every setup batch: a flood of new tickets never holds back a page.
                    await self.desk.timers.tick(after_batch=self._drain_outbox)
                    self._drain_outbox()
                    if more_to_set_up and not self._stopping:
                        continue
                    await self._wake_for_next_timer()
                    await self._background_done_or_kicked()
                except Exception:  # the database may be down: log, and the next tick tries again
                    log.exception("engine tick failed")
                    return
                if not self._pending_kick or self._stopping:
                    return

    async def _background_done_or_kicked(self) -> None:
        # A tick ends once what it enqueued is delivered and the timer tasks it started have ended, unless
        # a timer falls due first: in a breach storm the next breaches must not wait for this batch's pages,
        # nor for a task waiting on a slow Slack; the outbox and the tasks go on beside them. A task that
        # ends kicks the engine (its ticket needs setting up).
        while not self._pending_kick:
            outbox = [task] if (task := self._outbox_task) is not None and not task.done() else []
            waiting = [*outbox, *self.desk.timers.tasks.running]
            if not waiting:
                return
            kicked = asyncio.ensure_future(self._kicked.wait())
            try:
                await asyncio.wait((*waiting, kicked), return_when=asyncio.FIRST_COMPLETED)
            finally:
                kicked.cancel()

    async def _wake_for_next_timer(self) -> None:
        # The interval tick alone would run a deadline up to a whole interval late (a breach page
        # that should go at 10:00:00.1 going at 10:00:01): also wake when the next timer falls due.
        due = await self.desk.timers.next_due()
        if due is None:
            return
        delay = (due - self.desk.clock.now()).total_seconds()
        if delay < self.desk.config.engine.tick_interval.total_seconds():
            if self._wakeup is not None:
                self._wakeup.cancel()
            call_later = self._call_later or asyncio.get_running_loop().call_later
            self._wakeup = call_later(max(delay, 0.0) + 0.002, self.kick)

    async def _finish_setup_batch(self) -> bool:
        """Set up one batch of fast-intake tickets; True when there may be more."""
        async with self.desk.requests.turn():
            # Small batches during a burst, so each turn background work takes is short; SQLite
            # always (one writer: queued intakes get in between; bench/ack_latency.py shows the effect),
            # and one ticket at a time while people wait on it: a report that joins an outage's incident
            # takes tens of ms to set up, and a batch of them held the writer past the acks' target
            # (bench/outage.py).
            busy = self.desk.requests.busy()
            limit = (1 if busy else 5) if not self.desk.db.is_postgres else 5 if busy else 50
            return await self.desk.tickets.finish_setup(limit=limit) == limit

    def _drain_outbox(self) -> None:
        """Deliver the outbox now, alongside timers, so pages go out while a breach storm is still running."""
        if self._outbox_task is not None and not self._outbox_task.done():
            self._outbox_again = True
            self.desk.outbox.wake()  # it claims the new rows now, beside the lanes still going
            return
        self._outbox_task = asyncio.get_running_loop().create_task(self._outbox_loop())

    async def _outbox_loop(self) -> None:
        while True:
            self._outbox_again = False
            try:
                await self.desk.outbox.tick()
            except Exception:
                log.exception("outbox tick failed")
                return
            if not self._outbox_again or self._stopping:
                return

    async def stop(self) -> None:
        """Stop taking work; let in-flight deliveries finish (unsent claimed rows are released)."""
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.cancel()
        self.desk.outbox.stop()
        if self.scheduler.running:
            self.scheduler.pause()
        async with self._tick_lock:
            pass
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._outbox_task is not None:  # a tick that failed may have left it delivering
            await asyncio.gather(self._outbox_task, return_exceptions=True)
        await self.desk.timers.tasks.drain()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
