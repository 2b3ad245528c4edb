"""Group commit for new tickets: requests that arrive together share one transaction.

During an outage dozens of people type ``/ithelp`` in the same second. Each still needs its own
durable row before it is acknowledged, but not its own transaction: while one batch commits, the
next requests queue up and go in the following batch (one WAL flush for all of them instead of one each).

On PostgreSQL a batch is one statement: the dedup marks and the ticket rows go in as JSON
(``json_to_recordset``) through data-modifying CTEs, so its text is the same whatever the batch size
(prepared once) and it commits by itself, with no BEGIN/COMMIT round trips. SQLite, which has no
DML in CTEs and one writer, takes a short transaction with multi-row inserts. On both, one batch is
in flight at a time. First-time requesters' ``people`` rows are group-committed the same way
(:class:`PeopleWriter`), ahead of their tickets.

A request served under a deadline (``store.db.REQUEST_DEADLINE``) is answered "nothing was saved" once it
passes, so its row must not be written after that: a batch gives up just before the first deadline in
it, and a request whose caller has already answered, or that is too close to its deadline, is left out.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextvars import Context
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError

from store.batching import fail_waiting, raise_into, take_batch, time_left, until_answered
from store.db import REQUEST_DEADLINE, Database, RequestDeadline
from store.held_connection import HeldConnection
from store.models import InboundDedup, Ticket
from store.people_writer import PeopleWriter
from store.queries import mark_seen_statement

log = logging.getLogger("ithelp.store")
_TICKETS = cast(Table, Ticket.__table__)
_INSERT_TICKETS = insert(_TICKETS).returning(_TICKETS.c.id, sort_by_parameter_order=True)


@dataclass
class _Request:
    ticket: dict[str, Any]
    dedup: dict[str, Any] | None
    done: asyncio.Future[int | None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    deadline: RequestDeadline | None = field(default_factory=REQUEST_DEADLINE.get)
    """When the request that wants this row must be answered; its batch gives up then."""


class IntakeWriter:
    """Writes new ticket rows (with their inbound-dedup marks) in shared transactions."""

    def __init__(self, db: Database, *, max_batch: int = 100) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: list[_Request] = []
        self._statements: dict[tuple[str, ...], _PostgresBatchInsert] = {}
        # One batch in flight at a time, on PostgreSQL too: what queues while it is out joins the next
        # one, and each round trip saved is CPU the requests get back. Two in flight split the batches
        # (4 tickets instead of 6.4 at 16 concurrent) and measured 38 % of the bare Bolt floor against
        # 47 % with one (bench/ack_latency.py, alternating runs).
        self._writer: asyncio.Task[None] | None = None

    async def write(self, ticket: dict[str, Any], dedup: dict[str, Any] | None) -> int | None:
        """Insert one ticket row; returns its id, or None when ``dedup`` (source, key, expires_at) was
        already seen, i.e. this request is a repeat and wrote nothing. Raises what the database raised."""
        request = _Request(ticket, dedup)
        self._queue.append(request)
        if self._writer is None or self._writer.done():  # done: cancelled before it ever ran (shutdown)
            # A context of its own: the writer serves every request, not the one that happened to start it.
            self._writer = asyncio.get_running_loop().create_task(self._write_queued(), context=Context())
        # A caller that goes away cancels only its own future: the batch is the writer's task, and its
        # neighbours still get their tickets (no shield needed, and none paid for on every request). Its
        # own row is written only if its batch had already been taken.
        return await request.done

    async def _write_queued(self) -> None:
        connection = HeldConnection(self.db)
        try:
            while self._queue:
                batch, self._queue = self._take_batch()
                if batch:
                    await self._write_and_settle(batch, connection)
                elif self._queue:
                    await until_answered(self._queue)
        finally:
            # Gone before the first await: a request that comes while this writer gives its connection
            # back must start a writer of its own, not wait for one that is leaving.
            self._writer = None
            await connection.release()

    def _take_batch(self) -> tuple[list[_Request], list[_Request]]:
        return take_batch(self._queue, self.max_batch)

    async def _write_and_settle(self, batch: list[_Request], connection: HeldConnection) -> None:
        try:
            results = await self._write(batch, connection)
        except IntegrityError as exc:
            if len(batch) == 1:
                raise_into(batch[0], exc)
                return
            # One bad row must not cost its neighbours their tickets: write them one by one.
            for request in batch:
                try:
                    _settle(request, (await self._write([request], connection))[0])
                except Exception as exc:
                    raise_into(request, exc)
            return
        except BaseException as exc:  # database down, or shutting down: everyone waiting hears about it
            if fail_waiting(batch, self._queue, exc):
                raise
            return
        for request, result in zip(batch, results, strict=True):
            _settle(request, result)

    async def _write(self, batch: list[_Request], connection: HeldConnection) -> list[int | None]:
        # A retry racing its original in the same batch: only the first with a key may write.
        first_with_key: dict[tuple[str, str], _Request] = {}
        for request in batch:
            if request.dedup is not None:
                first_with_key.setdefault((request.dedup["source"], request.dedup["key"]), request)
        candidates = [r for r in batch if r.dedup is None
                      or first_with_key[(r.dedup["source"], r.dedup["key"])] is r]
        if self.db.is_postgres:
            ids = await self._write_postgres(candidates, connection, time_left(batch))
        else:
            ids = await self._write_sqlite(candidates, batch)
        return [ids.get(id(request)) for request in batch]

    async def _write_sqlite(self, candidates: list[_Request], batch: list[_Request]) -> dict[int, int]:
        # id(request) -> ticket id, for the candidates that wrote a ticket (not repeats). Not cut short by a
        # timeout: SQLite commits in its own thread whatever happens to the await, so a commit "cancelled"
        # by a deadline would still land. The deadline is checked before the commit instead.
        async with self.db.writing() as conn:
            fresh: set[tuple[str, str]] = set()
            marks = [r.dedup for r in candidates if r.dedup is not None]
            if marks:
                statement = mark_seen_statement(conn.dialect.name).returning(InboundDedup.source, InboundDedup.key)
                fresh = {(source, key) for source, key in await conn.execute(statement, marks)}
            writing = [r for r in candidates if r.dedup is None or (r.dedup["source"], r.dedup["key"]) in fresh]
            ids: list[int] = []
            if writing:
                ids = list((await conn.execute(_INSERT_TICKETS, [r.ticket for r in writing])).scalars())
            _committing(batch)
        return dict(zip(map(id, writing), ids, strict=True))

    async def _write_postgres(self, candidates: list[_Request], connection: HeldConnection,
                              time_left: float | None) -> dict[int, int]:
        # id(request) -> ticket id, for the candidates that wrote a ticket (not repeats).
        columns = tuple(candidates[0].ticket)
        if any(tuple(r.ticket) != columns for r in candidates):
            raise ValueError("every ticket row in an intake batch must have the same columns")
        statement = self._statements.get(columns)
        if statement is None:
            statement = self._statements[columns] = _PostgresBatchInsert(columns, self.db.engine.dialect)
        by_ordinal: dict[int, int] = dict(await connection.fetch(statement.sql, *statement.parameters(candidates),
                                                                 time_limit=time_left))
        return {id(request): by_ordinal[ordinal] for ordinal, request in enumerate(candidates, start=1)
                if ordinal in by_ordinal}


class _PostgresBatchInsert:
    """``INSERT … SELECT FROM json_to_recordset(…)`` for one set of ticket columns, with its dedup marks.

    The batch travels as two JSON texts: encoding one string costs the driver far less than one
    array per column, and the statement text stays the same whatever the batch size (prepared once).
    Rows whose mark was already there (a repeat) are filtered out before they take an id; the result
    is (ordinal, id) for every ticket written, ordinals counting the batch's rows from 1.
    """

    def __init__(self, columns: tuple[str, ...], dialect: Dialect) -> None:
        table_columns = [_TICKETS.c[name] for name in columns]
        # Only the columns whose type converts the value (timestamps to naive UTC) are touched per row.
        self._bind = [(name, bind) for name, column in zip(columns, table_columns, strict=True)
                      if (bind := column.type.bind_processor(dialect)) is not None]
        dedup = cast(Table, InboundDedup.__table__)
        self._bind_expiry = dedup.c.expires_at.type.bind_processor(dialect)
        source_type, key_type, expiry_type = (dedup.c[name].type.compile(dialect)
                                              for name in ("source", "key", "expires_at"))
        names = ", ".join(f'"{name}"' for name in columns)
        typed = ", ".join(f'"{name}" {column.type.compile(dialect)}' for name, column in zip(columns, table_columns,
                                                                                             strict=True))
        self.sql = f"""
WITH marked AS (
    INSERT INTO inbound_dedup (source, key, expires_at)
    SELECT source, key, expires_at
    FROM json_to_recordset($1::json) AS m(source {source_type}, key {key_type}, expires_at {expiry_type})
    ON CONFLICT DO NOTHING
    RETURNING source, key
), fresh AS (
    SELECT nextval(pg_get_serial_sequence('tickets', 'id')) AS id, r.*
    FROM json_to_recordset($2::json)
        AS r(ordinal bigint, mark_source {source_type}, mark_key {key_type}, {typed})
    WHERE r.mark_source IS NULL
       OR EXISTS (SELECT 1 FROM marked m WHERE m.source = r.mark_source AND m.key = r.mark_key)
), written AS (
    INSERT INTO tickets (id, {names}) SELECT id, {names} FROM fresh
)
SELECT ordinal, id FROM fresh"""

    def parameters(self, batch: list[_Request]) -> tuple[str, str]:
        expiry = self._bind_expiry
        marks = [{**r.dedup, "expires_at": _json_value(
            expiry(r.dedup["expires_at"]) if expiry else r.dedup["expires_at"])} for r in batch if r.dedup is not None]
        rows = []
        for ordinal, request in enumerate(batch, start=1):
            row = dict(request.ticket)
            for name, bind in self._bind:
                row[name] = _json_value(bind(row[name]))
            row["ordinal"] = ordinal
            if request.dedup is not None:
                row["mark_source"], row["mark_key"] = request.dedup["source"], request.dedup["key"]
            rows.append(row)
        return _ENCODE(marks), _ENCODE(rows)


_ENCODE = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
"""Made once: ``json.dumps`` with any option builds a new encoder per call."""


def _json_value(value: object) -> object:
    # What json can't write itself: timestamps (already naive UTC from the column's bind processor). Done here
    # rather than through the encoder's ``default`` hook, which leaves its C fast path for every timestamp.
    return value.isoformat() if isinstance(value, datetime) else value


def _committing(batch: list[_Request]) -> None:
    """About to commit: past the batch's deadline (its requests told nothing was saved), roll back instead;
    otherwise the requests may be saved from here on, and their deadlines must wait for their answers."""
    remaining = time_left(batch)
    if remaining is not None and remaining <= 0.001:
        raise TimeoutError("the batch's deadline passed before it could commit")
    for request in batch:
        if request.deadline is not None:
            request.deadline.wrote = True


def _settle(request: _Request, result: int | None) -> None:
    if not request.done.done():
        if result is not None and request.deadline is not None:
            request.deadline.wrote = True
        request.done.set_result(result)


__all__ = ["IntakeWriter", "PeopleWriter"]
