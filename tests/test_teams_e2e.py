"""Teams end to end: real HTTP into ``ithelp serve``, real botbuilder out to a fake Bot Connector.

Every card the fake connector receives in these tests is checked against the official Adaptive Card 1.5 schema
and the 40 KB limit when the test ends (the ``fake`` fixture).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any, Unpack

import adaptive_cards as adaptive_cards_package
import pytest
from jsonschema import Draft6Validator
from jsonschema.exceptions import best_match
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.config import AppConfig, SlackConfig, TeamsConfig
from bot.people import PersonRef
from bot.renderers import teams_card_parts
from bot.routing import Action, Form
from bot.server import Server
from bot.simulators import teams_activities as ta
from bot.simulators.bot_connector import ConnectorCall, FakeBotConnector
from bot.simulators.http import post
from bot.tickets import Origin
from store.db import Database
from store.models import ConversationRef, OutboxMessage, Ticket
from tests.harness import running_server

TRIAGE = "19:triage@thread.tacv2"
PERSONAL = "a:1personal-chat"
REQUESTER_AAD = "6f1c2d3e-0000-4000-8000-00000000a1a1"
AGENT: ta.Where = {"aad_object_id": "aad-agent-1", "user_id": "29:agent", "user_name": "Ada Agent"}


@cache
def _validator() -> Draft6Validator:
    schema = Path(adaptive_cards_package.__file__).parent / "schemas" / "schema-1.5.json"
    return Draft6Validator(json.loads(schema.read_text()))


def cards_in(call: ConnectorCall) -> list[dict[str, Any]]:
    return [a["content"] for a in (call.body or {}).get("attachments") or []
            if a.get("contentType") == teams_card_parts.CONTENT_TYPE]


def text_of(call: ConnectorCall) -> str:
    return json.dumps(call.body, ensure_ascii=False)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotConnector]:
    async with FakeBotConnector() as connector:
        yield connector
    for call in connector.activities:
        for card in cards_in(call):
            # "msteams" is a Teams extension the official schema does not know.
            errors = list(_validator().iter_errors({k: v for k, v in card.items() if k != "msteams"}))
            assert not errors, f"{call.method} {call.path}: {best_match(errors).message}"
            assert teams_card_parts.card_size(card) < 40_000


@pytest.fixture
def teams_config(make_config: Callable[..., AppConfig], fake: FakeBotConnector) -> AppConfig:
    # Slack off, so every outbox row is a Teams one and nothing leaves for slack.com.
    return make_config().model_copy(update={
        "slack": SlackConfig(),
        "teams": TeamsConfig(enabled=True, triage_conversation=TRIAGE, service_url=fake.service_url),
    })


@pytest.fixture
async def server(teams_config: AppConfig, db: Database, clock: ManualClock) -> AsyncIterator[Server]:
    async with running_server(teams_config, db, clock) as running:
        yield running


async def send(server: Server, activity: dict[str, Any] | bytes, **headers: str) -> tuple[int, Any]:
    body = activity if isinstance(activity, bytes) else json.dumps(activity).encode()
    return await post(server.url + "/api/messages", body, {"Content-Type": "application/json", **headers})


def posted_to(conversation: str) -> Callable[[ConnectorCall], bool]:
    return lambda c: c.ok and c.method == "POST" and c.conversation_id == conversation


async def settle(server: Server) -> None:
    """Run one more engine tick; it waits for the tick in flight, so every due outbox row has been tried."""
    assert server.engine is not None
    await server.engine.tick()


async def open_from_personal_chat(server: Server, fake: FakeBotConnector, text: str = "VPN keeps disconnecting"
                                  ) -> str:
    """Open a ticket by chatting; returns the triage card's activity id once card and requester copy are out
    and the bot has recorded where they went (a reply in the card's thread finds its ticket from then on)."""
    status, _ = await send(server, ta.message(text, service_url=fake.service_url))
    assert status == 201
    (card,) = await fake.wait_for(posted_to(TRIAGE))
    await fake.wait_for(posted_to(PERSONAL), count=2)  # the in-turn acknowledgement and the requester's card
    # The connector sees the card before the bot has committed the card's id: a human cannot reply in
    # that window, a test can (it failed CI once a loaded machine stretched the window).
    await settle(server)
    assert isinstance(card.response, dict)
    return str(card.response["id"])


def in_card_thread(card_id: str, who: ta.Where) -> ta.Where:
    """Where a message in the triage card's channel thread comes from."""
    return {**who, "conversation_type": "channel", "conversation_id": f"{TRIAGE};messageid={card_id}",
            "channel_id_teams": TRIAGE}


def card_action(fake: FakeBotConnector, action: Action, card_id: str, **who: Unpack[ta.Where]) -> dict[str, Any]:
    """An Action.Submit clicked on ticket 1's triage card."""
    return ta.message(None, service_url=fake.service_url, reply_to_id=card_id,
                      value={"action": action.value, "value": "1", "ticket_id": 1}, **in_card_thread(card_id, who))


async def ticket_count(db: Database) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(Ticket)) or 0)


async def conversation_ref(db: Database, key: str) -> ConversationRef | None:
    async with db.transaction() as session:
        return (await session.execute(select(ConversationRef).where(ConversationRef.key == key))).scalar_one_or_none()


async def test_a_message_in_a_personal_chat_opens_a_ticket_answers_and_posts_the_triage_card(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    card_id = await open_from_personal_chat(server, fake)

    ack, requester_card = fake.sent_to(PERSONAL)
    said = json.dumps(ack, ensure_ascii=False)
    assert "IT-1 opened — first response by {{DATE(" in said and "VPN keeps disconnecting" in said
    assert "Mute updates" in json.dumps(requester_card)
    triage = fake.activity(TRIAGE, card_id)
    assert triage is not None and "VPN keeps disconnecting" in json.dumps(triage)
    assert Action.CLAIM.value in json.dumps(triage)
    async with db.transaction() as session:
        ticket = (await session.execute(select(Ticket))).scalar_one()
    assert (ticket.origin_platform, ticket.origin_conversation) == ("teams", PERSONAL)
    reference = await conversation_ref(db, REQUESTER_AAD)
    assert reference is not None and (reference.kind, reference.usable) == ("person", True)
    assert reference.reference["conversation"]["id"] == PERSONAL
    assert reference.reference["conversation"]["tenantID"] == "tenant-1"


async def test_the_new_ticket_form_comes_back_with_the_error_and_then_creates_the_ticket(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    await send(server, ta.message("ithelp", service_url=fake.service_url))
    (form,) = await fake.wait_for(posted_to(PERSONAL))
    assert any(e.get("id") == "summary" for card in cards_in(form) for e in card["body"])
    assert isinstance(form.response, dict)
    form_id = str(form.response["id"])

    empty = {"form": Form.NEW_TICKET.value, "summary": " ", "description": "Screen flickers since Monday",
             "category": "", "urgency": "P2"}
    await send(server, ta.message(None, value=empty, reply_to_id=form_id, service_url=fake.service_url))
    (rejected,) = await fake.wait_for(lambda c: c.method == "PUT" and c.activity_id == form_id)
    assert "Please describe the problem" in text_of(rejected)
    assert "Screen flickers since Monday" in text_of(rejected)  # nothing typed is lost
    assert await ticket_count(db) == 0

    filled = {**empty, "summary": "Laptop screen flickers"}
    for _ in range(2):  # a double click on the same form opens one ticket
        await send(server, ta.message(None, value=filled, reply_to_id=form_id, service_url=fake.service_url))
    await fake.wait_for(posted_to(TRIAGE))
    assert "IT-1 opened — first response by {{DATE(" in json.dumps(fake.activity(PERSONAL, form_id),
                                                                   ensure_ascii=False)
    async with db.transaction() as session:
        ticket = (await session.execute(select(Ticket))).scalar_one()
    assert (ticket.summary, ticket.description, ticket.priority) == (
        "Laptop screen flickers", "Screen flickers since Monday", "P2")


async def test_mentioning_the_bot_in_a_channel_opens_a_ticket_without_the_mention(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    install = ta.conversation_update_installed(service_url=fake.service_url, conversation_type="channel")
    assert (await send(server, install))[0] == 201
    inbound = ta.message("Printer on floor 3 is jammed", mention_bot=True, conversation_type="channel",
                         service_url=fake.service_url)
    await send(server, inbound)

    (ack,) = await fake.wait_for(posted_to(inbound["conversation"]["id"]))
    assert "IT-1 opened — first response by {{DATE(" in text_of(ack)
    (card,) = await fake.wait_for(posted_to(TRIAGE))
    assert "Printer on floor 3 is jammed" in text_of(card) and "ITHelp" not in text_of(card)
    async with db.transaction() as session:
        assert (await session.execute(select(Ticket.summary))).scalar_one() == "Printer on floor 3 is jammed"
    channel = await conversation_ref(db, "19:helpdesk@thread.tacv2")
    assert channel is not None and channel.kind == "channel"
    assert channel.reference["conversation"]["id"] == "19:helpdesk@thread.tacv2"


async def test_status_list_and_help_answer_in_the_chat(server: Server, fake: FakeBotConnector) -> None:
    await open_from_personal_chat(server, fake)
    for word in ("status", "list", "help"):
        await send(server, ta.message(word, service_url=fake.service_url))
    answers = fake.sent_to(PERSONAL)[-3:]
    assert "Your open tickets" in json.dumps(answers[0]) and "VPN keeps disconnecting" in json.dumps(answers[0])
    assert "Your open tickets" in json.dumps(answers[1])  # list: *your open* tickets, as the manifest says
    assert "new ticket" in answers[2]["text"]


async def test_an_agent_claims_from_the_card_which_updates_in_place_and_the_requester_hears_of_it(
    server: Server, fake: FakeBotConnector
) -> None:
    card_id = await open_from_personal_chat(server, fake)

    status, _ = await send(server, card_action(fake, Action.CLAIM, card_id, **AGENT))
    assert status == 201

    (update,) = await fake.wait_for(lambda c: c.ok and c.method == "PUT" and c.conversation_id == TRIAGE)
    assert update.activity_id == card_id
    card = json.dumps(fake.activity(TRIAGE, card_id))
    assert "Ada Agent" in card and Action.CLAIM.value not in card
    (notice,) = await fake.wait_for(lambda c: posted_to(PERSONAL)(c) and "is on it" in text_of(c))
    assert "Ada Agent is on it." in text_of(notice)
    assert [c for c in fake.activities if c.method == "POST" and c.conversation_id == TRIAGE] != []
    assert len(fake.sent_to(TRIAGE)) == 1  # updated, never reposted


async def test_someone_who_is_not_an_agent_is_refused_in_the_cards_thread(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    card_id = await open_from_personal_chat(server, fake)
    thread = f"{TRIAGE};messageid={card_id}"

    await send(server, card_action(fake, Action.CLAIM, card_id, aad_object_id="aad-colleague", user_name="Cole"))

    (refusal,) = await fake.wait_for(posted_to(thread))
    assert refusal.body is not None and refusal.body["text"] == "Only IT agents can claim tickets."
    await settle(server)
    assert fake.updates_to(TRIAGE) == []
    async with db.transaction() as session:
        assert (await session.execute(select(Ticket.status))).scalar_one() == "new"


async def test_agent_and_requester_replies_are_relayed_both_ways(server: Server, fake: FakeBotConnector) -> None:
    card_id = await open_from_personal_chat(server, fake)
    thread = f"{TRIAGE};messageid={card_id}"

    agent_reply = ta.message("Which VPN client version?", mention_bot=True, service_url=fake.service_url,
                             **in_card_thread(card_id, AGENT))
    await send(server, agent_reply)
    (relayed,) = await fake.wait_for(lambda c: posted_to(PERSONAL)(c) and "Which VPN client" in text_of(c))
    assert "Ada Agent replied:" in text_of(relayed)
    assert isinstance(relayed.response, dict)
    # Slack/Teams show the message before the bot has recorded its id; a person reads it first. Without this
    # the reply could race the record and be taken for a new ticket (a flake seen once in ~10 runs).
    await settle(server)

    answer = ta.message("Version 5.2", reply_to_id=str(relayed.response["id"]), service_url=fake.service_url)
    await send(server, answer)
    (back,) = await fake.wait_for(lambda c: posted_to(thread)(c) and "Version 5.2" in text_of(c))
    assert "Alex Requester replied:" in text_of(back)
    await settle(server)
    assert len(fake.sent_to(TRIAGE)) == 1  # a reply is a comment, not a second ticket


async def test_the_same_activity_delivered_twice_opens_one_ticket(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    inbound = ta.message("Outlook won't start", service_url=fake.service_url)
    for _ in range(2):
        assert (await send(server, inbound))[0] == 201
    await fake.wait_for(posted_to(TRIAGE))
    await settle(server)
    assert await ticket_count(db) == 1
    assert len(fake.sent_to(TRIAGE)) == 1
    acks = [body for body in fake.sent_to(PERSONAL)
            if "opened — first response" in json.dumps(body, ensure_ascii=False)]
    assert len(acks) == 1


async def test_a_429_from_the_connector_is_retried_after_retry_after_and_delivered_once(
    server: Server, fake: FakeBotConnector, clock: ManualClock
) -> None:
    assert server.desk is not None
    kick: Callable[[], None] = server.desk.wake
    fake.fail_next(429, retry_after=30)
    # Opened by a service call so the triage card is the only thing sent (this person never chatted with us).
    await server.desk.tickets.open(PersonRef("teams", "aad-quiet", "Quinn"), "Badge reader broken",
                                   origin=Origin("teams"))
    kick()
    (limited,) = await fake.wait_for(lambda c: c.status == 429)
    assert limited.conversation_id == TRIAGE
    await settle(server)
    assert fake.sent_to(TRIAGE) == []  # not before Retry-After

    clock.advance(timedelta(seconds=31))
    kick()
    await fake.wait_for(posted_to(TRIAGE))
    await settle(server)
    assert len(fake.sent_to(TRIAGE)) == 1
    assert [c.status for c in fake.activities if c.conversation_id == TRIAGE] == [429, 201]


async def test_a_blocked_personal_chat_is_marked_and_the_notice_falls_back_to_the_triage_thread(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    card_id = await open_from_personal_chat(server, fake)
    fake.block_conversation(PERSONAL, code="MessageWritesBlocked")

    await send(server, card_action(fake, Action.CLAIM, card_id, **AGENT))

    thread = f"{TRIAGE};messageid={card_id}"
    (fallback,) = await fake.wait_for(posted_to(thread))
    assert "Couldn't reach Alex Requester directly" in text_of(fallback)
    assert "Ada Agent is on it." in text_of(fallback)
    reference = await conversation_ref(db, REQUESTER_AAD)
    assert reference is not None and not reference.usable
    assert reference.failure is not None and "MessageWritesBlocked" in reference.failure

    await send(server, card_action(fake, Action.START, card_id, **AGENT))
    await fake.wait_for(posted_to(thread), count=2)
    await settle(server)
    blocked = [c for c in fake.activities if c.conversation_id == PERSONAL and c.status == 403]
    assert len(blocked) == 1  # marked once, then not tried again: no loop
    async with db.transaction() as session:
        pending = await session.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.delivered_at.is_(None), OutboxMessage.dead_at.is_(None)))
    assert pending == 0


async def test_user_text_does_not_become_markup_in_any_card(server: Server, fake: FakeBotConnector) -> None:
    await open_from_personal_chat(server, fake, "**bold** {{DATE(2020-01-01T00:00:00Z)}}")
    texts = [element["text"] for call in fake.activities for card in cards_in(call)
             for element in card["body"] if element.get("type") == "TextBlock"]
    assert any("bold" in text for text in texts)
    # The renderer's own "Updated {{DATE(…)}}" line is meant; the user's 2020 date must not be a function.
    assert [text for text in texts if "**bold**" in text or "{{DATE(2020" in text] == []


async def test_malformed_requests_get_a_clear_400(server: Server) -> None:
    status, body = await send(server, b"not json")
    assert status == 400 and "not JSON" in body["error"]
    status, body = await send(server, b'{"text": "no type"}')
    assert status == 400 and "activity" in body["error"]
    status, body = await send(server, b'{"type": "message", "conversation": {"id": "x"}}')
    assert status == 400 and "serviceUrl" in body["error"]


async def test_with_app_credentials_an_unsigned_request_is_refused(
    teams_config: AppConfig, db: Database, clock: ManualClock, fake: FakeBotConnector
) -> None:
    config = teams_config.model_copy(update={"teams": teams_config.teams.model_copy(
        update={"app_id": "0b7f5a9e-3c1d-4e2f-9a8b-7c6d5e4f3a2b", "app_password": "secret"})})
    async with running_server(config, db, clock) as running:
        status, body = await send(running, ta.message("hello", service_url=fake.service_url))
        status_forged, _ = await send(running, ta.message("hello", service_url=fake.service_url),
                                      Authorization="Bearer not-a-token")
    assert (status, body) == (401, {"error": "unauthorized"})
    assert status_forged == 401
    assert await ticket_count(db) == 0
    assert fake.activities == []


async def test_an_action_execute_claim_is_answered_in_the_invoke_and_claims_the_ticket(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    card_id = await open_from_personal_chat(server, fake)
    invoke = ta.invoke_adaptive_card_action(Action.CLAIM.value, {"ticket_id": 1, "value": "1"},
                                            service_url=fake.service_url, reply_to_id=card_id,
                                            **in_card_thread(card_id, AGENT))
    status, body = await send(server, invoke)
    assert status == 200 and body["statusCode"] == 200
    (update,) = await fake.wait_for(lambda c: c.ok and c.method == "PUT" and c.conversation_id == TRIAGE)
    assert update.activity_id == card_id and "Ada Agent" in json.dumps(fake.activity(TRIAGE, card_id))
    async with db.transaction() as session:
        assert (await session.scalar(select(Ticket.status))) == "claimed"


TEAMS_PAGING = """
escalation:
  chains:
    desk:
      levels:
        - {notify: ["teams:user:aad-agent-1"], wait: 10m}
  policies:
    P3: {breach: desk}
"""


async def test_a_teams_page_is_edited_in_place_when_the_agent_acknowledges(
    make_config: Callable[..., AppConfig], fake: FakeBotConnector, db: Database, clock: ManualClock,
) -> None:
    config = make_config(TEAMS_PAGING).model_copy(update={
        "slack": SlackConfig(),
        "teams": TeamsConfig(enabled=True, triage_conversation=TRIAGE, service_url=fake.service_url),
    })
    agent_chat = "a:1agent-chat"
    async with running_server(config, db, clock) as server:
        # Ada has talked to the bot before, so it can reach her personal chat.
        await send(server, ta.message("help", service_url=fake.service_url, conversation_id=agent_chat, **AGENT))
        await open_from_personal_chat(server, fake)
        clock.advance(timedelta(hours=5))  # past P3's 4 business hours to first response
        await settle(server)
        [page_call] = [c for c in await fake.wait_for(posted_to(agent_chat), count=2)
                       if Action.ESCALATION_ACK.value in json.dumps(c.body)]
        assert isinstance(page_call.response, dict)
        page_id = str(page_call.response["id"])
        ack = ta.message(None, service_url=fake.service_url, reply_to_id=page_id, conversation_id=agent_chat,
                         value={"action": Action.ESCALATION_ACK.value, "value": "1"}, **AGENT)
        status, _ = await send(server, ack)
        assert status in (200, 201)
        await settle(server)
        page = fake.activity(agent_chat, page_id)
        assert page is not None and "acknowledged by Ada Agent" in json.dumps(page)
        assert Action.ESCALATION_ACK.value not in json.dumps(page)  # edited in place: the buttons are gone
        later_pages = [c for c in fake.activities if c.method == "POST" and c.conversation_id == agent_chat
                       and "paging stopped" in json.dumps(c.body)]
        assert later_pages == []  # no second message about it


async def test_someone_seen_only_in_a_channel_gets_their_updates_in_a_new_personal_chat(
    server: Server, fake: FakeBotConnector, db: Database
) -> None:
    inbound = ta.message("Projector in room 4 has no signal", mention_bot=True, conversation_type="channel",
                         service_url=fake.service_url)
    await send(server, inbound)
    (card,) = await fake.wait_for(posted_to(TRIAGE))
    assert isinstance(card.response, dict)
    await send(server, card_action(fake, Action.CLAIM, str(card.response["id"]), **AGENT))

    # The bot opened a 1:1 chat with Alex (as Teams lets a bot do) instead of posting in the triage thread.
    [created] = [c for c in await fake.wait_for(lambda c: c.ok and c.method == "POST" and c.path.endswith(
        "/v3/conversations"))]
    assert created.body is not None and created.body["members"][0]["id"] == "29:1user"
    assert isinstance(created.response, dict)
    chat = str(created.response["id"])
    notices = await fake.wait_for(posted_to(chat), count=2)  # the requester's card, then "Ada Agent is on it."
    assert any("Ada Agent is on it." in text_of(c) for c in notices)
    thread = f"{TRIAGE};messageid={card.response['id']}"
    assert not any("Couldn't reach" in text_of(c) for c in fake.activities if c.conversation_id == thread)
    reference = await conversation_ref(db, REQUESTER_AAD)
    assert reference is not None and (reference.kind, reference.usable) == ("person", True)
    assert reference.reference["conversation"]["id"] == chat
