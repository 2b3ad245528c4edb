"""The outbox: every message the bot owes, delivered in order per conversation, paced, retried."""


import asyncio
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import case, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.channels import CredentialsRefused, PermanentDeliveryError, RateLimited, TransientDeliveryError
from bot.clock import Clock
from bot.config import EngineConfig
from bot.engine.group_commit import GroupCommit
from bot.engine.leases import LeaseKeeper
from bot.engine.requests_first import RequestsFirst
from bot.metrics import Metrics
from store.db import Database
from store.models import MessageRef, OutboxMessage
from store.queries import claim_outbox, set_leases

log = logging.getLogger("ithelp.engine")


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
