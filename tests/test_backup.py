"""``ithelp db backup`` (issue #22): an online SQLite backup taken while the server answers signed ``/ithelp``
requests is a consistent snapshot that passes ``PRAGMA integrity_check`` and restores (the README's drill);
on PostgreSQL the command explains ``pg_dump`` without echoing the password."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from bot.cli import main
from bot.clock import ManualClock
from bot.simulators.slack_api import FakeSlackApi
from store.db import Database
from store.models import Person, Ticket, TicketEvent
from tests.conftest import DatabaseFactory
from tests.harness import running_server
from tests.slack_harness import SlackBot

USERS = [f"UBACKUP{i}" for i in range(4)]


class Answers:
    """When each ``/ithelp`` was answered; a test waits on it instead of polling."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._changed = asyncio.Condition()

    async def add(self) -> None:
        async with self._changed:
            self.times.append(time.monotonic())
            self._changed.notify_all()

    async def wait(self, enough: Callable[[list[float]], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: enough(self.times))


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    factory = DatabaseFactory("sqlite", tmp_path)
    yield await factory.create()
    await factory.cleanup()


def config_for(tmp_path: Path, db_file: Path, name: str = "app.yaml") -> str:
    path = tmp_path / name
    path.write_text(f"database:\n  url: sqlite+aiosqlite:///{db_file}\n")
    return str(path)


def db_file(db: Database) -> Path:
    assert db.url.database
    return Path(db.url.database)


async def years_of_history(db: Database, clock: ManualClock, tickets: int = 30_000) -> None:
    """Closed tickets as the desk leaves them, so the backup has a few megabytes to copy."""
    now = clock.now() - timedelta(days=400)
    async with db.transaction() as session:
        await session.execute(insert(Person), [{
            "platform": "slack", "platform_user_id": f"UOLD{i}", "display_name": f"Old {i}", "is_agent": False,
            "created_at": now, "updated_at": now} for i in range(100)])
        await session.execute(insert(Ticket), [{
            "requester_id": 1 + i % 100, "origin_platform": "slack", "summary": f"Old problem {i}",
            "description": "Something broke a long time ago " * 4, "priority": "P3", "status": "closed",
            "calendar": "london", "created_at": now, "updated_at": now, "resolved_at": now, "closed_at": now,
        } for i in range(tickets)])
        await session.execute(insert(TicketEvent), [{
            "ticket_id": 1 + i, "at": now, "actor_id": 1 + i % 100, "kind": "opened",
            "payload": {"summary": f"Old problem {i}"}} for i in range(tickets)])


def snapshot_facts(path: Path) -> tuple[str, list[Any], int, int]:
    """(integrity_check, foreign_key_check rows, tickets, tickets set up but missing their "opened" event)."""
    with sqlite3.connect(path) as backup:
        integrity = backup.execute("PRAGMA integrity_check").fetchone()[0]
        foreign = backup.execute("PRAGMA foreign_key_check").fetchall()
        tickets = backup.execute("SELECT count(*) FROM tickets").fetchone()[0]
        # A ticket's opening (flag cleared + its event) is one transaction: a consistent copy has both or neither.
        torn = backup.execute("SELECT count(*) FROM tickets t WHERE NOT t.setup_pending AND NOT EXISTS "
                              "(SELECT 1 FROM ticket_events e WHERE e.ticket_id = t.id AND e.kind = 'opened')"
                              ).fetchone()[0]
    return integrity, foreign, tickets, torn


async def test_a_backup_taken_while_the_server_takes_tickets_is_a_consistent_snapshot_that_restores(
    sqlite_db: Database, clock: ManualClock, make_config: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    await years_of_history(sqlite_db, clock)
    answered = Answers()
    async with FakeSlackApi() as slack:
        for user in USERS:
            slack.add_user(user, real_name=f"Backup {user}")
        config = make_config()
        config = config.model_copy(update={"slack": config.slack.model_copy(update={"api_url": slack.url})})
        async with running_server(config, sqlite_db, clock) as server:
            bot = SlackBot(server, slack)
            stop = asyncio.Event()

            async def keep_asking(user: str) -> None:
                n = 0
                while not stop.is_set():
                    status, _ = await bot.command(f"Printer {n} on floor 2 is jammed", user)
                    assert status == 200
                    await answered.add()
                    n += 1

            writers = [asyncio.create_task(keep_asking(user)) for user in USERS]
            await answered.wait(lambda times: len(times) >= 20)
            before = await count_tickets(sqlite_db)
            started = time.monotonic()
            target = tmp_path / "backup.db"
            code = await asyncio.to_thread(main, ["db", "backup", str(target), "--config",
                                                  config_for(tmp_path, db_file(sqlite_db))])
            finished = time.monotonic()
            after = await count_tickets(sqlite_db)
            await answered.wait(lambda times: len([t for t in times if t > finished]) >= 20)  # and carries on
            stop.set()
            await asyncio.gather(*writers)
    assert code == 0 and "integrity ok" in capsys.readouterr().out
    during = [t for t in answered.times if started <= t <= finished]
    assert during, "no request was answered while the backup ran"
    integrity, foreign, tickets, torn = snapshot_facts(target)
    assert integrity == "ok" and foreign == [] and torn == 0
    assert before <= tickets <= after
    assert not await asyncio.to_thread(Path(f"{target}-wal").exists)  # one self-contained file

    # The restore drill: the copy becomes a database, is brought up to date and serves a report.
    restored = tmp_path / "restored.db"
    shutil.copy(target, restored)
    restored_config = config_for(tmp_path, restored, "restored.yaml")
    assert await asyncio.to_thread(main, ["db", "upgrade", "--config", restored_config]) == 0
    assert await asyncio.to_thread(main, ["report", "--since", "2000-01-01", "--format", "json",
                                          "--config", restored_config]) == 0
    assert '"opened"' in capsys.readouterr().out
    assert snapshot_facts(restored)[2] == tickets


async def count_tickets(db: Database) -> int:
    from sqlalchemy import func, select

    async with db.reading() as session:
        return int(await session.scalar(select(func.count()).select_from(Ticket)) or 0)


async def test_an_existing_file_and_the_live_database_itself_are_refused(
    sqlite_db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = config_for(tmp_path, db_file(sqlite_db))
    existing = tmp_path / "kept.db"
    existing.write_text("last week's backup")
    assert main(["db", "backup", str(existing), "--config", config]) == 1
    assert "already exists; choose another name or pass --force" in capsys.readouterr().err
    assert existing.read_text() == "last week's backup"
    assert main(["db", "backup", str(existing), "--force", "--config", config]) == 0
    assert main(["db", "backup", str(db_file(sqlite_db)), "--force", "--config", config]) == 1
    assert "is the live database itself" in capsys.readouterr().err


def test_on_postgresql_it_explains_pg_dump_and_restore_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "app.yaml"
    config.write_text("database:\n  url: postgresql+asyncpg://ithelp:s3cret-pw@db.internal:5432/ithelp\n")
    assert main(["db", "backup", str(tmp_path / "x.dump"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert '--file=ithelp-$(date +%F).dump "postgresql://ithelp@db.internal:5432/ithelp"' in err
    assert "pg_restore --no-owner" in err and "restore drill" in err
    assert "s3cret-pw" not in err
    assert not (tmp_path / "x.dump").exists()
