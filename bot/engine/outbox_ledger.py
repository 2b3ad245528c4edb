"""What became of each outbox message, written to the store: delivered (group commit), failed and when to
try again, dead-lettered, or handed back unsent. Also tracks platforms that refuse the bot's credentials."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import case, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.config import EngineConfig
from bot.engine.group_commit import GroupCommit
from bot.engine.outbox_types import Delivered, OutboxItem
from bot.metrics import Metrics
from store.db import Database
from store.models import MessageRef, OutboxMessage

log = logging.getLogger("ithelp.engine")


class OutboxLedger:
    """Records outcomes for one outbox worker (``owner``): only rows it holds the lease on are touched."""

    def __init__(self, db: Database, clock: Clock, config: EngineConfig, metrics: Metrics, owner: str, *,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.db = db
        self.clock = clock
        self.config = config
        self.metrics = metrics
        self.owner = owner
        self._monotonic = monotonic
        self._sleep = sleep
        self._credentials_down: dict[str, datetime] = {}  # platform -> first refusal of our credentials
        self._credentials_dead_told: set[str] = set()
        self._recorder: GroupCommit[tuple[OutboxItem, Delivered]] = GroupCommit(self._succeed_all)

    async def defer(self, ids: list[int], until: datetime) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(ids), OutboxMessage.lease_owner == self.owner,
                       OutboxMessage.delivered_at.is_(None))
                .values(lease_owner=None, lease_until=None, next_attempt_at=until,
                        attempts=OutboxMessage.attempts - 1)
                .execution_options(synchronize_session=False)
            )

    async def put_back(self, bookings: list[tuple[int, datetime]]) -> None:
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

    async def release(self, ids: list[int]) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(ids), OutboxMessage.lease_owner == self.owner,
                       OutboxMessage.delivered_at.is_(None))
                .values(lease_owner=None, lease_until=None, attempts=OutboxMessage.attempts - 1)
                .execution_options(synchronize_session=False)
            )

    def credentials_refused(self, prefix: str, error: str) -> None:
        if prefix in self._credentials_down:
            return
        self._credentials_down[prefix] = self.clock.now()
        window = self.config.credentials_outage_window
        # Once per platform per outage, not per message: every message to it fails the same way.
        log.error("%s refused the bot's credentials (%s). Nothing is sent there until they are fixed; "
                  "messages are kept and retried for %s each, then dead-lettered (see `ithelp outbox list "
                  "--dead`, and `ithelp outbox retry --all-dead` once fixed).", prefix, error, window)

    def credentials_accepted(self, prefix: str) -> None:
        since = self._credentials_down.pop(prefix, None)
        self._credentials_dead_told.discard(prefix)
        if since is not None:
            log.warning("%s accepts the bot's credentials again (refused since %s); delivering what waited",
                        prefix, since.isoformat())

    async def record(self, item: OutboxItem, delivered: Delivered) -> None:
        # The message is out; losing the record now means sending it again after the lease. Keep
        # trying through a database blip for most of the lease, which we still hold.
        deadline = self._monotonic() + self.config.lease.total_seconds() * 0.8
        delay = 0.25
        while True:
            try:
                await self.succeed(item, delivered)
                return
            except (TimeoutError, SQLAlchemyError, OSError) as exc:
                if self._monotonic() + delay > deadline:
                    log.error("outbox %s was delivered but could not be recorded (%s); it may be sent again "
                              "when its lease ends", item.id, exc)
                    return
                log.warning("outbox %s delivered; recording it failed (%s), retrying in %.1fs", item.id, exc, delay)
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)

    async def succeed(self, item: OutboxItem, delivered: Delivered) -> None:
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

    async def fail(self, item: OutboxItem, error: str, *, permanent: bool, retry_after: float | None = None,
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
