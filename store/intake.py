"""Group commit for new tickets: requests that arrive together share one transaction.

During an outage dozens of people type ``/ithelp`` in the same second. Each still needs its own
durable row before it is acknowledged, but not its own transaction: while one batch commits, the
next requests queue up and go in the following batch, two multi-row statements and one commit for
all of them (one WAL flush instead of dozens on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.exc import IntegrityError

from store.db import Database
from store.models import InboundDedup, Ticket
from store.queries import mark_seen_statement

log = logging.getLogger("ithelp.store")
_TICKETS = cast(Table, Ticket.__table__)
_INSERT_TICKETS = insert(_TICKETS).returning(_TICKETS.c.id, sort_by_parameter_order=True)


@dataclass
class _Request:
    ticket: dict[str, Any]
    dedup: dict[str, Any] | None
    done: asyncio.Future[int | None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class IntakeWriter:
    """Writes new ticket rows (with their inbound-dedup marks) in shared transactions."""

    def __init__(self, db: Database, *, max_batch: int = 100) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: list[_Request] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, ticket: dict[str, Any], dedup: dict[str, Any] | None) -> int | None:
        """Insert one ticket row; returns its id, or None when ``dedup`` (source, key, expires_at) was
        already seen, i.e. this request is a repeat and wrote nothing. Raises what the database raised."""
        request = _Request(ticket, dedup)
        self._queue.append(request)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_queued())
        # Shielded: a caller that goes away must not cancel the batch its neighbours are waiting on.
        return await asyncio.shield(request.done)

    async def _write_queued(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
            try:
                results = await self._write(batch)
            except IntegrityError as exc:
                if len(batch) == 1:
                    _raise_into(batch[0], exc)
                    continue
                # One bad row must not cost its neighbours their tickets: write them one by one.
                for request in batch:
                    try:
                        _settle(request, (await self._write([request]))[0])
                    except Exception as exc:
                        _raise_into(request, exc)
                continue
            except BaseException as exc:  # database down, or shutting down: everyone waiting hears about it
                for request in batch:
                    _raise_into(request, exc)
                if not isinstance(exc, Exception):
                    for request in self._queue:
                        _raise_into(request, exc)
                    self._queue = []
                    raise
                continue
            for request, result in zip(batch, results, strict=True):
                _settle(request, result)

    async def _write(self, batch: list[_Request]) -> list[int | None]:
        async with self.db.writing() as conn:
            fresh: set[tuple[str, str]] = set()
            first_with_key: dict[tuple[str, str], _Request] = {}
            for request in batch:
                if request.dedup is not None:
                    first_with_key.setdefault((request.dedup["source"], request.dedup["key"]), request)
            if first_with_key:
                statement = mark_seen_statement(conn.dialect.name).returning(InboundDedup.source, InboundDedup.key)
                rows = await conn.execute(statement, [r.dedup for r in first_with_key.values() if r.dedup])
                fresh = {(source, key) for source, key in rows}
            writing = [r for r in batch if r.dedup is None or (
                (key := (r.dedup["source"], r.dedup["key"])) in fresh and first_with_key[key] is r)]
            ids: list[int] = []
            if writing:
                ids = list((await conn.execute(_INSERT_TICKETS, [r.ticket for r in writing])).scalars())
        by_request = dict(zip(map(id, writing), ids, strict=True))
        return [by_request.get(id(request)) for request in batch]


def _settle(request: _Request, result: int | None) -> None:
    if not request.done.done():
        request.done.set_result(result)


def _raise_into(request: _Request, exc: BaseException) -> None:
    if request.done.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        request.done.cancel()
    else:
        request.done.set_exception(exc)
