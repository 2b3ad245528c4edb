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
from typing import Any, Protocol, TypeVar, cast

import asyncpg
from sqlalchemy import Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from store.db import REQUEST_DEADLINE, Database, RequestDeadline
from store.models import InboundDedup, Person, Ticket
from store.queries import _insert_ignoring, mark_seen_statement

log = logging.getLogger("ithelp.store")
_TICKETS = cast(Table, Ticket.__table__)
_INSERT_TICKETS = insert(_TICKETS).returning(_TICKETS.c.id, sort_by_parameter_order=True)


MIN_TIME_LEFT = 0.1
"""Seconds a request must have left before its deadline to go into a batch: one closer to it is left out
(its caller answers that nothing was saved) rather than cut its batch's time short."""
SETTLE_MARGIN = 0.05
"""Seconds before the first deadline in it that a batch gives up: room to tell its requests they got a ticket
before their deadline answers for them."""
UNANSWERED_GRACE = 1.0
"""Seconds past its deadline after which a request left out of the batches is failed here: nobody else
answered it (its caller set no deadline of its own)."""


@dataclass
class _Request:
    ticket: dict[str, Any]
    dedup: dict[str, Any] | None
    done: asyncio.Future[int | None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    deadline: RequestDeadline | None = field(default_factory=REQUEST_DEADLINE.get)
    """When the request that wants this row must be answered; its batch gives up then."""


class _HeldConnection:
    """A writer's PostgreSQL connection, kept while batches keep coming and given back after.

    The batch runs on the asyncpg connection underneath: one statement, no transaction, no result
    processing to speak of, so SQLAlchemy's execution machinery (and its greenlet hop) would be most
    of what the batch costs us. Errors are translated back into SQLAlchemy's, which is what the rest
    of the bot (and the outage handling in front of it) understands.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._connection: AsyncConnection | None = None
        self._driver: Any = None

    async def fetch(self, sql: str, *parameters: object, time_limit: float | None = None) -> list[tuple[Any, ...]]:
        """Run ``sql`` (connecting first if need be), giving up after ``time_limit`` seconds in all."""
        if self._connection is None:
            started = asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout(time_limit):
                    connection = await self.db.autocommit_connection()
            except TimeoutError as exc:
                raise _as_sqlalchemy_error(sql, exc, connection_lost=True) from exc
            if time_limit is not None:
                time_limit = max(0.001, time_limit - (asyncio.get_running_loop().time() - started))
            try:
                self._driver = (await connection.get_raw_connection()).driver_connection
            except BaseException:
                await connection.close()
                raise
            self._connection = connection
        try:
            # asyncpg's own timeout, not a cancellation: it cancels the statement on the server and leaves
            # the connection in a known state (which is then thrown away).
            return cast("list[tuple[Any, ...]]", await self._driver.fetch(sql, *parameters, timeout=time_limit))
        except Exception as exc:
            translated = _as_sqlalchemy_error(sql, exc, connection_lost=self._driver.is_closed())
            if isinstance(translated, DBAPIError) and translated.connection_invalidated:
                await self.release(invalidate=True)  # the next batch starts on a fresh one
            raise translated from exc

    async def release(self, *, invalidate: bool = False) -> None:
        connection, self._connection, self._driver = self._connection, None, None
        if connection is not None:
            try:
                if invalidate:
                    await connection.invalidate()
                await connection.close()
            except Exception as exc:  # already broken (the database went away): nothing left to give back
                log.debug("closing the intake connection failed: %s", exc)


def _as_sqlalchemy_error(sql: str, exc: Exception, *, connection_lost: bool) -> Exception:
    # What SQLAlchemy raises for the same asyncpg error: a refused row is an IntegrityError; a lost
    # connection or a server going down (SQLSTATE classes 08 and 57; or whatever asyncpg raised on
    # finding its session gone) an OperationalError with the connection invalidated, so the handlers
    # say "the database is unavailable" instead of "something went wrong".
    sqlstate = str(getattr(exc, "sqlstate", "") or "")
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return IntegrityError(sql, None, exc)
    if (connection_lost or isinstance(exc, asyncpg.InterfaceError | OSError | TimeoutError)
            or sqlstate[:2] in ("08", "57")):
        return OperationalError(sql, None, exc, connection_invalidated=True)
    if isinstance(exc, asyncpg.PostgresError):
        return DBAPIError(sql, None, exc)
    return exc


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
        connection = _HeldConnection(self.db)
        try:
            while self._queue:
                batch, self._queue = self._take_batch()
                if batch:
                    await self._write_and_settle(batch, connection)
                elif self._queue:
                    await _until_answered(self._queue)
        finally:
            # Gone before the first await: a request that comes while this writer gives its connection
            # back must start a writer of its own, not wait for one that is leaving.
            self._writer = None
            await connection.release()

    def _take_batch(self) -> tuple[list[_Request], list[_Request]]:
        return _take_batch(self._queue, self.max_batch)

    async def _write_and_settle(self, batch: list[_Request], connection: _HeldConnection) -> None:
        try:
            results = await self._write(batch, connection)
        except IntegrityError as exc:
            if len(batch) == 1:
                _raise_into(batch[0], exc)
                return
            # One bad row must not cost its neighbours their tickets: write them one by one.
            for request in batch:
                try:
                    _settle(request, (await self._write([request], connection))[0])
                except Exception as exc:
                    _raise_into(request, exc)
            return
        except BaseException as exc:  # database down, or shutting down: everyone waiting hears about it
            for request in batch:
                _raise_into(request, exc)
            if not isinstance(exc, Exception):
                for request in self._queue:
                    _raise_into(request, exc)
                self._queue = []
                raise
            return
        for request, result in zip(batch, results, strict=True):
            _settle(request, result)

    async def _write(self, batch: list[_Request], connection: _HeldConnection) -> list[int | None]:
        # A retry racing its original in the same batch: only the first with a key may write.
        first_with_key: dict[tuple[str, str], _Request] = {}
        for request in batch:
            if request.dedup is not None:
                first_with_key.setdefault((request.dedup["source"], request.dedup["key"]), request)
        candidates = [r for r in batch if r.dedup is None
                      or first_with_key[(r.dedup["source"], r.dedup["key"])] is r]
        if self.db.is_postgres:
            ids = await self._write_postgres(candidates, connection, _time_left(batch))
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

    async def _write_postgres(self, candidates: list[_Request], connection: _HeldConnection,
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
        self._bind = [(name, column.type.bind_processor(dialect)) for name, column in zip(columns, table_columns,
                                                                                            strict=True)]
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
        marks = [{**r.dedup, "expires_at": self._bind_expiry(r.dedup["expires_at"]) if self._bind_expiry
                  else r.dedup["expires_at"]} for r in batch if r.dedup is not None]
        rows = []
        for ordinal, request in enumerate(batch, start=1):
            row = {name: bind(request.ticket[name]) if bind else request.ticket[name] for name, bind in self._bind}
            row["ordinal"] = ordinal
            if request.dedup is not None:
                row["mark_source"], row["mark_key"] = request.dedup["source"], request.dedup["key"]
            rows.append(row)
        return json.dumps(marks, default=_json_value), json.dumps(rows, default=_json_value)


def _json_value(value: object) -> str:
    # What json can't write itself: timestamps (already naive UTC from the column's bind processor).
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} can't go into an intake batch")


class _Waiting(Protocol):
    done: asyncio.Future[Any]
    deadline: RequestDeadline | None


W = TypeVar("W", bound=_Waiting)


def _take_batch(queue: list[W], max_batch: int) -> tuple[list[W], list[W]]:
    """The next batch and what stays queued. A request whose caller has gone (answered already, e.g. past its
    deadline: told nothing was saved) is dropped; one too close to its deadline is left out, to be answered
    the same way, because writing its row now could make that answer a lie."""
    now = asyncio.get_running_loop().time()
    batch: list[W] = []
    waiting: list[W] = []
    for index, request in enumerate(queue):
        if request.done.done():
            continue
        if request.deadline is not None and request.deadline.at - now < MIN_TIME_LEFT:
            if now - request.deadline.at > UNANSWERED_GRACE:
                _raise_into(request, TimeoutError("no time left to write before the request's deadline"))
            else:
                waiting.append(request)
            continue
        batch.append(request)
        if len(batch) == max_batch:
            return batch, waiting + queue[index + 1:]
    return batch, waiting


def _committing(batch: list[_Request]) -> None:
    """About to commit: past the batch's deadline (its requests told nothing was saved), roll back instead;
    otherwise the requests may be saved from here on, and their deadlines must wait for their answers."""
    time_left = _time_left(batch)
    if time_left is not None and time_left <= 0.001:
        raise TimeoutError("the batch's deadline passed before it could commit")
    for request in batch:
        if request.deadline is not None:
            request.deadline.wrote = True


async def _until_answered(waiting: list[W]) -> None:
    """Wait while only requests past their deadline are queued, until one of them is answered (or given up)."""
    await asyncio.wait([r.done for r in waiting], timeout=UNANSWERED_GRACE, return_when=asyncio.FIRST_COMPLETED)


def _time_left(batch: list[W]) -> float | None:
    # A batch gives up when the first of its requests must be answered, so that a row is never written
    # after its requester was told nothing was saved.
    deadlines = [r.deadline.at for r in batch if r.deadline is not None]
    if not deadlines:
        return None
    return max(0.001, min(deadlines) - SETTLE_MARGIN - asyncio.get_running_loop().time())


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
                batch, self._queue = _take_batch(self._queue, self.max_batch)
                if batch:
                    await self._write_and_settle(batch)
                elif self._queue:
                    await _until_answered(self._queue)
        finally:
            self._writer = None

    async def _write_and_settle(self, batch: list[_NewPerson]) -> None:
        try:
            async with asyncio.timeout(_time_left(batch)), self.db.writing() as conn:
                statement = _insert_ignoring(conn.dialect.name, Person, ("platform", "platform_user_id"))
                written = await conn.execute(statement.returning(Person.id, Person.platform, Person.platform_user_id),
                                             [r.row for r in batch])
                ids = {(platform, user): person_id for person_id, platform, user in written}
        except BaseException as exc:
            for request in batch:
                _raise_into(request, exc)
            if not isinstance(exc, Exception):
                for request in self._queue:
                    _raise_into(request, exc)
                self._queue = []
                raise
            return
        for request in batch:
            if not request.done.done():
                request.done.set_result(ids.get((request.row["platform"], request.row["platform_user_id"])))


def _settle(request: _Request, result: int | None) -> None:
    if not request.done.done():
        if result is not None and request.deadline is not None:
            request.deadline.wrote = True
        request.done.set_result(result)


def _raise_into(request: _Waiting, exc: BaseException) -> None:
    if request.done.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        request.done.cancel()
    else:
        request.done.set_exception(exc)
