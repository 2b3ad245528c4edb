"""Delivers outbox messages to Slack: cards posted once then updated in place, notices threaded."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import messages
from bot.cards import CardBuilder
from bot.channels import CredentialsRefused, PermanentDeliveryError, RateLimited, TransientDeliveryError
from bot.clock import Clock
from bot.engine import Delivered, OutboxItem
from bot.renderers import slack_block_parts, slack_mrkdwn, slack_notice_blocks, slack_ticket_blocks
from store.db import Database
from store.models import MessageRef
from store.queries import delivered_message_id

log = logging.getLogger("ithelp.slack")

# Slack error codes that will not get better by retrying.
PERMANENT_ERRORS = {
    "channel_not_found", "not_in_channel", "is_archived", "invalid_blocks", "invalid_arguments", "msg_too_long",
    "no_text", "user_not_found", "cannot_dm_bot", "missing_scope", "restricted_action", "too_many_attachments",
    "user_disabled",
}
# Slack refusing the bot's token: every call fails until someone reinstalls the app or fixes
# slack.bot_token. An outage of Slack for us, not a fault of the message (see CredentialsRefused).
CREDENTIALS_ERRORS = {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"}


def make_client(token: str, base_url: str) -> AsyncWebClient:
    """An AsyncWebClient with slack_sdk's retry handlers for connection resets and 5xx (call it inside
    the running event loop: it opens the client's HTTP session).

    429s are not retried here: sleeping out a Retry-After inside a delivery would stall its lane.
    The outbox owns them — it reschedules the message after Retry-After and holds back the rest of
    that channel's messages until then (other channels go on).
    """
    return AsyncWebClient(
        token=token, base_url=base_url, timeout=10,
        # One pooled session for every call: without it slack_sdk opens (and tears down) a new HTTP
        # connection per API call, which costs more than the call itself. Closed by SlackAdapter.close.
        session=aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)),
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


def classify(exc: Exception) -> Exception:
    """Map a Slack SDK failure onto the outbox's transient/permanent errors."""
    if isinstance(exc, SlackApiError):
        status = exc.response.status_code
        error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
        if status == 429 or error == "ratelimited":
            retry_after = exc.response.headers.get("Retry-After") or exc.response.headers.get("retry-after")
            return RateLimited(f"Slack rate limited ({error or status})",
                               retry_after=float(retry_after) if retry_after else None)
        if error in CREDENTIALS_ERRORS:
            return CredentialsRefused(f"Slack refused the bot's token ({error})")
        if status >= 500 or error in ("internal_error", "fatal_error", "service_unavailable", "request_timeout"):
            return TransientDeliveryError(f"Slack server error {status}: {error}")
        if error in PERMANENT_ERRORS:
            return PermanentDeliveryError(f"Slack refused: {error}")
        return TransientDeliveryError(f"Slack error {status}: {error}")
    if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | ConnectionError):
        return TransientDeliveryError(f"Slack unreachable: {type(exc).__name__}: {exc}")
    return exc


def slack_ref(channel: str, ts: str) -> str:
    """How a Slack message is named in ``message_refs``: ``<channel id>|<ts>``."""
    return f"{channel}|{ts}"


class SlackChannel:
    """Outbox channel for targets ``slack:channel:<C…>`` and ``slack:user:<U…>``."""

    def __init__(self, client: AsyncWebClient, db: Database, clock: Clock, cards: CardBuilder, *,
                 triage_channel: str = "") -> None:
        self.client = client
        self.triage_channel = triage_channel
        self.db = db
        self.clock = clock
        self.cards = cards

    def pacing_key(self, item: OutboxItem) -> str:
        return item.target

    async def deliver(self, item: OutboxItem) -> Delivered:
        try:
            if item.kind == messages.TICKET_CARD:
                return await self._card(item)
            if item.kind in (messages.NOTICE, messages.PAGE):
                return await self._notice(item)
            if item.kind == messages.SURVEY:
                survey = messages.read_survey(item.payload)
                return await self._post(item, slack_notice_blocks.survey_blocks(survey),
                                        slack_notice_blocks.survey_text(survey), role=item.payload.get("ref_role"))
            if item.kind == messages.PULSE:
                return await self._pulse(item)
            if item.kind == messages.DIGEST:
                digest = messages.read_digest(item.payload)
                return await self._post(item, slack_notice_blocks.digest_blocks(digest),
                                        slack_notice_blocks.digest_text(digest))
            if item.kind == messages.SUMMARY:
                summary = messages.read_summary(item.payload)
                return await self._post(item, slack_notice_blocks.summary_blocks(summary),
                                        slack_notice_blocks.summary_text(summary))
            if item.kind == messages.TEXT:
                text = messages.read_text(item.payload).text
                return await self._post(item, slack_notice_blocks.plain_message_blocks(text),
                                        slack_mrkdwn.mrkdwn(text, slack_mrkdwn.MAX_FALLBACK))
            if item.kind == messages.MARK:
                return await self._mark(item)
            if item.kind == messages.LEGACY_SLACK_BLOCKS:
                return await self._post(item, item.payload["blocks"], item.payload["text"],
                                        role=item.payload.get("ref_role"))
        except (TimeoutError, SlackApiError, aiohttp.ClientError, ConnectionError) as exc:
            raise classify(exc) from exc
        raise PermanentDeliveryError(f"Slack can't deliver messages of kind {item.kind!r}")

    @staticmethod
    def _channel_of(target: str) -> str:
        return target.split(":", 2)[2]

    @staticmethod
    async def _ref(session: AsyncSession, ticket_id: int, role: str, channel: str) -> MessageRef | None:
        return (await session.execute(select(MessageRef).where(
            MessageRef.ticket_id == ticket_id, MessageRef.role == role, MessageRef.platform == "slack",
            MessageRef.channel == channel))).scalar_one_or_none()

    async def _update_in_place(self, ref: MessageRef | None, blocks: list[Any], text: str) -> Delivered | None:
        """Edit the message ``ref`` names; None when there is none, or Slack says it was deleted (post anew)."""
        if ref is None:
            return None
        conversation, ts = ref.message_id.split("|", 1)
        try:
            await self.client.chat_update(channel=conversation, ts=ts, blocks=blocks, text=text)
        except SlackApiError as exc:
            if exc.response.get("error") != "message_not_found":
                raise
            log.warning("message %s (ticket %s, %s) was deleted in Slack; posting a new one", ref.message_id,
                        ref.ticket_id, ref.role)
            return None
        return Delivered(message_id=ref.message_id)

    async def _card(self, item: OutboxItem) -> Delivered:
        assert item.ticket_id is not None
        audience = item.payload.get("audience", "triage")
        channel = self._channel_of(item.target)
        async with self.db.reading() as session:
            card = await self.cards.ticket_card(session, item.ticket_id, audience, self.clock.now())
            ref = await self._ref(session, item.ticket_id, audience, channel)
        blocks = slack_ticket_blocks.ticket_card_blocks(card)
        text = slack_ticket_blocks.ticket_card_text(card)
        if (updated := await self._update_in_place(ref, blocks, text)) is not None:
            return updated
        response = await self.client.chat_postMessage(channel=channel, blocks=blocks, text=text,
                                                      unfurl_links=False, unfurl_media=False)
        message_id = slack_ref(str(response["channel"]), str(response["ts"]))
        return Delivered(message_id=message_id, refs=[(item.ticket_id, audience, "slack", channel, message_id)])

    async def _notice(self, item: OutboxItem) -> Delivered:
        assert item.ticket_id is not None
        channel = self._channel_of(item.target)
        delivery = messages.read_notice(item.payload)
        # A page is recorded under its role; the notice that ends it (replace) edits it in place.
        own_role = delivery.ref_role
        async with self.db.reading() as session:
            ref = await self._ref(session, item.ticket_id, delivery.thread, channel) if delivery.thread in (
                "requester", "triage") else None
            replaced = await self._ref(session, item.ticket_id, own_role, channel) if (
                own_role and delivery.replace) else None
        thread_ts = None
        conversation = channel
        if ref is not None:
            conversation, thread_ts = ref.message_id.split("|", 1)
        blocks = slack_notice_blocks.notice_blocks(delivery.view)
        text = slack_notice_blocks.notice_text(delivery.view)
        if item.target.startswith("slack:usergroup:"):
            # A user group has no inbox: page it where the desk works, mentioning the group.
            if not self.triage_channel:
                raise PermanentDeliveryError("can't page a Slack user group without slack.triage_channel")
            conversation = self.triage_channel
            mention = f"<!subteam^{channel}>"
            blocks = [slack_block_parts.section_block(mention), *blocks]
            text = f"{mention} {text}"
        if (updated := await self._update_in_place(replaced, blocks, text)) is not None:
            return updated
        response = await self.client.chat_postMessage(
            channel=conversation, thread_ts=thread_ts, blocks=blocks, text=text, unfurl_links=False,
            unfurl_media=False,
        )
        message_id = slack_ref(str(response["channel"]), str(response["ts"]))
        refs = [(item.ticket_id, own_role, "slack", channel, message_id)] if own_role else []
        return Delivered(message_id=message_id, refs=refs)

    async def _mark(self, item: OutboxItem) -> Delivered:
        """A reaction on the marked message (a bot can't edit a person's message, and a reaction adds no noise)."""
        mark = messages.read_mark(item.payload)
        conversation, ts = mark.message.split("|", 1)
        try:
            await self.client.reactions_add(channel=conversation, timestamp=ts,
                                            name=slack_ticket_blocks.marker_reaction(mark.internal))
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error == "message_not_found":  # deleted before it could be marked: nothing left to mark
                log.info("marked message %s is gone (ticket %s)", mark.message, item.ticket_id)
            elif error != "already_reacted":
                raise
        return Delivered(message_id=mark.message)

    async def _pulse(self, item: OutboxItem) -> Delivered:
        """A pulse: its first revision is posted; later ones edit the message that one became."""
        pulse, edits = messages.read_pulse(item.payload)
        blocks, text = slack_notice_blocks.pulse_blocks(pulse), slack_notice_blocks.pulse_text(pulse)
        if edits is not None:
            async with self.db.reading() as session:
                message_id = await delivered_message_id(session, edits)
            if message_id is not None:
                conversation, ts = message_id.split("|", 1)
                try:
                    await self.client.chat_update(channel=conversation, ts=ts, blocks=blocks, text=text)
                    return Delivered(message_id=message_id)
                except SlackApiError as exc:
                    if exc.response.get("error") != "message_not_found":
                        raise
                    log.warning("pulse message %s was deleted in Slack; posting a new one", message_id)
        return await self._post(item, blocks, text)

    async def _post(self, item: OutboxItem, blocks: list[Any], text: str, *, role: str | None = None) -> Delivered:
        """A top-level message; with a ``role`` (the survey) later ones edit the first in place."""
        channel = self._channel_of(item.target)
        if role and item.ticket_id is not None:
            async with self.db.reading() as session:
                ref = await self._ref(session, item.ticket_id, role, channel)
            if (updated := await self._update_in_place(ref, blocks, text)) is not None:
                return updated
        response = await self.client.chat_postMessage(channel=channel, blocks=blocks, text=text,
                                                      unfurl_links=False, unfurl_media=False)
        message_id = slack_ref(str(response["channel"]), str(response["ts"]))
        refs = [(item.ticket_id, role, "slack", channel, message_id)] if role and item.ticket_id is not None else []
        return Delivered(message_id=message_id, refs=refs)
