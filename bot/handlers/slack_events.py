"""Messages, mentions, :ticket: reactions and the message shortcut: tickets and relayed comments.

A mention, a reaction or the shortcut names a message to file; filing it needs Slack's Web API (the message, its
author, its link) and so does answering in its thread. Their listeners only write down what was asked, before
Slack gets its answer, and ``slack_filing`` does the rest right after.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from bot.channels.slack import slack_ref
from bot.chat_commands import read_command
from bot.handlers import command_answers, slack_text
from bot.handlers.errors import friendly
from bot.handlers.slack_filing import FILE_MENTION, FILE_MESSAGE
from bot.handlers.slack_part import PLATFORM, SlackListeners, quote
from bot.renderers import slack_mrkdwn, slack_notice_blocks
from bot.tickets import (
    Origin,
    TicketError,
)
from bot.triage_notes import Posted


class SlackEvents(SlackListeners):
    """Messages, mentions, :ticket: reactions and the message shortcut: tickets and relayed comments."""

    async def on_message(self, body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient) -> None:
        if event.get("bot_id") or event.get("subtype") not in (None, "file_share", "thread_broadcast"):
            return  # our own posts, edits, joins: not something a person asked
        user_id = event.get("user")
        text = (await self.neutral(event.get("text") or "")).strip()
        files = slack_text.shared_files(event)
        if not user_id or not (text or files):
            return
        channel = event.get("channel", "")
        thread_ts = event.get("thread_ts")
        event_key = body.get("event_id") or f"{channel}:{event.get('ts')}"
        if thread_ts:
            ticket_id, role = await self._ticket_for_thread(channel, thread_ts)
            if ticket_id is not None:
                person = await self.person(user_id)
                if role == "triage" and not self.desk.tickets.is_agent(person):
                    return  # colleagues chatting under the card: not relayed to the requester
                try:
                    if role == "triage":  # a reply or an internal note, marked as which on the message
                        await self.desk.triage_thread.agent_message(
                            ticket_id, person, text, dedup=("slack-event", event_key),
                            posted=Posted(f"slack:channel:{channel}", slack_ref(channel, str(event.get("ts")))),
                            files=files)
                    else:
                        await self.desk.attachments.comment(ticket_id, person, text, files,
                                                            dedup=("slack-event", event_key), source=f"{role}_thread")
                except TicketError as exc:
                    await client.chat_postMessage(channel=channel, thread_ts=thread_ts,
                                                  text=slack_mrkdwn.escape_mrkdwn(str(exc)))
                return
        if event.get("channel_type") != "im":
            return
        command = read_command(text) if text else None
        if command is not None:
            person = await self.person(user_id)
            await client.chat_postMessage(channel=channel,
                                          **await command_answers.for_slack(self.desk.chat, person, command,
                                                                            self.help_text()))
            return
        try:
            person = await self.person(user_id)
            # A new ticket, the answer to one waiting on them (or a question which, when that is unclear), or
            # in ask_first mode the articles to try before filing.
            routed = await self.desk.conversations.route(person, text, origin=Origin("slack", conversation=channel,
                                                                                     thread=event.get("ts")),
                                                         dedup=("slack-event", event_key), files=files)
            if routed.articles is not None:
                await client.chat_postMessage(channel=channel, thread_ts=event.get("ts"),
                                              text=slack_notice_blocks.notice_text(routed.articles),
                                              blocks=slack_notice_blocks.notice_blocks(routed.articles))
        except Exception as exc:
            sorry = friendly(exc, PLATFORM)
            await client.chat_postMessage(channel=channel, text=f"{sorry}\n\nWhat you wrote: {quote(text)}")

    async def on_mention(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if event.get("thread_ts"):
            return  # thread replies are handled as messages
        bot_user = (body.get("authorizations") or [{}])[0].get("user_id") or ""
        raw = (event.get("text") or "").replace(f"<@{bot_user}>", " ") if bot_user else " ".join(
            word for word in (event.get("text") or "").split() if not word.startswith("<@"))
        if not raw.strip():
            return
        channel, ts, user = _named(event, "channel"), _named(event, "ts"), _named(event, "user")
        event_key = _event_id(body) or f"{channel}:{ts}"
        # Who they are, the message's link and the acknowledgement all need Slack: after the ack (slack_filing).
        await self.desk.deferred.schedule(FILE_MENTION, {"channel": channel, "ts": ts, "user": user, "text": raw,
                                                         "event": event_key}, key=f"slack-mention:{event_key}")

    async def _ticket_for_thread(self, channel: str, thread_ts: str) -> tuple[int | None, str | None]:
        found = await self.desk.directory.ticket_for_message("slack", slack_ref(channel, thread_ts))
        return (found.ticket_id, found.role) if found else (None, None)

    async def on_reaction(self, body: dict[str, Any], event: dict[str, Any], request: AsyncBoltRequest) -> None:
        item = event.get("item") or {}
        if event.get("reaction") != "ticket" or item.get("type") != "message":
            return
        channel, ts = _named(item, "channel"), _named(item, "ts")
        reactor = event.get("user")
        # Slack retrying the event, or the same person reacting again: the first answer stands, say nothing more.
        retried = bool(request.headers.get("x-slack-retry-num"))
        first = await self.desk.tickets.first_sighting("slack-reaction", f"{channel}:{ts}:{reactor}")
        # Reading the message (and all that follows) needs Slack: after the ack (slack_filing). A retry of the
        # same event finds it already scheduled.
        event_id = _event_id(body)
        await self.desk.deferred.schedule(FILE_MESSAGE, {
            "channel": channel, "ts": ts, "reporter": reactor, "author": event.get("item_user"), "text": None,
            "repeat": retried or not first}, key=f"slack-reaction:{event_id}" if event_id else None)

    async def on_message_shortcut(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        message = body.get("message") or {}
        channel = (body.get("channel") or {}).get("id", "")
        if not channel or not message.get("ts"):
            # Slack always sends both; without them there is no message to file and nowhere to say so.
            raise ValueError("a message shortcut without its message or channel")
        reporter = body["user"]["id"]
        await self.desk.deferred.schedule(FILE_MESSAGE, {
            "channel": channel, "ts": _named(message, "ts"), "reporter": reporter,
            "author": message.get("user") or reporter, "text": str(message.get("text") or ""), "repeat": False})


def _named(fields: dict[str, Any], name: str) -> str:
    """A Slack id or timestamp from the payload: a string, or the payload is malformed."""
    value = fields[name]
    if not isinstance(value, str) or not value:
        raise ValueError(f"no {name} in the payload")
    return value


def _event_id(body: dict[str, Any]) -> str | None:
    event_id = body.get("event_id")
    return event_id if isinstance(event_id, str) and event_id else None


__all__ = ["SlackEvents"]
