"""The weekly summary reaches the managers' Slack channel with last week's numbers, once per week."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.people import PersonRef
from bot.simulators.slack_api import FakeSlackApi
from bot.tickets import Origin
from tests.harness import running_server

ALICE = PersonRef("slack", "UAGENT1", "Alice")
RITA = PersonRef("slack", "UREQ1", "Rita", "Europe/London")


async def test_monday_morning_summary_posts_last_weeks_grade_and_csat_once(db: Any, clock: Any,
                                                                           make_config: Any) -> None:
    async with FakeSlackApi() as slack:
        config = make_config()
        config = config.model_copy(update={"slack": config.slack.model_copy(
            update={"api_url": slack.url, "managers_channel": "C0MANAGERS"})})
        async with running_server(config, db, clock) as server:
            desk = server.desk
            assert desk is not None and server.engine is not None
            opened = await desk.tickets.open(RITA, "Laptop battery swollen", origin=Origin("slack"))
            await desk.tickets.claim(opened.ticket.id, ALICE)
            await desk.tickets.resolve(opened.ticket.id, ALICE, "Replaced the battery")
            await server.engine.tick()
            await desk.surveys.answer(opened.ticket.id, RITA, "up")
            # The following Monday, 09:00 London: every replica's cron fires; one summary goes out.
            clock.set(datetime(2026, 11, 30, 9, 0, tzinfo=UTC))
            weekly = desk.weekly
            assert await weekly.enqueue() is True
            assert await weekly.enqueue() is False
            await server.engine.tick()
            [summary] = [c for c in slack.calls_to("chat.postMessage") if c["channel"] == "C0MANAGERS"]
            text = json.dumps(summary["blocks"], ensure_ascii=False)
            assert "week of Mon 23 Nov – Sun 29 Nov: grade A" in summary["text"]
            assert "CSAT 100% (1 👍 / 0 👎)" in text and "1 opened, 1 resolved" in text
            clock.advance(timedelta(hours=1))
            await server.engine.tick()
            assert len([c for c in slack.calls_to("chat.postMessage") if c["channel"] == "C0MANAGERS"]) == 1
