"""Group commit for new tickets: requests that arrive together share one transaction.

During an outage dozens of people type ``/ithelp`` in the same second. Each still needs its own
durable row before it is acknowledged, but not its own transaction: while one batch commits, the
next requests queue up and go in the following batch, two multi-row statements and one commit for
all of them (one WAL flush instead of dozens on PostgreSQL).

On PostgreSQL a batch is one statement in all: the dedup marks and the ticket rows go in as arrays
(``unnest``) through data-modifying CTEs, so its text is the same whatever the batch size (prepared
once) and it commits on its own, with no BEGIN/COMMIT round trips. SQLite, which has neither arrays
nor DML in CTEs, takes a short transaction with multi-row inserts.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

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
        self._statements: dict[tuple[str, ...], _PostgresBatchInsert] = {}
        # PostgreSQL: one connection kept while batches keep coming, given back when the queue is empty.
        self._connection: AsyncConnection | None = None
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
        try:
            await self._write_batches()
        finally:
            await self._release_connection()

    async def _release_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close()
            except Exception as exc:  # already broken (the database went away): nothing left to give back
                log.debug("closing the intake connection failed: %s", exc)

    async def _write_batches(self) -> None:
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
        # A retry racing its original in the same batch: only the first with a key may write.
        first_with_key: dict[tuple[str, str], _Request] = {}
        for request in batch:
            if request.dedup is not None:
                first_with_key.setdefault((request.dedup["source"], request.dedup["key"]), request)
        if self.db.is_postgres:
            return await self._write_postgres(batch, first_with_key)
        async with self.db.writing() as conn:
            fresh: set[tuple[str, str]] = set()
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

    async def _write_postgres(self, batch: list[_Request],
                              first_with_key: dict[tuple[str, str], _Request]) -> list[int | None]:
        candidates = [r for r in batch if r.dedup is None
                      or first_with_key[(r.dedup["source"], r.dedup["key"])] is r]
        columns = tuple(candidates[0].ticket)
        if any(tuple(r.ticket) != columns for r in candidates):
            raise ValueError("every ticket row in an intake batch must have the same columns")
        if self._connection is None:
            self._connection = await self.db.autocommit_connection()
        statement = self._statements.get(columns)
        if statement is None:
            statement = self._statements[columns] = _PostgresBatchInsert(columns, self._connection.dialect)
        try:
            result = await self._connection.exec_driver_sql(statement.sql, statement.parameters(candidates))
        except DBAPIError as exc:
            if exc.connection_invalidated:
                await self._release_connection()  # the next batch starts on a fresh one
            raise
        ids = dict(cast("list[tuple[int, int]]", result.all()))  # (ordinal, ticket id)
        by_request = {id(request): ids.get(ordinal) for ordinal, request in enumerate(candidates, start=1)}
        return [by_request.get(id(request)) for request in batch]


class _PostgresBatchInsert:
    """``INSERT … SELECT FROM unnest(arrays)`` for one set of ticket columns, with its dedup marks.

    Rows whose mark was already there (a repeat) are filtered out before they take an id; the result
    is (ordinal, id) for every ticket written, ordinals counting the batch's rows from 1.
    """

    def __init__(self, columns: tuple[str, ...], dialect: Dialect) -> None:
        table_columns = [_TICKETS.c[name] for name in columns]
        self.columns = columns
        self._bind = [column.type.bind_processor(dialect) for column in table_columns]
        dedup = cast(Table, InboundDedup.__table__)
        self._bind_expiry = dedup.c.expires_at.type.bind_processor(dialect)
        mark_types = [dedup.c[name].type.compile(dialect) for name in ("source", "key", "expires_at")]
        types = [column.type.compile(dialect) for column in table_columns]
        # $1-$3: marks (source, key, expires_at); $4-$5: each row's mark (NULL = no dedup); then one array per column.
        arrays = ", ".join(f"${i + 6}::{kind}[]" for i, kind in enumerate(types))
        names = ", ".join(f'"{name}"' for name in columns)
        self.sql = f"""
WITH marked AS (
    INSERT INTO inbound_dedup (source, key, expires_at)
    SELECT * FROM unnest($1::{mark_types[0]}[], $2::{mark_types[1]}[], $3::{mark_types[2]}[])
    ON CONFLICT DO NOTHING
    RETURNING source, key
), fresh AS (
    SELECT nextval(pg_get_serial_sequence('tickets', 'id')) AS id, r.*
    FROM unnest($4::{mark_types[0]}[], $5::{mark_types[1]}[], {arrays})
        WITH ORDINALITY AS r(mark_source, mark_key, {names}, ordinal)
    WHERE r.mark_source IS NULL
       OR EXISTS (SELECT 1 FROM marked m WHERE m.source = r.mark_source AND m.key = r.mark_key)
), written AS (
    INSERT INTO tickets (id, {names}) SELECT id, {names} FROM fresh
)
SELECT ordinal, id FROM fresh"""

    def parameters(self, batch: list[_Request]) -> tuple[Any, ...]:
        marks = [r.dedup for r in batch if r.dedup is not None]
        expires = [m["expires_at"] for m in marks]
        if self._bind_expiry is not None:
            expires = [self._bind_expiry(t) for t in expires]
        values: list[Any] = [[m["source"] for m in marks], [m["key"] for m in marks], expires,
                             [r.dedup["source"] if r.dedup else None for r in batch],
                             [r.dedup["key"] if r.dedup else None for r in batch]]
        for name, bind in zip(self.columns, self._bind, strict=True):
            column = [r.ticket[name] for r in batch]
            values.append([bind(v) for v in column] if bind is not None else column)
        return tuple(values)


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
