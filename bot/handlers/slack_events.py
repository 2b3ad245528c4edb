"""Messages, mentions, :ticket: reactions and the message shortcut: tickets and relayed comments."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.channels.slack import slack_ref
from bot.chat_commands import read_command
from bot.handlers import command_answers, slack_text
from bot.handlers.errors import friendly
from bot.handlers.slack_part import PLATFORM, SlackListeners, quote
from bot.renderers import slack_mrkdwn, slack_notice_blocks
from bot.tickets import (
    Origin,
    TicketError,
)
from bot.triage_notes import Posted

log = logging.getLogger("ithelp.slack")


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

    async def on_mention(self, body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient) -> None:
        if event.get("thread_ts"):
            return  # thread replies are handled as messages
        bot_user = (body.get("authorizations") or [{}])[0].get("user_id") or ""
        raw = (event.get("text") or "").replace(f"<@{bot_user}>", " ") if bot_user else " ".join(
            word for word in (event.get("text") or "").split() if not word.startswith("<@"))
        text = (await self.neutral(raw)).strip()
        if not text:
            return
        try:
            person = await self.person(event["user"])
            link = await self._permalink(client, event["channel"], event["ts"])
            result = await self.desk.tickets.open(
                person, text, origin=Origin("slack", conversation=event["channel"], thread=event["ts"], link=link),
                dedup=("slack-event", body.get("event_id") or f"{event['channel']}:{event['ts']}"), defer_setup=True)
            if result.created:
                await client.chat_postMessage(channel=event["channel"], thread_ts=event["ts"],
                                              text=self.ack_text(result.ticket))
        except Exception as exc:
            await client.chat_postMessage(channel=event["channel"], thread_ts=event["ts"], text=friendly(exc, PLATFORM))

    async def _ticket_for_thread(self, channel: str, thread_ts: str) -> tuple[int | None, str | None]:
        found = await self.desk.directory.ticket_for_message("slack", slack_ref(channel, thread_ts))
        return (found.ticket_id, found.role) if found else (None, None)

    async def on_reaction(self, body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient,
                           request: AsyncBoltRequest) -> None:
        item = event.get("item") or {}
        if event.get("reaction") != "ticket" or item.get("type") != "message":
            return
        channel, ts = item["channel"], item["ts"]
        reactor = event.get("user")
        # Slack retrying the event, or the same person reacting again: the first answer stands, say nothing more.
        retried = bool(request.headers.get("x-slack-retry-num"))
        first = await self.desk.tickets.first_sighting("slack-reaction", f"{channel}:{ts}:{reactor}")
        message = await self._fetch_message(client, channel, ts)
        if message is None:
            return
        author = message.get("user") or event.get("item_user")
        if not author or message.get("bot_id"):
            return
        await self._ticket_from_message(client, channel, ts, author, await self.neutral(message.get("text") or ""),
                                        reporter=reactor, repeat=retried or not first)

    async def on_message_shortcut(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        message = body.get("message") or {}
        channel = (body.get("channel") or {}).get("id", "")
        if not channel or not message.get("ts"):
            # Slack always sends both; without them there is no message to file and nowhere to say so.
            raise ValueError("a message shortcut without its message or channel")
        author = message.get("user") or body["user"]["id"]
        await self._ticket_from_message(client, channel, message.get("ts", ""), author,
                                        await self.neutral(message.get("text") or ""), reporter=body["user"]["id"])

    async def _ticket_from_message(self, client: AsyncWebClient, channel: str, ts: str, author: str, text: str,
                                   *, reporter: str | None, repeat: bool = False) -> None:
        """File ``author``'s message as their ticket; ``reporter`` (who reacted or used the shortcut) hears about
        failures and, unless this is a ``repeat`` of their own request, that it was already a ticket."""
        try:
            person = await self.person(author)
            link = await self._permalink(client, channel, ts)
            result = await self.desk.tickets.open(
                person, text or "(message without text)",
                origin=Origin("slack", conversation=channel, thread=ts, link=link),
                dedup=("slack-message", f"{channel}:{ts}"), defer_setup=True,
            )
        except Exception as exc:
            if reporter:
                try:
                    await client.chat_postEphemeral(channel=channel, user=reporter, text=friendly(exc, PLATFORM))
                except SlackApiError as told:
                    log.error("could not file message %s in %s (%s), nor tell %s why: %s", ts, channel, exc,
                              reporter, told)
            return
        if result.created:
            try:
                await client.reactions_add(channel=channel, timestamp=ts, name="eyes")
                await client.chat_postMessage(channel=channel, thread_ts=ts,
                                              text=self.ack_text(result.ticket, author=author))
            except SlackApiError as exc:
                log.warning("could not acknowledge ticket %s in %s: %s", result.ticket.number, channel, exc)
        elif reporter and not repeat:
            await client.chat_postEphemeral(channel=channel, user=reporter,
                                            text=f"That message is already {result.ticket.number}.")

    async def _fetch_message(self, client: AsyncWebClient, channel: str, ts: str) -> dict[str, Any] | None:
        try:
            response = await client.conversations_history(channel=channel, latest=ts, inclusive=True, limit=1)
            messages = response.get("messages") or []
            if messages and messages[0].get("ts") == ts:
                return dict(messages[0])
            replies = await client.conversations_replies(channel=channel, ts=ts, limit=1, inclusive=True)
            for message in replies.get("messages") or []:
                if message.get("ts") == ts:
                    return dict(message)
        except SlackApiError as exc:
            log.warning("could not read message %s in %s: %s", ts, channel, exc)
        return None

    async def _permalink(self, client: AsyncWebClient, channel: str, ts: str) -> str | None:
        try:
            response = await client.chat_getPermalink(channel=channel, message_ts=ts)
            return str(response["permalink"])
        except SlackApiError:
            return None


__all__ = ["SlackEvents"]
