"""``ithelp db backup``: a consistent copy of the SQLite database, taken while the server keeps writing.

SQLite's online backup API (``sqlite3.Connection.backup``) copies the database page by page from a read
transaction: in WAL mode the server's writers carry on meanwhile, and the copy is the database as it was when
that transaction began. It is copied in one step, because a multi-step backup restarts whenever another
connection writes, and a busy desk would keep it restarting. The copy is written next to the target, checked
(``PRAGMA integrity_check``), switched to a self-contained rollback journal, and only then renamed into place,
so a failed backup never leaves a half-written file under the name asked for.

PostgreSQL is backed up with its own tools (``pg_dump``/``pg_restore``); see the README.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

BUSY_TIMEOUT_MS = 15_000


class BackupError(Exception):
    """A backup that could not be made; ``str()`` says why and what to do."""


@dataclass(frozen=True)
class Backup:
    path: Path
    tickets: int
    size_bytes: int
    seconds: float


def sqlite_path(url: str, schema: str | None = None) -> Path:
    """The file behind a ``sqlite+aiosqlite:///path`` URL; raises :class:`BackupError` for anything else."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise BackupError(pg_dump_advice(url, schema))
    if not parsed.database or parsed.database == ":memory:":
        raise BackupError("the database is in memory: there is no file to back up")
    return Path(parsed.database)


def pg_dump_advice(url: str, schema: str | None = None) -> str:
    """How to back up (and restore) a PostgreSQL desk, with the password left out."""
    parsed = make_url(url)
    def dsn(database: str | None) -> str:
        return URL.create("postgresql", username=parsed.username, host=parsed.host, port=parsed.port,
                          database=database).render_as_string(hide_password=False)

    only = f" --schema={schema}" if schema else ""
    restored = f"{parsed.database or 'ithelp'}_restored"
    return ("ithelp db backup copies SQLite databases; this desk is on PostgreSQL, which has its own tools:\n"
            f'  pg_dump --format=custom{only} --file=ithelp-$(date +%F).dump "{dsn(parsed.database)}"\n'
            f"and to restore into a new, empty database (createdb {restored}):\n"
            f'  pg_restore --no-owner --dbname="{dsn(restored)}" ithelp-YYYY-MM-DD.dump\n'
            "(the password comes from PGPASSWORD or ~/.pgpass). The README's \"Backups\" section has the "
            "restore drill.")


def backup_sqlite(source: Path, target: Path, *, overwrite: bool = False) -> Backup:
    """Copy the live database at ``source`` to ``target``; raises :class:`BackupError` with a plain reason."""
    if not source.exists():
        raise BackupError(f"{source} does not exist: check database.url in app.yaml")
    if target.exists() and source.resolve() == target.resolve():
        raise BackupError(f"{target} is the live database itself; back up to another file")
    if target.exists() and not overwrite:
        raise BackupError(f"{target} already exists; choose another name or pass --force to replace it")
    started = time.monotonic()
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        with _connect(source) as live, _connect(partial) as copy:
            live.backup(copy)  # pages=-1: one step, one snapshot
            check = copy.execute("PRAGMA integrity_check").fetchone()
            if check is None or check[0] != "ok":
                raise BackupError(f"the copy failed its integrity check ({check}); {target} was not written")
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            tickets = int(copy.execute("SELECT count(*) FROM tickets").fetchone()[0])
        os.replace(partial, target)
    except sqlite3.Error as exc:
        raise BackupError(f"backing up {source} failed: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return Backup(target, tickets, target.stat().st_size, time.monotonic() - started)


class _connect:
    """A sqlite3 connection that is closed (not just committed) on leaving the block."""

    def __init__(self, path: Path) -> None:
        # Not mode=ro: a read-only connection can't open a WAL database whose server has stopped (no -shm file).
        self.connection = sqlite3.connect(path.resolve().as_uri(), uri=True, timeout=BUSY_TIMEOUT_MS / 1000)

    def __enter__(self) -> sqlite3.Connection:
        return self.connection

    def __exit__(self, *exc: object) -> None:
        self.connection.close()
