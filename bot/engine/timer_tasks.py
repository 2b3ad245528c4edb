"""Timer kinds whose work waits on a platform's Web API: run outside any transaction, beside the tick.

A timer handler runs inside its timer's transaction, which on SQLite holds the one write lock: a handler that
waited there on Slack would stall every other writer, and a tick that waited for it would hold back the pages
due meanwhile. A task instead gets its timer's payload, no session, and its own asyncio task; the tick goes
on without it (``EngineRunner`` waits for it only until it is kicked, as it does for the outbox).
"""


import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select

from bot.clock import Clock
from bot.engine.leases import LeaseKeeper
from store.db import Database
from store.models import Timer

log = logging.getLogger("ithelp.engine")
_TIMER_LOCKED = select(Timer).where(Timer.id == bindparam("timer_id")).with_for_update()


@dataclass(frozen=True)
class TimerJob:
    """What a timer task gets: its timer's payload and which attempt this is; no transaction."""

    timer_id: int
    kind: str
    payload: dict[str, Any]
    attempt: int
    now: datetime


TimerTask = Callable[[TimerJob], Awaitable[None]]
Failed = Callable[[int, Exception], Awaitable[None]]
Ran = Callable[[Timer], None]


class TimerTasks:
    """Runs claimed timers of task kinds (see ``TimerEngine.register_task``), each in an asyncio task of its own.

    The timer is marked done only after its task returned, in a transaction of its own: a task that dies with
    its process runs again once its lease lapses, so a task must be idempotent (dedup keys, not memory).
    """

    def __init__(self, db: Database, clock: Clock, owner: str, leases: LeaseKeeper, *, failed: Failed, ran: Ran,
                 wake: Callable[[], None] | None = None) -> None:
        self.db = db
        self.clock = clock
        self.owner = owner
        self.leases = leases
        self._failed = failed
        self._ran = ran
        self._wake = wake
        self._tasks: dict[str, TimerTask] = {}
        self._running: set[asyncio.Task[None]] = set()

    def register(self, kind: str, task: TimerTask) -> None:
        self._tasks[kind] = task

    def __contains__(self, kind: object) -> bool:
        return kind in self._tasks

    @property
    def kinds(self) -> list[str]:
        return sorted(self._tasks)

    @property
    def running(self) -> frozenset[asyncio.Task[None]]:
        """The tasks still in hand."""
        return frozenset(self._running)

    def start(self, timer_id: int) -> None:
        """Run the claimed timer ``timer_id`` now, without waiting for it. Its lease is renewed until it ends."""
        task = asyncio.get_running_loop().create_task(self._run(timer_id))
        self._running.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._wake is not None:
            self._wake()  # what it wrote (a ticket, a message owed) is for the engine's next turn

    async def drain(self) -> None:
        """Wait for every task in hand to end."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _run(self, timer_id: int) -> None:
        try:
            job = await self._job(timer_id)
            if job is None:
                return
            try:
                await self._tasks[job.kind](job)
            except Exception as exc:
                log.exception("timer %s (%s) failed", timer_id, job.kind)
                await self._failed(timer_id, exc)
                return
            async with self.db.transaction() as session:
                timer = (await session.execute(_TIMER_LOCKED, {"timer_id": timer_id})).scalar_one_or_none()
                # Not ours any more: our lease lapsed and another replica has it (and runs the task again).
                if timer is None or timer.done_at is not None or timer.lease_owner != self.owner:
                    return
                timer.done_at, timer.outcome = self.clock.now(), "done"
                self._ran(timer)
        except Exception:  # the database went away: the lease lapses and the timer runs again
            log.exception("timer %s: could not run or record its task", timer_id)
        finally:
            self.leases.drop([timer_id])

    async def _job(self, timer_id: int) -> TimerJob | None:
        async with self.db.reading() as session:
            timer = await session.get(Timer, timer_id)
            if timer is None or timer.done_at is not None or timer.lease_owner != self.owner:
                return None
            return TimerJob(timer.id, timer.kind, dict(timer.payload or {}), timer.attempts, self.clock.now())


__all__ = ["TimerJob", "TimerTask", "TimerTasks"]
