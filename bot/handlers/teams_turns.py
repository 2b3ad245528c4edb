"""What every Teams turn handler needs: who the sender is, the dedup key, and answering in the turn."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from botbuilder.core import MessageFactory, TurnContext
from botbuilder.schema import Activity, Attachment

from bot.cards import CardBuilder
from bot.desk import Desk
from bot.people import PersonRef
from bot.renderers import teams_card_parts, teams_notice_cards
from bot.text import escape_typed, to_spans, without_controls
from bot.tickets import TicketSnapshot
from bot.views import Message, Notice

log = logging.getLogger("ithelp.teams")

PLATFORM = "Teams"

HELP = (
    "**ITHelp**: ask IT for help right here.\n\n"
    "- Just tell me what's wrong (or `ithelp <what's wrong>`) and I'll open a ticket\n"
    "- `ithelp` on its own or `new ticket` opens a form\n"
    "- `status` shows your open tickets and where they stand; `status 13` shows IT-13\n"
    "- `list` lists your open tickets\n"
    "- In a channel, mention me: `@ITHelp printer on floor 3 is jammed`\n"
    "- Reply to one of my messages about a ticket to add details to it"
)
DEDUP_SOURCE = "teams-activity"
# Teams puts the replied-to message id in a quoted-reply blockquote in 1:1 chats, where replyToId is unreliable.
QUOTED_REPLY = re.compile(r'itemtype="http://schema\.skype\.com/Reply"[^>]*\bitemid="([^"]+)"')
REFUSAL_LOG_EVERY = timedelta(minutes=1)






class TeamsTurns:
    """Shared by the Teams turn handlers: the desk, the sender, and answering in the turn."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        self.cards: CardBuilder = desk.cards

    def _person(self, activity: Activity) -> PersonRef | None:
        user = activity.from_property
        if user is None or not user.aad_object_id:
            return None
        zone = valid_zone(activity.local_timezone) or valid_zone(client_info_zone(activity))
        return PersonRef("teams", user.aad_object_id, user.name or None, zone)

    def _dedup(self, activity: Activity) -> tuple[str, str]:
        # Channel message ids are timestamps, unique per conversation only.
        return DEDUP_SOURCE, f"{activity.conversation.id}|{activity.id}"[-256:]

    async def _say(self, turn: TurnContext, text: str, person: PersonRef | None = None) -> None:
        """Answer in plain text (it may quote what the person typed, which must not turn into markup); when
        Teams refuses the reply and we know who asked, the outbox owes it to them."""
        message = MessageFactory.text(without_controls(text))
        message.text_format = "plain"
        if not await self._answer(turn, message) and person is not None:
            key = f"say:{turn.activity.conversation.id}|{turn.activity.id}"
            await self.desk.tickets.tell(person, Message(escape_typed(text)), key=key)

    async def _send_card(self, turn: TurnContext, card: dict[str, Any]) -> bool:
        return await self._answer(turn, MessageFactory.attachment(card_attachment(card)))

    async def _replace_card(self, turn: TurnContext, card: dict[str, Any]) -> bool:
        """Update the card that was submitted in place (a form, usually); post it anew if that fails."""
        activity = turn.activity
        if activity.reply_to_id:
            message = MessageFactory.attachment(card_attachment(card))
            message.id = activity.reply_to_id
            try:
                await turn.update_activity(message)
                return True
            except Exception as exc:  # an old card Teams no longer has: send the new one instead
                log.warning("could not update card %s in place: %s", activity.reply_to_id, exc)
        return await self._send_card(turn, card)

    async def _answer(self, turn: TurnContext, message: Activity) -> bool:
        try:
            await turn.send_activity(message)
        except Exception as exc:  # the change is committed either way; callers hand what is owed to the outbox
            log.warning("could not answer in Teams conversation %s: %s", turn.activity.conversation.id, exc)
            return False
        return True

    def _priority_labels(self) -> dict[str, str]:
        return {code: f"{code} · {p.label}" for code, p in self.desk.config.priorities.items()}

    def _ack_notice(self, ticket: TicketSnapshot) -> Notice:
        wording = self.desk.acknowledgement(ticket)
        return Notice(ticket_id=ticket.id, number=ticket.number, headline=wording,
                      body=(*to_spans(ticket.summary),
                            "\n\nI'll keep you posted in our chat; reply to my messages to add details."),
                      numbered=False)

    async def _acknowledge(self, turn: TurnContext, person: PersonRef, ticket: TicketSnapshot, *,
                           replace: bool = False) -> None:
        """Tell the requester their ticket number and targets in the turn; if Teams refuses that reply (429, 5xx),
        the outbox owes it to them and delivers it with retries."""
        notice = self._ack_notice(ticket)
        card = teams_notice_cards.notice_card(notice)
        sent = await self._replace_card(turn, card) if replace else await self._send_card(turn, card)
        if not sent:
            await self.desk.tickets.tell(person, notice, key=f"ack:{ticket.id}")


def card_attachment(card: dict[str, Any]) -> Attachment:
    return Attachment(content_type=teams_card_parts.CONTENT_TYPE, content=teams_card_parts.clean(card))


def ticket_id_of(value: dict[str, Any]) -> int | None:
    """The ticket a card submission points at: ASCII digits only ("١٢", "²", 10**30 and True name no ticket)."""
    raw = value.get("ticket_id")
    if isinstance(raw, bool) or raw is None or raw == "":
        raw = str(value.get("value") or "").split(":", 1)[0]
    text = str(raw)
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def valid_zone(zone: str | None) -> str | None:
    try:
        ZoneInfo(zone or "")
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return zone


def client_info_zone(activity: Activity) -> str | None:
    """The IANA zone Teams clients report in their ``clientInfo`` entity (when ``localTimezone`` is absent)."""
    for entity in activity.entities or []:
        if (entity.type or "").lower() == "clientinfo":
            properties: dict[str, Any] = getattr(entity, "additional_properties", None) or {}
            zone = properties.get("timezone")
            return zone if isinstance(zone, str) else None
    return None


__all__ = ["DEDUP_SOURCE", "HELP", "PLATFORM", "QUOTED_REPLY", "REFUSAL_LOG_EVERY", "TeamsTurns", "card_attachment",
           "client_info_zone", "ticket_id_of", "valid_zone"]
