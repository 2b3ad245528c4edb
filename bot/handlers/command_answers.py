"""Answers to commands and small talk (``bot.chat_commands``), rendered for each platform.

The service decides what the answer says (a neutral view model); this turns it into a Slack message
(``text`` + ``blocks``) or a Teams card, with each platform's own help wording.
"""

from __future__ import annotations

from typing import Any

from bot.chat_commands import GREETING, THANKS, ChatCommands, Command, Said
from bot.people import PersonRef
from bot.renderers import slack_mrkdwn, slack_notice_blocks, slack_ticket_blocks, teams_notice_cards, teams_ticket_cards
from bot.views import Notice, TicketList


async def _answer(chat: ChatCommands, person: PersonRef, command: Command) -> Notice | TicketList | str | None:
    """The neutral answer; None for help (its wording is the platform's)."""
    if command.said is Said.GREETING:
        return GREETING
    if command.said is Said.THANKS:
        return THANKS
    if command.said is Said.HELP:
        return None
    if command.said is Said.STATUS and command.number is not None:
        return await chat.ticket_status(person, command.number)
    return await chat.open_tickets(person)


async def for_slack(chat: ChatCommands, person: PersonRef, command: Command, help_text: str) -> dict[str, Any]:
    """``text`` and ``blocks`` for ``chat.postMessage`` or a slash command's ephemeral answer."""
    answer = await _answer(chat, person, command)
    if answer is None:
        return {"text": help_text}
    if isinstance(answer, Notice):
        return {"text": slack_notice_blocks.notice_text(answer), "blocks": slack_notice_blocks.notice_blocks(answer)}
    if isinstance(answer, TicketList):
        return {"text": slack_ticket_blocks.ticket_list_text(answer),
                "blocks": slack_ticket_blocks.ticket_list_blocks(answer)}
    return {"text": slack_mrkdwn.escape_mrkdwn(answer)}


async def for_teams(chat: ChatCommands, person: PersonRef, command: Command) -> dict[str, Any] | str | None:
    """An Adaptive Card, plain text to say, or None for the adapter's own help text."""
    answer = await _answer(chat, person, command)
    if isinstance(answer, Notice):
        return teams_notice_cards.notice_card(answer)
    if isinstance(answer, TicketList):
        return teams_ticket_cards.ticket_list_card(answer)
    return answer
