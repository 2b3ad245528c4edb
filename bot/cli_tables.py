"""What the maintenance commands (``ithelp outbox``, ``ithelp timers``) share: the database from app.yaml, a
clear line when it can't be read, and plain aligned tables."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from store.db import Database

ERROR_WIDTH = 70


def open_database(args: argparse.Namespace) -> Database | None:
    """The database ``app.yaml`` (``--config``) names; None, after saying what is wrong, when it is invalid."""
    from bot.config_cli import load_or_complain

    config = load_or_complain(args.config)
    if config is None:
        return None
    return Database(config.database.url, schema=config.database.schema_name)


def run_on_database(args: argparse.Namespace, what: str, work: Callable[[Database], Awaitable[tuple[str, int]]]) -> int:
    """Run ``work`` against the database app.yaml names and print what it returns; its exit status (2: app.yaml
    is invalid, 1: ``what`` could not be read)."""
    db = open_database(args)
    if db is None:
        return 2

    async def run() -> tuple[str, int]:
        try:
            return await work(db)
        finally:
            await db.dispose()

    try:
        text, status = asyncio.run(run())
    except (SQLAlchemyError, OSError) as exc:
        return unreadable(db, what, exc)
    print(text)
    return status


def unreadable(db: Database, what: str, exc: Exception) -> int:
    """Say why ``what`` could not be read (the password hidden); the exit status."""
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    print(f"can't read {what} in {db.url.render_as_string(hide_password=True)}: {reason} "
          "(is database.url right, and has `ithelp db upgrade` run?)", file=sys.stderr)
    return 1


def when(at: datetime | None) -> str:
    """A stored (naive UTC) time as a table cell."""
    return at.strftime("%Y-%m-%d %H:%M:%SZ") if at is not None else "-"


def clip(text: str) -> str:
    """An error message on one line, cut to :data:`ERROR_WIDTH`."""
    text = " ".join(text.split())
    return text if len(text) <= ERROR_WIDTH else text[: ERROR_WIDTH - 1] + "…"


def aligned(rows: list[list[str]]) -> list[str]:
    """Rows (the first is the header) as aligned lines, a rule under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines
