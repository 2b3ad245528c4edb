"""Delivers outbox messages to Teams: ticket cards posted once then updated in place, notices threaded.

What each outbox kind becomes in Teams; reaching the conversation is ``bot.channels.teams_connector``'s job.
Notices for a person who can't be reached go to the triage conversation instead, once, with a note saying so.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from botbuilder.integration.aiohttp import CloudAdapter
from sqlalchemy import select

from bot import messages
from bot.cards import CardBuilder
from bot.channels import PermanentDeliveryError
from bot.channels.teams_connector import (
    CALL_TIMEOUT,
    CHANNEL,
    PERSON,
    SEED,
    THREAD_MARK,
    Gone,
    TeamsConnector,
    Unreachable,
    Where,
    channel_of,
    classify,
    error_code,
    remember_conversation,
    split_ref,
    teams_ref,
)
from bot.clock import Clock
from bot.config import AppConfig
from bot.engine import Delivered, OutboxItem
from bot.renderers import teams_card_markdown, teams_notice_cards, teams_ticket_cards
from bot.views import Fact, Notice
from store.db import Database
from store.models import MessageRef
from store.queries import delivered_message_id

log = logging.getLogger("ithelp.teams")


class TeamsChannel:
    """Outbox channel for targets ``teams:user:<AAD object id>`` and ``teams:channel:<conversation id>``."""

    def __init__(self, adapter: CloudAdapter, db: Database, clock: Clock, cards: CardBuilder,
                 config: AppConfig) -> None:
        self.adapter = adapter
        self.db = db
        self.clock = clock
        self.cards = cards
        self.config = config.teams
        self.connector = TeamsConnector(adapter, db, clock, config)

    def pacing_key(self, item: OutboxItem) -> str:
        return item.target

    async def deliver(self, item: OutboxItem) -> Delivered:
        _, kind, key = item.target.split(":", 2)
        if kind not in ("user", "channel") or not key:
            raise PermanentDeliveryError(f"not a Teams target: {item.target!r}")
        if item.kind == messages.SURVEY:
            survey = messages.read_survey(item.payload)
            return await self._message(item.ticket_id, teams_notice_cards.survey_card(survey),
                                       teams_card_markdown.plain_text(survey.headline), item.payload.get("ref_role"),
                                       kind, key)
        if item.kind == messages.PULSE:
            return await self._pulse(item, kind, key)
        if item.kind == messages.DIGEST:
            digest = messages.read_digest(item.payload)
            return await self._message(item.ticket_id, teams_notice_cards.digest_card(digest),
                                       teams_card_markdown.plain_text(digest.title), None, kind, key)
        if item.kind == messages.SUMMARY:
            summary = messages.read_summary(item.payload)
            return await self._message(item.ticket_id, teams_notice_cards.summary_card(summary),
                                       teams_card_markdown.plain_text(summary.title), None, kind, key)
        if item.kind == messages.TEXT:
            text = messages.read_text(item.payload).text
            return await self._message(item.ticket_id, teams_notice_cards.text_card(text),
                                       teams_card_markdown.plain_text(text), None, kind, key)
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
        where = await self.connector.where(kind, key)
        ref = await self._message_ref(ticket_id, role, key) if role and ticket_id is not None else None
        if (updated := await self._update_in_place(where, ref, card, summary)) is not None:
            return updated
        message_id = await self.connector.post(where, where.reference.conversation.id, card, summary)
        refs = [(ticket_id, role, "teams", key, message_id)] if role and ticket_id is not None else []
        return Delivered(message_id=message_id, refs=refs)

    async def _pulse(self, item: OutboxItem, kind: str, key: str) -> Delivered:
        """A pulse: its first revision is posted; later ones edit the activity that one became."""
        pulse, edits = messages.read_pulse(item.payload)
        card, summary = teams_notice_cards.pulse_card(pulse), teams_card_markdown.plain_text(pulse.headline)
        where = await self.connector.where(kind, key)
        if edits is not None:
            async with self.db.reading() as session:
                message_id = await delivered_message_id(session, edits)
            if message_id is not None:
                conversation_id, activity_id = split_ref(message_id)
                try:
                    await self.connector.update(where, conversation_id, activity_id, card, summary)
                    return Delivered(message_id=message_id)
                except Gone:
                    log.warning("pulse message %s was deleted in Teams; posting a new one", message_id)
        return Delivered(message_id=await self.connector.post(where, where.reference.conversation.id, card, summary))

    # -- what ---------------------------------------------------------------------------------------
    async def _card(self, ticket_id: int, audience: str, kind: str, key: str) -> Delivered:
        async with self.db.reading() as session:
            view = await self.cards.ticket_card(session, ticket_id, audience, self.clock.now())
        card = teams_ticket_cards.ticket_card(view)
        summary = teams_card_markdown.plain_text(f"{view.number} · {view.summary} ({view.status_label})")
        where = await self.connector.where(kind, key)
        ref = await self._message_ref(ticket_id, audience, key)
        if (updated := await self._update_in_place(where, ref, card, summary)) is not None:
            return updated
        message_id = await self.connector.post(where, where.reference.conversation.id, card, summary)
        return Delivered(message_id=message_id, refs=[(ticket_id, audience, "teams", key, message_id)])

    async def _notice(self, ticket_id: int, delivery: messages.NoticeDelivery, kind: str, key: str) -> Delivered:
        notice = delivery.view
        # A page is recorded under its role; the notice that ends it (replace) edits it in place.
        own_role = delivery.ref_role
        if kind == "channel":
            thread = "triage" if delivery.thread == "triage" else None
            where = await self.connector.where(kind, key)
        else:
            thread = None
            try:
                where = await self.connector.where(kind, key)
            except Unreachable as exc:
                return await self._fallback(notice, ticket_id, key, str(exc))
        replaced = await self._message_ref(ticket_id, own_role, key) if own_role and delivery.replace else None
        if (updated := await self._update_in_place(where, replaced, teams_notice_cards.notice_card(notice),
                                                   teams_notice_cards.notice_summary(notice))) is not None:
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

    async def _post_notice(self, where: Where, notice: Notice, ticket_id: int, thread: str | None) -> Delivered:
        conversation_id = where.reference.conversation.id
        if thread is not None:
            ref = await self._message_ref(ticket_id, thread, where.key)
            if ref is not None:
                card_conversation, card_id = split_ref(ref.message_id)
                conversation_id = f"{channel_of(card_conversation)}{THREAD_MARK}{card_id}"
        card, summary = teams_notice_cards.notice_card(notice), teams_notice_cards.notice_summary(notice)
        return Delivered(message_id=await self.connector.post(where, conversation_id, card, summary))

    async def _fallback(self, notice: Notice, ticket_id: int, person_key: str, reason: str) -> Delivered:
        # Delivered straight to the triage thread from here, never re-enqueued: a blocked triage
        # conversation ends in a dead letter, not in a loop.
        triage = self.config.triage_conversation
        if not triage:
            raise PermanentDeliveryError(f"{reason}; no teams.triage_conversation to fall back to")
        name = await self.connector.person_name(person_key)
        note = Fact("Not delivered", f"Couldn't reach {name} directly in Teams, so this is posted here instead.")
        log.warning("couldn't reach %s directly (%s); posting to the triage conversation", name, reason)
        notice = dataclasses.replace(notice, facts=(*notice.facts, note))
        return await self._post_notice(await self.connector.where("channel", triage), notice, ticket_id, "triage")

    async def _message_ref(self, ticket_id: int, role: str, key: str) -> MessageRef | None:
        async with self.db.reading() as session:
            return (await session.execute(select(MessageRef).where(
                MessageRef.ticket_id == ticket_id, MessageRef.role == role, MessageRef.platform == "teams",
                MessageRef.channel == key))).scalar_one_or_none()

    # -- how ----------------------------------------------------------------------------------------
    async def _update_in_place(self, where: Where, ref: MessageRef | None, card: dict[str, Any],
                               summary: str) -> Delivered | None:
        """Edit the message ``ref`` names; None when there is none, or Teams says it was deleted (post anew)."""
        if ref is None:
            return None
        conversation_id, activity_id = split_ref(ref.message_id)
        try:
            await self.connector.update(where, conversation_id, activity_id, card, summary)
        except Gone:
            log.warning("message %s (ticket %s, %s) was deleted in Teams; posting a new one", ref.message_id,
                        ref.ticket_id, ref.role)
            return None
        return Delivered(message_id=ref.message_id)


__all__ = ["CALL_TIMEOUT", "CHANNEL", "PERSON", "SEED", "THREAD_MARK", "TeamsChannel", "Unreachable", "channel_of",
           "classify", "error_code", "remember_conversation", "split_ref", "teams_ref"]
