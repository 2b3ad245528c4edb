"""``ithelp timers``: deadlines and deferred work that gave up, and a way to run them again.

A timer gives up after its attempts (``engine`` settings): a breach or reminder whose handler kept failing, or
a task that files a reacted-to or mentioned Slack message after Slack stayed unreachable for most of an hour.
Each is kept as a failed row with its last error. ``ithelp timers failed`` lists them; ``ithelp timers retry ID
… | --all-failed`` makes them due again with a fresh set of attempts, and a running ``ithelp serve`` runs them on
its next tick. Their work is idempotent (dedup keys), so running one again never files or pages twice.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update

from bot.cli_tables import aligned, clip, run_on_database, when
from store.db import Database
from store.models import Timer, ticket_number

FAILED = Timer.outcome == "failed"


def add_timers_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``ithelp timers failed|retry`` to the CLI's subparsers."""
    timers: argparse.ArgumentParser = subparsers.add_parser(
        "timers", help="deadlines and deferred work that gave up: list them, run them again")
    commands = timers.add_subparsers(dest="timers_command", required=True)
    listing = commands.add_parser("failed", help="timers that gave up, most recent first, with their last error")
    listing.add_argument("--limit", type=int, default=200, help="show at most this many (default 200)")
    listing.add_argument("--config", help="path to app.yaml (default: $ITHELP_CONFIG or ./app.yaml)")
    listing.set_defaults(func=cmd_failed)
    retry = commands.add_parser("retry", help="make failed timers due again")
    retry.add_argument("ids", nargs="*", type=int, metavar="ID", help="timer ids (from `timers failed`)")
    retry.add_argument("--all-failed", action="store_true", help="every failed timer")
    retry.add_argument("--config", help="path to app.yaml (default: $ITHELP_CONFIG or ./app.yaml)")
    retry.set_defaults(func=cmd_retry)
    return timers


def cmd_failed(args: argparse.Namespace) -> int:
    """``ithelp timers failed``."""

    async def listing(db: Database) -> tuple[str, int]:
        return await list_failed(db, limit=args.limit), 0

    return run_on_database(args, "the timers", listing)


def cmd_retry(args: argparse.Namespace) -> int:
    """``ithelp timers retry``."""
    if bool(args.ids) == args.all_failed:
        print("timers retry: give timer ids or --all-failed (not both)", file=sys.stderr)
        return 2

    async def retrying(db: Database) -> tuple[str, int]:
        lines, all_found = await retry_failed(db, None if args.all_failed else args.ids)
        return "\n".join(lines), 0 if all_found else 1

    return run_on_database(args, "the timers", retrying)


async def list_failed(db: Database, *, limit: int) -> str:
    """The table ``ithelp timers failed`` prints."""
    async with db.reading() as session:
        total = int(await session.scalar(select(func.count()).select_from(Timer).where(FAILED)) or 0)
        rows = (await session.execute(select(Timer).where(FAILED).order_by(Timer.done_at.desc(), Timer.id.desc())
                                      .limit(limit))).scalars().all()
    if not rows:
        return "no failed timers"
    table = [["id", "kind", "ticket", "attempts", "due", "gave up", "last error"]]
    for row in rows:
        table.append([str(row.id), row.kind, ticket_number(row.ticket_id) if row.ticket_id is not None else "-",
                      str(row.attempts), when(row.due_at), when(row.done_at), clip(row.last_error or "")])
    lines = aligned(table)
    if total > len(rows):
        lines.append(f"… and {total - len(rows)} more (--limit)")
    lines.append(f"{total} failed timer(s); `ithelp timers retry ID|--all-failed` runs them again")
    return "\n".join(lines)


async def retry_failed(db: Database, ids: Sequence[int] | None) -> tuple[list[str], bool]:
    """Make failed timers due again (``ids``, or every failed one when None); returns what was done, line by
    line, and whether every id named a timer."""
    async with db.transaction() as session:
        wanted = FAILED if ids is None else Timer.id.in_(ids)
        rows = (await session.execute(select(Timer).where(wanted).order_by(Timer.id).with_for_update())
                ).scalars().all()
        revived = [row for row in rows if row.outcome == "failed"]
        if revived:
            # Their due time stays (already past, so they run at once, in their original order); the error
            # stays until the next attempt replaces it.
            await session.execute(
                update(Timer).where(Timer.id.in_([row.id for row in revived]), FAILED)
                .values(done_at=None, outcome=None, attempts=0, lease_owner=None, lease_until=None)
                .execution_options(synchronize_session=False))
    lines: list[str] = []
    found = {row.id: row for row in rows}
    for timer_id in ids if ids is not None else [row.id for row in rows]:
        row = found.get(timer_id)
        if row is None:
            lines.append(f"timer {timer_id}: no such timer")
        elif row in revived:
            lines.append(f"timer {row.id} ({row.kind}): due again")
        else:
            state = "still pending" if row.done_at is None else f"already {row.outcome or 'done'}"
            lines.append(f"timer {row.id}: not failed ({state}); left as it is")
    if ids is None and not rows:
        lines.append("no failed timers")
    elif revived:
        lines.append(f"{len(revived)} timer(s) due again; a running `ithelp serve` runs them within its next tick")
    return lines, ids is None or all(timer_id in found for timer_id in ids)
