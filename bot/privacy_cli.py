"""``ithelp privacy export|erase``, ``ithelp audit export`` and ``ithelp db backup``.

Exit codes: 0 done (or nothing left to do), 1 refused (an unknown person, open tickets, a file in the way),
2 a problem with the command or the configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TextIO, TypeVar

from bot.config import AppConfig
from bot.config_cli import load_or_complain

T = TypeVar("T")


def add_privacy_parsers(sub: Any) -> None:
    """Add ``privacy`` and ``audit`` to the CLI's subcommands."""
    privacy = sub.add_parser("privacy", help="access and erasure requests for one person")
    privacy_sub = privacy.add_subparsers(dest="privacy_command", required=True)
    export = privacy_sub.add_parser("export", help="write everything held about a person as JSON")
    export.add_argument("--person", required=True, help="slack:<member id> or teams:<Entra object id>")
    export.add_argument("--output", help="write to this file instead of standard output")
    _common(export)
    export.set_defaults(func=cmd_privacy_export)
    erase = privacy_sub.add_parser("erase", help="remove a person's text and identity, keeping anonymous metrics")
    erase.add_argument("--person", required=True, help="slack:<member id> or teams:<Entra object id>")
    erase.add_argument("--yes", action="store_true", help="really erase (without it: show what would change)")
    erase.add_argument("--force", action="store_true", help="erase even if they have open tickets")
    _common(erase)
    erase.set_defaults(func=cmd_privacy_erase)

    audit = sub.add_parser("audit", help="audit trail exports")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    audit_export = audit_sub.add_parser("export", help="every ticket event of a period: who, when, what changed")
    audit_export.add_argument("--since", default="30d", help="how far back: 30d, 2w or a date like 2026-11-01")
    audit_export.add_argument("--until", help="end of the period (default now)")
    audit_export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    audit_export.add_argument("--output", help="write to this file instead of standard output")
    audit_export.add_argument("--config", help="path to app.yaml (default: $ITHELP_CONFIG or ./app.yaml)")
    audit_export.set_defaults(func=cmd_audit_export)


def add_backup_parser(db_sub: Any) -> None:
    """Add ``backup`` to ``ithelp db``."""
    backup = db_sub.add_parser("backup", help="copy the SQLite database while the bot runs")
    backup.add_argument("file", help="where to write the copy")
    backup.add_argument("--force", action="store_true", help="replace the file if it exists")
    backup.add_argument("--config")
    backup.set_defaults(func=cmd_db_backup)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--by", help="who is carrying out the request, for the privacy log (default: your login)")
    parser.add_argument("--config", help="path to app.yaml (default: $ITHELP_CONFIG or ./app.yaml)")


def cmd_privacy_export(args: argparse.Namespace) -> int:
    from bot.privacy.export import export_person

    config = _config(args.config)
    if config is None:
        return 2

    async def run(db: Any, clock: Any) -> Any:
        with _output(args.output) as out:
            return await export_person(db, clock, args.person, out, by=_who(args.by))

    exported = _run(config, run, migrate=True)
    if exported is None:
        return 1
    summary = ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in exported.sections.items() if count)
    print(f"exported {args.person}{f' to {args.output}' if args.output else ''}: {summary or 'a profile only'}",
          file=sys.stderr if not args.output else sys.stdout)
    return 0


def cmd_privacy_erase(args: argparse.Namespace) -> int:
    from bot.privacy.erasure import erase_person

    config = _config(args.config)
    if config is None:
        return 2

    async def run(db: Any, clock: Any) -> Any:
        return await erase_person(db, clock, args.person, by=_who(args.by), force=args.force, commit=args.yes)

    erasure = _run(config, run, migrate=True)
    if erasure is None:
        return 1
    if erasure.already_on is not None:
        print(f"{erasure.address} was already erased on {erasure.already_on:%Y-%m-%d %H:%M} UTC; nothing changed.")
        return 0
    changes = ", ".join(f"{table} {count}" for table, count in sorted(erasure.rows.items()))
    if not erasure.committed:
        print(f"would erase {erasure.address} (becoming {erasure.pseudonym}); rows that would change: {changes}.\n"
              "Nothing was changed: run again with --yes to erase.")
        return 0
    print(f"erased {erasure.address}: now {erasure.pseudonym}; rows changed: {changes}. "
          "Their tickets' metrics are kept, anonymous.")
    return 0


def cmd_audit_export(args: argparse.Namespace) -> int:
    from bot.clock import SystemClock
    from bot.privacy.audit import export_audit
    from surveys.report import parse_since

    config = _config(args.config)
    if config is None:
        return 2
    now = SystemClock().now()
    try:
        since = parse_since(args.since, now)
        until = parse_since(args.until, now) if args.until else now
    except argparse.ArgumentTypeError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if since >= until:
        print(f"--since ({since:%Y-%m-%d %H:%M}) must be before --until ({until:%Y-%m-%d %H:%M})", file=sys.stderr)
        return 2

    async def run(db: Any, clock: Any) -> int:
        with _output(args.output) as out:
            return await export_audit(db, out, since=since, until=until, fmt=args.format)

    count = _run(config, run, migrate=False)
    if count is None:
        return 1
    if args.output:
        print(f"wrote {count:,} records to {args.output}")
    return 0


def cmd_db_backup(args: argparse.Namespace) -> int:
    from bot.privacy.backup import BackupError, backup_sqlite, sqlite_path

    config = _config(args.config)
    if config is None:
        return 2
    try:
        source = sqlite_path(config.database.url, config.database.schema_name)
    except BackupError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        done = backup_sqlite(source, Path(args.file), overwrite=args.force)
    except BackupError as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        return 1
    print(f"backed up {source} to {done.path}: {done.tickets:,} tickets, {done.size_bytes / 1e6:.1f} MB, "
          f"integrity ok, {done.seconds:.1f} s")
    return 0


# -- plumbing ----------------------------------------------------------------------------------------
def _config(value: str | None) -> AppConfig | None:
    return load_or_complain(value)


def _who(value: str | None) -> str:
    if value:
        return value[:200]
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "cli"


def _run(config: AppConfig, work: Callable[[Any, Any], Coroutine[Any, Any, T]], *, migrate: bool) -> T | None:
    """Run ``work(db, clock)``; a refused request is printed and gives None."""
    from bot.privacy.people import RequestError

    async def main() -> T:
        async with _database(config, migrate=migrate) as db:
            from bot.clock import SystemClock

            return await work(db, SystemClock())

    try:
        return asyncio.run(main())
    except RequestError as exc:
        print(str(exc), file=sys.stderr)
        return None


@asynccontextmanager
async def _database(config: AppConfig, *, migrate: bool) -> AsyncIterator[Any]:
    from store.db import Database
    from store.migrate import upgrade

    db = Database(config.database.url, schema=config.database.schema_name)
    try:
        if migrate:
            await upgrade(db)  # the privacy columns; safe to run on every start, as serve does
        yield db
    finally:
        await db.dispose()


@contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    # Written aside and renamed when complete: a failed export never leaves a truncated file behind.
    try:
        with partial.open("w", encoding="utf-8", newline="") as out:
            yield out
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
