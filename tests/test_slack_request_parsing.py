"""Slack request bodies Bolt would misread, over real HTTP: what the person typed still becomes their ticket."""

from __future__ import annotations

from tests.slack_harness import SlackBot


async def test_a_slash_command_mentioning_the_word_payload_still_opens_its_ticket(bot: SlackBot) -> None:
    status, body = await bot.command("payload service down since 9am")
    assert status == 200 and "opened" in body["text"]
    await bot.settle()
    [ticket] = await bot.tickets()
    assert ticket.summary == "payload service down since 9am"


async def test_a_nul_character_in_a_slash_command_is_replaced_and_the_ticket_opens(bot: SlackBot) -> None:
    status, body = await bot.command("printer\x00 on floor 2 is jammed")
    assert status == 200 and "opened" in body["text"]
    await bot.settle()
    [ticket] = await bot.tickets()
    assert ticket.summary == "printer\ufffd on floor 2 is jammed"  # PostgreSQL refuses NUL in text
