"""A writer's own PostgreSQL connection, held while batches keep coming (see ``store.intake``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import asyncpg
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from store.db import Database

log = logging.getLogger("ithelp.store")


class HeldConnection:
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
                raise as_sqlalchemy_error(sql, exc, connection_lost=True) from exc
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
            translated = as_sqlalchemy_error(sql, exc, connection_lost=self._driver.is_closed())
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


def as_sqlalchemy_error(sql: str, exc: Exception, *, connection_lost: bool) -> Exception:
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


__all__ = ["HeldConnection", "as_sqlalchemy_error"]
