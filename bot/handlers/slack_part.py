"""What every Slack listener needs: the desk, the Web API client, who someone is, and the shared wording."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.cards import CardBuilder
from bot.desk import Desk
from bot.handlers import slack_text
from bot.people import PersonRef
from bot.renderers import slack_mrkdwn
from bot.requester_escalation import matrix_lines
from bot.text import to_plain
from bot.tickets import (
    TicketError,
    TicketSnapshot,
)

log = logging.getLogger("ithelp.slack")


PLATFORM = "Slack"
# A renamed or relocated person shows up with their new name/zone within this long.
PEOPLE_CACHE_SECONDS = 300.0
PEOPLE_CACHE_SIZE = 50_000
UNDESCRIBED_CACHE_SECONDS = 60.0
"""How long someone ``users.info`` could not describe is served without asking Slack again."""

HELP = (
    "*ITHelp* — ask IT for help right here.\n"
    "• `/ithelp <what's wrong>` opens a ticket, e.g. `/ithelp VPN keeps disconnecting`\n"
    "• `/ithelp` on its own opens a form\n"
    "• `/ithelp status` shows your open tickets and where they stand; `/ithelp status 13` shows IT-13\n"
    "• `/ithelp list` lists your open tickets\n"
    "• In a DM with me, `help`, `status`, `status 13` and `list` work without `/ithelp`\n"
    "• Or just DM me, or react with :ticket: to any message to turn it into a ticket."
)


class Refusal(TicketError):
    """A click or form that no longer points at anything the person may act on."""


def ticket_number(raw: object) -> int | None:
    """A ticket id from a button or form value: ASCII digits only ("١٢", "²" and 10**30 name no ticket)."""
    text = str(raw or "")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def quote(text: str) -> str:
    """What the person typed, quoted back to them in Slack (escaped once, never a mention)."""
    escaped = slack_mrkdwn.escape_mrkdwn(to_plain(text)[:2500])
    return "\n".join(f"> {line}" for line in escaped.splitlines()) or "> (empty)"


class SlackPart:
    """What every Slack listener needs: the desk, the Web API client, who someone is, and the shared wording."""

    def __init__(self, desk: Desk, client: AsyncWebClient) -> None:
        self.desk = desk
        self.config = desk.config.slack
        self.client = client
        self.cards: CardBuilder = desk.cards
        self._people: dict[str, tuple[float, PersonRef]] = {}

    async def person(self, user_id: str, *, name: str | None = None) -> PersonRef:
        """Who is this Slack user? Name and time zone from ``users.info``, once, then from our store
        (kept in memory for a few minutes: every ticket, click and message starts here).

        ``name`` (a handle from the payload) is only a fallback for someone new whom ``users.info`` can't
        describe: a person is always shown by their directory display name."""
        cached = self._people.get(user_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        known = await self.desk.directory.known_person("slack", user_id)
        if known is not None and known.timezone:
            return self._remember(user_id, PersonRef("slack", user_id, known.display_name, known.timezone,
                                                     known.email), PEOPLE_CACHE_SECONDS)
        try:
            info = await asyncio.wait_for(self.client.users_info(user=user_id), timeout=2)
            user: dict[str, Any] = info["user"]
            profile = user.get("profile", {})
            display = user.get("real_name") or profile.get("real_name") or profile.get("display_name")
            return self._remember(user_id, PersonRef("slack", user_id, display or None, user.get("tz"),
                                                     profile.get("email"), fallback_name=name), PEOPLE_CACHE_SECONDS)
        except (TimeoutError, SlackApiError, OSError) as exc:
            # Unknown or unreachable: still serve them; the calendar's zone stands in for theirs. Asking again on
            # each of their requests would put a Slack call (up to 2 s) before every ack, so not for a while.
            log.warning("users.info %s failed: %s", user_id, exc)
            stand_in = PersonRef("slack", user_id, known.display_name if known else None, None,
                                 known.email if known else None, fallback_name=name)
            return self._remember(user_id, stand_in, UNDESCRIBED_CACHE_SECONDS)

    def _remember(self, user_id: str, ref: PersonRef, seconds: float) -> PersonRef:
        if len(self._people) >= PEOPLE_CACHE_SIZE:
            self._people.clear()
        self._people[user_id] = (time.monotonic() + seconds, ref)
        return ref

    async def neutral(self, text: str) -> str:
        """Slack message text as the desk stores it (``bot.text``): entities decoded once, links kept, mentions
        as display names."""
        users = slack_text.mentioned_users(text)
        stored = await self.desk.directory.display_names("slack", users)
        names = {user: name for user, name in stored.items() if name}
        for user in users - names.keys():
            names[user] = (await self.person(user)).display_name or user
        return slack_text.decode(text, names)

    async def refresh_agent_groups(self) -> None:
        for group in self.desk.config.agents.slack_usergroups:
            try:
                response = await self.client.usergroups_users_list(usergroup=group)
                users: list[str] = response.get("users", [])
                members = {f"slack:{user}" for user in users}
                self.desk.roster.set_group_members(group, members)
            except SlackApiError as exc:
                log.warning("could not read Slack user group %s: %s", group, exc)

    def ack_text(self, ticket: TicketSnapshot, *, author: str | None = None) -> str:
        """The acknowledgement; with ``author`` (a Slack user id) it is posted where others read it too, so it
        names the person the ticket is for and whose clock its times are on."""
        label = f"{to_plain(ticket.requester_name)}'s time" if author else "your time"
        wording = self.desk.acknowledgement(ticket, zone_label=label)
        summary = slack_mrkdwn.mrkdwn(to_plain(ticket.summary), slack_mrkdwn.MAX_SUMMARY)
        return (f"{f'<@{author}> ' if author else ''}{slack_mrkdwn.mrkdwn(wording)} — _{summary}_\n"
                "I'll keep you posted in a DM thread; reply there to add details.")

    def help_text(self) -> str:
        lines = "\n".join(f"• {slack_mrkdwn.escape_mrkdwn(line)}" for line in matrix_lines(self.desk.config))
        return f"{HELP}\n\n*Who handles what, and how to escalate*\n{lines}".replace(
            "`escalate ", f"`{self.config.command} escalate ")

    def priority_labels(self) -> dict[str, str]:
        return {code: f"{code} · {p.label}" for code, p in self.desk.config.priorities.items()}

    async def refuse(self, client: AsyncWebClient, body: dict[str, Any], message: str) -> None:
        channel = (body.get("channel") or {}).get("id") or body.get("container", {}).get("channel_id")
        user = body["user"]["id"]
        try:
            if channel:
                await client.chat_postEphemeral(channel=channel, user=user, text=message)
            else:
                await client.chat_postMessage(channel=user, text=message)
        except SlackApiError as exc:
            log.warning("could not tell %s: %s (%s)", user, message, exc)


class SlackListeners:
    """A group of Bolt listeners, sharing one ``SlackPart`` (one people cache, one client) with the others."""

    def __init__(self, part: SlackPart) -> None:
        self.part = part
        self.desk = part.desk
        self.config = part.config
        self.client = part.client
        self.cards = part.cards
        self.person = part.person
        self.neutral = part.neutral
        self.ack_text = part.ack_text
        self.help_text = part.help_text
        self.priority_labels = part.priority_labels
        self.refuse = part.refuse


__all__ = ["HELP", "PLATFORM", "Refusal", "SlackListeners", "SlackPart", "quote", "ticket_number"]
