"""The engine: timer rows run by registered handlers, and the outbox delivered with retries.

Both are driven by a short APScheduler interval tick (see ``bot.scheduler``); both claim their rows
with a lease in one statement (``store.queries``), so any number of replicas can run them at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.channels import PermanentDeliveryError, TransientDeliveryError
from bot.clock import Clock
from bot.config import EngineConfig
from bot.metrics import Metrics
from store.db import Database
from store.models import MessageRef, OutboxMessage, Timer
from store.queries import ClaimedTimer, claim_due_timers, claim_outbox

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
        self._prepare: dict[str, TimerPrepare] = {}

    def register(self, kind: str, handler: TimerHandler, *, shares_transaction: bool = False,
                 prepare: TimerPrepare | None = None) -> None:
        """Run due timers of ``kind`` with ``handler``.

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
            async with semaphore:
                if len(group) == 1:
                    await self._run_one(group[0])
                else:
                    await self._run_group(group)

        while True:
            async with self.db.transaction() as session:
                claimed = await claim_due_timers(session, owner=self.owner, now=self.clock.now(),
                                                 lease=self.config.lease, limit=self.config.batch_size)
            if not claimed:
                return total

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


@dataclass
class Delivered:
    """What a channel reports back: the platform message id, and refs to remember for in-place updates."""

    message_id: str | None = None
    refs: list[tuple[int, str, str, str, str]] = field(default_factory=list)
    """(ticket_id, role, platform, channel, message_id) rows for ``message_refs``."""


class Channel(Protocol):
    """Delivers outbox messages for one target prefix (``slack``, ``teams``, ``pagerduty`` …).

    A channel may set ``min_interval`` (seconds between messages in one pacing lane) to override the
    worker's default, e.g. 0 for pagers, which have no per-conversation limit.
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


class OutboxWorker:
    """Delivers the outbox: retries with exponential backoff and jitter, honours ``Retry-After``,
    paces each target, dead-letters after ``outbox_max_attempts`` keeping the error."""

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
        self._last_send: dict[str, float] = {}
        self._held_until: dict[str, datetime] = {}
        self._stopping = False
        self._recorder: GroupCommit[tuple[OutboxItem, Delivered]] = GroupCommit(self._succeed_all)

    def register(self, prefix: str, channel: Channel) -> None:
        self._channels[prefix] = channel

    def stop(self) -> None:
        """Finish the messages in hand, take no new ones (claimed but unsent rows are released)."""
        self._stopping = True

    async def tick(self) -> int:
        """Claim and deliver deliverable messages until none are due; returns how many were attempted."""
        total = 0
        while not self._stopping:
            # The claim never waits for a turn, so a page in the batch goes straight out; the other
            # deliveries each wait for theirs (RequestsFirst).
            async with self.db.transaction() as session:
                ids = await claim_outbox(session, owner=self.owner, now=self.clock.now(),
                                         lease=self.config.lease, limit=self.config.batch_size)
                rows = (await session.execute(
                    select(OutboxMessage).where(OutboxMessage.id.in_(ids)).order_by(OutboxMessage.id)
                )).scalars().all() if ids else []
                newest = await self._newest_cards(session, rows)
                # Only a card refresh may give way to a newer refresh of the same card; every other message
                # is owed to someone and goes out.
                items = [
                    OutboxItem(row.id, row.target, row.kind, row.ticket_id, dict(row.payload), row.attempts,
                               superseded=row.kind == "ticket_card"
                               and newest.get((row.target, row.ticket_id), row.id) > row.id)
                    for row in rows
                ]
            if not items:
                break
            lanes: dict[str, list[OutboxItem]] = defaultdict(list)
            for item in items:
                lanes[self._pacing_key(item)].append(item)
            await asyncio.gather(*(self._deliver_lane(key, lane) for key, lane in lanes.items()))
            total += len(items)
        return total

    def _channel_for(self, item: OutboxItem) -> Channel | None:
        return self._channels.get(item.target.split(":", 1)[0])

    def _pacing_key(self, item: OutboxItem) -> str:
        channel = self._channel_for(item)
        return channel.pacing_key(item) if channel else item.target

    async def _deliver_lane(self, key: str, lane: list[OutboxItem]) -> None:
        # One lane per pacing key (a Slack channel, a Teams conversation): in order, spaced out.
        channel = self._channel_for(lane[0])
        interval = float(getattr(channel, "min_interval", self.min_interval))
        for index, item in enumerate(lane):
            if self._stopping:
                await self._release([i.id for i in lane[index:]])
                return
            held = self._held_until.get(item.target.split(":", 1)[0])
            if held is not None and held > self.clock.now():
                # The platform said "slow down" (429 + Retry-After) moments ago: don't hammer it.
                await self._defer([i.id for i in lane[index:]], held)
                return
            wait = self._last_send.get(key, -1e9) + interval - self._monotonic()
            if wait > 0 and interval > 0:
                await self._sleep(wait)
            if getattr(channel, "urgent", False) or item.payload.get("urgent"):
                await self._deliver(item)
            else:
                async with self.requests.turn(), self._slots:
                    await self._deliver(item)
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

    async def _release(self, ids: list[int]) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(ids), OutboxMessage.lease_owner == self.owner,
                       OutboxMessage.delivered_at.is_(None))
                .values(lease_owner=None, lease_until=None, attempts=OutboxMessage.attempts - 1)
                .execution_options(synchronize_session=False)
            )

    async def _deliver(self, item: OutboxItem) -> None:
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
        except TransientDeliveryError as exc:
            self.metrics.outbox_errors.labels(prefix, "transient").inc()
            if exc.retry_after is not None:
                self._held_until[prefix] = self.clock.now() + timedelta(seconds=exc.retry_after)
            await self._fail(item, str(exc), permanent=False, retry_after=exc.retry_after)
        except PermanentDeliveryError as exc:
            self.metrics.outbox_errors.labels(prefix, "permanent").inc()
            await self._fail(item, str(exc), permanent=True)
        except Exception as exc:  # a bug or an unclassified SDK error: retry, but keep the evidence
            log.exception("outbox %s: unexpected error delivering to %s", item.id, item.target)
            self.metrics.outbox_errors.labels(prefix, "unexpected").inc()
            await self._fail(item, f"{type(exc).__name__}: {exc}", permanent=False)
        else:
            await self._record(item, delivered)

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
    async def _newest_cards(session: AsyncSession, rows: Sequence[OutboxMessage]) -> dict[tuple[str, int | None], int]:
        # A card refresh renders the ticket as it is now, so an older pending refresh is redundant:
        # one query per batch finds, for each claimed card, the newest pending refresh of it.
        cards = [row for row in rows if row.kind == "ticket_card"]
        if not cards:
            return {}
        newest = await session.execute(
            select(OutboxMessage.target, OutboxMessage.ticket_id, func.max(OutboxMessage.id)).where(
                OutboxMessage.kind == "ticket_card", OutboxMessage.ticket_id.in_({row.ticket_id for row in cards}),
                OutboxMessage.delivered_at.is_(None), OutboxMessage.dead_at.is_(None),
            ).group_by(OutboxMessage.target, OutboxMessage.ticket_id))
        return {(target, ticket_id): newest_id for target, ticket_id, newest_id in newest}

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

    async def _fail(self, item: OutboxItem, error: str, *, permanent: bool, retry_after: float | None = None) -> None:
        prefix = item.target.split(":", 1)[0]
        async with self.db.transaction() as session:
            row = await session.get(OutboxMessage, item.id, with_for_update=True)
            if row is None or row.delivered_at is not None:
                return
            now = self.clock.now()
            row.last_error = error[:4000]
            row.lease_owner = None
            row.lease_until = None
            if permanent or row.attempts >= self.config.outbox_max_attempts:
                row.dead_at = now
                self.metrics.outbox_dead.labels(prefix).inc()
                log.error("outbox %s to %s dead-lettered after %s attempt(s): %s", row.id, row.target,
                          row.attempts, error)
                return
            row.next_attempt_at = now + self.backoff(row.attempts, retry_after)
            log.warning("outbox %s to %s failed (attempt %s), retrying at %s: %s", row.id, row.target,
                        row.attempts, row.next_attempt_at.isoformat(), error)

    def backoff(self, attempts: int, retry_after: float | None) -> timedelta:
        """Exponential backoff with full jitter; when the target said when to come back (``Retry-After``),
        that time plus a little jitter, so queued messages don't all return in the same instant."""
        if retry_after is not None:
            return timedelta(seconds=retry_after + random.uniform(0, min(1.0, retry_after / 4)))
        base = self.config.outbox_backoff_base.total_seconds()
        cap = self.config.outbox_backoff_max.total_seconds()
        exponential = min(cap, base * 2 ** max(0, attempts - 1))
        return timedelta(seconds=exponential / 2 + random.uniform(0, exponential / 2))
