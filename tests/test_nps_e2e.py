"""The NPS pulse over real HTTP, in Slack and in Teams: who is asked, answering and changing the answer, refusals,
the cooldown it shares with CSAT polls, and the report's NPS figure.

Periods in these tests start on 20 Nov 2026 at 10:00 London time and last 30 days, so the round for the
period the clock starts in (Mon 23 Nov) runs on 20 Dec at 10:00; the tests get there by moving the clock.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.config import AppConfig, SlackConfig, TeamsConfig
from bot.privacy.export import export_person
from bot.routing import Action, Form
from bot.server import Server
from bot.simulators import slack_requests as rq
from bot.simulators import teams_activities as ta
from bot.simulators.bot_connector import FakeBotConnector
from bot.simulators.http import post
from store.db import Database
from store.models import Person
from store.nps_models import NpsPulse
from store.survey_models import Survey
from surveys.report import render_html, render_jsonl, render_table
from surveys.report_aggregate import compute_report
from tests.harness import running_server
from tests.slack_harness import ALICE, BOB, MALLORY, REQUESTER, SECRET, SlackBot

NPS = """
nps:
  enabled: true
  every: 30d
  expire_after: 14d
  start: 2026-11-20
surveys:
  cooldown: 14d
"""
ROUND_AT = datetime(2026, 12, 20, 10, 0, tzinfo=UTC)


@pytest.fixture
def slack_extra_config() -> str:
    return NPS


# -- Slack ------------------------------------------------------------------------------------------
def pulse_posts(bot: SlackBot) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls_to("chat.postMessage")
            if any(str(b.get("block_id", "")).startswith("pulse:") for b in c.get("blocks") or [])]


async def pulses(db: Database) -> list[tuple[str, int | None, str]]:
    """(platform user id, score, status) of every pulse, oldest first."""
    async with db.transaction() as session:
        rows = await session.execute(select(Person.platform_user_id, NpsPulse.score, NpsPulse.status)
                                     .join(Person, Person.id == NpsPulse.person_id).order_by(NpsPulse.id))
        return [tuple(row) for row in rows.tuples()]  # type: ignore[misc]


async def pulse_id_of(db: Database, user: str) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(NpsPulse.id).join(Person, Person.id == NpsPulse.person_id).where(
            Person.platform_user_id == user)) or 0)


async def at(bot: SlackBot, clock: ManualClock, when: datetime) -> None:
    clock.set(when)
    await bot.settle()


async def resolve(bot: SlackBot, ticket_id: int) -> None:
    await bot.click(Action.CLAIM, str(ticket_id), ALICE)
    status, _ = await bot.send(rq.view_submission(Form.RESOLVE_NOTE.value, {"note": {"input": "Fixed"}}, ALICE, SECRET,
                                                  private_metadata=str(ticket_id)))
    assert status == 200
    await bot.settle()


def buttons(blocks: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [(e["action_id"], e["value"], e.get("style")) for b in blocks if b["type"] == "actions"
            for e in b["elements"]]


async def test_slack_the_pulse_goes_to_active_requesters_only_and_is_answered_changed_and_closed(
    bot: SlackBot, clock: ManualClock, db: Database
) -> None:
    await bot.command("Printer prints blank pages")  # Rita files a ticket this period; Alice only works on it
    await bot.settle()
    [ticket] = await bot.tickets()
    await bot.click(Action.CLAIM, str(ticket.id), ALICE)
    await at(bot, clock, ROUND_AT - timedelta(minutes=1))
    assert pulse_posts(bot) == []  # the round runs when the period ends, not before

    await at(bot, clock, ROUND_AT)
    [post_] = pulse_posts(bot)
    assert post_["channel"] == REQUESTER
    assert "How likely are you to recommend the IT desk to a colleague?" in json.dumps(post_["blocks"])
    pulse_id = await pulse_id_of(db, REQUESTER)
    assert buttons(post_["blocks"]) == [(Action.NPS_SCORE.value, f"{pulse_id}:{n}", None) for n in range(11)]
    assert await pulses(db) == [(REQUESTER, None, "sent")]
    ts = bot.slack.messages[f"D{REQUESTER}"][-1]["ts"]

    await bot.click(Action.NPS_SCORE, f"{pulse_id}:9", REQUESTER, channel_id=f"D{REQUESTER}", message_ts=ts)
    await bot.settle()
    assert await pulses(db) == [(REQUESTER, 9, "answered")]
    update = [c for c in bot.slack.calls_to("chat.update") if c["ts"] == ts][-1]
    assert "You answered 9 of 10" in json.dumps(update["blocks"])
    assert (Action.NPS_SCORE.value, f"{pulse_id}:9", "primary") in buttons(update["blocks"])

    await bot.click(Action.NPS_SCORE, f"{pulse_id}:6", REQUESTER, channel_id=f"D{REQUESTER}", message_ts=ts)
    await bot.settle()
    assert await pulses(db) == [(REQUESTER, 6, "answered")]
    update = [c for c in bot.slack.calls_to("chat.update") if c["ts"] == ts][-1]
    assert "You answered 6 of 10" in json.dumps(update["blocks"])
    assert len(pulse_posts(bot)) == 1  # every change edits the one message

    await bot.click(Action.NPS_SCORE, f"{pulse_id}:10", MALLORY, channel_id=f"D{REQUESTER}", message_ts=ts)
    [refusal] = await bot.slack.wait_for_calls("chat.postEphemeral", 1)
    assert refusal["user"] == MALLORY and "sent to someone else" in refusal["text"]
    assert await pulses(db) == [(REQUESTER, 6, "answered")]

    await at(bot, clock, ROUND_AT + timedelta(days=14, minutes=1))
    closed = [c for c in bot.slack.calls_to("chat.update") if c["ts"] == ts][-1]
    assert "has closed" in json.dumps(closed["blocks"]) and buttons(closed["blocks"]) == []
    await bot.click(Action.NPS_SCORE, f"{pulse_id}:10", REQUESTER, channel_id=f"D{REQUESTER}", message_ts=ts)
    refusals = await bot.slack.wait_for_calls("chat.postEphemeral", 2)
    assert refusals[1]["user"] == REQUESTER and "closed on 03 Jan 2027" in refusals[1]["text"]
    assert await pulses(db) == [(REQUESTER, 6, "expired")]
    assert {c["channel"] for c in pulse_posts(bot)} == {REQUESTER}


async def test_slack_the_cooldown_holds_a_pulse_after_a_csat_poll_and_a_csat_poll_after_a_pulse(
    bot: SlackBot, clock: ManualClock, db: Database
) -> None:
    await bot.command("VPN drops every hour", user=BOB)  # Bob: no CSAT poll, asked at the round
    await at(bot, clock, ROUND_AT - timedelta(days=5))
    await bot.command("Printer prints blank pages")
    await bot.settle()
    rita_ticket = (await bot.tickets())[-1]
    await resolve(bot, rita_ticket.id)  # Rita's CSAT poll goes out 5 days before the round
    async with db.transaction() as session:
        assert (await session.execute(select(Survey.status))).scalars().all() == ["sent"]

    await at(bot, clock, ROUND_AT)
    assert [c["channel"] for c in pulse_posts(bot)] == [BOB]
    # Bob was asked at the round: a ticket of his resolved a week later gets no CSAT poll...
    await at(bot, clock, ROUND_AT + timedelta(days=7))
    await bot.command("Monitor flickers", user=BOB)
    await bot.settle()
    await resolve(bot, (await bot.tickets())[-1].id)
    await at(bot, clock, ROUND_AT + timedelta(days=9) - timedelta(minutes=1))
    assert [c["channel"] for c in pulse_posts(bot)] == [BOB]  # 14 days after her poll is 9 days after the round
    await at(bot, clock, ROUND_AT + timedelta(days=9))
    assert [c["channel"] for c in pulse_posts(bot)] == [BOB, REQUESTER]
    # ... and one resolved once the cooldown is over does.
    await at(bot, clock, ROUND_AT + timedelta(days=15))
    await bot.command("Monitor flickers again", user=BOB)
    await bot.settle()
    await resolve(bot, (await bot.tickets())[-1].id)
    async with db.transaction() as session:
        polled = (await session.execute(select(Person.platform_user_id).join(
            Survey, Survey.requester_id == Person.id).order_by(Survey.id))).scalars().all()
    assert polled == [REQUESTER, BOB]


async def test_slack_the_report_shows_nps_per_period_next_to_csat_from_known_answers(
    bot: SlackBot, clock: ManualClock, db: Database
) -> None:
    people = {REQUESTER: 10, ALICE: 9, BOB: 7, MALLORY: 3}  # 2 promoters, 1 passive, 1 detractor: NPS +25
    for user in people:
        await bot.command(f"Laptop fan is loud ({user})", user=user)
    await at(bot, clock, ROUND_AT)
    assert len(pulse_posts(bot)) == 4
    for user, score in people.items():
        await bot.click(Action.NPS_SCORE, f"{await pulse_id_of(db, user)}:{score}", user, channel_id=f"D{user}")
    await bot.settle()
    since, until = ROUND_AT - timedelta(days=30), ROUND_AT + timedelta(days=20)
    report = await compute_report(db, since=since, until=until, by=None)
    summary = report.total.summary()
    assert (summary["nps"], summary["nps_promoters"], summary["nps_passives"], summary["nps_detractors"],
            summary["nps_sent"]) == (25.0, 2, 1, 1, 4)
    table = render_table(report)
    lines = table.splitlines()
    [csat_at] = [i for i, line in enumerate(lines) if line.startswith("CSAT %")]
    [nps_at] = [i for i, line in enumerate(lines) if line.startswith("NPS  ")]
    assert lines[nps_at].split()[-1] == "25" and 0 < nps_at - csat_at <= 6  # with the CSAT rows
    by_week = await compute_report(db, since=since, until=until, by="week")
    assert {name: m.nps for name, m in by_week.groups.items() if m.nps_sent} == {"2026-W51": 25.0}
    assert json.loads(render_jsonl(by_week).splitlines()[0])["nps"] == 25.0
    page = render_html(by_week)
    assert '<div class="label">NPS</div><div class="value">+25</div>' in page and "<th scope=row>NPS</th>" in page
    # An access request shows each person the score they gave.
    out = io.StringIO()
    await export_person(db, clock, f"slack:{MALLORY}", out, by="dpo")
    assert [(p["score"], p["status"]) for p in json.loads(out.getvalue())["nps_pulses"]] == [(3, "answered")]
    # The managers' weekly summary says it next to CSAT.
    from zoneinfo import ZoneInfo

    from surveys.weekly import summary_lines

    _, lines = summary_lines(by_week.groups["2026-W51"], since, until, ZoneInfo("Europe/London"))
    assert lines[0].startswith("CSAT")
    assert lines[1] == "NPS +25 (2 promoters, 1 passives, 1 detractors; 4 of 4 answered)"
    # A period without pulses has no NPS rather than zero.
    earlier = await compute_report(db, since=since - timedelta(days=30), until=since, by=None)
    assert earlier.total.summary()["nps"] is None


async def test_the_pulse_is_off_by_default(make_desk: Callable[..., Any], config: AppConfig, clock: ManualClock,
                                           make_ticket: Any, db: Database) -> None:
    from store.models import Timer

    assert not config.nps.enabled
    desk = make_desk()
    await make_ticket("Printer jammed")
    for _ in range(3):
        clock.advance(timedelta(days=100))
        await desk.timers.tick()
    async with db.reading() as session:
        assert (await session.execute(select(NpsPulse))).first() is None
        assert (await session.execute(select(Timer).where(Timer.kind.like("nps.%")))).first() is None


async def test_two_replicas_ask_each_active_requester_once(make_desk: Callable[..., Any], make_config: Any,
                                                            clock: ManualClock, db: Database) -> None:
    from bot.people import PersonRef
    from bot.tickets import Origin
    from store.models import OutboxMessage

    config = make_config(NPS)
    replicas = [make_desk(app_config=config, replica=name) for name in ("a", "b")]
    for n, desk in enumerate(replicas * 2):  # each replica opens tickets for both people
        await desk.tickets.open(PersonRef("slack", ("U1", "U2")[n % 2]), f"Printer {n}", origin=Origin("slack"))
    clock.set(ROUND_AT)
    for _ in range(2):
        for desk in replicas:
            await desk.timers.tick()
    async with db.reading() as session:
        assert sorted(await pulses(db)) == [("U1", None, "sent"), ("U2", None, "sent")]
        kinds = (await session.execute(select(OutboxMessage.target).where(OutboxMessage.kind == "pulse"))).scalars()
        assert sorted(kinds) == ["slack:user:U1", "slack:user:U2"]


# -- Teams ------------------------------------------------------------------------------------------
PERSONAL = "a:1personal-chat"
REQUESTER_AAD = "6f1c2d3e-0000-4000-8000-00000000a1a1"
OTHER: ta.Where = {"aad_object_id": "aad-other-1", "user_id": "29:other", "user_name": "Olga Other",
                   "conversation_id": "a:1other-chat"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotConnector]:
    from jsonschema.exceptions import best_match

    from bot.renderers import teams_card_parts
    from tests.test_teams_e2e import _validator, cards_in

    async with FakeBotConnector() as connector:
        yield connector
    for call in connector.activities:  # every card, pulses included, is valid Adaptive Card 1.5
        for card in cards_in(call):
            errors = list(_validator().iter_errors({k: v for k, v in card.items() if k != "msteams"}))
            assert not errors, f"{call.method} {call.path}: {best_match(errors).message}"
            assert teams_card_parts.card_size(card) < 40_000


@pytest.fixture
async def teams(make_config: Callable[..., AppConfig], fake: FakeBotConnector, db: Database,
                clock: ManualClock) -> AsyncIterator[Server]:
    config = make_config(NPS).model_copy(update={
        "slack": SlackConfig(),
        "teams": TeamsConfig(enabled=True, triage_conversation="19:triage@thread.tacv2", service_url=fake.service_url),
    })
    async with running_server(config, db, clock) as server:
        yield server


async def send(server: Server, activity: dict[str, Any]) -> int:
    status, _ = await post(server.url + "/api/messages", json.dumps(activity).encode(),
                           {"Content-Type": "application/json"})
    return status


async def settle(server: Server, clock: ManualClock, when: datetime | None = None) -> None:
    if when is not None:
        clock.set(when)
    assert server.engine is not None
    await server.engine.tick()


def pulse_cards(fake: FakeBotConnector, conversation: str) -> list[tuple[str, dict[str, Any]]]:
    """(activity id, card) of every pulse posted to ``conversation``."""
    found = []
    for call in fake.activities:
        if call.ok and call.method == "POST" and call.conversation_id == conversation and call.body:
            for attachment in call.body.get("attachments") or []:
                if Action.NPS_SCORE.value in json.dumps(attachment):
                    assert isinstance(call.response, dict)
                    found.append((str(call.response["id"]), attachment["content"]))
    return found


def submits(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [a["data"] for block in card["body"] if block["type"] == "ActionSet" for a in block["actions"]]


def said_to(fake: FakeBotConnector, conversation: str) -> str:
    return json.dumps(fake.sent_to(conversation), ensure_ascii=False)


async def test_teams_the_pulse_goes_to_active_requesters_only_and_is_answered_changed_and_closed(
    teams: Server, fake: FakeBotConnector, db: Database, clock: ManualClock
) -> None:
    assert await send(teams, ta.message("VPN keeps disconnecting", service_url=fake.service_url)) == 201
    await settle(teams, clock, ROUND_AT)
    [(activity_id, card)] = pulse_cards(fake, PERSONAL)
    assert "How likely are you to recommend the IT desk to a colleague?" in json.dumps(card)
    pulse_id = await pulse_id_of(db, REQUESTER_AAD)
    assert [d["value"] for d in submits(card)] == [f"{pulse_id}:{n}" for n in range(11)]
    # Olga files her first ticket only after the period: she is not asked in this round.
    assert await send(teams, ta.message("Mouse is sticky", service_url=fake.service_url, **OTHER)) == 201
    await settle(teams, clock)
    assert pulse_cards(fake, "a:1other-chat") == []

    def click(score: int, **who: Any) -> dict[str, Any]:
        return ta.message(None, service_url=fake.service_url, reply_to_id=activity_id,
                          value={"action": Action.NPS_SCORE.value, "value": f"{pulse_id}:{score}"}, **who)

    assert await send(teams, click(8)) == 201
    await settle(teams, clock)
    assert await pulses(db) == [(REQUESTER_AAD, 8, "answered")]
    shown = fake.activity(PERSONAL, activity_id)
    assert shown is not None and "You answered 8 of 10" in json.dumps(shown)
    assert await send(teams, click(2)) == 201
    await settle(teams, clock)
    assert await pulses(db) == [(REQUESTER_AAD, 2, "answered")]
    assert "You answered 2 of 10" in json.dumps(fake.activity(PERSONAL, activity_id))
    assert len(pulse_cards(fake, PERSONAL)) == 1 and fake.updates_to(PERSONAL)

    assert await send(teams, click(10, **OTHER)) == 201
    assert "sent to someone else" in said_to(fake, "a:1other-chat")
    assert await pulses(db) == [(REQUESTER_AAD, 2, "answered")]

    await settle(teams, clock, ROUND_AT + timedelta(days=14, minutes=1))
    closed = fake.activity(PERSONAL, activity_id)
    assert "has closed" in json.dumps(closed) and "ActionSet" not in json.dumps(closed)
    assert await send(teams, click(10)) == 201
    assert "closed on 03 Jan 2027" in said_to(fake, PERSONAL)
    assert await pulses(db) == [(REQUESTER_AAD, 2, "expired")]


async def test_teams_the_cooldown_holds_a_pulse_after_a_csat_poll(
    teams: Server, fake: FakeBotConnector, db: Database, clock: ManualClock
) -> None:
    assert await send(teams, ta.message("Laptop won't charge", service_url=fake.service_url)) == 201
    await settle(teams, clock, ROUND_AT - timedelta(days=3))
    assert teams.desk is not None
    from bot.people import PersonRef

    [ticket] = (await teams.desk.tickets.tickets_of(PersonRef("teams", REQUESTER_AAD), open_only=True))
    await teams.desk.tickets.resolve(ticket.id, PersonRef("teams", "aad-agent-1", "Ada Agent"), "New charger")
    await settle(teams, clock)
    async with db.transaction() as session:
        assert (await session.execute(select(Survey.status))).scalars().all() == ["sent"]
    await settle(teams, clock, ROUND_AT)
    assert pulse_cards(fake, PERSONAL) == [] and await pulses(db) == [(REQUESTER_AAD, None, "pending")]
    await settle(teams, clock, ROUND_AT + timedelta(days=11))
    assert len(pulse_cards(fake, PERSONAL)) == 1 and await pulses(db) == [(REQUESTER_AAD, None, "sent")]
