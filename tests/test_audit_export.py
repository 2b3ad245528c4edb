"""``ithelp audit export`` (issue #22) on both databases: every ticket event of a period with who (platform id and
name), when and what changed, as JSON lines or CSV, with the privacy log's actions merged in by time.

How far it streams (1M events with flat memory) is measured by ``bench/audit_export.py``."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.cli import main
from bot.clock import ManualClock
from bot.config import AppConfig
from bot.desk import Desk
from bot.privacy.audit import COLUMNS, export_audit
from bot.privacy.erasure import erase_person
from store.models import Person, TicketEvent
from tests.desk_story import SAM, Story, a_week_at_the_desk


@pytest.fixture
async def storied_desk(make_desk: Callable[..., Any], make_config: Callable[..., AppConfig],
                       clock: ManualClock) -> tuple[Desk, Story]:
    config = make_config()
    desk = make_desk(app_config=config)
    return desk, await a_week_at_the_desk(desk, clock, desk.surveys)


def config_file(tmp_path: Path, db: Any) -> str:
    path = tmp_path / "audit.yaml"
    path.write_text(f"database:\n  url: \"{db.url.render_as_string(hide_password=False)}\"\n"
                    f"  schema_name: {db.schema or 'null'}\n")
    return str(path)


async def stored_events(desk: Desk) -> list[tuple[Any, ...]]:
    async with desk.db.reading() as session:
        rows = await session.execute(select(TicketEvent.id, TicketEvent.at, TicketEvent.kind, Person.platform,
                                            Person.platform_user_id, Person.display_name, TicketEvent.payload)
                                     .outerjoin(Person, Person.id == TicketEvent.actor_id).order_by(TicketEvent.id))
        return [tuple(row) for row in rows]


async def test_the_export_lists_every_event_with_actor_time_and_change_in_time_order(
    storied_desk: tuple[Desk, Story], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    desk, story = storied_desk
    output = tmp_path / "audit.jsonl"
    since, until = story.started.date().isoformat(), (story.started + timedelta(days=30)).date().isoformat()
    command = ["audit", "export", "--since", since, "--until", until, "--output", str(output),
               "--config", config_file(tmp_path, desk.db)]
    assert await asyncio.to_thread(main, command) == 0
    stored = await stored_events(desk)
    assert f"wrote {len(stored)} records to {output}" in capsys.readouterr().out
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["event_id"] for r in records] == [row[0] for row in sorted(stored, key=lambda r: (r[1], r[0]))]
    by_id = {row[0]: row for row in stored}
    for record in records:
        _, at, kind, platform, user_id, name, payload = by_id[record["event_id"]]
        assert (record["at"], record["kind"], record["change"]) == (at.isoformat(), kind, payload)
        assert record["actor"] == (f"{platform}:{user_id}" if platform else None) and record["actor_name"] == name
        assert record["ticket"].startswith("IT-")
    claimed = next(r for r in records if r["kind"] == "claimed")
    assert claimed["actor"] == "slack:UAGENT1" and claimed["actor_name"] == "Alice Agent"


async def test_csv_has_a_header_and_the_change_as_json(storied_desk: tuple[Desk, Story]) -> None:
    desk, story = storied_desk
    out = StringIO()
    count = await export_audit(desk.db, out, since=story.started, until=story.started + timedelta(days=30),
                               fmt="csv")
    rows = list(csv.reader(StringIO(out.getvalue())))
    assert tuple(rows[0]) == COLUMNS and len(rows) == count + 1 == len(await stored_events(desk)) + 1
    commented = next(r for r in rows[1:] if r[3] == "commented")
    assert json.loads(commented[6])["text"] and commented[4].startswith("slack:")


async def test_a_period_holds_only_its_own_events_and_the_privacy_actions_in_it(
    storied_desk: tuple[Desk, Story], clock: ManualClock,
) -> None:
    desk, story = storied_desk
    first_day = story.started + timedelta(days=1)
    out = StringIO()
    await export_audit(desk.db, out, since=story.started, until=first_day)
    early = [json.loads(line) for line in out.getvalue().splitlines()]
    assert early and all(story.started.isoformat() <= r["at"] < first_day.isoformat() for r in early)
    assert len(early) < len(await stored_events(desk))

    clock.advance(timedelta(days=2))
    await erase_person(desk.db, clock, "slack:UREQ2", by="dpo@example.com")
    out = StringIO()
    await export_audit(desk.db, out, since=story.started, until=clock.now() + timedelta(seconds=1))
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    [erasure] = [r for r in records if r["kind"] == "privacy.erase"]
    assert erasure["actor"] == "dpo@example.com" and erasure["ticket"] is None and records[-1] == erasure
    assert SAM.user_id not in out.getvalue() and SAM.display_name not in out.getvalue()


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "lately"], '"lately" is not a period'),
    (["--since", "2026-11-02", "--until", "2026-11-01"], "must be before --until"),
])
def test_a_bad_period_is_refused_with_the_fix(args: list[str], message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "app.yaml"
    config.write_text(f"database:\n  url: sqlite+aiosqlite:///{tmp_path / 'x.db'}\n")
    assert main(["audit", "export", *args, "--config", str(config)]) == 2
    assert message in capsys.readouterr().err
