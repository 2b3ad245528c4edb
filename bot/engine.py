"""The engine: timer rows run by registered handlers, and the outbox delivered with retries.

Both are driven by a short APScheduler interval tick (see ``bot.scheduler``); both claim their rows
with a lease in one statement (``store.queries``), so any number of replicas can run them at once.
Urgent work (pages, SLA breach timers) holds a short lease that a heartbeat renews while it is in hand
(``LeaseKeeper``), so a replica that dies holds up no page for long.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.channels import CredentialsRefused, PermanentDeliveryError, RateLimited, TransientDeliveryError
from bot.clock import Clock
from bot.config import EngineConfig
from bot.metrics import Metrics
from store.db import Database
from store.models import MessageRef, OutboxMessage, Timer
from store.queries import ClaimedTimer, Leased, claim_due_timers, claim_outbox, extend_leases, set_leases

log = logging.getLogger("ithelp.engine")
T = TypeVar("T")


class RequestsFirst:
    """Background work (setting up new tickets, delivering the outbox) steps aside for chat requests.

    Slack and Teams give a request about 3 seconds; a burst of ``/ithelp`` during an outage must be
    answered first. A burst lasts while requests are in flight or one ended less than ``settle``
    seconds ago. During it background units go one at a time, each after the burst ends or after a
    pause that keeps background work to ``share`` of the time (a unit that took d seconds is followed
    by d * (1 - share) / share, at most ``max_pause``): it slows right down, never stops, and runs at
    full speed the moment the burst ends. Pages skip this entirely (``urgent``).
    """

    def __init__(
        self, share: float = 0.1, *, settle: float = 0.05, max_pause: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be more than 0 and at most 1")
        self.share = share
        self.settle = settle
        self.max_pause = max_pause
        self.in_flight = 0
        self._monotonic = monotonic
        self._sleep = sleep
        self._last_request_end = -1e9
        self._next_turn_at = -1e9
        self._turn: asyncio.Lock | None = None

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Wrap the handling of one inbound request."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self._last_request_end = self._monotonic()

    def busy(self) -> bool:
        """True while a burst of requests is going on."""
        return self.in_flight > 0 or self._monotonic() - self._last_request_end < self.settle

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Run one unit of background work: at once when no burst is going on; otherwise one unit at
        a time, when the burst ends or background work's share of the time allows, whichever is first."""
        if self.share >= 1 or not self.busy():
            async with self._paced():
                yield
            return
        if self._turn is None:
            self._turn = asyncio.Lock()
        async with self._turn:
            while self.busy() and (wait := self._next_turn_at - self._monotonic()) > 0:
                # Polled: a burst's end is "no request for `settle` seconds", which no single event marks.
                await self._sleep(min(wait, max(self.settle / 2, 0.005)))
            async with self._paced():
                yield

    @asynccontextmanager
    async def _paced(self) -> AsyncIterator[None]:
        # Every unit, in a burst or not, sets when the next one may go if a burst is on by then.
        started = self._monotonic()
        try:
            yield
        finally:
            now = self._monotonic()
            pause = min((now - started) * (1 - self.share) / self.share, self.max_pause)
            self._next_turn_at = max(self._next_turn_at, now + pause)


class LeaseKeeper:
    """Renews the short leases of urgent rows (pages, breach timers) this process still has in hand.

    Urgent work is claimed with ``engine.urgent_lease`` instead of the ordinary ``lease``, so a replica
    that dies (``kill -9``, a lost node) hands its pages to another within seconds; while it lives, a
    heartbeat every third of that lease keeps them its own however long the work takes.
    """

    def __init__(self, db: Database, clock: Clock, model: Leased, owner: str, lease: timedelta, *,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.db = db
        self.clock = clock
        self.model = model
        self.owner = owner
        self.lease = lease
        self._sleep = sleep
        self._held: set[int] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def held(self) -> frozenset[int]:
        """The ids whose leases are being renewed."""
        return frozenset(self._held)

    def keep(self, ids: Iterable[int]) -> None:
        """Renew these rows' leases until :meth:`drop` (they were claimed with the short lease)."""
        self._held.update(ids)
        if self._held and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._beat())

    def drop(self, ids: Iterable[int]) -> None:
        """Stop renewing: the rows are done with (delivered, failed, run, released)."""
        self._held.difference_update(ids)

    async def _beat(self) -> None:
        while self._held:
            await self._sleep(self.lease.total_seconds() / 3)
            if not self._held:
                return
            try:
                async with self.db.transaction() as session:
                    await extend_leases(session, self.model, self._held, owner=self.owner,
                                        until=self.clock.now() + self.lease)
            except Exception as exc:  # the database is away: the next beat tries again, the lease may lapse
                log.warning("renewing the leases of %d urgent %s row(s) failed: %s", len(self._held),
                            self.model.__tablename__, exc)


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
GROUP_SIZE = 25
"""How many due timers of shareable kinds run in one transaction (see ``TimerEngine.register``)."""


class TimerEngine:
    """Runs due timer rows exactly once, by kind, with handlers registered by name."""

    def __init__(
        self, db: Database, clock: Clock, config: EngineConfig, metrics: Metrics, *, owner: str | None = None,
        max_attempts: int = 5, concurrency: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.db = db
        self.clock = clock
        self.config = config
        self.metrics = metrics
        self.owner = owner or f"timers-{uuid.uuid4().hex[:12]}"
        self.max_attempts = max_attempts
        # SQLite has one writer; more concurrency there only queues on the lock.
        self.concurrency = concurrency or (8 if db.is_postgres else 1)
        self._handlers: dict[str, TimerHandler] = {}
        self._shareable: set[str] = set()
        self._urgent: set[str] = set()
        self._prepare: dict[str, TimerPrepare] = {}
        self.urgent_leases = LeaseKeeper(db, clock, Timer, self.owner, config.urgent_lease, sleep=sleep)

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
        if kind in self._handlers:
            raise ValueError(f"a handler for timer kind {kind!r} is already registered")
        self._handlers[kind] = handler
        if urgent:
            self._urgent.add(kind)
        if shares_transaction:
            self._shareable.add(kind)
            if prepare is not None:
                self._prepare[kind] = prepare

    @property
    def kinds(self) -> list[str]:
        return sorted(self._handlers)

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

            await asyncio.gather(*(run(group) for group in self._groups(claimed)))
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
            if timer.attempts >= self.max_attempts:
                timer.done_at, timer.outcome = now, "failed"
                self.metrics.timers_run.labels(timer.kind, "failed").inc()
            else:
                # Keep the lease as a backoff: the row becomes claimable again when it expires.
                timer.lease_until = now + timedelta(seconds=min(300, 2**timer.attempts))


@dataclass(frozen=True)
class OutboxItem:
    """A plain copy of an outbox row handed to a channel (no session attached)."""

    id: int
    target: str
    kind: str
    ticket_id: int | None
    payload: dict[str, Any]
    attempts: int
    superseded: bool = False
    """A card refresh with a newer refresh of the same card queued behind it: skipped."""
    urgent: bool = False
    """A page (an urgent channel, or ``"urgent": true`` in the payload): never waits for a turn, goes
    first in its lane, and holds a short lease."""


@dataclass
class Delivered:
    """What a channel reports back: the platform message id, and refs to remember for in-place updates."""

    message_id: str | None = None
    refs: list[tuple[int, str, str, str, str]] = field(default_factory=list)
    """(ticket_id, role, platform, channel, message_id) rows for ``message_refs``."""


class Channel(Protocol):
    """Delivers outbox messages for one target prefix (``slack``, ``teams``, ``pagerduty`` …).

    ``pacing_key`` names the conversation a message lands in: its lane, paced and held (429) on its own.
    A channel may set ``min_interval`` (seconds between messages in one pacing lane) to override the
    worker's default, e.g. 0 for pagers, which have no per-conversation limit; and ``urgent = True``
    (pagers) for messages that never wait for a turn and hold a short, renewed lease, as a message
    whose payload says ``"urgent": true`` (a chat page) does.
    """

    async def deliver(self, item: OutboxItem) -> Delivered: ...

    def pacing_key(self, item: OutboxItem) -> str: ...


class GroupCommit(Generic[T]):
    """Writes items in batches: each ``record`` waits for the batch that carries it, and the next batch
    takes everything that arrived while the previous one was being written. One writer at a time,
    so concurrent callers share a transaction instead of each paying for their own."""

    def __init__(self, write: Callable[[list[T]], Awaitable[None]]) -> None:
        self._write = write
        self._waiting: list[tuple[T, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, item: T) -> None:
        """Add ``item`` to the next batch and return once it is written (or raise what writing it raised)."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all())
        await done

    async def _write_all(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self._write([item for item, _ in batch])
            except BaseException as exc:  # each caller decides about retrying its own item
                for _, done in batch:
                    if done.done():
                        continue
                    if isinstance(exc, Exception):
                        done.set_exception(exc)
                    else:  # the writer itself was cancelled (shutdown): nobody may wait for it forever
                        done.cancel()
                if not isinstance(exc, Exception):
                    for _, done in self._waiting:
                        done.cancel()
                    self._waiting = []
                    raise
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)


CARD = "ticket_card"
"""The one outbox kind that renders the ticket as it is at delivery time, so an older pending refresh of
the same card is redundant once a newer one is queued. Every other kind (notices, relayed replies,
pages, surveys) says something of its own and is always delivered."""


def _audience(payload: dict[str, Any]) -> str:
    return str(payload.get("audience") or "triage")


@dataclass
class _Lane:
    """The messages in hand for one pacing key (a Slack channel or DM, a Teams conversation, a pager
    lane), delivered one after another by their own task."""

    queue: deque[OutboxItem] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    urgent: int = 0
    """How many of the queue are urgent: they are the first ones."""


class OutboxWorker:
    """Delivers the outbox: retries with exponential backoff and jitter, honours ``Retry-After``,
    paces each target, dead-letters after ``outbox_max_attempts`` keeping the error.

    Every pacing key is a lane with its own task, and the worker claims more work whenever it is woken
    (``wake``), half a full batch has gone out, or every lane is idle: a conversation that is slow
    (paced, or held by a 429) never holds up another, and a page claimed meanwhile goes straight out.
    """

    def __init__(
        self, db: Database, clock: Clock, config: EngineConfig, metrics: Metrics, *, owner: str | None = None,
        min_interval: float = 1.0, monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, requests: RequestsFirst | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.config = config
        self.metrics = metrics
        self.requests = requests or RequestsFirst(share=1)
        self._slots = asyncio.Semaphore(config.outbox_concurrency)
        self.owner = owner or f"outbox-{uuid.uuid4().hex[:12]}"
        self.min_interval = min_interval
        self._monotonic = monotonic
        self._sleep = sleep
        self._channels: dict[str, Channel] = {}
        self._lanes: dict[str, _Lane] = {}
        self._in_hand: set[int] = set()
        self._last_send: dict[str, float] = {}  # pacing key -> monotonic time of its last send
        self._booked: dict[str, float] = {}  # pacing key -> latest slot given to a message put back for pacing
        self._held_until: dict[str, datetime] = {}  # pacing key -> end of the platform's Retry-After
        self._credentials_down: dict[str, datetime] = {}  # platform -> first refusal of our credentials
        self._credentials_dead_told: set[str] = set()
        self._changed = asyncio.Event()
        self._woken = False
        self._stopping = False
        self._recorder: GroupCommit[tuple[OutboxItem, Delivered]] = GroupCommit(self._succeed_all)
        self.urgent_leases = LeaseKeeper(db, clock, OutboxMessage, self.owner, config.urgent_lease, sleep=sleep)

    def register(self, prefix: str, channel: Channel) -> None:
        self._channels[prefix] = channel

    def stop(self) -> None:
        """Finish the messages in hand, take no new ones (claimed but unsent rows are released)."""
        self._stopping = True
        self._changed.set()

    def wake(self) -> None:
        """New rows may be waiting (a change was committed, a deferred message fell due): a running
        ``tick`` claims again now instead of when its lanes run dry."""
        self._woken = True
        self._changed.set()

    async def tick(self) -> int:
        """Claim and deliver deliverable messages until none are due and none are in hand; returns how
        many were attempted."""
        total = 0
        self._woken = False
        try:
            while not self._stopping:
                # The claim never waits for a turn, so a page in the batch goes straight out; the other
                # deliveries each wait for theirs (RequestsFirst).
                items = await self._claim()
                total += len(items)
                put_back = [booking for item in items if (booking := self._dispatch(item)) is not None]
                if put_back:
                    await self._put_back(put_back)
                if not items and not self._lanes:
                    break
                await self._claimable(full=len(items) >= self.config.batch_size)
        finally:
            # Stopping (or the claim failed): the lanes finish the message in hand and release the rest.
            lanes = [lane.task for lane in self._lanes.values() if lane.task is not None]
            if lanes:
                await asyncio.gather(*lanes, return_exceptions=True)
        return total

    async def _claim(self) -> list[OutboxItem]:
        self._forget_the_past()
        async with self.db.transaction() as session:
            now = self.clock.now()
            ids = await claim_outbox(session, owner=self.owner, now=now, lease=self.config.lease,
                                     limit=self.config.batch_size)
            rows = (await session.execute(
                select(OutboxMessage).where(OutboxMessage.id.in_(ids)).order_by(OutboxMessage.id)
            )).scalars().all() if ids else []
            newest = await self._newest_cards(session, rows)
            items = [
                OutboxItem(row.id, row.target, row.kind, row.ticket_id, dict(row.payload), row.attempts,
                           superseded=row.kind == CARD and newest.get(
                               (row.target, row.ticket_id, _audience(row.payload)), row.id) > row.id,
                           urgent=self._urgent(row.target, row.payload))
                for row in rows
            ]
            urgent = [item.id for item in items if item.urgent]
            # A short lease, renewed while we work: if this process dies, another sends the pages soon.
            await set_leases(session, OutboxMessage, urgent, owner=self.owner, until=now + self.config.urgent_lease)
        self.urgent_leases.keep(urgent)
        return items

    async def _claimable(self, *, full: bool) -> None:
        """Wait until claiming again is worth it: a wake-up (new rows), every lane idle, or (after a full
        batch, when more is probably due) half of what is in hand done."""
        while self._lanes and not self._woken and not self._stopping:
            if full and len(self._in_hand) <= self.config.batch_size // 2:
                break
            self._changed.clear()
            await self._changed.wait()
        self._woken = False

    def _forget_the_past(self) -> None:
        # One entry per conversation ever paced or held: a fan-out to thousands of people leaves
        # thousands, so once there are many, drop the ones that no longer matter.
        if len(self._last_send) + len(self._held_until) + len(self._booked) < 10_000:
            return
        now, mono = self.clock.now(), self._monotonic()
        self._held_until = {key: until for key, until in self._held_until.items() if until > now}
        self._booked = {key: slot for key, slot in self._booked.items() if slot > mono}
        self._last_send = {key: at for key, at in self._last_send.items() if at > mono - 60 or key in self._lanes}

    def _channel_for(self, item: OutboxItem) -> Channel | None:
        return self._channels.get(item.target.split(":", 1)[0])

    def _pacing_key(self, item: OutboxItem) -> str:
        channel = self._channel_for(item)
        return channel.pacing_key(item) if channel else item.target

    def _interval(self, item: OutboxItem) -> float:
        return float(getattr(self._channel_for(item), "min_interval", self.min_interval))

    def _urgent(self, target: str, payload: dict[str, Any]) -> bool:
        channel = self._channels.get(target.split(":", 1)[0])
        return bool(getattr(channel, "urgent", False) or payload.get("urgent"))

    def _dispatch(self, item: OutboxItem) -> tuple[int, datetime] | None:
        """Queue ``item`` on its lane; or, when the lane already has more in hand than it may send within
        half a lease, return (id, when its turn comes) to put it back in the store until then."""
        key = self._pacing_key(item)
        interval = self._interval(item)
        urgent = item.urgent
        lane = self._lanes.get(key)
        backlog = len(lane.queue) * interval if lane is not None else 0.0
        if not urgent and not item.superseded and backlog > self.config.lease.total_seconds() / 2:
            # A paced conversation with a long queue (an intake burst's triage cards): holding it all
            # would outlive the lease, so the rest waits in the store for its turn.
            now = self._monotonic()
            slot = max(self._booked.get(key, now), now + backlog) + interval
            self._booked[key] = slot
            return item.id, self.clock.now() + timedelta(seconds=slot - now)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        if urgent:
            # Pages first: a lane only ever holds one message per ordering key, so nothing overtakes
            # an earlier message of its own thread.
            if lane.urgent == len(lane.queue):
                lane.queue.append(item)
            else:
                lane.queue.insert(lane.urgent, item)
            lane.urgent += 1
        else:
            lane.queue.append(item)
        self._in_hand.add(item.id)
        if lane.task is None:
            lane.task = asyncio.get_running_loop().create_task(self._run_lane(key, lane, interval))
        return None

    async def _run_lane(self, key: str, lane: _Lane, interval: float) -> None:
        # One lane per pacing key (a Slack channel, a Teams conversation): in order, spaced out.
        try:
            while lane.queue:
                if self._stopping:
                    await self._release([queued.id for queued in lane.queue])
                    break
                item = lane.queue.popleft()
                if item.urgent:
                    lane.urgent -= 1
                try:
                    await self._deliver_in_lane(key, lane, item, interval)
                finally:
                    self._done_with(item)
        except Exception:  # the database went away mid-lane: what is left comes back after its lease
            log.exception("outbox lane %s stopped; its %d undelivered message(s) return after their lease",
                          key, len(lane.queue))
        finally:
            for queued in lane.queue:
                self._done_with(queued)
            lane.queue.clear()
            lane.urgent = 0
            if self._lanes.get(key) is lane:
                del self._lanes[key]
            self._changed.set()

    def _done_with(self, item: OutboxItem) -> None:
        self._in_hand.discard(item.id)
        self.urgent_leases.drop([item.id])
        self._changed.set()

    async def _deliver_in_lane(self, key: str, lane: _Lane, item: OutboxItem, interval: float) -> None:
        if item.superseded:  # no call to the platform, so no pacing either
            await self._deliver(item, key)
            return
        held = self._held_until.get(key)
        if held is not None and held > self.clock.now():
            # This conversation said "slow down" (429 + Retry-After) moments ago: don't hammer it. Its
            # queue waits in the store; other conversations carry on.
            rest = list(lane.queue)
            lane.queue.clear()
            lane.urgent = 0
            await self._defer([item.id, *(queued.id for queued in rest)], held)
            for queued in rest:
                self._done_with(queued)
            return
        wait = self._last_send.get(key, -1e9) + interval - self._monotonic()
        if wait > 0 and interval > 0:
            await self._sleep(wait)
        if item.urgent:
            await self._deliver(item, key)
        else:
            async with self.requests.turn(), self._slots:
                await self._deliver(item, key)
        self._last_send[key] = self._monotonic()

    async def _defer(self, ids: list[int], until: datetime) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(ids), OutboxMessage.lease_owner == self.owner,
                       OutboxMessage.delivered_at.is_(None))
                .values(lease_owner=None, lease_until=None, next_attempt_at=until,
                        attempts=OutboxMessage.attempts - 1)
                .execution_options(synchronize_session=False)
            )

    async def _put_back(self, bookings: list[tuple[int, datetime]]) -> None:
        """Return claimed messages to the store, each due at its own time (their turn in a paced lane)."""
        when = dict(bookings)
        async with self.db.transaction() as session:
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(when), OutboxMessage.lease_owner == self.owner,
                       OutboxMessage.delivered_at.is_(None))
                .values(lease_owner=None, lease_until=None, attempts=OutboxMessage.attempts - 1,
                        next_attempt_at=case(when, value=OutboxMessage.id))
                .execution_options(synchronize_session=False)
            )

    async def _release(self, ids: list[int]) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(ids), OutboxMessage.lease_owner == self.owner,
                       OutboxMessage.delivered_at.is_(None))
                .values(lease_owner=None, lease_until=None, attempts=OutboxMessage.attempts - 1)
                .execution_options(synchronize_session=False)
            )

    async def _deliver(self, item: OutboxItem, key: str) -> None:
        prefix = item.target.split(":", 1)[0]
        channel = self._channels.get(prefix)
        if channel is None:
            await self._fail(item, f"no channel configured for target {item.target!r}", permanent=True)
            return
        if item.superseded:
            await self._succeed(item, Delivered(message_id="superseded"))
            return
        try:
            delivered = await channel.deliver(item)
        except CredentialsRefused as exc:
            self.metrics.outbox_errors.labels(prefix, "credentials").inc()
            self._credentials_refused(prefix, str(exc))
            await self._fail(item, str(exc), permanent=False, credentials=True)
        except TransientDeliveryError as exc:
            rate_limited = isinstance(exc, RateLimited)
            self.metrics.outbox_errors.labels(prefix, "rate_limited" if rate_limited else "transient").inc()
            if exc.retry_after is not None:
                self._held_until[key] = self.clock.now() + timedelta(seconds=exc.retry_after)
            await self._fail(item, str(exc), permanent=False, retry_after=exc.retry_after, counted=not rate_limited)
        except PermanentDeliveryError as exc:
            self.metrics.outbox_errors.labels(prefix, "permanent").inc()
            await self._fail(item, str(exc), permanent=True)
        except Exception as exc:  # a bug or an unclassified SDK error: retry, but keep the evidence
            log.exception("outbox %s: unexpected error delivering to %s", item.id, item.target)
            self.metrics.outbox_errors.labels(prefix, "unexpected").inc()
            await self._fail(item, f"{type(exc).__name__}: {exc}", permanent=False)
        else:
            self._credentials_accepted(prefix)
            await self._record(item, delivered)

    def _credentials_refused(self, prefix: str, error: str) -> None:
        if prefix in self._credentials_down:
            return
        self._credentials_down[prefix] = self.clock.now()
        window = self.config.credentials_outage_window
        # Once per platform per outage, not per message: every message to it fails the same way.
        log.error("%s refused the bot's credentials (%s). Nothing is sent there until they are fixed; "
                  "messages are kept and retried for %s each, then dead-lettered (see `ithelp outbox list "
                  "--dead`, and `ithelp outbox retry --all-dead` once fixed).", prefix, error, window)

    def _credentials_accepted(self, prefix: str) -> None:
        since = self._credentials_down.pop(prefix, None)
        self._credentials_dead_told.discard(prefix)
        if since is not None:
            log.warning("%s accepts the bot's credentials again (refused since %s); delivering what waited",
                        prefix, since.isoformat())

    async def _record(self, item: OutboxItem, delivered: Delivered) -> None:
        # The message is out; losing the record now means sending it again after the lease. Keep
        # trying through a database blip for most of the lease, which we still hold.
        deadline = self._monotonic() + self.config.lease.total_seconds() * 0.8
        delay = 0.25
        while True:
            try:
                await self._succeed(item, delivered)
                return
            except (TimeoutError, SQLAlchemyError, OSError) as exc:
                if self._monotonic() + delay > deadline:
                    log.error("outbox %s was delivered but could not be recorded (%s); it may be sent again "
                              "when its lease ends", item.id, exc)
                    return
                log.warning("outbox %s delivered; recording it failed (%s), retrying in %.1fs", item.id, exc, delay)
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)

    @staticmethod
    async def _newest_cards(session: AsyncSession, rows: Sequence[OutboxMessage]
                            ) -> dict[tuple[str, int | None, str], int]:
        # A card refresh renders the ticket as it is now, so an older pending refresh of the same card
        # (target, ticket, audience) is redundant: one query per batch finds, for each claimed card, the
        # newest pending refresh of it.
        cards = [row for row in rows if row.kind == CARD]
        if not cards:
            return {}
        audience = func.coalesce(OutboxMessage.payload["audience"].as_string(), "triage")
        newest = await session.execute(
            select(OutboxMessage.target, OutboxMessage.ticket_id, audience, func.max(OutboxMessage.id)).where(
                OutboxMessage.kind == CARD, OutboxMessage.ticket_id.in_({row.ticket_id for row in cards}),
                OutboxMessage.delivered_at.is_(None), OutboxMessage.dead_at.is_(None),
            ).group_by(OutboxMessage.target, OutboxMessage.ticket_id, audience))
        return {(target, ticket_id, str(shown_to)): newest_id for target, ticket_id, shown_to, newest_id in newest}

    async def _succeed(self, item: OutboxItem, delivered: Delivered) -> None:
        await self._recorder.record((item, delivered))

    async def _succeed_all(self, done: Sequence[tuple[OutboxItem, Delivered]]) -> None:
        # One transaction for every delivery that finished while the previous one committed (group
        # commit): in a page storm or a fan-out that is most of the outbox's database work.
        async with self.db.transaction() as session:
            now = self.clock.now()
            message_ids = {item.id: delivered.message_id for item, delivered in done}
            recorded = set((await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(message_ids), OutboxMessage.delivered_at.is_(None))
                .values(delivered_at=now, delivered_message_id=case(message_ids, value=OutboxMessage.id),
                        lease_owner=None, lease_until=None, last_error=None)
                .returning(OutboxMessage.id)
                .execution_options(synchronize_session=False)
            )).scalars())
            for item, delivered in done:
                if item.id in recorded:
                    await self._save_refs(session, delivered, now)
        for item, _ in done:
            if item.id in recorded:
                self.metrics.outbox_delivered.labels(item.target.split(":", 1)[0]).inc()

    @staticmethod
    async def _save_refs(session: AsyncSession, delivered: Delivered, now: datetime) -> None:
        for ticket_id, role, platform, channel, message_id in delivered.refs:
            existing = (await session.execute(select(MessageRef).where(
                MessageRef.ticket_id == ticket_id, MessageRef.role == role, MessageRef.platform == platform,
                MessageRef.channel == channel))).scalar_one_or_none()
            if existing is None:
                session.add(MessageRef(ticket_id=ticket_id, role=role, platform=platform, channel=channel,
                                       message_id=message_id, created_at=now))
            else:
                # A newer message may have taken over the role (a repeat page, a card re-posted after deletion).
                existing.message_id = message_id

    async def _fail(self, item: OutboxItem, error: str, *, permanent: bool, retry_after: float | None = None,
                    counted: bool = True, credentials: bool = False) -> None:
        """Record a failed attempt: dead-letter it, or schedule the next one.

        ``counted=False`` (the platform asked us to wait) and ``credentials`` (the platform refused our
        token) do not use up one of the message's ``outbox_max_attempts``; a credentials failure is
        retried until ``credentials_outage_window`` has passed since the message's first one.
        """
        prefix = item.target.split(":", 1)[0]
        async with self.db.transaction() as session:
            row = await session.get(OutboxMessage, item.id, with_for_update=True)
            if row is None or row.delivered_at is not None:
                return
            now = self.clock.now()
            row.last_error = error[:4000]
            row.lease_owner = None
            row.lease_until = None
            if credentials:
                row.attempts -= 1
                since = row.first_failed_at = row.first_failed_at or now
                window = self.config.credentials_outage_window
                if now - since < window:
                    # Back off about as long as it has been failing (1 s, 2 s, 4 s … capped), and try once
                    # more right at the end of the window.
                    delay = min(self.config.outbox_backoff_max.total_seconds(),
                                max(self.config.outbox_backoff_base.total_seconds(), (now - since).total_seconds()))
                    row.next_attempt_at = min(now + timedelta(seconds=random.uniform(delay / 2, delay)),
                                              since + window)
                    log.info("outbox %s to %s waits for %s's credentials (failing since %s), next try at %s",
                             row.id, row.target, prefix, since.isoformat(), row.next_attempt_at.isoformat())
                    return
                row.dead_at = now
                row.last_error = f"{error} — for {window} since {since.isoformat()}"[:4000]
                self.metrics.outbox_dead.labels(prefix).inc()
                if prefix not in self._credentials_dead_told:
                    self._credentials_dead_told.add(prefix)
                    log.error("%s still refuses the bot's credentials after %s: dead-lettering the messages "
                              "waiting for it (`ithelp outbox retry --all-dead` sends them once it is fixed)",
                              prefix, window)
                log.warning("outbox %s to %s dead-lettered: %s", row.id, row.target, row.last_error)
                return
            row.first_failed_at = None
            if not counted:
                row.attempts -= 1
            if permanent or row.attempts >= self.config.outbox_max_attempts:
                row.dead_at = now
                self.metrics.outbox_dead.labels(prefix).inc()
                log.error("outbox %s to %s dead-lettered after %s attempt(s): %s", row.id, row.target,
                          row.attempts, error)
                return
            row.next_attempt_at = now + self.backoff(row.attempts, retry_after)
            log.warning("outbox %s to %s failed (%s), retrying at %s: %s", row.id, row.target,
                        f"attempt {row.attempts}" if counted else "told to wait; not counted as an attempt",
                        row.next_attempt_at.isoformat(), error)

    def backoff(self, attempts: int, retry_after: float | None) -> timedelta:
        """Exponential backoff with full jitter; when the target said when to come back (``Retry-After``),
        that time plus a little jitter, so queued messages don't all return in the same instant."""
        if retry_after is not None:
            return timedelta(seconds=retry_after + random.uniform(0, min(1.0, retry_after / 4)))
        base = self.config.outbox_backoff_base.total_seconds()
        cap = self.config.outbox_backoff_max.total_seconds()
        exponential = min(cap, base * 2 ** max(0, attempts - 1))
        return timedelta(seconds=exponential / 2 + random.uniform(0, exponential / 2))
