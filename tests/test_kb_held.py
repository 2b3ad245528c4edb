"""ask_first's held requests are durable: a row and a timer row, so a restart loses nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from bot.clock import ManualClock
from bot.config import AppConfig
from bot.people import PersonRef

ARTICLES = Path(__file__).parent / "data" / "kb" / "articles"
RITA = PersonRef("slack", "UREQ1", display_name="Rita")


async def test_a_held_request_is_filed_by_its_timer_after_a_restart(
        make_desk: Any, make_config: Callable[..., AppConfig], clock: ManualClock) -> None:
    from bot.tickets import Origin

    config = make_config(f"knowledge:\n  folder: {ARTICLES}\n  mode: ask_first\n  ask_timeout: 5m\n")
    before = make_desk(app_config=config)
    await before.knowledge.reindex()
    assert await before.knowledge.held.hold(RITA, "printer jammed", Origin("slack", conversation="D1"),
                                            ("test", "1")) is not None
    await before.aclose()  # the process stops with the request held

    after = make_desk(app_config=config)  # a new process on the same database
    clock.advance(timedelta(minutes=5, seconds=1))
    await after.timers.tick()
    [ticket] = await after.tickets.tickets_of(RITA, open_only=True)
    assert ticket.summary == "printer jammed"
