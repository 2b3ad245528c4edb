"""Where and how to reach Teams: stored ConversationReferences, proactive turns, connector errors.

Every send is proactive: ``continue_conversation`` on a stored ConversationReference (``conversation_refs``),
then the turn's connector client posts or updates. A 403 marks the reference unusable.
"""

from __future__ import annotations

import asyncio
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

from bot.channels import CredentialsRefused, PermanentDeliveryError, RateLimited, TransientDeliveryError
from bot.clock import Clock
from bot.config import AppConfig
from bot.renderers import teams_card_parts
from store.db import Database
from store.models import ConversationRef, Person
from store.queries import upsert_insert

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


class Gone(PermanentDeliveryError):
    """The activity to update no longer exists (404)."""


@dataclass(frozen=True)
class Where:
    key: str
    kind: str
    reference: ConversationReference
    name: str


class TeamsConnector:
    """Finds the conversation for a target and runs connector operations in proactive turns."""

    def __init__(self, adapter: CloudAdapter, db: Database, clock: Clock, config: AppConfig) -> None:
        self.adapter = adapter
        self.db = db
        self.clock = clock
        self.config = config.teams
        self.bot_app_id = self.config.app_id if self.config.authenticated else ""

    # -- where --------------------------------------------------------------------------------------
    async def where(self, kind: str, key: str) -> Where:
        async with self.db.reading() as session:
            row = (await session.execute(select(ConversationRef).where(
                ConversationRef.platform == "teams", ConversationRef.key == key))).scalar_one_or_none()
            stored = (dict(row.reference), row.usable, row.failure) if row is not None else None
            seed = row is not None and row.kind == SEED
        if kind == "user":
            name = await self.person_name(key)
            if stored is None:
                raise Unreachable(f"can't message {name} in Teams: they haven't chatted with ITHelp yet")
            reference, usable, failure = stored
            if not usable:
                raise Unreachable(f"can't message {name} in Teams: {failure or 'their chat refused messages'}")
            if seed:
                return await self.open_personal_chat(key, ConversationReference().deserialize(reference), name)
            return Where(key, PERSON, ConversationReference().deserialize(reference), name)
        if stored is None:
            # The triage conversation may be configured before the bot ever saw it: address it directly.
            return Where(key, CHANNEL, self.channel_reference(key), key)
        reference, usable, failure = stored
        if not usable:
            raise Unreachable(f"can't post to Teams conversation {key}: {failure or 'it refused messages'}; "
                              "add ITHelp to it again")
        return Where(key, CHANNEL, ConversationReference().deserialize(reference), key)

    async def open_personal_chat(self, key: str, seed: ConversationReference, name: str) -> Where:
        # They have only talked to us in a channel: start the 1:1 chat (Teams allows it once the app is
        # installed for them) and keep its reference like one from a chat they started.
        tenant = seed.conversation.tenant_id
        parameters = ConversationParameters(is_group=False, bot=seed.bot, members=[seed.user], tenant_id=tenant,
                                            channel_data={"tenant": {"id": tenant}})
        try:
            created = await self.call(Where(key, PERSON, seed, name),
                                       lambda client: client.conversations.create_conversation(parameters))
        except Gone as exc:
            raise Unreachable(f"can't start a chat with {name} in Teams: {exc}") from exc
        personal = ConversationReference().deserialize(seed.serialize())
        personal.conversation = ConversationAccount(id=str(created.id), conversation_type="personal",
                                                    tenant_id=tenant)
        async with self.db.transaction() as session:
            await remember_conversation(session, key=key, kind=PERSON, reference=personal.serialize(),
                                        now=self.clock.now())
        log.info("started a Teams chat with %s", name)
        return Where(key, PERSON, personal, name)

    def channel_reference(self, conversation_id: str) -> ConversationReference:
        return ConversationReference(
            channel_id="msteams", service_url=self.config.service_url,
            bot=ChannelAccount(id=f"28:{self.config.app_id}" if self.config.app_id else "28:ithelp"),
            conversation=ConversationAccount(id=conversation_id, is_group=True, conversation_type="channel",
                                             tenant_id=self.config.tenant_id or None),
        )

    async def person_name(self, aad_object_id: str) -> str:
        async with self.db.reading() as session:
            name = await session.scalar(select(Person.display_name).where(
                Person.platform == "teams", Person.platform_user_id == aad_object_id))
        return name or aad_object_id

    async def post(self, where: Where, conversation_id: str, card: dict[str, Any], summary: str) -> str:
        activity = self.activity(where, conversation_id, card, summary)
        response = await self.call(where, lambda client: client.conversations.send_to_conversation(
            conversation_id, activity))
        return teams_ref(conversation_id, str(response.id))

    async def update(self, where: Where, conversation_id: str, activity_id: str, card: dict[str, Any],
                      summary: str) -> None:
        activity = self.activity(where, conversation_id, card, summary)
        activity.id = activity_id
        await self.call(where, lambda client: client.conversations.update_activity(
            conversation_id, activity_id, activity))

    @staticmethod
    def activity(where: Where, conversation_id: str, card: dict[str, Any], summary: str) -> Activity:
        conversation = where.reference.conversation
        # `summary` is what Teams shows in notifications and the chat list instead of "sent a card".
        return Activity(summary=summary or None,
            type=ActivityTypes.message, channel_id="msteams", service_url=where.reference.service_url,
            from_property=where.reference.bot,
            conversation=ConversationAccount(id=conversation_id, is_group=conversation.is_group,
                                             conversation_type=conversation.conversation_type,
                                             tenant_id=conversation.tenant_id),
            attachments=[Attachment(content_type=teams_card_parts.CONTENT_TYPE, content=teams_card_parts.clean(card))],
        )

    async def call(self, where: Where, operation: Callable[[Any], Awaitable[Any]]) -> Any:
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
                await self.mark_unusable(where, code)
                raise Unreachable(f"Teams refused messages to {where.name} (403 {code})") from exc
            if status == 404:
                raise Gone(f"Teams activity not found ({error_code(exc)})") from exc
            raise classify(exc) from exc
        except (ClientRequestError, aiohttp.ClientError, TimeoutError, ConnectionError, PermissionError) as exc:
            raise classify(exc) from exc
        return results[0]

    async def mark_unusable(self, where: Where, code: str) -> None:
        async with self.db.transaction() as session:
            await remember_conversation(session, key=where.key, kind=where.kind, reference=where.reference.serialize(),
                                        now=self.clock.now(), usable=False, failure=f"403 {code}")


__all__ = ["CALL_TIMEOUT", "CHANNEL", "PERSON", "SEED", "THREAD_MARK", "Gone", "TeamsConnector", "Unreachable", "Where",
           "channel_of", "classify", "error_code", "remember_conversation", "split_ref", "teams_ref"]
