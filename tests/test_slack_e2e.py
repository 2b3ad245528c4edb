"""Slack end to end: signed requests into /slack/events, a fake Slack Web API on loopback."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from slack_sdk.models.blocks import Block

from bot.routing import Action, Form, Shortcut
from bot.simulators import slack_requests as rq
from store.models import Ticket
from tests.slack_harness import ALICE, BOB, MALLORY, REQUESTER, SECRET, TRIAGE, SlackBot


def all_blocks(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [block for call in calls for block in call.get("blocks") or []]


async def test_slash_command_opens_a_ticket_acks_ephemerally_and_posts_the_triage_card(bot: SlackBot) -> None:
    status, body = await bot.command("VPN keeps disconnecting")
    assert status == 200 and body["response_type"] == "ephemeral"
    tickets = await bot.tickets()
    assert len(tickets) == 1 and body["text"].startswith(f"{tickets[0].number} opened — first response by <!date^")
    await bot.settle()
    triage = [c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == TRIAGE]
    assert len(triage) == 1 and "VPN keeps disconnecting" in json.dumps(triage[0]["blocks"])
    actions = {e["action_id"] for b in triage[0]["blocks"] if b["type"] == "actions" for e in b["elements"]}
    assert {Action.CLAIM.value, Action.START.value, Action.WAIT.value, Action.RESOLVE.value,
            Action.PRIORITY.value} <= actions
    for block in all_blocks(bot.slack.calls_to("chat.postMessage")):
        Block.parse(block).validate_json()  # type: ignore[union-attr]


async def test_bad_signature_is_refused_and_nothing_is_stored(bot: SlackBot) -> None:
    request = rq.slash_command("printer broken", REQUESTER, "wrong-secret")
    status, _ = await bot.send(request)
    assert status == 401 and await bot.tickets() == []


async def test_stale_timestamp_is_refused(bot: SlackBot) -> None:
    import time

    request = rq.slash_command("printer broken", REQUESTER, SECRET, timestamp=int(time.time()) - 60 * 10)
    status, _ = await bot.send(request)
    assert status == 401 and await bot.tickets() == []


async def test_slash_command_alone_opens_a_modal_and_empty_summary_is_an_inline_error(bot: SlackBot) -> None:
    status, _ = await bot.command("")
    assert status == 200
    opened = await bot.slack.wait_for_calls("views.open", 1)
    assert opened[0]["view"]["callback_id"] == Form.NEW_TICKET.value
    status, body = await bot.send(rq.view_submission(Form.NEW_TICKET.value, {"summary": {"input": "   "}},
                                                     REQUESTER, SECRET))
    assert status == 200 and body["response_action"] == "errors" and "summary" in body["errors"]
    assert await bot.tickets() == []
    status, body = await bot.send(rq.view_submission(
        Form.NEW_TICKET.value,
        {"summary": {"input": "Monitor flickers"}, "description": {"input": "Since the update, every 5 minutes"}},
        REQUESTER, SECRET))
    assert status == 200 and not body
    [ticket] = await bot.tickets()
    assert ticket.summary == "Monitor flickers" and ticket.description.startswith("Since the update")


async def test_help_status_and_list_answer_the_requester(bot: SlackBot) -> None:
    _, helped = await bot.command("help")
    assert "/ithelp" in helped["text"]
    _, empty = await bot.command("status")
    assert "You have no open tickets." in empty["text"]
    await bot.command("Keyboard missing keys")
    _, status = await bot.command("status")
    assert "Keyboard missing keys" in json.dumps(status["blocks"]) and "new" in json.dumps(status["blocks"])
    _, listed = await bot.command("list")
    assert "IT-1" in json.dumps(listed["blocks"])


async def test_a_direct_message_opens_a_ticket_and_a_thread_reply_is_a_comment(bot: SlackBot) -> None:
    await bot.event({"type": "message", "channel_type": "im", "channel": f"D{REQUESTER}", "user": REQUESTER,
                     "text": "Outlook asks for my password every hour", "ts": "1700000001.000100"})
    [ticket] = await bot.tickets()
    await bot.settle()
    dm_root = [c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == REQUESTER]
    assert len(dm_root) == 1  # the requester's own card, root of the ticket's DM thread
    root_ts = bot.slack.messages[f"D{REQUESTER}"][0]["ts"]
    await bot.event({"type": "message", "channel_type": "im", "channel": f"D{REQUESTER}", "user": REQUESTER,
                     "text": "It happens on my phone too", "ts": "1700000002.000100", "thread_ts": root_ts})
    assert len(await bot.tickets()) == 1 and await bot.events("commented") == 1
    await bot.settle()
    relayed = [c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == TRIAGE and c.get("thread_ts")]
    assert len(relayed) == 1 and "It happens on my phone too" in json.dumps(relayed[0]["blocks"])
    assert ticket.origin_platform == "slack"


async def test_ticket_reaction_turns_a_channel_message_into_a_ticket_for_its_author(bot: SlackBot) -> None:
    bot.slack.add_message("C0GENERAL", "1700000100.000100", REQUESTER, "Wifi on floor 2 is down again")
    event = {"type": "reaction_added", "user": ALICE, "reaction": "ticket", "item_user": REQUESTER,
             "item": {"type": "message", "channel": "C0GENERAL", "ts": "1700000100.000100"}}
    await bot.event(event)
    await bot.event(event)  # a second :ticket: on the same message is the same ticket
    await bot.settle()
    [ticket] = await bot.tickets()
    assert ticket.summary == "Wifi on floor 2 is down again" and ticket.origin_link
    requester = await _person(bot, ticket.requester_id)
    assert requester == REQUESTER


async def test_message_shortcut_creates_a_ticket(bot: SlackBot) -> None:
    message = {"type": "message", "user": REQUESTER, "ts": "1700000200.000100", "text": "Can't print to HP-3"}
    status, _ = await bot.send(rq.message_shortcut(Shortcut.CREATE_FROM_MESSAGE.value, ALICE, message,
                                                   "C0GENERAL", SECRET))
    assert status == 200
    await bot.settle()
    [ticket] = await bot.tickets()
    assert ticket.summary == "Can't print to HP-3"


async def _person(bot: SlackBot, person_id: int) -> str:
    from store.models import Person

    assert bot.server.desk is not None
    async with bot.server.desk.db.transaction() as session:
        person = await session.get(Person, person_id)
        assert person is not None
        return person.platform_user_id


async def _opened(bot: SlackBot, text: str = "Laptop fan is loud") -> Ticket:
    await bot.command(text)
    await bot.settle()
    return (await bot.tickets())[-1]


async def test_agent_claim_updates_the_card_in_place_and_tells_the_requester(bot: SlackBot) -> None:
    ticket = await _opened(bot)
    card_ts = bot.slack.messages[TRIAGE][0]["ts"]
    status, _ = await bot.click(Action.CLAIM, str(ticket.id), ALICE)
    assert status == 200
    await bot.settle()
    updates = [c for c in bot.slack.calls_to("chat.update") if c["channel"] == TRIAGE]
    assert updates and all(u["ts"] == card_ts for u in updates)
    assert "Alice" in json.dumps(updates[-1]["blocks"])
    assert len([c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == TRIAGE]) == 1
    dm_notices = [c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == f"D{REQUESTER}"
                  and c.get("thread_ts")]
    assert any("Alice is on it." in json.dumps(c) for c in dm_notices)


async def test_non_agent_claim_is_refused_and_nothing_changes(bot: SlackBot) -> None:
    ticket = await _opened(bot)
    await bot.click(Action.CLAIM, str(ticket.id), MALLORY)
    [ephemeral] = await bot.slack.wait_for_calls("chat.postEphemeral", 1)
    assert ephemeral["user"] == MALLORY and ephemeral["text"] == "Only IT agents can claim tickets."
    assert (await bot.tickets())[0].assignee_id is None and await bot.events("claimed") == 0


async def test_two_agents_claiming_at_once_leaves_one_owner(bot: SlackBot) -> None:
    ticket = await _opened(bot)
    await asyncio.gather(bot.click(Action.CLAIM, str(ticket.id), ALICE), bot.click(Action.CLAIM, str(ticket.id), BOB))
    assert await bot.events("claimed") == 1
    [refusal] = await bot.slack.wait_for_calls("chat.postEphemeral", 1)
    assert "is already claimed by" in refusal["text"]


async def test_thread_replies_are_relayed_both_ways_exactly_once(bot: SlackBot) -> None:
    ticket = await _opened(bot)
    card_ts = bot.slack.messages[TRIAGE][0]["ts"]
    agent_reply = {"type": "message", "channel": TRIAGE, "channel_type": "channel", "user": ALICE,
                   "text": "Can you try a different dock?", "ts": "1700000300.000100", "thread_ts": card_ts}
    await bot.event(agent_reply, event_id="EvAgent1")
    await bot.event(agent_reply, event_id="EvAgent1", retry_num=1)  # Slack retries: no second relay
    await bot.settle()
    to_requester = [c for c in bot.slack.calls_to("chat.postMessage")
                    if c["channel"] == f"D{REQUESTER}" and "different dock" in json.dumps(c)]
    assert len(to_requester) == 1
    dm_root = bot.slack.messages[f"D{REQUESTER}"][0]["ts"]
    assert to_requester[0]["thread_ts"] == dm_root
    requester_reply = {"type": "message", "channel": f"D{REQUESTER}", "channel_type": "im", "user": REQUESTER,
                       "text": "Tried it, same noise", "ts": "1700000301.000100", "thread_ts": dm_root}
    await bot.event(requester_reply, event_id="EvReq1")
    await bot.event(requester_reply, event_id="EvReq1")
    await bot.settle()
    to_triage = [c for c in bot.slack.calls_to("chat.postMessage")
                 if c["channel"] == TRIAGE and "same noise" in json.dumps(c)]
    assert len(to_triage) == 1 and to_triage[0]["thread_ts"] == card_ts
    assert await bot.events("commented") == 2 and ticket.id


async def test_an_event_delivered_twice_opens_one_ticket(bot: SlackBot) -> None:
    event = {"type": "message", "channel_type": "im", "channel": f"D{REQUESTER}", "user": REQUESTER,
             "text": "Screen is black", "ts": "1700000400.000100"}
    await bot.event(event, event_id="EvDup")
    await bot.event(event, event_id="EvDup", retry_num=1)
    await bot.event(event, event_id="EvDup", retry_num=2)
    assert len(await bot.tickets()) == 1


async def test_channel_ping_text_never_reaches_slack_unescaped(bot: SlackBot) -> None:
    await bot.command("<!channel> printer down <@UAGENT1> <https://evil.example|click>")
    await bot.settle()
    everything = json.dumps([call.args for call in bot.slack.calls])
    assert "<!channel>" not in everything and "@channel printer down @Alice" in everything
    # The requester's link shows where it goes on the card: no label can disguise it.
    assert "<https://evil.example|click>" not in everything and "click (https://evil.example)" in everything


async def test_slack_answering_429_then_200_delivers_the_card_once_after_retry_after(bot: SlackBot, clock: Any) -> None:
    bot.slack.fail_next("chat.postMessage", status=429, retry_after=5, times=1)
    await bot.command("Docking station dead")
    await bot.settle()
    [failed] = [c for c in bot.slack.calls if c.method == "chat.postMessage" and c.status == 429]
    channel = failed.args["channel"]

    def delivered() -> list[Any]:
        return [c for c in bot.slack.calls if c.method == "chat.postMessage" and c.ok and c.args["channel"] == channel]

    assert delivered() == []
    clock.advance(timedelta(seconds=4))  # Retry-After not over yet: nothing is sent
    await bot.settle()
    assert delivered() == []
    clock.advance(timedelta(seconds=3))
    await bot.settle()
    assert len(delivered()) == 1  # once, and only after Retry-After
    await bot.settle()
    assert len(delivered()) == 1


async def test_app_home_shows_my_tickets_and_for_agents_the_queue(bot: SlackBot) -> None:
    await _opened(bot, "Need a new mouse")
    await bot.event({"type": "app_home_opened", "user": REQUESTER, "channel": f"D{REQUESTER}", "tab": "home"})
    home = bot.slack.home_views[REQUESTER]
    text = json.dumps(home)
    assert home["type"] == "home" and "Need a new mouse" in text and "Unclaimed" not in text
    await bot.event({"type": "app_home_opened", "user": ALICE, "channel": f"D{ALICE}", "tab": "home"})
    agent_home = json.dumps(bot.slack.home_views[ALICE])
    assert "Unclaimed" in agent_home and "Need a new mouse" in agent_home


async def test_members_of_the_agents_user_group_can_claim(bot: SlackBot) -> None:
    bot.slack.add_usergroup("S0ITDESK", ["UGROUPIE"])
    bot.slack.add_user("UGROUPIE", name="gina", real_name="Gina Groupie")
    adapter = bot.server.adapters["slack"]
    adapter.desk.config.agents.slack_usergroups.append("S0ITDESK")  # as app.yaml would list it
    await adapter.refresh_agent_groups()
    ticket = await _opened(bot)
    await bot.click(Action.CLAIM, str(ticket.id), "UGROUPIE")
    assert await bot.events("claimed") == 1
    assert bot.slack.calls_to("chat.postEphemeral") == []


async def test_a_triage_card_someone_deleted_is_posted_again_and_updated_from_then_on(bot: SlackBot) -> None:
    await bot.command("Monitor flickers")
    await bot.settle()
    [ticket] = await bot.tickets()
    bot.slack.messages[TRIAGE].clear()  # someone deleted the card in Slack
    await bot.click(Action.CLAIM, str(ticket.id), ALICE, channel_id=TRIAGE)
    await bot.settle()
    reposted = [c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == TRIAGE]
    assert len(reposted) == 2 and "Alice" in json.dumps(reposted[-1]["blocks"])  # a fresh card, current state
    await bot.click(Action.START, str(ticket.id), ALICE, channel_id=TRIAGE)
    await bot.settle()
    [card] = bot.slack.messages[TRIAGE]
    assert "In progress" in json.dumps(card["blocks"]) or "in progress" in json.dumps(card["blocks"])
    assert len([c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == TRIAGE]) == 2  # edited
