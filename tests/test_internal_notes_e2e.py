"""Agents' internal notes vs replies in the triage thread, end to end on Slack and Teams.

A note stays among agents (never sent, never a first response); a reply reaches the requester; every agent
message is marked: a reaction on Slack, a one-line reply in the thread on Teams.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

import tests.test_teams_e2e as e2e
from bot.server import Server
from bot.simulators import teams_activities as ta
from bot.simulators.bot_connector import FakeBotConnector
from store.db import Database
from store.models import Ticket, TicketEvent
from tests.slack_harness import ALICE, REQUESTER, TRIAGE, SlackBot
from tests.test_teams_e2e import AGENT, PERSONAL, in_card_thread, open_from_personal_chat, posted_to, send, settle

# The Teams end-to-end fixtures: a fake Bot Connector (cards checked against the schema) and ithelp serve on it.
fake, teams_config, server = e2e.fake, e2e.teams_config, e2e.server


# -- Slack ------------------------------------------------------------------------------------------
async def _slack_ticket(bot: SlackBot) -> tuple[Ticket, str]:
    await bot.command("Laptop fan is loud")
    await bot.settle()
    return (await bot.tickets())[-1], bot.slack.messages[TRIAGE][0]["ts"]


async def _agent_says(bot: SlackBot, card_ts: str, ts: str, text: str, *, event_id: str,
                      retry_num: int | None = None) -> None:
    if retry_num is None:  # Slack has the message before it tells the bot about it
        bot.slack.add_message(TRIAGE, ts, ALICE, text, thread_ts=card_ts)
    await bot.event({"type": "message", "channel": TRIAGE, "channel_type": "channel", "user": ALICE, "text": text,
                     "ts": ts, "thread_ts": card_ts}, event_id=event_id, retry_num=retry_num)
    await bot.settle()


def _reactions(bot: SlackBot, ts: str) -> list[str]:
    return [c["name"] for c in bot.slack.calls_to("reactions.add") if c["channel"] == TRIAGE and c["timestamp"] == ts]


def _to_requester(bot: SlackBot, words: str) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls_to("chat.postMessage")
            if c["channel"] == f"D{REQUESTER}" and words in json.dumps(c)]


async def _ticket_row(bot: SlackBot, ticket_id: int) -> Ticket:
    assert bot.server.desk is not None
    async with bot.server.desk.db.transaction() as session:
        ticket = await session.get(Ticket, ticket_id)
        assert ticket is not None
        return ticket


async def _notes(db: Database) -> list[str]:
    async with db.transaction() as session:
        return [str(e.payload["text"]) for e in (await session.execute(
            select(TicketEvent).where(TicketEvent.kind == "noted").order_by(TicketEvent.id))).scalars()]


async def test_slack_an_agent_note_stays_internal_is_marked_locked_and_is_no_first_response(bot: SlackBot) -> None:
    ticket, card_ts = await _slack_ticket(bot)
    await _agent_says(bot, card_ts, "1700000300.000100", "note: dock firmware is the usual suspect", event_id="EvN1")
    await _agent_says(bot, card_ts, "1700000300.000100", "note: dock firmware is the usual suspect", event_id="EvN1",
                      retry_num=1)  # Slack retrying: one note, one marker
    await _agent_says(bot, card_ts, "1700000301.000100", "// ask Bob, he had the same model", event_id="EvN2")
    assert _to_requester(bot, "dock firmware") == [] and _to_requester(bot, "ask Bob") == []
    assert _reactions(bot, "1700000300.000100") == ["lock"] and _reactions(bot, "1700000301.000100") == ["lock"]
    assert bot.server.desk is not None
    assert await _notes(bot.server.desk.db) == ["dock firmware is the usual suspect", "ask Bob, he had the same model"]
    assert (await _ticket_row(bot, ticket.id)).first_response_at is None

    await _agent_says(bot, card_ts, "1700000302.000100", "Can you try a different dock?", event_id="EvR1")
    assert len(_to_requester(bot, "different dock")) == 1
    assert _reactions(bot, "1700000302.000100") == ["incoming_envelope"]
    assert (await _ticket_row(bot, ticket.id)).first_response_at is not None


class TestSlackWhenNotesAreTheDefault:
    @pytest.fixture
    def slack_extra_config(self) -> str:
        return "triage_thread:\n  default: note\n"

    async def test_plain_messages_stay_internal_and_reply_prefix_sends_without_the_prefix(self, bot: SlackBot) -> None:
        _, card_ts = await _slack_ticket(bot)
        await _agent_says(bot, card_ts, "1700000300.000100", "Probably the dock again", event_id="EvN1")
        await _agent_says(bot, card_ts, "1700000301.000100", "Reply: Could you try another dock?", event_id="EvR1")
        assert _to_requester(bot, "Probably the dock") == []
        [sent] = _to_requester(bot, "Could you try another dock?")
        assert "Reply:" not in json.dumps(sent)
        assert _reactions(bot, "1700000300.000100") == ["lock"]
        assert _reactions(bot, "1700000301.000100") == ["incoming_envelope"]


# -- Teams ------------------------------------------------------------------------------------------
async def test_teams_a_note_stays_internal_a_reply_is_relayed_and_the_thread_says_which(
        server: Server, fake: FakeBotConnector, db: Database) -> None:
    card_id = await open_from_personal_chat(server, fake)
    thread = f"{e2e.TRIAGE};messageid={card_id}"
    note = ta.message("note: VPN client 5.1 has this bug", mention_bot=True, service_url=fake.service_url,
                      **in_card_thread(card_id, AGENT))
    await send(server, note)
    (marker,) = await fake.wait_for(lambda c: posted_to(thread)(c) and "Internal note" in e2e.text_of(c))
    assert "not sent to Alex Requester" in e2e.text_of(marker)
    assert await _notes(db) == ["VPN client 5.1 has this bug"]

    reply = ta.message("Which VPN client version?", mention_bot=True, service_url=fake.service_url,
                       **in_card_thread(card_id, AGENT))
    await send(server, reply)
    await fake.wait_for(lambda c: posted_to(PERSONAL)(c) and "Which VPN client" in e2e.text_of(c))
    await fake.wait_for(lambda c: posted_to(thread)(c) and "Sent to Alex Requester" in e2e.text_of(c))
    await settle(server)
    assert not [c for c in fake.activities if posted_to(PERSONAL)(c) and "5.1 has this bug" in e2e.text_of(c)]


async def test_teams_the_same_note_delivered_twice_is_recorded_and_marked_once(
        server: Server, fake: FakeBotConnector, db: Database) -> None:
    card_id = await open_from_personal_chat(server, fake)
    thread = f"{e2e.TRIAGE};messageid={card_id}"
    note = ta.message("// the dock needs a firmware update", service_url=fake.service_url,
                      **in_card_thread(card_id, AGENT))
    await send(server, note)
    await send(server, note)  # Teams redelivering the same activity
    await fake.wait_for(lambda c: posted_to(thread)(c) and "Internal note" in e2e.text_of(c))
    await settle(server)
    assert await _notes(db) == ["the dock needs a firmware update"]
    assert len([c for c in fake.activities if posted_to(thread)(c) and "Internal note" in e2e.text_of(c)]) == 1
