"""Timer rows, claimed with a lease and run by the handler registered for their kind."""


import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.config import EngineConfig
from bot.engine.leases import LeaseKeeper
from bot.engine.timer_tasks import TimerTask, TimerTasks
from bot.metrics import Metrics
from store.db import Database
from store.models import Timer
from store.queries import ClaimedTimer, claim_due_timers

log = logging.getLogger("ithelp.engine")


@dataclass
class TimerRun:
    """What a timer handler gets: the timer row (locked) and the transaction its effects join."""

    session: AsyncSession
    timer: Timer
    now: datetime
    prepared: Any = None
    """What the kind's ``prepare`` read for this timer, when it ran in a group (else None)."""


TimerHandler = Callable[[TimerRun], Awaitable[None]]
TimerPrepare = Callable[[AsyncSession, Sequence[Timer]], Awaitable[Mapping[int, Any]]]
_TIMER_LOCKED = select(Timer).where(Timer.id == bindparam("timer_id")).with_for_update()
_TIMERS_LOCKED = (select(Timer).where(Timer.id.in_(bindparam("timer_ids", expanding=True))).order_by(Timer.id)
                  .with_for_update())
TASK_MAX_ATTEMPTS = 18
"""Attempts of a timer task before it is marked failed: with the backoff (2 s doubling, at most 5 min between
tries) close to an hour of a platform failing."""
GROUP_SIZE = 25
"""How many due timers of shareable kinds run in one transaction (see ``TimerEngine.register``)."""


class TimerEngine:
    """Runs due timer rows exactly once, by kind, with handlers registered by name (or tasks: ``register_task``)."""

    def __init__(
        self, db: Database, clock: Clock, config: EngineConfig, metrics: Metrics, *, owner: str | None = None,
        max_attempts: int = 5, task_max_attempts: int = TASK_MAX_ATTEMPTS, concurrency: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, wake: Callable[[], None] | None = None,
    ) -> None:
        """``wake`` asks the engine to run again: called when a task (``register_task``) ends."""
        self.db = db
        self.clock = clock
        self.config = config
        self.metrics = metrics
        self.owner = owner or f"timers-{uuid.uuid4().hex[:12]}"
        self.max_attempts = max_attempts
        self.task_max_attempts = task_max_attempts
        # SQLite has one writer; more concurrency there only queues on the lock.
        self.concurrency = concurrency or (8 if db.is_postgres else 1)
        self._handlers: dict[str, TimerHandler] = {}
        self._shareable: set[str] = set()
        self._urgent: set[str] = set()
        self._prepare: dict[str, TimerPrepare] = {}
        self.urgent_leases = LeaseKeeper(db, clock, Timer, self.owner, config.urgent_lease, sleep=sleep)
        self.tasks = TimerTasks(db, clock, self.owner, self.urgent_leases, failed=self._record_failure,
                                ran=self._count_run, wake=wake)

    def register(self, kind: str, handler: TimerHandler, *, shares_transaction: bool = False,
                 prepare: TimerPrepare | None = None, urgent: bool = False) -> None:
        """Run due timers of ``kind`` with ``handler``.

        ``urgent`` (SLA breaches and warnings: they page people): claimed with the short
        ``engine.urgent_lease``, renewed while they run, so a replica's crash delays them by seconds.

        ``shares_transaction``: due timers of such kinds run up to ``GROUP_SIZE`` to a transaction (a
        breach storm costs one commit per group, not one per breach), never two for the same ticket,
        and without autoflush between them, so their writes go out in one flush. Only for handlers
        that read nothing another ticket's handler writes. If any timer in a group fails, the group
        rolls back and each of its timers runs again in a transaction of its own.

        ``prepare`` (with ``shares_transaction``) reads for a whole group at once what each handler
        would read for itself (its ticket, locked); it returns a value per timer id, handed to the
        handler as ``TimerRun.prepared``. Kinds registered with the same ``prepare`` share one call.
        """
        if kind in self._handlers or kind in self.tasks:
            raise ValueError(f"a handler for timer kind {kind!r} is already registered")
        self._handlers[kind] = handler
        if urgent:
            self._urgent.add(kind)
        if shares_transaction:
            self._shareable.add(kind)
            if prepare is not None:
                self._prepare[kind] = prepare

    def register_task(self, kind: str, task: TimerTask) -> None:
        """Run due timers of ``kind`` with ``task``, outside any transaction and beside the tick (``TimerTasks``):
        for work that waits on a platform's Web API, such as what a chat request leaves for after its ack.

        Claimed with the short ``engine.urgent_lease``, renewed while it runs: someone is waiting on it, and a
        replica that dies hands it to another within seconds. It may therefore run more than once and must be
        idempotent. Raising retries it with backoff, as a handler's failure does, but for longer
        (``task_max_attempts``): what it waits on is a platform, and a platform's blip outlasts a handful of
        quick retries while the person's request must not be lost.
        """
        if kind in self._handlers or kind in self.tasks:
            raise ValueError(f"a handler for timer kind {kind!r} is already registered")
        self.tasks.register(kind, task)
        self._urgent.add(kind)

    @property
    def kinds(self) -> list[str]:
        return sorted([*self._handlers, *self.tasks.kinds])

    async def tick(self, after_batch: Callable[[], None] | None = None) -> int:
        """Claim and run every due timer (in batches); returns how many ran.

        ``after_batch`` is called after each batch, so the outbox can start delivering what the batch
        enqueued (pages in a breach storm) while the next batch runs.
        """
        total = 0
        semaphore = asyncio.Semaphore(self.concurrency)

        async def run(group: list[int]) -> None:
            try:
                async with semaphore:
                    if len(group) == 1:
                        await self._run_one(group[0])
                    else:
                        await self._run_group(group)
            finally:
                self.urgent_leases.drop(group)

        while True:
            async with self.db.transaction() as session:
                claimed = await claim_due_timers(session, owner=self.owner, now=self.clock.now(),
                                                 lease=self.config.lease, limit=self.config.batch_size,
                                                 urgent_kinds=self._urgent, urgent_lease=self.config.urgent_lease)
            if not claimed:
                return total
            self.urgent_leases.keep(timer.id for timer in claimed if timer.kind in self._urgent)
            for timer in claimed:
                if timer.kind in self.tasks:
                    self.tasks.start(timer.id)

            await asyncio.gather(*(run(group) for group in self._groups(
                [timer for timer in claimed if timer.kind not in self.tasks])))
            total += len(claimed)
            if after_batch is not None:
                after_batch()
            if len(claimed) < self.config.batch_size:
                return total

    def _groups(self, claimed: list[ClaimedTimer]) -> list[list[int]]:
        # Soonest due first. Each group holds at most one timer per ticket: a handler then never needs
        # another's unflushed writes to its own ticket.
        groups: list[list[int]] = []
        filling: list[tuple[list[int], set[int]]] = []  # shareable groups with room left
        for timer in claimed:
            if timer.kind not in self._shareable or timer.ticket_id is None:
                groups.append([timer.id])
                continue
            group = next((g for g in filling if timer.ticket_id not in g[1]), None)
            if group is None:
                group = ([], set())
                groups.append(group[0])
                filling.append(group)
            group[0].append(timer.id)
            group[1].add(timer.ticket_id)
            if len(group[0]) == GROUP_SIZE:
                filling.remove(group)
        return groups

    async def next_due(self) -> datetime | None:
        """When the next timer falls due, if one is pending and not yet due (index-only: cheap)."""
        async with self.db.reading() as session:
            due: datetime | None = await session.scalar(select(func.min(Timer.due_at)).where(
                Timer.done_at.is_(None), Timer.due_at > self.clock.now()))
        return due

    async def _run_group(self, timer_ids: list[int]) -> None:
        ran: list[Timer] = []
        try:
            async with self.db.transaction() as session:
                # Locked in id order, so two replicas' groups cannot wait on each other in a circle.
                timers = [timer for timer in (await session.execute(_TIMERS_LOCKED, {"timer_ids": timer_ids})).scalars()
                          # else another replica took it over after our lease ran out
                          if timer.done_at is None and timer.lease_owner == self.owner]
                with session.no_autoflush:
                    prepared = await self._prepared(session, timers)
                    for timer in timers:
                        now = self.clock.now()
                        await self._handlers[timer.kind](
                            TimerRun(session=session, timer=timer, now=now, prepared=prepared.get(timer.id)))
                        if timer.done_at is None:
                            timer.done_at, timer.outcome = now, "done"
                        ran.append(timer)
        except Exception:
            # One bad timer must not hold back the rest: each runs again on its own, and only the
            # failing one is retried later.
            log.warning("a group of %d timers failed; running them one at a time", len(timer_ids), exc_info=True)
            for timer_id in timer_ids:
                await self._run_one(timer_id)
            return
        for timer in ran:
            self._count_run(timer)

    async def _prepared(self, session: AsyncSession, timers: Sequence[Timer]) -> dict[int, Any]:
        by_prepare: dict[TimerPrepare, list[Timer]] = {}
        for timer in timers:
            if (prepare := self._prepare.get(timer.kind)) is not None:
                by_prepare.setdefault(prepare, []).append(timer)
        prepared: dict[int, Any] = {}
        for prepare, of_kind in by_prepare.items():
            prepared.update(await prepare(session, of_kind))
        return prepared

    def _count_run(self, timer: Timer) -> None:
        assert timer.done_at is not None
        self.metrics.timer_lateness.observe(max(0.0, (timer.done_at - timer.due_at).total_seconds()))
        self.metrics.timers_run.labels(timer.kind, timer.outcome or "done").inc()

    async def _run_one(self, timer_id: int) -> None:
        kind = "?"
        try:
            async with self.db.transaction() as session:
                timer = (await session.execute(_TIMER_LOCKED, {"timer_id": timer_id})).scalar_one()
                # Another replica reclaimed it after our lease ran out and already ran it: do nothing.
                if timer.done_at is not None or timer.lease_owner != self.owner:
                    return
                kind = timer.kind
                now = self.clock.now()
                handler = self._handlers.get(timer.kind)
                if handler is None:
                    timer.done_at, timer.outcome = now, "failed"
                    timer.last_error = f"no handler registered for timer kind {timer.kind!r}"
                    log.error("timer %s: %s", timer.id, timer.last_error)
                    self.metrics.timers_run.labels(timer.kind, "failed").inc()
                    return
                await handler(TimerRun(session=session, timer=timer, now=now))
                if timer.done_at is None:
                    timer.done_at, timer.outcome = now, "done"
                self._count_run(timer)
        except Exception as exc:
            log.exception("timer %s (%s) failed", timer_id, kind)
            await self._record_failure(timer_id, exc)

    async def _record_failure(self, timer_id: int, exc: Exception) -> None:
        self.urgent_leases.drop([timer_id])  # its lease becomes its backoff: no heartbeat may shorten that
        async with self.db.transaction() as session:
            timer = await session.get(Timer, timer_id, with_for_update=True)
            if timer is None or timer.done_at is not None or timer.lease_owner != self.owner:
                return
            now = self.clock.now()
            timer.last_error = f"{type(exc).__name__}: {exc}"[:2000]
            if timer.attempts >= (self.task_max_attempts if timer.kind in self.tasks else self.max_attempts):
                timer.done_at, timer.outcome = now, "failed"
                self.metrics.timers_run.labels(timer.kind, "failed").inc()
            else:
                # Keep the lease as a backoff: the row becomes claimable again when it expires.
                timer.lease_until = now + timedelta(seconds=min(300, 2**timer.attempts))
