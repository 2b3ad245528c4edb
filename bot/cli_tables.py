"""What the maintenance commands (``ithelp outbox``, ``ithelp timers``) share: the database from app.yaml, a
clear line when it can't be read, and plain aligned tables."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from store.db import Database

ERROR_WIDTH = 70


def open_database(args: argparse.Namespace) -> Database | None:
    """The database ``app.yaml`` (``--config``) names; None, after saying what is wrong, when it is invalid."""
    from bot.config_cli import load_or_complain

    config = load_or_complain(args.config)
    if config is None:
        return None
    return Database(config.database.url, schema=config.database.schema_name)


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
