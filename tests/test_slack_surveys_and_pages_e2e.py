"""Over real HTTP in Slack: the CSAT poll after resolution, and escalation pages acknowledged from Slack."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.routing import Action, Form
from bot.simulators import slack_requests as rq
from store.survey_models import Survey
from tests.slack_harness import ALICE, BOB, MALLORY, REQUESTER, SECRET, TRIAGE, SlackBot

ESCALATION = """
escalation:
  chains:
    urgent:
      levels:
        - {notify: ["slack:user:UAGENT2"], wait: 10m}
        - {notify: ["slack:user:UAGENT1"], wait: 10m}
  policies:
    P1: {breach: urgent}
"""


@pytest.fixture
def slack_extra_config() -> str:
    return ESCALATION


async def open_and_resolve(bot: SlackBot) -> int:
    await bot.command("Printer prints blank pages")
    await bot.settle()
    [ticket] = await bot.tickets()
    await bot.click(Action.CLAIM, str(ticket.id), ALICE)
    status, body = await bot.send(rq.view_submission(
        Form.RESOLVE_NOTE.value, {"note": {"input": "Replaced the toner"}}, ALICE, SECRET,
        private_metadata=str(ticket.id)))
    assert status == 200 and not body
    await bot.settle()
    return ticket.id


def survey_posts(bot: SlackBot) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls_to("chat.postMessage")
            if any(b.get("block_id", "").endswith(":survey") for b in c.get("blocks") or [])]


async def test_resolving_sends_exactly_one_poll_and_a_thumbs_up_updates_it_in_place(bot: SlackBot) -> None:
    ticket_id = await open_and_resolve(bot)
    [poll] = survey_posts(bot)
    assert poll["channel"] == REQUESTER and "How did we do on" in json.dumps(poll["blocks"])
    buttons = {e["action_id"] for b in poll["blocks"] if b["type"] == "actions" for e in b["elements"]}
    assert {Action.SURVEY_UP.value, Action.SURVEY_DOWN.value} <= buttons
    poll_ts = bot.slack.messages[f"D{REQUESTER}"][-1]["ts"]
    await bot.click(Action.SURVEY_UP, str(ticket_id), REQUESTER, channel_id=f"D{REQUESTER}", message_ts=poll_ts)
    await bot.settle()
    updates = [c for c in bot.slack.calls_to("chat.update") if c["ts"] == poll_ts]
    assert updates and "Thanks! You rated" in json.dumps(updates[-1]["blocks"])
    assert await _answer(bot, ticket_id) == "up"
    await bot.click(Action.SURVEY_DOWN, str(ticket_id), REQUESTER, channel_id=f"D{REQUESTER}", message_ts=poll_ts)
    assert await _answer(bot, ticket_id) == "down"
    assert len(survey_posts(bot)) == 1


async def test_someone_else_clicking_the_poll_is_refused_politely(bot: SlackBot) -> None:
    ticket_id = await open_and_resolve(bot)
    await bot.click(Action.SURVEY_UP, str(ticket_id), MALLORY, channel_id=f"D{REQUESTER}", message_ts="1.0")
    [refusal] = await bot.slack.wait_for_calls("chat.postEphemeral", 1)
    assert refusal["user"] == MALLORY and "only the person who raised" in refusal["text"]
    assert await _answer(bot, ticket_id) is None


async def test_an_expired_poll_refuses_and_says_so(bot: SlackBot, clock: Any) -> None:
    ticket_id = await open_and_resolve(bot)
    clock.advance(timedelta(days=8))
    await bot.settle()
    await bot.click(Action.SURVEY_UP, str(ticket_id), REQUESTER, channel_id=f"D{REQUESTER}", message_ts="1.0")
    [refusal] = await bot.slack.wait_for_calls("chat.postEphemeral", 1)
    assert "expired" in refusal["text"] and await _answer(bot, ticket_id) is None


async def test_thumbs_down_reason_modal_round_trip_and_reopen_button(bot: SlackBot) -> None:
    ticket_id = await open_and_resolve(bot)
    await bot.click(Action.SURVEY_DOWN, str(ticket_id), REQUESTER, channel_id=f"D{REQUESTER}", message_ts="1.0")
    await bot.click(Action.SURVEY_REASON, str(ticket_id), REQUESTER, channel_id=f"D{REQUESTER}", message_ts="1.0")
    [modal] = await bot.slack.wait_for_calls("views.open", 1)
    assert modal["view"]["callback_id"] == Form.SURVEY_REASON.value
    [reason_input] = [b for b in modal["view"]["blocks"] if b.get("block_id") == "reason"]
    reason_value = reason_input["element"]["options"][0]["value"]
    status, body = await bot.send(rq.view_submission(
        Form.SURVEY_REASON.value,
        {"reason": {"reason": {"type": "static_select", "selected_option": {"value": reason_value}}},
         "comment": {"comment": "Still blank pages on the 2nd floor"}},
        REQUESTER, SECRET, private_metadata=modal["view"]["private_metadata"]))
    assert status == 200 and not body
    async with bot.server.desk.db.transaction() as session:  # type: ignore[union-attr]
        survey = (await session.execute(select(Survey).where(Survey.ticket_id == ticket_id))).scalar_one()
    assert survey.reason == reason_value and survey.comment == "Still blank pages on the 2nd floor"
    await bot.click(Action.SURVEY_REOPEN, str(ticket_id), REQUESTER, channel_id=f"D{REQUESTER}", message_ts="1.0")
    [ticket] = await bot.tickets()
    assert ticket.status == "reopened"
    # Resolved again: no second poll.
    await bot.click(Action.CLAIM, str(ticket_id), ALICE)
    await bot.send(rq.view_submission(Form.RESOLVE_NOTE.value, {"note": {"input": "Swapped the drum"}}, ALICE,
                                      SECRET, private_metadata=str(ticket_id)))
    await bot.settle()
    assert len(survey_posts(bot)) == 1


async def _answer(bot: SlackBot, ticket_id: int) -> str | None:
    async with bot.server.desk.db.transaction() as session:  # type: ignore[union-attr]
        return (await session.execute(select(Survey.answer).where(Survey.ticket_id == ticket_id))).scalar_one()


async def test_a_p1_breach_pages_the_chain_in_slack_until_someone_acknowledges(bot: SlackBot, clock: Any) -> None:
    await bot.command("Email is down for the whole office")
    [ticket] = await bot.tickets()
    await bot.send(rq.block_action(Action.PRIORITY.value, f"{ticket.id}:P1", ALICE, SECRET,
                                   action_type="static_select", channel_id=TRIAGE, message_ts="1.0"))
    assert (await bot.tickets())[0].priority == "P1"
    clock.advance(timedelta(minutes=16))  # past the 15m first-response target
    await bot.settle()
    pages = [c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == BOB]
    assert len(pages) == 1 and "level 1 of 2" in json.dumps(pages[0])
    buttons = {e["action_id"] for b in pages[0]["blocks"] if b["type"] == "actions" for e in b["elements"]}
    assert Action.ESCALATION_ACK.value in buttons
    await bot.click(Action.ESCALATION_ACK, str(ticket.id), MALLORY, channel_id=f"D{BOB}", message_ts="1.0")
    [refused] = await bot.slack.wait_for_calls("chat.postEphemeral", 1)
    assert "agent" in refused["text"].lower()
    await bot.click(Action.ESCALATION_ACK, str(ticket.id), BOB, channel_id=f"D{BOB}", message_ts="1.0")
    clock.advance(timedelta(minutes=30))
    await bot.settle()
    level_two = [c for c in bot.slack.calls_to("chat.postMessage") if "level 2" in json.dumps(c)]
    assert level_two == []
    card = [c for c in bot.slack.calls_to("chat.update") if c["channel"] == TRIAGE][-1]
    assert "Acknowledged by Bob" in json.dumps(card["blocks"])
    # Bob's page itself now says so, edited in place, its buttons gone; no second DM about it.
    [page] = [m for m in bot.slack.messages[f"D{BOB}"] if "level 1 of 2" in json.dumps(m) or "acknowledged" in
              json.dumps(m)]
    assert "acknowledged by Bob" in json.dumps(page["blocks"])
    assert not [b for b in page["blocks"] if b["type"] == "actions"]
    assert len([c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == BOB]) == 1

