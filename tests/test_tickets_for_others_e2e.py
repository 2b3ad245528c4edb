"""Slack end to end: a :ticket: reaction or the message shortcut files a ticket for the message's author.

Teams has neither reactions that reach a bot nor this shortcut, so these stories are Slack's alone.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from bot.routing import Shortcut
from bot.simulators import slack_requests as rq
from tests.slack_harness import ALICE, BOB, REQUESTER, SECRET, SlackBot

GENERAL = "C0GENERAL"
MESSAGE_TS = "1700000100.000100"


def _reaction(user: str) -> dict[str, object]:
    return {"type": "reaction_added", "user": user, "reaction": "ticket", "item_user": REQUESTER,
            "item": {"type": "message", "channel": GENERAL, "ts": MESSAGE_TS}}


def _thread_posts(bot: SlackBot) -> list[dict[str, object]]:
    return [c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == GENERAL and c.get("thread_ts")]


async def test_an_agent_reacting_to_a_colleagues_message_files_it_for_the_author_on_the_authors_clock(
        bot: SlackBot) -> None:
    bot.slack.add_message(GENERAL, MESSAGE_TS, REQUESTER, "Wifi on floor 2 is down again")
    await bot.event(_reaction(ALICE))  # Alice is in London, Rita (the author) in Kolkata
    await bot.settle()  # filed and acknowledged after Slack has its answer
    [ticket] = await bot.tickets()
    [ack] = _thread_posts(bot)
    text = str(ack["text"])
    assert text.startswith(f"<@{REQUESTER}> {ticket.number} opened — first response by <!date^")
    assert ticket.first_response_due is not None
    due = ticket.first_response_due.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo("Asia/Kolkata"))
    assert f"{due:%H:%M} (Rita Requester's time)" in text
    assert "your time" not in text


async def test_the_message_shortcut_addresses_the_author_not_the_agent_who_used_it(bot: SlackBot) -> None:
    bot.slack.add_message(GENERAL, MESSAGE_TS, REQUESTER, "Can't print to HP-3")
    message = {"type": "message", "user": REQUESTER, "ts": MESSAGE_TS, "text": "Can't print to HP-3"}
    await bot.send(rq.message_shortcut(Shortcut.CREATE_FROM_MESSAGE.value, ALICE, message, GENERAL, SECRET))
    await bot.settle()
    [ack] = _thread_posts(bot)
    assert str(ack["text"]).startswith(f"<@{REQUESTER}> ") and "your time" not in str(ack["text"])


async def test_a_retried_or_repeated_reaction_is_silent_and_only_someone_else_hears_it_is_already_a_ticket(
        bot: SlackBot) -> None:
    bot.slack.add_message(GENERAL, MESSAGE_TS, REQUESTER, "Wifi on floor 2 is down again")
    await bot.event(_reaction(ALICE), event_id="EvReact1")
    await bot.event(_reaction(ALICE), event_id="EvReact1", retry_num=1)  # Slack retrying the same event
    await bot.event(_reaction(ALICE), event_id="EvReact2")  # Alice took the reaction off and put it back
    await bot.settle()
    [ticket] = await bot.tickets()
    assert len(_thread_posts(bot)) == 1
    assert bot.slack.calls_to("chat.postEphemeral") == []
    await bot.event(_reaction(BOB), event_id="EvReact3")  # a colleague who didn't know
    await bot.settle()
    [told] = await bot.slack.wait_for_calls("chat.postEphemeral", 1)
    assert told["user"] == BOB and told["text"] == f"That message is already {ticket.number}."
