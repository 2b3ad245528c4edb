"""Issue #17: Slack gets its answer before the desk reads or writes Slack, and nothing is lost after it.

A :ticket: reaction, a mention of the bot and the *Create IT ticket* shortcut each need Slack's Web API (the
message, its author, its link, the reply in its thread). Bolt runs listeners before the HTTP response, so the
listeners only write down what was asked; the engine does the rest after the ack, and retries it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest

from bot.clock import ManualClock
from bot.routing import Shortcut
from bot.simulators import slack_requests as rq
from bot.simulators.slack_api import BOT_USER_ID
from store.db import Database
from tests.harness import running_server
from tests.slack_harness import ALICE, REQUESTER, SECRET, SlackBot

GENERAL = "C0GENERAL"
MESSAGE_TS = "1700000100.000100"
ANSWER_WITHIN = 10
"""Seconds the test waits for Slack's answer: a listener held up by the paused fake would answer only after the
test config's 20 s request deadline."""


def _reaction(user: str) -> dict[str, object]:
    return {"type": "reaction_added", "user": user, "reaction": "ticket", "item_user": REQUESTER,
            "item": {"type": "message", "channel": GENERAL, "ts": MESSAGE_TS}}


def _thread_posts(bot: SlackBot) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == GENERAL and c.get("thread_ts")]


async def _served_once(bot: SlackBot) -> None:
    """Bolt checks the bot's token (auth.test) on a process's first request, once: get that out of the way."""
    status, _ = await bot.command("help")
    assert status == 200


async def test_ticket_reaction_is_acked_before_slack_is_read_and_files_the_message_after(bot: SlackBot) -> None:
    bot.slack.add_message(GENERAL, MESSAGE_TS, REQUESTER, "Wifi on floor 2 is down again")
    await _served_once(bot)
    before = len(bot.slack.calls)
    bot.slack.pause("conversations.history")  # Slack is slow to give the message back
    async with asyncio.timeout(ANSWER_WITHIN):
        status, _ = await bot.event(_reaction(ALICE))
    acked_at = time.monotonic()
    assert status == 200
    assert bot.slack.calls[before:] == []  # Slack had answered nothing for it when it got its 200
    assert await bot.tickets() == []

    bot.slack.resume()
    await bot.settle()
    [ticket] = await bot.tickets()
    assert ticket.summary == "Wifi on floor 2 is down again" and ticket.origin_link
    [ack] = _thread_posts(bot)
    assert str(ack["text"]).startswith(f"<@{REQUESTER}> {ticket.number} opened — first response by <!date^")
    assert [c["name"] for c in bot.slack.calls_to("reactions.add") if c["channel"] == GENERAL] == ["eyes"]
    for_it = [c for c in bot.slack.calls[before:] if c.args.get("channel") in (GENERAL, None)]
    assert for_it[0].method == "conversations.history" and all(c.at > acked_at for c in for_it)


@pytest.mark.parametrize("intake", ["reaction", "mention", "shortcut"])
async def test_with_slack_answering_nothing_a_reaction_a_mention_or_the_shortcut_is_still_acked(
        bot: SlackBot, intake: str) -> None:
    bot.slack.add_message(GENERAL, MESSAGE_TS, REQUESTER, "Printer on 3 jams on every job")
    await _served_once(bot)
    before = len(bot.slack.calls)
    bot.slack.pause()  # every Web API method
    async with asyncio.timeout(ANSWER_WITHIN):
        if intake == "reaction":
            status, _ = await bot.event(_reaction(ALICE))
        elif intake == "mention":
            status, _ = await bot.event({"type": "app_mention", "user": REQUESTER, "channel": GENERAL,
                                         "ts": MESSAGE_TS, "text": f"<@{BOT_USER_ID}> Printer on 3 jams on every job"})
        else:
            message = {"type": "message", "user": REQUESTER, "ts": MESSAGE_TS,
                       "text": "Printer on 3 jams on every job"}
            status, _ = await bot.send(rq.message_shortcut(Shortcut.CREATE_FROM_MESSAGE.value, ALICE, message,
                                                           GENERAL, SECRET))
    assert status == 200 and bot.slack.calls[before:] == []

    bot.slack.resume()
    await bot.settle()
    [ticket] = await bot.tickets()
    assert ticket.summary == "Printer on 3 jams on every job"
    [ack] = _thread_posts(bot)
    assert ack["thread_ts"] == MESSAGE_TS and f"{ticket.number} opened" in str(ack["text"])


async def test_mentioning_the_bot_in_a_channel_files_what_follows_and_answers_in_its_thread(bot: SlackBot) -> None:
    mention = {"type": "app_mention", "user": REQUESTER, "channel": GENERAL, "ts": MESSAGE_TS,
               "text": f"<@{BOT_USER_ID}> VPN is down for everyone on floor 4"}
    await bot.event(mention, event_id="EvMention1")
    await bot.event(mention, event_id="EvMention1", retry_num=1)  # Slack retrying the same event
    await bot.settle()
    [ticket] = await bot.tickets()
    assert ticket.summary == "VPN is down for everyone on floor 4"
    [ack] = _thread_posts(bot)  # the requester's own message: no name in front, their own clock
    assert str(ack["text"]).startswith(f"{ticket.number} opened") and "your time" in str(ack["text"])
    assert bot.slack.calls_to("reactions.add") == []


async def test_a_failing_web_api_is_retried_and_still_files_exactly_one_ticket_acknowledged_once(
        bot: SlackBot, clock: ManualClock) -> None:
    bot.slack.add_message(GENERAL, MESSAGE_TS, REQUESTER, "Wifi on floor 2 is down again")
    # 502s: slack_sdk retries 500 and 503 itself (sleeping), so these reach the desk's own retry.
    bot.slack.fail_next("conversations.history", status=502)
    bot.slack.fail_next("chat.postMessage", status=502, channel=GENERAL)
    status, _ = await bot.event(_reaction(ALICE))
    assert status == 200
    await bot.settle()
    assert await bot.tickets() == []  # the message could not be read: the request waits out its backoff

    clock.advance(timedelta(seconds=5))
    await bot.settle()
    [ticket] = await bot.tickets()
    assert _thread_posts(bot) == []  # Slack refused the acknowledgement once as well

    clock.advance(timedelta(seconds=5))
    await bot.settle()
    assert [t.id for t in await bot.tickets()] == [ticket.id]
    [ack] = _thread_posts(bot)
    assert str(ack["text"]).startswith(f"<@{REQUESTER}> {ticket.number} opened")
    assert len(bot.slack.calls_to("reactions.add")) == 1
    assert bot.slack.calls_to("chat.postEphemeral") == []  # Alice filed it: no "already a ticket" for her


async def test_a_reaction_acked_just_before_the_desk_went_down_is_filed_by_the_next_one_up(
        bot: SlackBot, db: Database, clock: ManualClock) -> None:
    bot.slack.add_message(GENERAL, MESSAGE_TS, REQUESTER, "Wifi on floor 2 is down again")
    assert bot.server.engine is not None
    await bot.server.engine.stop()  # from here on nothing of this process runs: as if it died after the ack
    status, _ = await bot.event(_reaction(ALICE), event_id="EvDown1")
    assert status == 200
    await bot.event(_reaction(ALICE), event_id="EvDown1", retry_num=1)  # Slack had already retried it, too
    assert await bot.tickets() == []

    async with running_server(bot.server.config, db, clock, replica="next") as other:
        assert other.engine is not None
        await other.engine.tick()
    [ticket] = await bot.tickets()
    assert ticket.summary == "Wifi on floor 2 is down again"
    [ack] = _thread_posts(bot)
    assert str(ack["text"]).startswith(f"<@{REQUESTER}> {ticket.number} opened")
    assert bot.slack.calls_to("chat.postEphemeral") == []


async def test_someone_slack_cannot_describe_is_not_looked_up_again_before_each_of_their_acks(bot: SlackBot) -> None:
    # users.info answers user_not_found for someone the workspace fake doesn't know (a guest, a deleted profile).
    for n in range(3):
        status, body = await bot.command(f"Badge reader {n} at the side door is dead", user="UNODESCRIBE")
        assert status == 200 and "IT-" in str(body)
    lookups = [c for c in bot.slack.calls if c.method == "users.info" and c.args.get("user") == "UNODESCRIBE"]
    assert len(lookups) == 1, "each request asked Slack again before its ack"
