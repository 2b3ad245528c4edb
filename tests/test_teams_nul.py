"""Hostile characters from Teams (issue #16): a NUL or another control character in a Teams activity never causes a
500 or a database error (PostgreSQL refuses NUL in text), never names someone else, and never goes back out in a
card; the same rule as Slack's (``bot.handlers.payloads``)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from sqlalchemy import select

from bot.routing import Action, Form
from bot.server import Server
from bot.simulators import teams_activities as ta
from bot.simulators.bot_connector import FakeBotConnector
from store.db import Database
from store.models import ConversationRef, Person, Ticket
from tests import test_teams_e2e as e2e
from tests.test_teams_e2e import TRIAGE, open_from_personal_chat, send, settle

# The Teams end-to-end fixtures: a fake Bot Connector (cards checked against the schema) and ithelp serve on it.
fake, teams_config, server = e2e.fake, e2e.teams_config, e2e.server

CONTROLS = "\x00\x01\x07\x08\x0b\x0c\x1b\x7f"


def sent_json(fake: FakeBotConnector) -> str:
    return json.dumps([call.body for call in fake.activities if call.body is not None])


async def test_a_nul_and_control_characters_in_a_teams_message_open_a_clean_ticket_on_any_database(
    server: Server, fake: FakeBotConnector, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    status, _ = await send(server, ta.message(f"VPN{CONTROLS} down\tsince 9", service_url=fake.service_url,
                                              user_name="Alex\x00 Requester"))
    assert status == 201
    await fake.wait_for(lambda c: c.ok and c.conversation_id == TRIAGE)
    await settle(server)
    async with db.reading() as session:
        summaries = (await session.execute(select(Ticket.summary))).scalars().all()
        names = (await session.execute(select(Person.display_name))).scalars().all()
    assert summaries == ["VPN\ufffd down\tsince 9"]  # NUL marked as Slack marks it; other controls dropped
    assert names == ["Alex\ufffd Requester"]
    sent = sent_json(fake)
    for char in CONTROLS:
        assert json.dumps(char)[1:-1] not in sent, f"{char!r} went back out to Teams"
    assert not [r for r in caplog.records if r.exc_info]


async def test_nul_bytes_in_teams_ids_never_reach_the_database_or_name_someone_else(
    server: Server, fake: FakeBotConnector, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    await open_from_personal_chat(server, fake)
    forged: dict[str, Any] = ta.message(None, service_url=fake.service_url, reply_to_id="1\x00",
                                        value={"action": Action.CLAIM.value, "value": "1\x00", "ticket_id": "1\x00"},
                                        aad_object_id="aad-agent-1\x00", user_id="29:agent\x00",
                                        activity_id="act\x00ivity", conversation_id="a:1agent\x00chat")
    status, _ = await send(server, forged)
    assert status == 201
    form = ta.message(None, service_url=fake.service_url, value={
        "form": Form.NEW_TICKET.value, "summary": "Disk\x00 full\x07", "description": "\x1b[31mred\x00",
        "category": "Other\x00", "urgency": "P2\x00"})
    status, _ = await send(server, form)
    assert status == 201
    await settle(server)
    async with db.reading() as session:
        tickets = (await session.execute(select(Ticket.summary, Ticket.description, Ticket.status).order_by(
            Ticket.id))).all()
        people = (await session.execute(select(Person.platform_user_id, Person.display_name))).all()
        keys = (await session.execute(select(ConversationRef.key))).scalars().all()
    assert [tuple(t) for t in tickets] == [("VPN keeps disconnecting", "", "new"),
                                           ("Disk\ufffd full", "\\[31mred\ufffd", "new")]
    assert all("\x00" not in ident and "\x00" not in name for ident, name in people)
    assert all("\x00" not in key for key in keys)
    assert "\\u0000" not in sent_json(fake)
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_form_sent_back_with_an_error_carries_no_control_character_the_person_sent(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    form = ta.message(None, service_url=fake.service_url, value={
        "form": Form.NEW_TICKET.value, "summary": " ", "description": "Screen\x07 flickers\x1b[5m\x00 badly",
        "category": "", "urgency": "P2"})
    status, _ = await send(server, form)
    assert status == 201
    [echoed] = [call.body for call in fake.activities if call.ok and call.body and "Please describe" in json.dumps(
        call.body)]
    said = json.dumps(echoed)
    assert "flickers" in said  # what they typed comes back (nothing is lost)...
    for char in CONTROLS:
        assert json.dumps(char)[1:-1] not in said, f"{char!r} went back out to Teams"  # ... without the controls


async def test_a_body_nested_deeper_than_the_nul_check_can_walk_is_a_400_not_a_500(
    server: Server, fake: FakeBotConnector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    # JSON's own parser takes 800 levels; walking them for a NUL would not: the answer is a 400 either way.
    activity = ta.message("hello", service_url=fake.service_url)
    body = json.dumps(activity)[:-1] + ', "extra": ' + "[" * 800 + "]" * 800 + "}"
    status, answer = await send(server, body.encode())
    assert status == 400 and "Traceback" not in json.dumps(answer)
    assert not [r for r in caplog.records if r.exc_info]
