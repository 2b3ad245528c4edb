"""Issue #7: the one-click CSAT poll after a ticket is resolved (moved clock, SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.config import AppConfig
from bot.dialogs import survey_reason
from bot.people import PersonRef
from bot.routing import Action, Form
from store.models import OutboxMessage, TicketEvent
from store.survey_models import Survey
from surveys.polls import NotYourSurvey, SurveyExpired, SurveyService
from tests.conftest import REQUESTER
from tests.outbox_views import body, headline, slack
from tests.outbox_views import teams as teams_card

AGENT = PersonRef("slack", "UAGENT1", display_name="Agent One")
ME = PersonRef("slack", REQUESTER, display_name=f"Person {REQUESTER}")
STRANGER = PersonRef("slack", "USTRANGER", display_name="Someone Else")


@pytest.fixture
def surveyed_desk(make_desk: Callable[..., Any], make_config: Callable[..., AppConfig]) -> Callable[..., Any]:
    def make(extra: str = "") -> tuple[Any, SurveyService]:
        config = make_config(extra)
        desk = make_desk(app_config=config)
        return desk, desk.surveys

    return make


async def survey_cards(desk: Any, ticket_id: int) -> list[OutboxMessage]:
    async with desk.db.transaction() as session:
        rows = (await session.execute(select(OutboxMessage).where(
            OutboxMessage.ticket_id == ticket_id, OutboxMessage.kind == "survey",
            OutboxMessage.target == f"slack:user:{REQUESTER}").order_by(OutboxMessage.id))).scalars().all()
        return [row for row in rows if row.payload.get("ref_role") == "survey"]


async def outbox(desk: Any, ticket_id: int, kind: str) -> list[OutboxMessage]:
    async with desk.db.transaction() as session:
        return list((await session.execute(select(OutboxMessage).where(
            OutboxMessage.ticket_id == ticket_id, OutboxMessage.kind == kind).order_by(OutboxMessage.id))).scalars())


async def events(desk: Any, ticket_id: int, kind: str) -> list[TicketEvent]:
    async with desk.db.transaction() as session:
        return list((await session.execute(select(TicketEvent).where(
            TicketEvent.ticket_id == ticket_id, TicketEvent.kind == kind).order_by(TicketEvent.id))).scalars())


async def the_survey(desk: Any, ticket_id: int) -> Survey:
    async with desk.db.transaction() as session:
        return (await session.execute(select(Survey).where(Survey.ticket_id == ticket_id))).scalar_one()


def action_ids(row: OutboxMessage) -> list[str]:
    return [element["action_id"] for block in slack(row)[0] if block["type"] == "actions"
            for element in block["elements"]]


def card_text(row: OutboxMessage) -> str:
    return " ".join(block["text"]["text"] for block in slack(row)[0] if block["type"] == "section")


async def resolved_ticket(desk: Any, make_ticket: Callable[..., Any], clock: Any) -> Any:
    ticket = await make_ticket("VPN drops every hour")
    await desk.tickets.claim(ticket.id, AGENT)
    clock.advance(timedelta(minutes=30))
    await desk.tickets.resolve(ticket.id, AGENT, "Updated the VPN client.")
    return ticket


async def test_resolving_a_ticket_sends_the_requester_exactly_one_poll_after_the_delay(
    surveyed_desk: Any, make_ticket: Any, clock: Any
) -> None:
    desk, _ = surveyed_desk("surveys: {delay: 2h}\n")
    ticket = await resolved_ticket(desk, make_ticket, clock)
    await desk.timers.tick()
    assert await survey_cards(desk, ticket.id) == []  # not before the delay
    clock.advance(timedelta(hours=2))
    await desk.timers.tick()
    await desk.timers.tick()
    sent = await survey_cards(desk, ticket.id)
    assert len(sent) == 1
    assert f"How did we do on IT-{ticket.id} — VPN drops every hour?" in card_text(sent[0])
    assert action_ids(sent[0]) == [Action.SURVEY_UP, Action.SURVEY_DOWN]
    assert slack(sent[0])[1].startswith(f"How did we do on IT-{ticket.id}")
    assert len(await events(desk, ticket.id, "survey_sent")) == 1
    survey = await the_survey(desk, ticket.id)
    assert survey.status == "sent" and survey.expires_at == clock.now() + timedelta(days=7)


async def test_a_thumbs_up_click_is_recorded_and_the_card_updates_in_place(
    surveyed_desk: Any, make_ticket: Any, clock: Any
) -> None:
    desk, service = surveyed_desk()
    ticket = await resolved_ticket(desk, make_ticket, clock)
    await desk.timers.tick()
    clock.advance(timedelta(minutes=5))
    view = await service.answer(ticket.id, ME, "up")
    assert view.answer == "up" and view.headline.startswith("Thanks! You rated 👍 — change")
    again = await service.answer(ticket.id, ME, "up")  # a double click changes nothing
    assert again == view
    sent = await survey_cards(desk, ticket.id)
    assert len(sent) == 2  # the original post and one update, both with ref_role "survey"
    assert "Thanks! You rated 👍 — change" in card_text(sent[1])
    assert action_ids(sent[1]) == [Action.SURVEY_DOWN]
    survey = await the_survey(desk, ticket.id)
    assert (survey.status, survey.answer, survey.answered_at) == ("answered", "up", clock.now())
    assert [e.payload["answer"] for e in await events(desk, ticket.id, "survey_answered")] == ["up"]


async def test_the_requester_can_change_their_mind_to_thumbs_down_and_triage_hears_about_it(
    surveyed_desk: Any, make_ticket: Any, clock: Any
) -> None:
    desk, service = surveyed_desk()
    ticket = await resolved_ticket(desk, make_ticket, clock)
    await desk.timers.tick()
    await service.answer(ticket.id, ME, "up")
    clock.advance(timedelta(days=1))
    view = await service.answer(ticket.id, ME, "down")
    assert view.answer == "down"
    survey = await the_survey(desk, ticket.id)
    assert survey.answer == "down" and survey.answered_at == clock.now()
    answered = await events(desk, ticket.id, "survey_answered")
    assert [(e.payload["answer"], e.payload["previous"]) for e in answered] == [("up", None), ("down", "up")]
    last = (await survey_cards(desk, ticket.id))[-1]
    assert "You rated 👎" in card_text(last)
    assert action_ids(last) == [Action.SURVEY_REASON, Action.SURVEY_REOPEN, Action.SURVEY_UP]
    notices = [row for row in await outbox(desk, ticket.id, "notice") if row.target == "slack:channel:C0TRIAGE"
               and "👎" in headline(row)]
    assert len(notices) == 1


async def test_someone_elses_click_is_politely_refused(surveyed_desk: Any, make_ticket: Any, clock: Any) -> None:
    desk, service = surveyed_desk()
    ticket = await resolved_ticket(desk, make_ticket, clock)
    await desk.timers.tick()
    with pytest.raises(NotYourSurvey, match=f"only the person who raised IT-{ticket.id} can rate"):
        await service.answer(ticket.id, STRANGER, "down")
    survey = await the_survey(desk, ticket.id)
    assert survey.answer is None and await events(desk, ticket.id, "survey_answered") == []


async def test_an_expired_survey_refuses_clicks_and_its_card_says_so(
    surveyed_desk: Any, make_ticket: Any, clock: Any
) -> None:
    desk, service = surveyed_desk("surveys: {expire_after: 3d}\n")
    ticket = await resolved_ticket(desk, make_ticket, clock)
    await desk.timers.tick()
    clock.advance(timedelta(days=3, minutes=1))
    await desk.timers.tick()
    survey = await the_survey(desk, ticket.id)
    assert survey.status == "expired"
    last = (await survey_cards(desk, ticket.id))[-1]
    assert "has expired" in card_text(last) and action_ids(last) == []
    with pytest.raises(SurveyExpired, match="expired"):
        await service.answer(ticket.id, ME, "up")
    assert await events(desk, ticket.id, "survey_answered") == []


async def test_an_answer_can_no_longer_be_changed_after_expiry(
    surveyed_desk: Any, make_ticket: Any, clock: Any
) -> None:
    desk, service = surveyed_desk("surveys: {expire_after: 1d}\n")
    ticket = await resolved_ticket(desk, make_ticket, clock)
    await desk.timers.tick()
    await service.answer(ticket.id, ME, "up")
    clock.advance(timedelta(days=2))
    with pytest.raises(SurveyExpired):  # even before the expiry timer has run
        await service.answer(ticket.id, ME, "down")
    await desk.timers.tick()
    last = (await survey_cards(desk, ticket.id))[-1]
    assert "You rated 👍" in card_text(last) and "can't be changed" in card_text(last) and action_ids(last) == []
    assert (await the_survey(desk, ticket.id)).answer == "up"


async def test_a_reopened_and_re_resolved_ticket_is_not_surveyed_twice(
    surveyed_desk: Any, make_ticket: Any, clock: Any
) -> None:
    desk, _ = surveyed_desk()
    ticket = await resolved_ticket(desk, make_ticket, clock)
    await desk.timers.tick()
    await desk.tickets.reopen(ticket.id, ME, "Still dropping")
    await desk.tickets.claim(ticket.id, AGENT)
    await desk.tickets.resolve(ticket.id, AGENT, "Replaced the router.")
    clock.advance(timedelta(hours=1))
    await desk.timers.tick()
    assert len(await survey_cards(desk, ticket.id)) == 1
    assert len(await events(desk, ticket.id, "survey_sent")) == 1


async def test_reopening_before_the_delay_holds_the_poll_until_the_ticket_is_resolved_again(
    surveyed_desk: Any, make_ticket: Any, clock: Any
) -> None:
    desk, _ = surveyed_desk("surveys: {delay: 1h}\n")
    ticket = await resolved_ticket(desk, make_ticket, clock)
    await desk.tickets.reopen(ticket.id, ME, "Not fixed")
    clock.advance(timedelta(hours=2))
    await desk.timers.tick()
    assert await survey_cards(desk, ticket.id) == []
    await desk.tickets.claim(ticket.id, AGENT)
    await desk.tickets.resolve(ticket.id, AGENT, "Really fixed now.")
    clock.advance(timedelta(hours=1))
    await desk.timers.tick()
    assert len(await survey_cards(desk, ticket.id)) == 1


async def test_a_thumbs_down_reason_and_comment_round_trip(surveyed_desk: Any, make_ticket: Any, clock: Any) -> None:
    desk, service = surveyed_desk()
    ticket = await resolved_ticket(desk, make_ticket, clock)
    await desk.timers.tick()
    view = await service.answer(ticket.id, ME, "down")
    modal = survey_reason.slack_modal(view.ticket_id, view.number)
    assert modal["callback_id"] == Form.SURVEY_REASON and modal["private_metadata"] == str(ticket.id)
    submission = {"private_metadata": modal["private_metadata"], "state": {"values": {
        "reason": {"reason": {"selected_option": {"value": "not_fixed"}}},
        "comment": {"comment": {"value": "It <still> drops at 3pm"}}}}}
    ticket_id, reason, comment = survey_reason.read_slack(submission)
    updated = await service.add_reason(ticket_id, ME, reason, comment)
    assert (updated.reason, updated.comment) == ("not_fixed", "It <still> drops at 3pm")
    survey = await the_survey(desk, ticket.id)
    assert (survey.reason, survey.comment) == ("not_fixed", "It <still> drops at 3pm")
    last = (await survey_cards(desk, ticket.id))[-1]
    assert "The problem isn't fixed" in card_text(last) and "&lt;still&gt;" in card_text(last)
    assert Action.SURVEY_REASON not in action_ids(last)
    notice = [row for row in await outbox(desk, ticket.id, "notice") if row.target == "slack:channel:C0TRIAGE"][-1]
    assert body(notice) == "It <still> drops at 3pm"
    assert "The problem isn't fixed" in headline(notice)
    teams = survey_reason.teams_card(updated.ticket_id, updated.number)
    assert teams["version"] == "1.5" and teams["actions"][0]["data"]["form"] == Form.SURVEY_REASON
    assert survey_reason.read_teams({"ticket_id": ticket.id, "reason": "too_slow", "comment": "x"}) == (
        ticket.id, "too_slow", "x")


async def test_the_reopen_button_reopens_the_ticket_and_tells_triage(
    surveyed_desk: Any, make_ticket: Any, clock: Any
) -> None:
    desk, service = surveyed_desk()
    ticket = await resolved_ticket(desk, make_ticket, clock)
    await desk.timers.tick()
    await service.answer(ticket.id, ME, "down")
    view = await service.reopen_from_survey(ticket.id, ME)
    assert view.reopened
    assert (await desk.tickets.get(ticket.id)).status == "reopened"
    reopened = await events(desk, ticket.id, "reopened")
    assert len(reopened) == 1 and "satisfaction survey" in reopened[0].payload["reason"]
    assert any(row.target == "slack:channel:C0TRIAGE" and "reopened" in headline(row)
               for row in await outbox(desk, ticket.id, "notice"))
    last = (await survey_cards(desk, ticket.id))[-1]
    assert "You reopened" in card_text(last) and Action.SURVEY_REOPEN not in action_ids(last)
    with pytest.raises(NotYourSurvey):
        await service.reopen_from_survey(ticket.id, STRANGER)


async def test_one_reminder_is_sent_to_a_requester_who_has_not_answered(
    surveyed_desk: Any, make_ticket: Any, clock: Any
) -> None:
    desk, _ = surveyed_desk("surveys: {remind_after: 2d}\n")
    ticket = await resolved_ticket(desk, make_ticket, clock)
    await desk.timers.tick()
    clock.advance(timedelta(days=2))
    await desk.timers.tick()
    clock.advance(timedelta(days=1))
    await desk.timers.tick()
    reminders = [row for row in await outbox(desk, ticket.id, "notice") if "reminder" in headline(row)]
    assert len(reminders) == 1 and reminders[0].target == f"slack:user:{REQUESTER}"


async def test_the_fatigue_cap_skips_a_second_survey_for_the_same_person(
    surveyed_desk: Any, make_ticket: Any, clock: Any
) -> None:
    desk, _ = surveyed_desk("surveys: {fatigue_days: 14}\n")
    first = await resolved_ticket(desk, make_ticket, clock)
    clock.advance(timedelta(days=3))
    second = await resolved_ticket(desk, make_ticket, clock)
    await desk.timers.tick()
    assert len(await survey_cards(desk, first.id)) == 1
    assert await survey_cards(desk, second.id) == []
    clock.advance(timedelta(days=15))
    third = await resolved_ticket(desk, make_ticket, clock)
    await desk.timers.tick()
    assert len(await survey_cards(desk, third.id)) == 1


async def test_a_teams_requester_gets_an_adaptive_card(surveyed_desk: Any, clock: Any) -> None:
    from bot.tickets import Origin

    desk, _ = surveyed_desk()
    requester = PersonRef("teams", "aad-requester", display_name="Teams Person")
    opened = await desk.tickets.open(requester, "Laptop won't boot", origin=Origin("teams"))
    await desk.tickets.resolve(opened.ticket.id, PersonRef("teams", "aad-agent-1", display_name="Agent T"), "Fixed")
    await desk.timers.tick()
    rows = await outbox(desk, opened.ticket.id, "survey")
    assert len(rows) == 1 and rows[0].target == "teams:user:aad-requester"
    card = teams_card(rows[0])
    assert rows[0].payload["ref_role"] == "survey" and card["version"] == "1.5"
    assert [a["data"]["action"] for a in card["actions"]] == [Action.SURVEY_UP, Action.SURVEY_DOWN]
