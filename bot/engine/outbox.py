"""The outbox: every message the bot owes, delivered in order per conversation, paced, retried."""


import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.config import EngineConfig
from bot.engine.leases import LeaseKeeper
from bot.engine.outbox_ledger import OutboxLedger
from bot.engine.outbox_types import (
    Channel,
    CredentialsRefused,
    Delivered,
    OutboxItem,
    PermanentDeliveryError,
    RateLimited,
    TransientDeliveryError,
)
from bot.engine.pacing import Pacing
from bot.engine.requests_first import RequestsFirst
from bot.metrics import Metrics
from store.db import Database
from store.models import OutboxMessage
from store.queries import claim_outbox, set_leases

log = logging.getLogger("ithelp.engine")


CARD = "ticket_card"
"""The one outbox kind that renders the ticket as it is at delivery time, so an older pending refresh of
the same card is redundant once a newer one is queued. Every other kind (notices, relayed replies,
pages, surveys) says something of its own and is always delivered."""


def _platform(item: OutboxItem) -> str:
    return item.target.split(":", 1)[0]


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
        self._sleep = sleep
        self._channels: dict[str, Channel] = {}
        self._lanes: dict[str, _Lane] = {}
        self._in_hand: set[int] = set()
        self.pacing = Pacing(clock, monotonic)
        self._changed = asyncio.Event()
        self._woken = False
        self._stopping = False
        self.ledger = OutboxLedger(db, clock, config, metrics, self.owner, monotonic=monotonic, sleep=sleep)
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
                    await self.ledger.put_back(put_back)
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
        self.pacing.forget_the_past(self._lanes)
        async with self.db.transaction() as session:
            now = self.clock.now()
            ids = await claim_outbox(session, owner=self.owner, now=now, lease=self.config.lease,
                                     limit=self.config.batch_size)
            rows = (await session.execute(
                select(OutboxMessage).where(OutboxMessage.id.in_(ids)).order_by(OutboxMessage.id)
            )).scalars().all() if ids else []
            newest = await newest_cards(session, rows)
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

    def _channel_for(self, item: OutboxItem) -> Channel | None:
        return self._channels.get(_platform(item))

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
            return item.id, self.pacing.book(key, backlog, interval)
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
                    await self.ledger.release([queued.id for queued in lane.queue])
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
        platform = _platform(item)
        if await self._held(key, lane, item):
            return
        wait = self.pacing.wait_before_sending(key, interval)
        if wait > 0:
            await self._sleep(wait)
        if item.urgent:
            await self._deliver(item, key)
        else:
            # The platform's turn first: a careful platform's lanes wait for it holding no slot another needs.
            async with self.pacing.turn(platform), self.requests.turn(), self._slots:
                if await self._held(key, lane, item):  # a hold began while this waited for its turn
                    return
                await self._deliver(item, key)
        self.pacing.sent(key)

    async def _held(self, key: str, lane: _Lane, item: OutboxItem) -> bool:
        """If this conversation (or its whole platform) said "slow down" (429 + Retry-After) moments ago, put
        ``item`` and the rest of its lane back in the store until then (other conversations carry on)."""
        held = self.pacing.held_until(key, _platform(item), urgent=item.urgent)
        if held is None:
            return False
        rest = list(lane.queue)
        lane.queue.clear()
        lane.urgent = 0
        await self.ledger.defer([item.id, *(queued.id for queued in rest)], held)
        for queued in rest:
            self._done_with(queued)
        return True

    async def _deliver(self, item: OutboxItem, key: str) -> None:
        prefix = _platform(item)
        channel = self._channels.get(prefix)
        if channel is None:
            await self.ledger.fail(item, f"no channel configured for target {item.target!r}", permanent=True)
            return
        if item.superseded:
            await self.ledger.succeed(item, Delivered(message_id="superseded"))
            return
        try:
            delivered = await channel.deliver(item)
        except CredentialsRefused as exc:
            self.metrics.outbox_errors.labels(prefix, "credentials").inc()
            self.ledger.credentials_refused(prefix, str(exc))
            await self.ledger.fail(item, str(exc), permanent=False, credentials=True)
        except TransientDeliveryError as exc:
            rate_limited = isinstance(exc, RateLimited)
            self.metrics.outbox_errors.labels(prefix, "rate_limited" if rate_limited else "transient").inc()
            if exc.retry_after is not None:
                self.pacing.hold(key, prefix, exc.retry_after)
            await self.ledger.fail(item, str(exc), permanent=False, retry_after=exc.retry_after,
                                   counted=not rate_limited)
        except PermanentDeliveryError as exc:
            self.metrics.outbox_errors.labels(prefix, "permanent").inc()
            await self.ledger.fail(item, str(exc), permanent=True)
        except Exception as exc:  # a bug or an unclassified SDK error: retry, but keep the evidence
            log.exception("outbox %s: unexpected error delivering to %s", item.id, item.target)
            self.metrics.outbox_errors.labels(prefix, "unexpected").inc()
            await self.ledger.fail(item, f"{type(exc).__name__}: {exc}", permanent=False)
        else:
            self.ledger.credentials_accepted(prefix)
            await self.ledger.record(item, delivered)


async def newest_cards(session: AsyncSession, rows: Sequence[OutboxMessage]
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
