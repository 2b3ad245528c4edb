"""``ithelp outbox list|retry`` through the command line's entry point, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from store.models import OutboxMessage
from store.queries import enqueue_message
from tests.cli_harness import cli_config, ithelp


def listed(table: str) -> dict[int, str]:
    """id -> state of the rows of an ``outbox list`` table."""
    return {int(cells[0]): cells[1] for cells in (line.split() for line in table.splitlines()[2:])
            if len(cells) >= 8 and cells[0].isdigit() and ":" in cells[2]}


@pytest.fixture
async def outbox(db: Any, clock: Any, make_ticket: Any) -> dict[str, int]:
    """A delivered message, a pending one, one failing and retrying, and two dead letters; their ids."""
    ticket = await make_ticket("Keyboard types double letters")
    now = clock.now()
    states = {
        "delivered": {"delivered_at": now},
        "pending": {},
        "failing": {"attempts": 2, "last_error": "Slack server error 503: service_unavailable"},
        "dead-revoked": {"attempts": 0, "dead_at": now, "last_error": "Slack refused the bot's token (token_revoked)"},
        "dead-refused": {"attempts": 1, "dead_at": now, "last_error": "Slack refused: channel_not_found"},
    }
    ids: dict[str, int] = {}
    async with db.transaction() as session:
        for key, values in states.items():
            await enqueue_message(session, target=f"slack:user:U{key.upper()[:4]}", kind="notice",
                                  payload={"thread": "requester"}, idempotency_key=f"cli:{key}", now=now,
                                  ticket_id=ticket.id)
            ids[key] = int(await session.scalar(select(OutboxMessage.id).where(
                OutboxMessage.idempotency_key == f"cli:{key}")) or 0)
            if values:
                await session.execute(update(OutboxMessage).where(OutboxMessage.id == ids[key]).values(**values))
    return ids


async def test_outbox_list_shows_what_is_owed_and_list_dead_only_the_dead_letters(
    tmp_path: Path, db: Any, outbox: dict[str, int], capsys: pytest.CaptureFixture[str],
) -> None:
    config = str(cli_config(tmp_path, db))
    assert await ithelp("outbox", "list", "--config", config) == 0
    everything = capsys.readouterr().out
    assert everything.splitlines()[0].split() == ["id", "state", "target", "kind", "ticket", "attempts", "created",
                                                  "dead", "/", "next", "try", "last", "error"]
    rows = listed(everything)
    assert rows == {**{n: "pending" for n in rows if n not in outbox.values()},  # the ticket's own cards
                    outbox["pending"]: "pending", outbox["failing"]: "failing", outbox["dead-revoked"]: "dead",
                    outbox["dead-refused"]: "dead"}
    assert re.search(rf"^{outbox['dead-revoked']}\s+dead\s+slack:user:UDEAD\s+notice\s+IT-1\s+0\s+2026-11-23 09:00:00Z"
                     r"\s+2026-11-23 09:00:00Z\s+Slack refused the bot's token \(token_revoked\)$",
                     everything, re.MULTILINE), everything
    assert everything.rstrip().endswith(
        f"{len(rows)} undelivered messages; `ithelp outbox retry ID|--all-dead` sends them again")

    assert await ithelp("outbox", "list", "--dead", "--config", config) == 0
    dead = capsys.readouterr().out
    assert listed(dead) == {outbox["dead-revoked"]: "dead", outbox["dead-refused"]: "dead"}, dead
    assert "2 dead letters" in dead


async def test_outbox_retry_puts_a_dead_letter_back_once_and_says_what_it_did(
    tmp_path: Path, db: Any, clock: Any, outbox: dict[str, int], capsys: pytest.CaptureFixture[str],
) -> None:
    config = str(cli_config(tmp_path, db))
    revoked, refused, pending = outbox["dead-revoked"], outbox["dead-refused"], outbox["pending"]
    assert await ithelp("outbox", "retry", str(revoked), "--config", config) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"outbox {revoked} (notice to slack:user:UDEAD): back in the queue",
        "1 message(s) back in the queue; a running `ithelp serve` sends them within its next tick"]
    async with db.reading() as session:
        row = (await session.execute(select(OutboxMessage).where(OutboxMessage.id == revoked))).scalar_one()
    assert (row.dead_at, row.attempts, row.lease_owner, row.first_failed_at) == (None, 0, None, None)
    assert row.next_attempt_at <= clock.now()  # due at once, for any replica

    # Again, with a message still in the queue and one that does not exist: nothing changes, and it says so.
    assert await ithelp("outbox", "retry", str(revoked), str(pending), "99999", "--config", config) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"outbox {revoked}: not a dead letter (still in the queue); left as it is",
        f"outbox {pending}: not a dead letter (still in the queue); left as it is",
        "outbox 99999: no such message"]

    assert await ithelp("outbox", "retry", "--all-dead", "--config", config) == 0
    revived = capsys.readouterr().out.splitlines()
    assert revived[0] == f"outbox {refused} (notice to slack:user:UDEAD): back in the queue"
    assert await ithelp("outbox", "retry", "--all-dead", "--config", config) == 0
    assert capsys.readouterr().out.strip() == "no dead letters"
    assert await ithelp("outbox", "retry", "--config", config) == 2  # neither ids nor --all-dead
