"""Filing Slack messages as tickets once Slack has its answer: a :ticket: reaction, the message shortcut and a
mention of the bot.

The listeners (``slack_events``) only write down what was asked (``desk.deferred``) and answer Slack. These
timer tasks then do what needs Slack's Web API: read the message, look its author up, file it, and answer in its
thread. A task may run more than once (Slack failed and it is retried; a replica died), so every step is
idempotent: the ticket is deduplicated by its message, as before, and its acknowledgement is a timer of its
own keyed by the ticket, retried until Slack takes it and never owed twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.channels.slack import CREDENTIALS_ERRORS
from bot.engine import TimerJob
from bot.handlers.errors import friendly
from bot.handlers.slack_part import PLATFORM, SlackListeners
from bot.tickets import Origin, TicketError

log = logging.getLogger("ithelp.slack")

FILE_MESSAGE = "slack.file_message"
"""File a message as its author's ticket (a :ticket: reaction, the message shortcut). Payload: ``channel``,
``ts``, ``reporter`` (who asked), ``author`` (when known), ``text`` (None: read the message from Slack first),
``repeat`` (the reporter's own request again: no "already a ticket" for them)."""
FILE_MENTION = "slack.file_mention"
"""File a mention of the bot as its author's ticket. Payload: ``channel``, ``ts``, ``user``, ``text`` (as Slack
sent it, the bot's own mention taken out) and ``event`` (the dedup key of the event)."""
ACKNOWLEDGE = "slack.acknowledge"
"""Say in the filed message's thread that it is a ticket. Payload: ``ticket_id``, ``channel``, ``ts``,
``author`` (named in the reply when the message was filed by someone else for them), ``eyes`` (react :eyes:)."""

_PASSING = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout",
                      *CREDENTIALS_ERRORS})
SLACK_FAILURES = (SlackApiError, aiohttp.ClientError, TimeoutError, ConnectionError)


def passing(exc: Exception) -> bool:
    """True when Slack may answer differently later (its servers, a rate limit, the network, a token about to be
    fixed): the task raises, and runs again. What Slack said about the request itself (no such channel or
    message, not a member of it) will not change: that is logged, not retried."""
    if isinstance(exc, SlackApiError):
        status = exc.response.status_code
        return status == 429 or status >= 500 or exc.response.get("error") in _PASSING
    return True


class SlackFiling(SlackListeners):
    """The timer tasks that file Slack messages as tickets and acknowledge them, after Slack's ack."""

    async def file_message(self, job: TimerJob) -> None:
        """``FILE_MESSAGE``: file ``author``'s message as their ticket; ``reporter`` hears about a refusal and,
        unless this is a ``repeat`` of their own request, that the message already was a ticket."""
        payload = job.payload
        channel, ts, reporter = str(payload["channel"]), str(payload["ts"]), payload.get("reporter")
        author, text = payload.get("author"), payload.get("text")
        if text is None:  # a reaction names the message, nothing more
            message = await self._fetch_message(channel, ts)
            if message is None:
                return
            author = message.get("user") or author
            if not author or message.get("bot_id"):
                return
            text = message.get("text") or ""
        try:
            person = await self.person(str(author))
            link = await self._permalink(channel, ts)
            result = await self.desk.tickets.open(
                person, await self.neutral(str(text)) or "(message without text)",
                origin=Origin("slack", conversation=channel, thread=ts, link=link),
                dedup=("slack-message", f"{channel}:{ts}"), defer_setup=True,
            )
        except TicketError as exc:
            if reporter:
                await self._slack(self.client.chat_postEphemeral(channel=channel, user=reporter,
                                                                 text=friendly(exc, PLATFORM)),
                                  f"tell {reporter} why message {ts} in {channel} was not filed ({exc})")
            return
        # The acknowledgement is owed by whoever finds it not yet owed: the request that opened the ticket,
        # or the same request run again after it died in between.
        owed = await self._owe_acknowledgement(result.ticket.id, channel, ts, author=str(author), eyes=True)
        if reporter and not (result.created or owed or payload.get("repeat")):
            await self._slack(self.client.chat_postEphemeral(
                channel=channel, user=reporter, text=f"That message is already {result.ticket.number}."),
                f"tell {reporter} that message {ts} in {channel} is already {result.ticket.number}")

    async def file_mention(self, job: TimerJob) -> None:
        """``FILE_MENTION``: the text after the bot's name is its author's ticket; a refusal is said in the thread."""
        payload = job.payload
        channel, ts = str(payload["channel"]), str(payload["ts"])
        text = (await self.neutral(str(payload.get("text") or ""))).strip()
        if not text:
            return
        try:
            person = await self.person(str(payload["user"]))
            link = await self._permalink(channel, ts)
            result = await self.desk.tickets.open(
                person, text, origin=Origin("slack", conversation=channel, thread=ts, link=link),
                dedup=("slack-event", str(payload["event"])), defer_setup=True)
        except TicketError as exc:
            await self._slack(self.client.chat_postMessage(channel=channel, thread_ts=ts, text=friendly(exc, PLATFORM)),
                              f"say in {channel} why mention {ts} was not filed ({exc})")
            return
        await self._owe_acknowledgement(result.ticket.id, channel, ts, author=None, eyes=False)

    async def acknowledge(self, job: TimerJob) -> None:
        """``ACKNOWLEDGE``: the ticket's number and targets in the message's thread (and :eyes: on it)."""
        payload = job.payload
        channel, ts, author = str(payload["channel"]), str(payload["ts"]), payload.get("author")
        try:
            ticket = await self.desk.tickets.get(int(payload["ticket_id"]))
        except TicketError as exc:  # gone (erased) before it could be acknowledged: nothing to say
            log.warning("not acknowledging message %s in %s: %s", ts, channel, exc)
            return
        if payload.get("eyes"):
            await self._slack(self.client.reactions_add(channel=channel, timestamp=ts, name="eyes"),
                              f"react to {ticket.number}'s message in {channel}", fine="already_reacted")
        await self._slack(self.client.chat_postMessage(channel=channel, thread_ts=ts,
                                                       text=self.ack_text(ticket, author=author)),
                          f"acknowledge ticket {ticket.number} in {channel}")

    async def _owe_acknowledgement(self, ticket_id: int, channel: str, ts: str, *, author: str | None,
                                   eyes: bool) -> bool:
        """Schedule the ticket's acknowledgement unless it already is; True if this call scheduled it."""
        payload = {"ticket_id": ticket_id, "channel": channel, "ts": ts, "author": author, "eyes": eyes}
        return await self.desk.deferred.schedule(ACKNOWLEDGE, payload, key=f"slack-ack:{ticket_id}",
                                                 ticket_id=ticket_id)

    @staticmethod
    async def _slack(call: Awaitable[Any], what: str, *, fine: str | None = None) -> None:
        """Make a Web API call whose failure only matters if it may pass: then raise, so the task runs again."""
        try:
            await call
        except SLACK_FAILURES as exc:
            if passing(exc):
                raise
            if not (isinstance(exc, SlackApiError) and fine and exc.response.get("error") == fine):
                log.warning("could not %s: %s", what, exc)

    async def _fetch_message(self, channel: str, ts: str) -> dict[str, Any] | None:
        try:
            response = await self.client.conversations_history(channel=channel, latest=ts, inclusive=True, limit=1)
            messages = response.get("messages") or []
            if messages and messages[0].get("ts") == ts:
                return dict(messages[0])
            replies = await self.client.conversations_replies(channel=channel, ts=ts, limit=1, inclusive=True)
            for message in replies.get("messages") or []:
                if message.get("ts") == ts:
                    return dict(message)
        except SLACK_FAILURES as exc:
            if passing(exc):
                raise
            log.warning("could not read message %s in %s: %s", ts, channel, exc)
        return None

    async def _permalink(self, channel: str, ts: str) -> str | None:
        """The message's link for the ticket, if Slack gives it now (a ticket without one is still a ticket)."""
        try:
            response = await self.client.chat_getPermalink(channel=channel, message_ts=ts)
            return str(response["permalink"])
        except SLACK_FAILURES:
            return None


__all__ = ["ACKNOWLEDGE", "FILE_MENTION", "FILE_MESSAGE", "SlackFiling", "passing"]
