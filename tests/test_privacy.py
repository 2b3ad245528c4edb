"""Access and erasure requests (issue #22) on both databases: a person's export holds everything about them;
an erasure leaves no trace of their ids, name, email or what they typed in any row of any table, keeps the
anonymous metrics, records who asked and when, and changes nothing the second time."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from sqlalchemy import select

from bot.channels.teams import CHANNEL, PERSON, remember_conversation
from bot.clock import ManualClock
from bot.config import AppConfig
from bot.desk import Desk
from bot.people import PersonRef
from bot.privacy.erasure import HasOpenTickets, erase_person
from bot.privacy.export import PersonErased, export_person
from bot.privacy.people import PersonNotFound, RequestError
from bot.privacy.scrub import REDACTED
from bot.tickets import Origin
from store.models import OutboxMessage, Person, Ticket
from store.privacy_models import PrivacyLog
from surveys.report import compute_report
from tests.data_grep import find_everywhere
from tests.desk_story import ALICE, ESCALATION, OLGA, RITA, SAM, Story, a_week_at_the_desk

OLGA_TEAMS_ID = "29:1olga-teams-chat-id"


@pytest.fixture
async def storied_desk(make_desk: Callable[..., Any], make_config: Callable[..., AppConfig],
                       clock: ManualClock) -> AsyncIterator[tuple[Desk, Story]]:
    """A desk with every feature installed after a week of work, including a P1 that paged Alice."""
    desk = make_desk(app_config=make_config(ESCALATION))
    story = await a_week_at_the_desk(desk, clock, desk.surveys, desk.escalation)
    async with desk.db.transaction() as session:  # Olga as the Teams adapter keeps her: a 1:1 and a channel
        user = {"id": OLGA_TEAMS_ID, "name": OLGA.display_name, "aadObjectId": OLGA.user_id}
        await remember_conversation(session, key=OLGA.user_id, kind=PERSON, now=clock.now(), reference={
            "user": user, "conversation": {"id": "a:1personal-olga"}, "serviceUrl": "https://smba.example/"})
        await remember_conversation(session, key="19:general@thread.tacv2", kind=CHANNEL, now=clock.now(),
                                    reference={"user": user, "conversation": {"id": "19:general@thread.tacv2"}})
    yield desk, story


def identity(person: Any) -> list[str]:
    return [person.user_id, person.display_name, *([person.email] if person.email else [])]


async def erase(desk: Desk, who: Any, **kw: Any) -> Any:
    return await erase_person(desk.db, desk.clock, f"{who.platform}:{who.user_id}", by="dpo@example.com", **kw)


async def export(desk: Desk, who: Any) -> dict[str, Any]:
    out = StringIO()
    await export_person(desk.db, desk.clock, f"{who.platform}:{who.user_id}", out, by="dpo@example.com")
    return dict(json.loads(out.getvalue()))


async def figures(desk: Desk, story: Story) -> Any:
    since, until = story.started - timedelta(days=1), story.started + timedelta(days=14)
    report = await compute_report(desk.db, desk.config, since=since, until=until, by="agent")
    return report.total.summary(), sorted(repr(m.summary()) for m in report.groups.values())


async def test_an_access_request_exports_everything_held_about_the_requester(
    storied_desk: tuple[Desk, Story],
) -> None:
    desk, story = storied_desk
    document = await export(desk, RITA)
    assert document["person"]["address"] == "slack:UREQ1" and document["person"]["email"] == RITA.email
    tickets = {t["id"]: t for t in document["tickets"]}
    assert set(tickets) == {story.tickets["printer"], story.tickets["access"]}
    printer = tickets[story.tickets["printer"]]
    assert printer["roles"] == ["requester"] and printer["summary"] == "Printer on 3rd floor is jammed"
    said = [e["change"].get("text") for e in printer["events"] if e["kind"] == "commented"]
    assert "Yes, still jammed; my badge number is 88123" in said
    assert {e["actor"] for e in printer["events"]} >= {"slack:UREQ1", "slack:UAGENT1"}
    assert printer["survey"]["comment"] == "Took all day, my payroll run was late"
    assert document["surveys"] and document["messages_to_them"]
    assert all(m["target"] == "slack:user:UREQ1" for m in document["messages_to_them"])
    assert document["conversation_references"] == []


async def test_an_agents_export_holds_the_tickets_they_worked_and_a_teams_users_their_chat_references(
    storied_desk: tuple[Desk, Story],
) -> None:
    desk, story = storied_desk
    alice = await export(desk, ALICE)
    assert {t["id"] for t in alice["tickets"]} == {story.tickets[n] for n in ("printer", "access", "outage")}
    assert all(t["roles"] == ["assignee"] for t in alice["tickets"])
    assert alice["pages_to_them"] and [e["acknowledged_by"] for e in alice["escalations_acknowledged"]] == [
        "Alice Agent"]
    olga = await export(desk, OLGA)
    assert [r["key"] for r in olga["conversation_references"]] == [OLGA.user_id]
    async with desk.db.reading() as session:
        logged = (await session.execute(select(PrivacyLog).where(PrivacyLog.action == "privacy.export"))).scalars()
        assert [row.actor for row in logged] == ["dpo@example.com", "dpo@example.com"]


async def test_an_erasure_leaves_no_trace_of_the_person_in_any_table_and_keeps_the_metrics(
    storied_desk: tuple[Desk, Story],
) -> None:
    desk, story = storied_desk
    before = await figures(desk, story)
    traces = identity(RITA) + story.typed[RITA.user_id]
    assert {f.table for f in await find_everywhere(desk.db, traces)} >= {
        "people", "tickets", "ticket_events", "surveys", "outbox", "inbound_dedup"}
    done = await erase(desk, RITA)
    assert done.committed and done.pseudonym and done.pseudonym.startswith("Former user #")
    leftovers = await find_everywhere(desk.db, traces)
    assert leftovers == [], "\n".join(map(str, leftovers))
    assert await figures(desk, story) == before
    assert await find_everywhere(desk.db, identity(SAM) + story.typed[SAM.user_id][:1])  # others untouched
    async with desk.db.reading() as session:
        [logged] = (await session.execute(select(PrivacyLog).where(PrivacyLog.action == "privacy.erase"))).scalars()
        tickets = (await session.execute(select(Ticket).where(Ticket.id == story.tickets["printer"]))).scalars()
        assert next(tickets).summary == REDACTED
    assert logged.actor == "dpo@example.com" and logged.subject and logged.subject.startswith("sha256$")


async def test_erasing_an_agent_removes_their_words_from_other_peoples_tickets(
    storied_desk: tuple[Desk, Story],
) -> None:
    desk, story = storied_desk
    traces = identity(ALICE) + story.typed[ALICE.user_id]
    assert {f.table for f in await find_everywhere(desk.db, traces)} >= {
        "escalations", "counters", "outbox", "ticket_events"}  # paged, capped, acknowledged
    await erase(desk, ALICE)
    leftovers = await find_everywhere(desk.db, traces)
    assert leftovers == [], "\n".join(map(str, leftovers))
    # Rita's own words on the same tickets stay: only Alice asked to be forgotten.
    assert await find_everywhere(desk.db, ["Yes, still jammed; my badge number is 88123"])


async def test_a_second_erasure_changes_nothing_and_says_so(storied_desk: tuple[Desk, Story]) -> None:
    desk, _ = storied_desk
    first = await erase(desk, SAM)
    snapshot = await find_everywhere(desk.db, ["Former user #", REDACTED])
    desk.clock.advance(timedelta(days=1))  # type: ignore[attr-defined]
    again = await erase(desk, SAM)
    assert first.committed and not again.committed
    async with desk.db.reading() as session:
        [logged] = (await session.execute(select(PrivacyLog.at).where(PrivacyLog.action == "privacy.erase"))).all()
    assert again.already_on == logged.at
    assert await find_everywhere(desk.db, ["Former user #", REDACTED]) == snapshot
    with pytest.raises(PersonErased, match="was erased on"):
        await export(desk, SAM)


async def test_someone_with_an_open_ticket_is_erased_only_with_force_and_owed_messages_are_not_sent(
    storied_desk: tuple[Desk, Story],
) -> None:
    desk, story = storied_desk
    with pytest.raises(HasOpenTickets, match=r"IT-\d+.*--force"):
        await erase(desk, OLGA)
    assert await find_everywhere(desk.db, [OLGA.user_id])  # refused: nothing changed
    await desk.tickets.comment(story.tickets["open"], ALICE, "Which laptop model would Olga Open like?")
    await erase(desk, OLGA, force=True)
    leftovers = await find_everywhere(desk.db, identity(OLGA) + [OLGA_TEAMS_ID] + story.typed[OLGA.user_id])
    assert leftovers == [], "\n".join(map(str, leftovers))
    async with desk.db.reading() as session:
        owed = (await session.execute(select(OutboxMessage).where(
            OutboxMessage.ticket_id == story.tickets["open"], OutboxMessage.target.like("teams:user:%")))).scalars()
        assert all(row.dead_at is not None for row in owed)
        kept = (await session.execute(select(Person).where(Person.platform == "teams"))).scalar_one()
        assert kept.anonymised_at is not None and kept.platform_user_id.startswith("anon-")


async def test_a_dry_run_shows_what_would_change_and_changes_nothing(storied_desk: tuple[Desk, Story]) -> None:
    desk, _ = storied_desk
    preview = await erase(desk, RITA, commit=False)
    assert not preview.committed and preview.rows["tickets"] >= 2 and preview.rows["people"] == 1
    assert await find_everywhere(desk.db, identity(RITA))
    async with desk.db.reading() as session:
        assert not (await session.execute(select(PrivacyLog))).first()


@pytest.mark.parametrize("address", ["slack:UNOBODY", "teams:0000-no-one"])
async def test_an_unknown_person_is_a_clear_error_for_export_and_erase(storied_desk: tuple[Desk, Story],
                                                                       address: str) -> None:
    desk, _ = storied_desk
    with pytest.raises(PersonNotFound, match=r"No one is known as .*Nothing was changed"):
        await erase_person(desk.db, desk.clock, address, by="dpo")
    with pytest.raises(PersonNotFound, match="No one is known as"):
        await export_person(desk.db, desk.clock, address, StringIO(), by="dpo")


@pytest.mark.parametrize("address", ["UREQ1", "jira:UREQ1", "slack:", "slack:U 1"])
async def test_a_malformed_address_says_how_to_write_one(storied_desk: tuple[Desk, Story], address: str) -> None:
    desk, _ = storied_desk
    with pytest.raises(RequestError, match="write slack:<member id>"):
        await erase_person(desk.db, desk.clock, address, by="dpo")


# -- end to end: a desk used over Slack, the request made with the ithelp command ----------------------------
def cli_config(tmp_path: Any, db: Any) -> str:
    """An app.yaml naming the running bot's database, for ``ithelp`` commands run beside it."""
    path = tmp_path / "privacy.yaml"
    url = db.url.render_as_string(hide_password=False)
    path.write_text(f"database:\n  url: \"{url}\"\n  schema_name: {db.schema or 'null'}\n")
    return str(path)


async def a_slack_ticket_worked_end_to_end(bot: Any) -> list[str]:
    """Rita files, replies in her DM thread, is helped by Alice, rates the fix 👎 with a comment; returns what
    she typed."""
    from bot.routing import Action, Form
    from bot.simulators import slack_requests as rq
    from tests.slack_harness import ALICE as SLACK_ALICE
    from tests.slack_harness import REQUESTER, SECRET, TRIAGE

    typed = ["My laptop screen flickers when docked", "Tried another cable, same flicker at desk 4.12",
             "The fix lasted one day, the flicker is back on desk 4.12"]
    bot.slack.add_user(REQUESTER, name="rita", real_name="Rita Requester", tz="Asia/Kolkata",
                       email="rita.requester@example.com")
    await bot.command(typed[0])
    await bot.settle()
    [ticket] = await bot.tickets()
    await bot.click(Action.CLAIM, str(ticket.id), SLACK_ALICE)
    card_ts = bot.slack.messages[TRIAGE][0]["ts"]
    await bot.event({"type": "message", "channel": TRIAGE, "channel_type": "channel", "user": SLACK_ALICE,
                     "text": "Can you try another cable, Rita Requester?", "ts": "1700000300.000100",
                     "thread_ts": card_ts}, event_id="EvAgentReply")
    await bot.settle()
    dm_root = bot.slack.messages[f"D{REQUESTER}"][0]["ts"]
    await bot.event({"type": "message", "channel": f"D{REQUESTER}", "channel_type": "im", "user": REQUESTER,
                     "text": typed[1], "ts": "1700000301.000100", "thread_ts": dm_root}, event_id="EvRitaReply")
    await bot.send(rq.view_submission(Form.RESOLVE_NOTE.value, {"note": {"input": "Swapped the dock"}},
                                      SLACK_ALICE, SECRET, private_metadata=str(ticket.id)))
    await bot.settle()
    await bot.click(Action.SURVEY_DOWN, str(ticket.id), REQUESTER, channel_id=f"D{REQUESTER}", message_ts="1.0")
    await bot.send(rq.view_submission(
        Form.SURVEY_REASON.value,
        {"reason": {"reason": {"type": "static_select", "selected_option": {"value": "not_fixed"}}},
         "comment": {"comment": typed[2]}}, REQUESTER, SECRET, private_metadata=str(ticket.id)))
    await bot.settle()
    return typed


async def test_erasing_a_slack_requester_with_the_ithelp_command_leaves_no_trace_in_any_table(
    bot: Any, db: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio

    from bot.cli import main
    from tests.data_grep import table_rows

    typed = await a_slack_ticket_worked_end_to_end(bot)
    traces = ["UREQ1", "Rita Requester", "rita.requester@example.com", *typed]
    where = {(f.table, f.column) for f in await find_everywhere(db, traces)}
    assert {("people", "platform_user_id"), ("message_refs", "channel"), ("outbox", "target"),
            ("surveys", "comment"), ("tickets", "summary"), ("ticket_events", "payload")} <= where
    config = cli_config(tmp_path, db)
    person = ["--person", "slack:UREQ1", "--config", config, "--by", "dpo@example.com"]

    assert await asyncio.to_thread(main, ["privacy", "erase", *person]) == 0  # without --yes: a preview
    assert "would erase slack:UREQ1" in capsys.readouterr().out
    assert await find_everywhere(db, traces)
    assert await asyncio.to_thread(main, ["privacy", "erase", *person, "--yes"]) == 0
    assert "erased slack:UREQ1: now Former user #" in capsys.readouterr().out
    leftovers = await find_everywhere(db, traces)
    assert leftovers == [], "\n".join(map(str, leftovers))
    assert (await table_rows(db))["ticket_events"] > 5  # the anonymous history is still there

    assert await asyncio.to_thread(main, ["privacy", "erase", *person, "--yes"]) == 0
    again = capsys.readouterr().out
    assert "slack:UREQ1 was already erased on" in again and "nothing changed" in again
    assert await asyncio.to_thread(main, ["privacy", "export", *person]) == 1
    assert "was erased on" in capsys.readouterr().err


async def test_the_privacy_commands_export_to_a_file_and_refuse_unknown_people(
    bot: Any, db: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio

    from bot.cli import main

    typed = await a_slack_ticket_worked_end_to_end(bot)
    config = cli_config(tmp_path, db)
    output = tmp_path / "rita.json"
    assert await asyncio.to_thread(main, ["privacy", "export", "--person", "slack:UREQ1", "--output", str(output),
                                          "--config", config]) == 0
    assert f"exported slack:UREQ1 to {output}: 1 tickets" in capsys.readouterr().out
    document = json.loads(output.read_text())
    assert document["tickets"][0]["summary"] == typed[0] and document["person"]["display_name"] == "Rita Requester"
    assert not list(tmp_path.glob("*.partial"))
    for command in (["privacy", "export"], ["privacy", "erase", "--yes"]):
        assert await asyncio.to_thread(main, [*command, "--person", "slack:UGHOST", "--config", config]) == 1
        assert "No one is known as slack:UGHOST" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["privacy", "erase", "--person", "UREQ1", "--config", config]) == 1
    assert "write slack:<member id>" in capsys.readouterr().err


def test_a_privacy_command_with_a_broken_config_names_the_key(tmp_path: Any,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    config = tmp_path / "app.yaml"
    config.write_text("databse:\n  url: sqlite+aiosqlite:///x.db\n")
    assert main(["privacy", "export", "--person", "slack:U1", "--config", str(config)]) == 2
    assert 'databse: unknown key; did you mean "database"?' in capsys.readouterr().err


async def test_someone_erased_while_the_bot_runs_files_their_next_ticket_as_a_new_person(
    make_desk: Callable[..., Any], clock: ManualClock,
) -> None:
    desk = make_desk()
    rita = PersonRef("slack", "UERASED1", display_name="Rita Example", timezone="Europe/London")
    first = await desk.tickets.open(rita, "Laptop fan is loud", origin=Origin("slack"), defer_setup=True)
    await desk.tickets.finish_setup()
    await desk.tickets.resolve(first.ticket.id, PersonRef("slack", "UAGENT1", display_name="Alice"), "Cleaned it")
    await erase_person(desk.db, desk.clock, "slack:UERASED1", by="dpo")  # e.g. `ithelp privacy erase`, elsewhere
    await desk.tickets.finish_setup()  # the engine's next tick

    again = await desk.tickets.open(rita, "New laptop please", origin=Origin("slack"), defer_setup=True)
    await desk.tickets.finish_setup()
    async with desk.db.reading() as session:
        old = await session.get(Ticket, first.ticket.id)
        new = await session.get(Ticket, again.ticket.id)
        assert old is not None and new is not None
        assert new.requester_id != old.requester_id, "the new ticket was filed under the erased person's row"
        person = await session.get(Person, new.requester_id)
        assert person is not None and person.platform_user_id == "UERASED1" and person.display_name == "Rita Example"


async def test_an_erasure_that_collides_with_the_engine_on_postgresql_runs_again(
        storied_desk: tuple[Desk, Story], monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import DBAPIError

    from bot.privacy import erasure

    desk, _ = storied_desk
    real = erasure._erase_once
    calls: list[str] = []

    class Deadlock(Exception):
        sqlstate = "40P01"

    async def first_collides(*args: Any, **kw: Any) -> Any:
        calls.append("try")
        if len(calls) == 1:  # PostgreSQL chose this transaction to break a deadlock with the engine
            raise DBAPIError("UPDATE tickets …", None, Deadlock("deadlock detected"))
        return await real(*args, **kw)

    monkeypatch.setattr(erasure, "_erase_once", first_collides)
    outcome = await erase(desk, RITA)
    assert calls == ["try", "try"] and outcome.committed
    async with desk.db.reading() as session:
        assert (await session.execute(select(PrivacyLog))).scalars().all()


async def test_an_erasure_gives_up_on_other_database_errors_at_once(
        storied_desk: tuple[Desk, Story], monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import DBAPIError

    from bot.privacy import erasure

    desk, _ = storied_desk
    calls: list[str] = []

    class Broken(Exception):
        sqlstate = "42P01"

    async def broken(*args: Any, **kw: Any) -> Any:
        calls.append("try")
        raise DBAPIError("UPDATE tickets …", None, Broken("relation does not exist"))

    monkeypatch.setattr(erasure, "_erase_once", broken)
    with pytest.raises(DBAPIError):
        await erase(desk, RITA)
    assert calls == ["try"]
