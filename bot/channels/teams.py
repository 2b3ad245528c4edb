"""Delivers outbox messages to Teams: ticket cards posted once then updated in place, notices threaded.

Every send is proactive: ``continue_conversation`` on a stored ConversationReference (``conversation_refs``),
then the turn's connector client posts or updates. A 403 marks the reference unusable; notices for a person
who can't be reached go to the triage conversation instead, once, with a note saying so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from botbuilder.core import BotAdapter, TurnContext
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import (
    Activity,
    ActivityTypes,
    Attachment,
    ChannelAccount,
    ConversationAccount,
    ConversationParameters,
    ConversationReference,
    ErrorResponseException,
)
from msrest.exceptions import ClientRequestError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import messages
from bot.cards import CardBuilder
from bot.channels import CredentialsRefused, PermanentDeliveryError, RateLimited, TransientDeliveryError
from bot.clock import Clock
from bot.config import AppConfig
from bot.engine import Delivered, OutboxItem
from bot.renderers import adaptive_cards
from bot.views import Fact, Notice
from store.db import Database
from store.models import ConversationRef, MessageRef, Person
from store.queries import delivered_message_id, upsert_insert

log = logging.getLogger("ithelp.teams")

PERSON, CHANNEL = "person", "channel"
SEED = "seed"  # someone seen only in a channel: enough to open a 1:1 chat with them when we need one
THREAD_MARK = ";messageid="
# One proactive call, connector round trips included; the outbox retries what times out.
CALL_TIMEOUT = 30.0


def teams_ref(conversation_id: str, activity_id: str) -> str:
    """How a Teams message is named in ``message_refs`` / ``delivered_message_id``: ``<conversation>|<activity>``."""
    return f"{conversation_id}|{activity_id}"


def split_ref(message_id: str) -> tuple[str, str]:
    conversation_id, _, activity_id = message_id.rpartition("|")
    return conversation_id, activity_id


def channel_of(conversation_id: str) -> str:
    """The channel a channel-thread conversation id (``19:x@thread.tacv2;messageid=1``) belongs to."""
    return conversation_id.split(THREAD_MARK, 1)[0]


async def remember_conversation(
    session: AsyncSession, *, key: str, kind: str, reference: dict[str, Any], now: Any,
    usable: bool = True, failure: str | None = None, replace: bool = True,
) -> None:
    """Insert or refresh the ConversationReference stored under ``key`` (AAD object id or channel id);
    with ``replace=False`` an existing one is kept as it is."""
    insert = upsert_insert(session)
    values = {"reference": reference, "kind": kind, "usable": usable, "failure": failure, "updated_at": now}
    statement = insert(ConversationRef).values(platform="teams", key=key, **values)
    if replace:
        statement = statement.on_conflict_do_update(index_elements=["platform", "key"], set_=values)
    else:
        statement = statement.on_conflict_do_nothing(index_elements=["platform", "key"])
    await session.execute(statement)


def error_code(exc: ErrorResponseException) -> str:
    """The Bot Framework error code (``MessageWritesBlocked``…) or the HTTP status when there is none."""
    error = getattr(getattr(exc, "error", None), "error", None)
    code = getattr(error, "code", None)
    return str(code) if code else str(exc.response.status_code)


def classify(exc: Exception) -> Exception:
    """Map a connector failure onto the outbox's transient/permanent errors."""
    if isinstance(exc, ErrorResponseException):
        status, code = exc.response.status_code, error_code(exc)
        if status == 429:
            retry_after = exc.response.headers.get("Retry-After")
            try:
                seconds = float(retry_after) if retry_after else None
            except ValueError:
                seconds = None
            return RateLimited(f"Teams rate limited ({code})", retry_after=seconds)
        if status == 401:
            # The connector refused the bot's token (a rotated or expired app secret): all of Teams is
            # down for us until the credentials are fixed, whatever the message.
            return CredentialsRefused(f"Teams refused the bot's credentials (401 {code})")
        if status >= 500 or status == 408:
            return TransientDeliveryError(f"Teams server error {status}: {code}")
        return PermanentDeliveryError(f"Teams refused ({status}): {code}")
    if isinstance(exc, PermissionError):
        # botframework's MicrosoftAppCredentials when Azure AD refuses the app id/secret for a token.
        return CredentialsRefused(f"Teams: Azure AD refused the bot's credentials ({exc})")
    if isinstance(exc, ClientRequestError | aiohttp.ClientError | TimeoutError | ConnectionError):
        return TransientDeliveryError(f"Teams unreachable: {type(exc).__name__}: {exc}")
    return exc


class Unreachable(PermanentDeliveryError):
    """The conversation can't take messages (never seen, or a 403 marked it unusable)."""


class _Gone(PermanentDeliveryError):
    """The activity to update no longer exists (404)."""


@dataclass(frozen=True)
class _Where:
    key: str
    kind: str
    reference: ConversationReference
    name: str


class TeamsChannel:
    """Outbox channel for targets ``teams:user:<AAD object id>`` and ``teams:channel:<conversation id>``."""

    def __init__(self, adapter: CloudAdapter, db: Database, clock: Clock, cards: CardBuilder,
                 config: AppConfig) -> None:
        self.adapter = adapter
        self.db = db
        self.clock = clock
        self.cards = cards
        self.config = config.teams
        self.bot_app_id = self.config.app_id if self.config.authenticated else ""

    def pacing_key(self, item: OutboxItem) -> str:
        return item.target

    async def deliver(self, item: OutboxItem) -> Delivered:
        _, kind, key = item.target.split(":", 2)
        if kind not in ("user", "channel") or not key:
            raise PermanentDeliveryError(f"not a Teams target: {item.target!r}")
        if item.kind == messages.SURVEY:
            survey = messages.read_survey(item.payload)
            return await self._message(item.ticket_id, adaptive_cards.survey_card(survey),
                                       adaptive_cards.plain_text(survey.headline), item.payload.get("ref_role"),
                                       kind, key)
        if item.kind == messages.PULSE:
            return await self._pulse(item, kind, key)
        if item.kind == messages.DIGEST:
            digest = messages.read_digest(item.payload)
            return await self._message(item.ticket_id, adaptive_cards.digest_card(digest),
                                       adaptive_cards.plain_text(digest.title), None, kind, key)
        if item.kind == messages.SUMMARY:
            summary = messages.read_summary(item.payload)
            return await self._message(item.ticket_id, adaptive_cards.summary_card(summary),
                                       adaptive_cards.plain_text(summary.title), None, kind, key)
        if item.kind == messages.TEXT:
            text = messages.read_text(item.payload).text
            return await self._message(item.ticket_id, adaptive_cards.text_card(text), adaptive_cards.plain_text(text),
                                       None, kind, key)
        if item.kind == messages.LEGACY_TEAMS_CARD:
            return await self._message(item.ticket_id, item.payload["card"], str(item.payload.get("text") or ""),
                                       item.payload.get("ref_role"), kind, key)
        if item.ticket_id is None:
            raise PermanentDeliveryError(f"Teams can't deliver {item.kind!r} without a ticket")
        if item.kind == messages.TICKET_CARD:
            return await self._card(item.ticket_id, item.payload.get("audience", "triage"), kind, key)
        if item.kind in (messages.NOTICE, messages.PAGE):
            return await self._notice(item.ticket_id, messages.read_notice(item.payload), kind, key)
        if item.kind == messages.MARK:
            # Teams has no bot reactions: the marker is a one-line reply in the message's thread.
            mark = messages.read_mark(item.payload)
            return await self._notice(item.ticket_id, messages.NoticeDelivery(mark.view, thread="triage"), kind, key)
        raise PermanentDeliveryError(f"Teams can't deliver messages of kind {item.kind!r}")

    async def _message(self, ticket_id: int | None, card: dict[str, Any], summary: str, role: str | None, kind: str,
                       key: str) -> Delivered:
        """A card that is its own message (survey, digest, summary): posted once, then updated in place when it
        has a role."""
        where = await self._where(kind, key)
        ref = await self._message_ref(ticket_id, role, key) if role and ticket_id is not None else None
        if (updated := await self._update_in_place(where, ref, card, summary)) is not None:
            return updated
        message_id = await self._post(where, where.reference.conversation.id, card, summary)
        refs = [(ticket_id, role, "teams", key, message_id)] if role and ticket_id is not None else []
        return Delivered(message_id=message_id, refs=refs)

    async def _pulse(self, item: OutboxItem, kind: str, key: str) -> Delivered:
        """A pulse: its first revision is posted; later ones edit the activity that one became."""
        pulse, edits = messages.read_pulse(item.payload)
        card, summary = adaptive_cards.pulse_card(pulse), adaptive_cards.plain_text(pulse.headline)
        where = await self._where(kind, key)
        if edits is not None:
            async with self.db.reading() as session:
                message_id = await delivered_message_id(session, edits)
            if message_id is not None:
                conversation_id, activity_id = split_ref(message_id)
                try:
                    await self._update(where, conversation_id, activity_id, card, summary)
                    return Delivered(message_id=message_id)
                except _Gone:
                    log.warning("pulse message %s was deleted in Teams; posting a new one", message_id)
        return Delivered(message_id=await self._post(where, where.reference.conversation.id, card, summary))

    # -- what ---------------------------------------------------------------------------------------
    async def _card(self, ticket_id: int, audience: str, kind: str, key: str) -> Delivered:
        async with self.db.reading() as session:
            view = await self.cards.ticket_card(session, ticket_id, audience, self.clock.now())
        card = adaptive_cards.ticket_card(view)
        summary = adaptive_cards.plain_text(f"{view.number} · {view.summary} ({view.status_label})")
        where = await self._where(kind, key)
        ref = await self._message_ref(ticket_id, audience, key)
        if (updated := await self._update_in_place(where, ref, card, summary)) is not None:
            return updated
        message_id = await self._post(where, where.reference.conversation.id, card, summary)
        return Delivered(message_id=message_id, refs=[(ticket_id, audience, "teams", key, message_id)])

    async def _notice(self, ticket_id: int, delivery: messages.NoticeDelivery, kind: str, key: str) -> Delivered:
        notice = delivery.view
        # A page is recorded under its role; the notice that ends it (replace) edits it in place.
        own_role = delivery.ref_role
        if kind == "channel":
            thread = "triage" if delivery.thread == "triage" else None
            where = await self._where(kind, key)
        else:
            thread = None
            try:
                where = await self._where(kind, key)
            except Unreachable as exc:
                return await self._fallback(notice, ticket_id, key, str(exc))
        replaced = await self._message_ref(ticket_id, own_role, key) if own_role and delivery.replace else None
        if (updated := await self._update_in_place(where, replaced, adaptive_cards.notice_card(notice),
                                                   adaptive_cards.notice_summary(notice))) is not None:
            return updated
        try:
            delivered = await self._post_notice(where, notice, ticket_id, thread)
        except Unreachable as exc:
            if kind == "channel":
                raise
            return await self._fallback(notice, ticket_id, key, str(exc))
        if own_role and delivered.message_id:
            delivered.refs = [(ticket_id, own_role, "teams", key, delivered.message_id)]
        return delivered

    async def _post_notice(self, where: _Where, notice: Notice, ticket_id: int, thread: str | None) -> Delivered:
        conversation_id = where.reference.conversation.id
        if thread is not None:
            ref = await self._message_ref(ticket_id, thread, where.key)
            if ref is not None:
                card_conversation, card_id = split_ref(ref.message_id)
                conversation_id = f"{channel_of(card_conversation)}{THREAD_MARK}{card_id}"
        return Delivered(message_id=await self._post(where, conversation_id, adaptive_cards.notice_card(notice),
                                                     adaptive_cards.notice_summary(notice)))

    async def _fallback(self, notice: Notice, ticket_id: int, person_key: str, reason: str) -> Delivered:
        # Delivered straight to the triage thread from here, never re-enqueued: a blocked triage
        # conversation ends in a dead letter, not in a loop.
        triage = self.config.triage_conversation
        if not triage:
            raise PermanentDeliveryError(f"{reason}; no teams.triage_conversation to fall back to")
        name = await self._person_name(person_key)
        note = Fact("Not delivered", f"Couldn't reach {name} directly in Teams, so this is posted here instead.")
        log.warning("couldn't reach %s directly (%s); posting to the triage conversation", name, reason)
        notice = dataclasses.replace(notice, facts=(*notice.facts, note))
        return await self._post_notice(await self._where("channel", triage), notice, ticket_id, "triage")

    # -- where --------------------------------------------------------------------------------------
    async def _where(self, kind: str, key: str) -> _Where:
        async with self.db.reading() as session:
            row = (await session.execute(select(ConversationRef).where(
                ConversationRef.platform == "teams", ConversationRef.key == key))).scalar_one_or_none()
            stored = (dict(row.reference), row.usable, row.failure) if row is not None else None
            seed = row is not None and row.kind == SEED
        if kind == "user":
            name = await self._person_name(key)
            if stored is None:
                raise Unreachable(f"can't message {name} in Teams: they haven't chatted with ITHelp yet")
            reference, usable, failure = stored
            if not usable:
                raise Unreachable(f"can't message {name} in Teams: {failure or 'their chat refused messages'}")
            if seed:
                return await self._open_personal_chat(key, ConversationReference().deserialize(reference), name)
            return _Where(key, PERSON, ConversationReference().deserialize(reference), name)
        if stored is None:
            # The triage conversation may be configured before the bot ever saw it: address it directly.
            return _Where(key, CHANNEL, self._channel_reference(key), key)
        reference, usable, failure = stored
        if not usable:
            raise Unreachable(f"can't post to Teams conversation {key}: {failure or 'it refused messages'}; "
                              "add ITHelp to it again")
        return _Where(key, CHANNEL, ConversationReference().deserialize(reference), key)

    async def _open_personal_chat(self, key: str, seed: ConversationReference, name: str) -> _Where:
        # They have only talked to us in a channel: start the 1:1 chat (Teams allows it once the app is
        # installed for them) and keep its reference like one from a chat they started.
        tenant = seed.conversation.tenant_id
        parameters = ConversationParameters(is_group=False, bot=seed.bot, members=[seed.user], tenant_id=tenant,
                                            channel_data={"tenant": {"id": tenant}})
        try:
            created = await self._call(_Where(key, PERSON, seed, name),
                                       lambda client: client.conversations.create_conversation(parameters))
        except _Gone as exc:
            raise Unreachable(f"can't start a chat with {name} in Teams: {exc}") from exc
        personal = ConversationReference().deserialize(seed.serialize())
        personal.conversation = ConversationAccount(id=str(created.id), conversation_type="personal",
                                                    tenant_id=tenant)
        async with self.db.transaction() as session:
            await remember_conversation(session, key=key, kind=PERSON, reference=personal.serialize(),
                                        now=self.clock.now())
        log.info("started a Teams chat with %s", name)
        return _Where(key, PERSON, personal, name)

    def _channel_reference(self, conversation_id: str) -> ConversationReference:
        return ConversationReference(
            channel_id="msteams", service_url=self.config.service_url,
            bot=ChannelAccount(id=f"28:{self.config.app_id}" if self.config.app_id else "28:ithelp"),
            conversation=ConversationAccount(id=conversation_id, is_group=True, conversation_type="channel",
                                             tenant_id=self.config.tenant_id or None),
        )

    async def _message_ref(self, ticket_id: int, role: str, key: str) -> MessageRef | None:
        async with self.db.reading() as session:
            return (await session.execute(select(MessageRef).where(
                MessageRef.ticket_id == ticket_id, MessageRef.role == role, MessageRef.platform == "teams",
                MessageRef.channel == key))).scalar_one_or_none()

    async def _person_name(self, aad_object_id: str) -> str:
        async with self.db.reading() as session:
            name = await session.scalar(select(Person.display_name).where(
                Person.platform == "teams", Person.platform_user_id == aad_object_id))
        return name or aad_object_id

    # -- how ----------------------------------------------------------------------------------------
    async def _post(self, where: _Where, conversation_id: str, card: dict[str, Any], summary: str) -> str:
        activity = self._activity(where, conversation_id, card, summary)
        response = await self._call(where, lambda client: client.conversations.send_to_conversation(
            conversation_id, activity))
        return teams_ref(conversation_id, str(response.id))

    async def _update_in_place(self, where: _Where, ref: MessageRef | None, card: dict[str, Any],
                               summary: str) -> Delivered | None:
        """Edit the message ``ref`` names; None when there is none, or Teams says it was deleted (post anew)."""
        if ref is None:
            return None
        conversation_id, activity_id = split_ref(ref.message_id)
        try:
            await self._update(where, conversation_id, activity_id, card, summary)
        except _Gone:
            log.warning("message %s (ticket %s, %s) was deleted in Teams; posting a new one", ref.message_id,
                        ref.ticket_id, ref.role)
            return None
        return Delivered(message_id=ref.message_id)

    async def _update(self, where: _Where, conversation_id: str, activity_id: str, card: dict[str, Any],
                      summary: str) -> None:
        activity = self._activity(where, conversation_id, card, summary)
        activity.id = activity_id
        await self._call(where, lambda client: client.conversations.update_activity(
            conversation_id, activity_id, activity))

    @staticmethod
    def _activity(where: _Where, conversation_id: str, card: dict[str, Any], summary: str) -> Activity:
        conversation = where.reference.conversation
        # `summary` is what Teams shows in notifications and the chat list instead of "sent a card".
        return Activity(summary=summary or None,
            type=ActivityTypes.message, channel_id="msteams", service_url=where.reference.service_url,
            from_property=where.reference.bot,
            conversation=ConversationAccount(id=conversation_id, is_group=conversation.is_group,
                                             conversation_type=conversation.conversation_type,
                                             tenant_id=conversation.tenant_id),
            attachments=[Attachment(content_type=adaptive_cards.CONTENT_TYPE, content=adaptive_cards.clean(card))],
        )

    async def _call(self, where: _Where, operation: Callable[[Any], Awaitable[Any]]) -> Any:
        """Run one connector operation in a proactive turn; map failures, marking the reference on 403."""
        results: list[Any] = []

        async def logic(turn: TurnContext) -> None:
            # The connector client directly, not turn.send_activity: that would make every post a reply to
            # the continuation activity's made-up id, and a channel post must start a new thread.
            results.append(await operation(turn.turn_state[BotAdapter.BOT_CONNECTOR_CLIENT_KEY]))

        try:
            await asyncio.wait_for(self.adapter.continue_conversation(where.reference, logic,
                                                                      bot_app_id=self.bot_app_id), CALL_TIMEOUT)
        except ErrorResponseException as exc:
            status = exc.response.status_code
            if status == 403:
                code = error_code(exc)
                await self._mark_unusable(where, code)
                raise Unreachable(f"Teams refused messages to {where.name} (403 {code})") from exc
            if status == 404:
                raise _Gone(f"Teams activity not found ({error_code(exc)})") from exc
            raise classify(exc) from exc
        except (ClientRequestError, aiohttp.ClientError, TimeoutError, ConnectionError, PermissionError) as exc:
            raise classify(exc) from exc
        return results[0]

    async def _mark_unusable(self, where: _Where, code: str) -> None:
        async with self.db.transaction() as session:
            await remember_conversation(session, key=where.key, kind=where.kind, reference=where.reference.serialize(),
                                        now=self.clock.now(), usable=False, failure=f"403 {code}")
