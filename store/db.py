"""The engine and session factory. One ``Database`` per process; transactions are short."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

DEFAULT_URL = "sqlite+aiosqlite:///ithelp.db"

@dataclass
class RequestDeadline:
    """When the request being served must be answered, and whether its ticket is already written."""

    at: float
    """Event loop time. Work done for the request in another task (the intake batch) stops waiting then."""
    wrote: bool = False
    """Set once the request's ticket row is committed, or about to be: from then on "nothing was saved" could
    be untrue, so the request is given a moment past its deadline to give its real answer."""


REQUEST_DEADLINE: ContextVar[RequestDeadline | None] = ContextVar("ithelp_request_deadline", default=None)
"""The deadline of the request being served in this context, or None outside one."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # SQLite: WAL so readers don't block the writer; a busy timeout so writers queue instead of failing;
    # autocommit mode so we can issue BEGIN IMMEDIATE ourselves (deferred BEGIN deadlocks on upgrade).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # Writers take the lock up front (no deadlock on upgrade); readers use WAL snapshots and block no one.
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("ithelp_readonly") else "BEGIN IMMEDIATE")


class Database:
    """Async engine + session factory for SQLite (embedded default) or PostgreSQL (production)."""

    def __init__(
        self, url: str = DEFAULT_URL, *, pool_size: int = 10, echo: bool = False, schema: str | None = None
    ) -> None:
        self.url = make_url(url)
        self.schema = schema
        # No pre-ping: it costs two round trips on every checkout. A connection that died with a
        # database restart fails its one request (a clear "nothing was saved"), and that disconnect
        # makes SQLAlchemy replace every older connection in the pool before it is used again.
        kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": False}
        if self.dialect == "postgresql":
            # JIT off: the bot's statements are short, and a cost estimate past jit_above_cost (the
            # outbox claim over a large backlog) spent half as long compiling a query as running it.
            server_settings = {"jit": "off"}
            if schema:
                server_settings["search_path"] = schema
            connect_args: dict[str, Any] = {"timeout": 5, "command_timeout": 30, "server_settings": server_settings}
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_timeout=5, connect_args=connect_args)
        else:
            kwargs["connect_args"] = {"timeout": 15}
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self.dialect == "sqlite" else None
        self._autocommit_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.read_sessions = async_sessionmaker(self.engine.execution_options(ithelp_readonly=True),
                                                expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits on success, rolls back on any exception."""
        if self._write_lock is None:
            async with self.sessions() as session, session.begin():
                yield session
            return
        # SQLite has one writer. Queueing writers here, in order, beats letting them poll SQLite's
        # busy handler from their threads, which sleeps in growing steps and wrecks tail latency.
        async with self._write_lock, self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncConnection]:
        """Like :meth:`transaction` but a bare Core connection: for the few hot paths (intake) where
        the ORM session's bookkeeping costs more than the statements themselves."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.begin() as conn:
            yield conn

    async def autocommit_connection(self) -> AsyncConnection:
        """A connection of its own on which each statement commits by itself; the caller closes it.
        For PostgreSQL's intake, whose batch is one statement: no BEGIN/COMMIT round trips, and the
        writer keeps it for as long as a burst lasts. Not for SQLite, whose writers must queue."""
        if self._write_lock is not None:
            raise RuntimeError("autocommit statements would bypass SQLite's writer queue")
        return await self._autocommit_engine.connect().start()

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A read-only transaction (on SQLite it takes no write lock)."""
        async with self.read_sessions() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
