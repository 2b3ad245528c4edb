"""Short leases renewed while work is in hand, so a replica's crash delays urgent work by seconds."""


import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta

from bot.clock import Clock
from store.db import Database
from store.queries import Leased, extend_leases

log = logging.getLogger("ithelp.engine")


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
