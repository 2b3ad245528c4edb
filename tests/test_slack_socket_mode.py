"""Slack over Socket Mode: the same desk, reached through a websocket instead of a public URL.

The fake Slack answers ``apps.connections.open`` with its own websocket, pushes envelopes the way
Slack does and records the app's acks; the bot runs slack_sdk's real Socket Mode client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from bot.people import PersonRef
from bot.routing import Action
from bot.server import Server
from bot.simulators import slack_requests as rq
from bot.simulators.slack_api import FakeSlackApi
from store.models import Ticket
from tests.harness import running_server
from tests.slack_harness import ALICE, REQUESTER, TRIAGE


@pytest.fixture
async def socket_bot(db: Any, clock: Any, make_config: Any) -> AsyncIterator[tuple[Server, FakeSlackApi]]:
    async with FakeSlackApi() as slack:
        slack.add_user(REQUESTER, real_name="Rita Requester", tz="Asia/Kolkata")
        slack.add_user(ALICE, real_name="Alice", tz="Europe/London")
        config = make_config()
        config = config.model_copy(update={"slack": config.slack.model_copy(
            update={"api_url": slack.url, "app_token": "xapp-1-A0FAKE-test"})})
        async with running_server(config, db, clock, socket_mode=True) as server:
            yield server, slack


async def test_requester_opens_a_ticket_over_socket_mode_and_it_reaches_triage(
    socket_bot: tuple[Server, FakeSlackApi],
) -> None:
    server, slack = socket_bot
    ack = await slack.send_envelope("slash_commands", rq.slash_command_fields("VPN drops every ten minutes",
                                                                              REQUESTER))
    assert ack["response_type"] == "ephemeral"
    assert "IT-1" in ack["text"] and "VPN drops every ten minutes" in ack["text"]
    # Monday 09:00 in London + 4 business hours (P3) = 13:00 London = 18:30 in Rita's Kolkata.
    assert "first response by <!date^" in ack["text"] and "|Mon 23 Nov 18:30 (your time)>" in ack["text"]
    opened = [call for call in slack.calls if call.method == "apps.connections.open"]
    assert opened and opened[0].headers["Authorization"].startswith("Bearer xapp-")
    # The engine was kicked after the envelope, as after an HTTP request: the triage card goes out.
    posts = await slack.wait_for_calls("chat.postMessage", 2)
    assert TRIAGE in {post["channel"] for post in posts}
    assert server.desk is not None
    async with server.desk.db.reading() as session:
        tickets = (await session.execute(select(Ticket))).scalars().all()
    assert [(t.summary, t.setup_pending) for t in tickets] == [("VPN drops every ten minutes", False)]


async def test_an_agent_claims_from_the_triage_card_over_socket_mode(
    socket_bot: tuple[Server, FakeSlackApi],
) -> None:
    server, slack = socket_bot
    await slack.send_envelope("slash_commands", rq.slash_command_fields("Printer jammed", REQUESTER))
    await slack.wait_for_calls("chat.postMessage", 2)
    click = rq.block_action_payload(Action.CLAIM.value, "1", ALICE, channel_id=TRIAGE, message_ts="1.0")
    await slack.send_envelope("interactive", click)
    assert server.desk is not None
    assert (await server.desk.tickets.get(1)).assignee_name == "Alice"


async def test_a_direct_message_over_socket_mode_opens_a_ticket_like_over_http(
    socket_bot: tuple[Server, FakeSlackApi],
) -> None:
    server, slack = socket_bot
    event = {"type": "message", "channel": f"D{REQUESTER}", "channel_type": "im", "user": REQUESTER,
             "text": "Outlook keeps asking for my password", "ts": "1700000100.000100"}
    ack = await slack.send_envelope("events_api", rq.event_callback_payload(event))
    assert ack == {}  # events are acked empty, at once
    posts = await slack.wait_for_calls("chat.postMessage", 2)
    assert TRIAGE in {post["channel"] for post in posts}
    assert server.desk is not None
    [ticket] = await server.desk.tickets.tickets_of(PersonRef("slack", REQUESTER), open_only=True)
    assert ticket.summary == "Outlook keeps asking for my password"


async def test_after_the_socket_drops_the_bot_reconnects_and_keeps_serving(
    socket_bot: tuple[Server, FakeSlackApi],
) -> None:
    server, slack = socket_bot
    await slack.wait_for_sockets(1)
    assert await slack.drop_sockets() == 1
    # slack_sdk's client asks for a fresh URL and connects again, with no help from us.
    ack = await slack.send_envelope("slash_commands", rq.slash_command_fields("Laptop won't charge", REQUESTER),
                                    timeout=30)
    assert "IT-1" in ack["text"]
    opened = [call for call in slack.calls if call.method == "apps.connections.open"]
    assert len(opened) >= 2, "the bot never asked for a new connection"
    await slack.wait_for_calls("chat.postMessage", 2)
    click = rq.block_action_payload(Action.CLAIM.value, "1", ALICE, channel_id=TRIAGE, message_ts="1.0")
    await slack.send_envelope("interactive", click)
    assert server.desk is not None
    assert (await server.desk.tickets.get(1)).assignee_name == "Alice"
