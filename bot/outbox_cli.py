"""``ithelp outbox``: what the bot still owes people, and a way to send dead letters again.

``ithelp outbox list [--dead]`` prints a table of undelivered messages (pending and dead-lettered, or
only the dead letters), with the error that stopped each. ``ithelp outbox retry ID … | --all-dead`` puts
dead letters back in the queue; a running ``ithelp serve`` sends them on its next tick. Retrying is
idempotent: a message that is not dead-lettered is left as it is and said so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update

from bot.cli_tables import aligned, clip, run_on_database, when
from store.db import Database
from store.models import OutboxMessage, ticket_number


def add_outbox_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``ithelp outbox list|retry`` to the CLI's subparsers."""
    outbox: argparse.ArgumentParser = subparsers.add_parser(
        "outbox", help="messages not yet delivered: list them, send dead letters again")
    commands = outbox.add_subparsers(dest="outbox_command", required=True)
    listing = commands.add_parser("list", help="undelivered messages (pending and dead-lettered), oldest first")
    listing.add_argument("--dead", action="store_true", help="only dead letters")
    listing.add_argument("--limit", type=int, default=200, help="show at most this many (default 200)")
    listing.add_argument("--config", help="path to app.yaml (default: $ITHELP_CONFIG or ./app.yaml)")
    listing.set_defaults(func=cmd_list)
    retry = commands.add_parser("retry", help="put dead letters back in the queue")
    retry.add_argument("ids", nargs="*", type=int, metavar="ID", help="outbox message ids (from `outbox list`)")
    retry.add_argument("--all-dead", action="store_true", help="every dead letter")
    retry.add_argument("--config", help="path to app.yaml (default: $ITHELP_CONFIG or ./app.yaml)")
    retry.set_defaults(func=cmd_retry)
    return outbox


def cmd_list(args: argparse.Namespace) -> int:
    """``ithelp outbox list``."""

    async def listing(db: Database) -> tuple[str, int]:
        return await list_messages(db, dead_only=args.dead, limit=args.limit), 0

    return run_on_database(args, "the outbox", listing)


def cmd_retry(args: argparse.Namespace) -> int:
    """``ithelp outbox retry``."""
    if bool(args.ids) == args.all_dead:
        print("outbox retry: give message ids or --all-dead (not both)", file=sys.stderr)
        return 2

    async def retrying(db: Database) -> tuple[str, int]:
        lines, all_found = await retry_dead(db, None if args.all_dead else args.ids)
        return "\n".join(lines), 0 if all_found else 1

    return run_on_database(args, "the outbox", retrying)


async def list_messages(db: Database, *, dead_only: bool, limit: int) -> str:
    """The table ``ithelp outbox list`` prints."""
    unsent = OutboxMessage.dead_at.is_not(None) if dead_only else OutboxMessage.delivered_at.is_(None)
    async with db.reading() as session:
        total = int(await session.scalar(select(func.count()).select_from(OutboxMessage).where(unsent)) or 0)
        rows = (await session.execute(select(OutboxMessage).where(unsent).order_by(OutboxMessage.id).limit(limit)
                                      )).scalars().all()
    what = "dead letters" if dead_only else "undelivered messages"
    if not rows:
        return f"no {what}"
    table = [["id", "state", "target", "kind", "ticket", "attempts", "created", "dead / next try", "last error"]]
    for row in rows:
        dead = row.dead_at is not None
        table.append([
            str(row.id), "dead" if dead else "failing" if row.last_error else "pending", row.target, row.kind,
            ticket_number(row.ticket_id) if row.ticket_id is not None else "-", str(row.attempts),
            when(row.created_at), when(row.dead_at if dead else row.next_attempt_at), clip(row.last_error or ""),
        ])
    lines = aligned(table)
    if total > len(rows):
        lines.append(f"… and {total - len(rows)} more (--limit)")
    lines.append(f"{total} {what}" + ("; `ithelp outbox retry ID|--all-dead` sends them again" if any(
        row.dead_at is not None for row in rows) else ""))
    return "\n".join(lines)


async def retry_dead(db: Database, ids: Sequence[int] | None) -> tuple[list[str], bool]:
    """Put dead letters back in the queue (``ids``, or every one when None); returns what was done, line
    by line, and whether every id named a message."""
    async with db.transaction() as session:
        wanted = OutboxMessage.dead_at.is_not(None) if ids is None else OutboxMessage.id.in_(ids)
        rows = (await session.execute(select(OutboxMessage).where(wanted).order_by(OutboxMessage.id)
                                      .with_for_update())).scalars().all()
        revived = [row for row in rows if row.dead_at is not None]
        if revived:
            # Due since they were written, so they go ahead of newer work; the error stays until the next
            # attempt replaces or clears it.
            await session.execute(
                update(OutboxMessage).where(OutboxMessage.id.in_([row.id for row in revived]),
                                            OutboxMessage.dead_at.is_not(None))
                .values(dead_at=None, attempts=0, next_attempt_at=OutboxMessage.created_at, lease_owner=None,
                        lease_until=None, first_failed_at=None)
                .execution_options(synchronize_session=False))
    lines: list[str] = []
    found = {row.id: row for row in rows}
    for message_id in ids if ids is not None else [row.id for row in rows]:
        row = found.get(message_id)
        if row is None:
            lines.append(f"outbox {message_id}: no such message")
        elif row in revived:
            lines.append(f"outbox {row.id} ({row.kind} to {row.target}): back in the queue")
        else:
            state = "already delivered" if row.delivered_at is not None else "still in the queue"
            lines.append(f"outbox {row.id}: not a dead letter ({state}); left as it is")
    if ids is None and not rows:
        lines.append("no dead letters")
    elif revived:
        lines.append(f"{len(revived)} message(s) back in the queue; a running `ithelp serve` sends them within "
                     "its next tick")
    return lines, ids is None or all(message_id in found for message_id in ids)
