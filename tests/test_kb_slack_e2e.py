"""Self-service in Slack, over real HTTP: articles offered with the ticket, "This solved it" closing it."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.routing import Action, Form
from bot.simulators import slack_requests as rq
from store.knowledge import SENT, SOLVED, KbUse
from store.survey_models import Survey
from tests.slack_harness import ALICE, BOB, MALLORY, REQUESTER, SECRET, TRIAGE, SlackBot

ARTICLES = Path(__file__).parent / "data" / "kb" / "articles"
KNOWLEDGE = f"""
knowledge:
  folder: {ARTICLES}
escalation:
  chains:
    urgent:
      levels:
        - {{notify: ["slack:user:{BOB}"], wait: 10m}}
  policies:
    P3: {{breach: urgent}}
"""


@pytest.fixture
def slack_extra_config() -> str:
    return KNOWLEDGE


async def indexed(bot: SlackBot) -> None:
    assert bot.server.desk is not None
    await bot.server.desk.knowledge.reindex()


def suggestion_posts(bot: SlackBot) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls_to("chat.postMessage")
            if "may solve it right away" in json.dumps(c.get("blocks") or c.get("text"))]


def solved_buttons(post: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["text"]["text"], e["value"]) for b in post["blocks"] if b["type"] == "actions"
            for e in b["elements"] if e["action_id"] == Action.KB_SOLVED.value]


async def solved_uses(bot: SlackBot) -> list[int]:
    assert bot.server.desk is not None
    async with bot.server.desk.db.reading() as session:
        return list((await session.scalars(select(KbUse.ticket_id).where(KbUse.kind == SOLVED))).all())


async def test_filing_from_slash_command_offers_matching_articles_in_the_requesters_thread(bot: SlackBot) -> None:
    await indexed(bot)
    status, body = await bot.command("My VPN keeps disconnecting when I work from home")
    assert status == 200 and "opened" in body["text"]  # filed at once: the articles never hold up the ticket
    await bot.settle()
    [ticket] = await bot.tickets()
    [post] = suggestion_posts(bot)
    assert post["channel"] == f"D{REQUESTER}" and post.get("thread_ts")  # under the requester's card
    assert "VPN keeps disconnecting or dropping" in json.dumps(post["blocks"])
    buttons = solved_buttons(post)
    assert 1 <= len(buttons) <= 3 and all(value.startswith(f"{ticket.id}:") for _, value in buttons)
    assert ticket.status == "new"


async def test_a_direct_message_gets_suggestions_too(bot: SlackBot) -> None:
    await indexed(bot)
    await bot.event({"type": "message", "channel_type": "im", "channel": f"D{REQUESTER}", "user": REQUESTER,
                     "text": "printer on the 2nd floor is jammed again", "ts": "1700000001.000100"})
    await bot.settle()
    [post] = suggestion_posts(bot)
    assert "Printer jammed or offline" in json.dumps(post["blocks"])


async def test_the_new_ticket_form_gets_suggestions_from_its_summary_and_description(bot: SlackBot) -> None:
    await indexed(bot)
    status, body = await bot.send(rq.view_submission(
        Form.NEW_TICKET.value, {"summary": {"input": "Can't get into the building"},
                                "description": {"input": "my badge doesn't open the door anymore"}},
        REQUESTER, SECRET))
    assert status == 200 and not body
    await bot.settle()
    assert len(await bot.tickets()) == 1
    [post] = suggestion_posts(bot)
    assert "Door badge not working" in json.dumps(post["blocks"])


async def test_this_solved_it_resolves_as_self_served_with_no_pages_and_no_survey(bot: SlackBot,
                                                                                  clock: ManualClock) -> None:
    await indexed(bot)
    await bot.command("forgot my password")
    await bot.command("outlook isn't getting new emails")  # not solved by its article: pages as usual
    await bot.settle()
    solved, unsolved = await bot.tickets()
    post = next(p for p in suggestion_posts(bot) if "Reset your password" in json.dumps(p["blocks"]))
    _, value = solved_buttons(post)[0]
    assert value.startswith(f"{solved.id}:")
    await bot.click(Action.KB_SOLVED, value, REQUESTER, channel_id=f"D{REQUESTER}")
    await bot.settle()
    solved, unsolved = await bot.tickets()
    assert solved.status == "resolved" and await solved_uses(bot) == [solved.id]
    told = [c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == f"D{REQUESTER}"]
    assert "Marked as solved. Glad the article helped!" in json.dumps(told[-1]["blocks"])
    triage_cards = [c for c in bot.slack.calls_to("chat.update") if c["channel"] == TRIAGE]
    assert "Self-served" in json.dumps(triage_cards[-1]["blocks"])

    clock.advance(timedelta(days=5))  # far past the P3 first-response and resolution targets
    await bot.settle()
    pages = json.dumps([c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == BOB])
    assert unsolved.number in pages and solved.number not in pages
    async with bot.server.desk.db.reading() as session:  # type: ignore[union-attr]
        assert (await session.scalars(select(Survey))).all() == []
    assert await bot.events("resolved") == 1


async def test_only_the_requester_can_say_it_is_solved(bot: SlackBot) -> None:
    await indexed(bot)
    await bot.command("forgot my password")
    await bot.settle()
    [post] = suggestion_posts(bot)
    _, value = solved_buttons(post)[0]
    for someone_else in (MALLORY, ALICE):
        await bot.click(Action.KB_SOLVED, value, someone_else, channel_id=f"D{REQUESTER}")
    refusals = await bot.slack.wait_for_calls("chat.postEphemeral", 2)
    assert all("Only the person who asked" in r["text"] for r in refusals)
    [ticket] = await bot.tickets()
    assert ticket.status == "new" and await solved_uses(bot) == []


async def test_no_matching_article_means_no_suggestion_message(bot: SlackBot) -> None:
    await indexed(bot)
    await bot.command("zxqv blorf")
    await bot.settle()
    assert len(await bot.tickets()) == 1 and suggestion_posts(bot) == []


async def test_an_agent_searches_and_sends_an_article_to_the_requesters_thread(bot: SlackBot) -> None:
    await indexed(bot)
    await bot.command("The thing on the 2nd floor won't give me my pages")  # words no article uses
    await bot.settle()
    [ticket] = await bot.tickets()
    triage_card = next(c for c in bot.slack.calls_to("chat.postMessage") if c["channel"] == TRIAGE)
    assert (Action.KB_SEND.value, str(ticket.id)) in [
        (e["action_id"], e.get("value")) for b in triage_card["blocks"] if b["type"] == "actions"
        for e in b["elements"]]

    await bot.click(Action.KB_SEND, str(ticket.id), ALICE, trigger_id="trig-1")
    [opened] = await bot.slack.wait_for_calls("views.open", 1)
    assert opened["view"]["callback_id"] == Form.SEND_ARTICLE.value

    status, body = await bot.send(rq.view_submission(
        Form.SEND_ARTICLE.value, {"query": {"input": "print job stuck in queue"}}, ALICE, SECRET,
        private_metadata=str(ticket.id)))
    assert status == 200 and body["response_action"] == "update"
    [radio] = [b for b in body["view"]["blocks"] if b["block_id"] == "article"]
    options = {o["text"]["text"]: o["value"] for o in radio["element"]["options"]}
    article_id = options["Print jobs stuck in the queue"]

    status, body = await bot.send(rq.view_submission(
        Form.SEND_ARTICLE.value, {"query": {"input": "print job stuck in queue"},
                                  "article": {"input": {"type": "radio_buttons",
                                                        "selected_option": {"value": article_id}}}},
        ALICE, SECRET, private_metadata=str(ticket.id)))
    assert status == 200 and not body
    await bot.settle()
    to_requester = [c for c in bot.slack.calls_to("chat.postMessage")
                    if c["channel"] == f"D{REQUESTER}" and "Print jobs stuck in the queue" in json.dumps(c)]
    assert len(to_requester) == 1 and to_requester[0].get("thread_ts")
    async with bot.server.desk.db.reading() as session:  # type: ignore[union-attr]
        sent = (await session.execute(select(KbUse.ticket_id, KbUse.article_id).where(KbUse.kind == SENT))).all()
    assert [tuple(row) for row in sent] == [(ticket.id, int(article_id))]


async def test_only_agents_can_send_articles(bot: SlackBot) -> None:
    await indexed(bot)
    await bot.command("printer jammed")
    await bot.settle()
    [ticket] = await bot.tickets()
    await bot.click(Action.KB_SEND, str(ticket.id), MALLORY, trigger_id="trig-1")
    [refusal] = await bot.slack.wait_for_calls("chat.postEphemeral", 1)
    assert "Only IT agents can send articles" in refusal["text"]
    assert bot.slack.calls_to("views.open") == []
    _status, body = await bot.send(rq.view_submission(
        Form.SEND_ARTICLE.value, {"article": {"input": {"type": "radio_buttons",
                                                        "selected_option": {"value": "1"}}}},
        MALLORY, SECRET, private_metadata=str(ticket.id)))
    assert body["response_action"] == "errors"
