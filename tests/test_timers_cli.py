"""``ithelp timers failed|retry``: work that gave up is listed and can be run again, nothing filed twice."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.engine.timers import TASK_MAX_ATTEMPTS
from store.db import Database
from store.models import Timer
from store.queries import schedule_timer
from tests.cli_harness import cli_config, ithelp
from tests.slack_harness import ALICE, REQUESTER, SlackBot

GENERAL = "C0GENERAL"
MESSAGE_TS = "1700000100.000100"


async def _timers(db: Database) -> list[Timer]:
    async with db.reading() as session:
        return list((await session.execute(select(Timer).order_by(Timer.id))).scalars())


async def test_a_reaction_filed_while_slack_was_down_for_an_hour_is_listed_and_filed_once_when_retried(
        bot: SlackBot, db: Database, clock: ManualClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bot.slack.add_message(GENERAL, MESSAGE_TS, REQUESTER, "Printer on 3 eats every page")
    attempts = TASK_MAX_ATTEMPTS
    bot.slack.fail_next("conversations.history", status=502, times=attempts)  # Slack unreachable for the hour
    status, _ = await bot.event({"type": "reaction_added", "user": ALICE, "reaction": "ticket", "item_user": REQUESTER,
                                 "item": {"type": "message", "channel": GENERAL, "ts": MESSAGE_TS}})
    assert status == 200
    for _ in range(attempts * 2):  # the engine every 5 minutes, until the task gives up (about an hour)
        await bot.settle()
        clock.advance(timedelta(minutes=5))
        if failed_timers := [t for t in await _timers(db) if t.outcome == "failed"]:
            break
    [failed] = failed_timers
    assert failed.attempts == attempts and await bot.tickets() == []

    config = cli_config(tmp_path, db)
    capsys.readouterr()
    assert await ithelp("timers", "failed", "--config", str(config)) == 0
    listing = capsys.readouterr().out
    [row] = [line.split() for line in listing.splitlines()[2:] if line.split()[1:2] == [failed.kind]]
    assert row[0] == str(failed.id) and row[3] == str(attempts) and "SlackApiError:" in row, listing
    assert "1 failed timer(s)" in listing

    # Slack is back: the operator runs it again, twice by mistake.
    assert await ithelp("timers", "retry", "--all-failed", "--config", str(config)) == 0
    assert f"timer {failed.id} ({failed.kind}): due again" in capsys.readouterr().out
    assert await ithelp("timers", "retry", str(failed.id), "--config", str(config)) == 0
    assert "not failed (still pending); left as it is" in capsys.readouterr().out
    await bot.settle()
    await bot.settle()

    [ticket] = await bot.tickets()
    assert ticket.summary == "Printer on 3 eats every page"
    acks = [c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == GENERAL and c.get("thread_ts")]
    assert len(acks) == 1 and str(acks[0]["text"]).startswith(f"<@{REQUESTER}> {ticket.number} opened")
    [timer] = [t for t in await _timers(db) if t.id == failed.id]
    assert timer.outcome == "done"
    assert await ithelp("timers", "failed", "--config", str(config)) == 0
    assert capsys.readouterr().out.strip() == "no failed timers"


async def test_retrying_names_what_it_cannot_retry_and_refuses_an_ambiguous_request(
        db: Database, clock: ManualClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with db.transaction() as session:
        await schedule_timer(session, kind="digest", due_at=clock.now(), now=clock.now())
    [pending] = await _timers(db)
    config = cli_config(tmp_path, db)

    assert await ithelp("timers", "retry", str(pending.id), "999999", "--config", str(config)) == 1
    out = capsys.readouterr().out
    assert f"timer {pending.id}: not failed (still pending); left as it is" in out
    assert "timer 999999: no such timer" in out
    assert await ithelp("timers", "retry", "--config", str(config)) == 2
    assert await ithelp("timers", "retry", "1", "--all-failed", "--config", str(config)) == 2
    assert "give timer ids or --all-failed (not both)" in capsys.readouterr().err
    [still] = await _timers(db)
    assert still.done_at is None and still.attempts == pending.attempts


def test_an_unreachable_database_is_named_without_its_password(tmp_path: Path, capsys: Any) -> None:
    from bot.cli import main
    from tests.conftest import TEST_CONFIG

    config = tmp_path / "app.yaml"
    config.write_text(TEST_CONFIG + 'database: {url: "postgresql+asyncpg://ithelp:s3cret@127.0.0.1:1/none"}\n')
    assert main(["timers", "failed", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "can't read the timers in" in err and "s3cret" not in err
