"""Group commit for first-time requesters' ``people`` rows, ahead of their tickets."""

from __future__ import annotations

import asyncio
from contextvars import Context
from dataclasses import dataclass, field
from typing import Any

from store.batching import fail_waiting, take_batch, time_left, until_answered
from store.db import REQUEST_DEADLINE, Database, RequestDeadline
from store.models import Person
from store.queries import _insert_ignoring


@dataclass
class _NewPerson:
    row: dict[str, Any]
    done: asyncio.Future[int | None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    deadline: RequestDeadline | None = field(default_factory=REQUEST_DEADLINE.get)


class PeopleWriter:
    """Writes first-time requesters' ``people`` rows in shared transactions, like :class:`IntakeWriter`.

    An outage brings many people who never asked before at once. Each in a transaction of its own, they
    queue one by one for SQLite's single writer (and ahead of the intake batches), so everyone waits for
    everyone; together they are one ``INSERT … ON CONFLICT DO NOTHING RETURNING`` per batch.
    """

    def __init__(self, db: Database, *, max_batch: int = 100) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: list[_NewPerson] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, row: dict[str, Any]) -> int | None:
        """Insert a ``people`` row; its id, or None when the person was stored already (read them instead)."""
        request = _NewPerson(row)
        self._queue.append(request)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_queued(), context=Context())
        return await request.done

    async def _write_queued(self) -> None:
        try:
            while self._queue:
                batch, self._queue = take_batch(self._queue, self.max_batch)
                if batch:
                    await self._write_and_settle(batch)
                elif self._queue:
                    await until_answered(self._queue)
        finally:
            self._writer = None

    async def _write_and_settle(self, batch: list[_NewPerson]) -> None:
        try:
            async with asyncio.timeout(time_left(batch)), self.db.writing() as conn:
                statement = _insert_ignoring(conn.dialect.name, Person, ("platform", "platform_user_id"))
                written = await conn.execute(statement.returning(Person.id, Person.platform, Person.platform_user_id),
                                             [r.row for r in batch])
                ids = {(platform, user): person_id for person_id, platform, user in written}
        except BaseException as exc:  # database down, or shutting down: everyone waiting hears about it
            if fail_waiting(batch, self._queue, exc):
                raise
            return
        for request in batch:
            if not request.done.done():
                request.done.set_result(ids.get((request.row["platform"], request.row["platform_user_id"])))


__all__ = ["PeopleWriter"]
