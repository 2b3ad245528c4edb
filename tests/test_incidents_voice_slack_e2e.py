"""One voice in Slack, over real HTTP: "Post update" on the incident card reaches every affected requester
once, threaded under their own ticket, and the status channel; "Resolve incident" resolves every linked ticket
with its note and polls each requester at most once (issue #20)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.incidents.report import incident_figures, render_incidents
from bot.routing import Action, Form
from bot.simulators import slack_requests as rq
from store.db import Database
from store.survey_models import Survey
from tests.incident_helpers import INCIDENTS, dumps, incidents, links, slack_buttons
from tests.slack_harness import ALICE, MALLORY, SECRET, TRIAGE, SlackBot

PEOPLE = [f"UPERSON{n}" for n in range(3)]
STATUS = "C0STATUS"


@pytest.fixture
def slack_extra_config() -> str:
    return INCIDENTS + f"  status_channel: {STATUS}\n"


async def outage(bot: SlackBot) -> tuple[int, str]:
    """INC-1 declared by Alice and three people reporting it; (incident id, its card's button value)."""
    for n, user in enumerate(PEOPLE):
        bot.slack.add_user(user, name=f"person{n}", real_name=f"Person {n}", tz="Asia/Kolkata")
    await bot.command("incident Email down in Pune", user=ALICE)
    await bot.settle()
    for user in PEOPLE:
        await bot.command("email is down in Pune", user=user)
        await bot.settle()
    card = next(c for c in bot.slack.calls_to("chat.postMessage")
                if c["channel"] == TRIAGE and "Incident:" in c["text"])
    value = dict(slack_buttons(card["blocks"]))[Action.INCIDENT_POST_UPDATE.value]
    return int(value.split(":")[1]), value


def updates_to(bot: SlackBot, user: str) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls_to("chat.postMessage")
            if c["channel"] == f"D{user}" and "Update on" in c["text"]]


async def submit(bot: SlackBot, form: Form, incident_id: int, text: str, user: str = ALICE) -> tuple[int, Any]:
    return await bot.send(rq.view_submission(form.value, {"incident_note": {"input": text}}, user, SECRET,
                                             private_metadata=str(incident_id)))


async def test_post_update_reaches_every_affected_requester_once_in_their_thread_and_the_status_channel(
    bot: SlackBot, db: Database
) -> None:
    incident_id, value = await outage(bot)
    assert len(await links(db)) == 4

    await bot.click(Action.INCIDENT_POST_UPDATE, value, ALICE)
    [opened] = await bot.slack.wait_for_calls("views.open", 1)
    assert opened["view"]["callback_id"] == Form.INCIDENT_UPDATE.value

    status, body = await submit(bot, Form.INCIDENT_UPDATE, incident_id, "Mail server restarting; ETA 10:30")
    assert status == 200 and not body
    await bot.settle()
    status, _ = await submit(bot, Form.INCIDENT_UPDATE, incident_id, "Mail is back for most people @here")
    await bot.settle()

    for user in PEOPLE:
        first, second = updates_to(bot, user)
        assert "Mail server restarting; ETA 10:30" in dumps(first["blocks"])
        assert "Mail is back for most people" in dumps(second["blocks"])
        assert "<!here>" not in dumps(second)  # a mass mention typed by the agent stays text
        # Threaded under the requester's own ticket (its DM card), not loose in the DM.
        root = next(c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == f"D{user}")
        assert first.get("thread_ts") and first["thread_ts"] == second["thread_ts"] and root is not first
    status_posts = [c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == STATUS]
    assert len(status_posts) == 2
    [incident] = await incidents(db)
    assert incident.latest_update == "Mail is back for most people @here" and incident.acknowledged_at is not None
    card = [c for c in bot.slack.calls_to("chat.update") if "Incident:" in c["text"]][-1]
    assert "Mail is back for most people" in dumps(card["blocks"]) and "4 reports" in dumps(card["blocks"])


async def test_only_agents_post_updates(bot: SlackBot) -> None:
    incident_id, value = await outage(bot)
    await bot.click(Action.INCIDENT_POST_UPDATE, value, MALLORY)
    await bot.settle()
    assert bot.slack.calls_to("views.open") == []
    _, body = await submit(bot, Form.INCIDENT_UPDATE, incident_id, "all good", user=MALLORY)
    assert body["response_action"] == "errors"
    assert "Only IT agents" in dumps(body["errors"])
    assert updates_to(bot, PEOPLE[0]) == []


async def test_resolving_the_incident_resolves_every_linked_ticket_and_polls_each_requester_once(
    bot: SlackBot, db: Database
) -> None:
    incident_id, value = await outage(bot)
    await bot.click(Action.INCIDENT_RESOLVE, value, ALICE)
    [opened] = await bot.slack.wait_for_calls("views.open", 1)
    assert opened["view"]["callback_id"] == Form.INCIDENT_RESOLVE.value

    status, _ = await submit(bot, Form.INCIDENT_RESOLVE, incident_id, "Replaced the failed mail relay")
    assert status == 200
    await bot.settle()
    await bot.settle()
    assert {t.status for t in await bot.tickets()} == {"resolved"}
    [incident] = await incidents(db)
    assert incident.status == "resolved" and incident.resolved_at is not None
    for user in PEOPLE:
        told = [c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == f"D{user}"
                and "resolved your ticket" in c["text"]]
        assert len(told) == 1 and "Replaced the failed mail relay" in dumps(told[0]["blocks"])
    async with db.transaction() as session:
        per_ticket = (await session.execute(select(Survey.ticket_id, func.count()).group_by(Survey.ticket_id))).all()
    assert per_ticket and all(count == 1 for _, count in per_ticket)
    card = [c for c in bot.slack.calls_to("chat.update") if "Incident:" in c["text"]][-1]
    assert "Resolved" in dumps(card["blocks"]) and slack_buttons(card["blocks"]) == []

    # Over: a new report of the same words is a normal ticket again.
    await bot.command("email is down in Pune", user=PEOPLE[0])
    await bot.settle()
    newest = (await bot.tickets())[-1]
    assert newest.id not in await links(db)


async def test_the_report_shows_each_incident_with_affected_count_time_to_acknowledge_and_resolve(
    bot: SlackBot, db: Database, clock: ManualClock
) -> None:
    start = clock.now()
    incident_id, _ = await outage(bot)
    clock.advance(timedelta(minutes=10))
    await submit(bot, Form.INCIDENT_UPDATE, incident_id, "Mail relay restarting")
    clock.advance(timedelta(minutes=50))
    await submit(bot, Form.INCIDENT_RESOLVE, incident_id, "Relay replaced")
    await bot.settle()

    [figures] = await incident_figures(db, since=start - timedelta(days=1), until=clock.now() + timedelta(minutes=1))
    assert (figures.number, figures.affected, figures.to_acknowledge_min, figures.to_resolve_min) == (
        "INC-1", 4, 10.0, 60.0)
    table = render_incidents([figures])
    assert "INC-1" in table and "Email down in Pune" in table and "60.0" in table


def scheduled_to(bot: SlackBot, user: str) -> list[dict[str, Any]]:
    return [c for c in updates_to(bot, user) if "IT is still working on it" in dumps(c)]


async def test_scheduled_progress_updates_come_from_the_incident_once_per_interval_to_each_requester(
    bot: SlackBot, db: Database, clock: ManualClock
) -> None:
    incident_id, _ = await outage(bot)  # a P1 incident: an update every hour, any hour

    clock.advance(timedelta(minutes=61))
    await bot.settle()
    for user in PEOPLE:
        [update] = scheduled_to(bot, user)
        assert "Update on INC-1: Email down in Pune" in update["text"] and update.get("thread_ts")
        # The linked report's own update timer stays quiet: the incident speaks for it.
        assert not [c for c in updates_to(bot, user) if "Update on IT-" in c["text"]]

    # An agent's update starts the interval again: nothing scheduled an hour after the last scheduled one ...
    clock.advance(timedelta(minutes=30))
    await submit(bot, Form.INCIDENT_UPDATE, incident_id, "Mail relay restarting")
    await bot.settle()
    clock.advance(timedelta(minutes=40))
    await bot.settle()
    assert all(len(scheduled_to(bot, user)) == 1 for user in PEOPLE)
    # ... but an hour after the agent's, quoting it.
    clock.advance(timedelta(minutes=25))
    await bot.settle()
    for user in PEOPLE:
        _first, second = scheduled_to(bot, user)
        assert "Latest update: Mail relay restarting" in dumps(second)
