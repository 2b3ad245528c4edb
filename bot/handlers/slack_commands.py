"""``/ithelp`` and the new-ticket form: file, answer a command, or escalate."""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.actions import check_allowed
from bot.chat_commands import read_command
from bot.dialogs import new_ticket
from bot.handlers import command_answers
from bot.handlers.errors import friendly
from bot.handlers.slack_part import PLATFORM, SlackListeners, quote
from bot.people import PersonRef
from bot.renderers import slack_mrkdwn, slack_notice_blocks
from bot.requester_escalation import NotYet, parse_escalate
from bot.routing import Action
from bot.text import escape_typed
from bot.tickets import (
    InvalidInput,
    Origin,
)

log = logging.getLogger("ithelp.slack")


class SlackCommands(SlackListeners):
    """``/ithelp`` and the new-ticket form: file, answer a command, or escalate."""

    async def on_command(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        text = (await self.neutral(body.get("text") or "")).strip()
        user_id = body["user_id"]
        if not text:
            try:
                await client.views_open(trigger_id=body["trigger_id"], view=new_ticket.slack_modal(
                    self.desk.config.categories, self.priority_labels(), private_metadata=body.get("channel_id", "")))
                await ack()
            except SlackApiError as exc:
                log.warning("views.open failed: %s", exc)
                await ack(response_type="ephemeral", text="I couldn't open the form just now. Type "
                          "`/ithelp <what's wrong>` instead and I'll open the ticket straight away.")
            return
        try:
            escalating = parse_escalate(text)
        except InvalidInput as exc:
            await ack(response_type="ephemeral", text=slack_mrkdwn.escape_mrkdwn(str(exc)))
            return
        if escalating is not None:
            await ack(response_type="ephemeral", text=await self._escalate(user_id, *escalating))
            return
        if text.lower().startswith("incident ") and text[len("incident "):].strip():
            await ack(response_type="ephemeral", text=await self.declare_incident(
                user_id, body, text[len("incident "):].strip()))
            return
        command = read_command(text)
        if command is not None:
            person = await self.person(user_id, name=body.get("user_name"))
            answer = await command_answers.for_slack(self.desk.chat, person, command, self.help_text())
            await ack(response_type="ephemeral", **answer)
            return
        try:
            requester = await self.person(user_id, name=body.get("user_name"))
            question = await self.desk.knowledge.held.hold(  # ask_first: articles before filing
                requester, text, Origin("slack", conversation=body.get("channel_id")),
                ("slack-command", body.get("trigger_id") or f"{user_id}:{text}"))
            if question is not None:
                await ack(response_type="ephemeral", text=slack_notice_blocks.notice_text(question),
                          blocks=slack_notice_blocks.notice_blocks(question))
                return
            result = await self.desk.tickets.open(
                requester, text, origin=Origin("slack", conversation=body.get("channel_id")),
                dedup=("slack-command", body.get("trigger_id") or f"{user_id}:{text}"), defer_setup=True,
            )
        except Exception as exc:
            await ack(response_type="ephemeral", text=f"{friendly(exc, PLATFORM)}\n\nWhat you typed: {quote(text)}")
            return
        await ack(response_type="ephemeral", text=self.ack_text(result.ticket))

    async def declare_incident(self, user_id: str, body: dict[str, Any], title: str) -> str:
        """``/ithelp incident <title>`` (agents): the answer to show the agent."""
        try:
            agent = await self.person(user_id, name=body.get("user_name"))
            number = await self.desk.incidents.declare_new(
                title, agent, Origin("slack", conversation=body.get("channel_id")))
        except Exception as exc:
            return slack_mrkdwn.escape_mrkdwn(friendly(exc, PLATFORM))
        return f"{number} declared; its card is in the triage channel."

    async def _escalate(self, user_id: str, ticket_id: int, why: str) -> str:
        """``/ithelp escalate N <why>``: what to answer, ephemerally."""
        try:
            said = await self.desk.requester_escalation.escalate(ticket_id, await self.person(user_id), why)
        except NotYet as exc:
            return slack_mrkdwn.mrkdwn(exc.text)  # the target's time on the reader's own clock
        except Exception as exc:
            return slack_mrkdwn.escape_mrkdwn(friendly(exc, PLATFORM))
        return slack_mrkdwn.escape_mrkdwn(said)

    async def on_new_ticket_submit(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        draft = new_ticket.parse_slack_submission(view["state"]["values"])
        errors = new_ticket.slack_errors(draft)
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        user_id = body["user"]["id"]
        try:
            requester = await self.person(user_id, name=body["user"].get("name"))
            priority = draft.urgency if draft.urgency in self.desk.config.priorities else None
            origin = Origin("slack", conversation=view.get("private_metadata") or None)
            question = await self.desk.knowledge.held.hold(  # ask_first: articles before filing, in a DM
                requester, escape_typed(draft.summary), origin, ("slack-view", view["id"]),
                description=escape_typed(draft.description), category=draft.category, priority=priority)
            if question is None:
                await self.desk.tickets.open(
                    requester, escape_typed(draft.summary), description=escape_typed(draft.description),
                    category=draft.category, priority=priority, origin=origin,
                    dedup=("slack-view", view["id"]), defer_setup=True,
                )
        except InvalidInput as exc:
            field = new_ticket.SUMMARY_BLOCK if exc.field == "summary" else new_ticket.DESCRIPTION_BLOCK
            await ack(response_action="errors", errors={field: str(exc)})
            return
        except Exception as exc:
            # Keep the form open with the person's text in it; nothing they typed is lost.
            await ack(response_action="errors", errors={new_ticket.SUMMARY_BLOCK: friendly(exc, PLATFORM)})
            return
        await ack()
        if question is not None:
            try:
                await self.client.chat_postMessage(channel=user_id, text=slack_notice_blocks.notice_text(question),
                                                   blocks=slack_notice_blocks.notice_blocks(question))
            except SlackApiError as exc:  # held all the same: its timer files it
                log.warning("could not ask %s about their request first: %s", user_id, exc)

    async def on_new_ticket_button(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        """The welcome's New ticket button: the same form as ``/ithelp`` on its own."""
        await ack()
        try:
            check_allowed(self.desk, Action.NEW_TICKET, PersonRef("slack", body["user"]["id"]))
            channel = (body.get("channel") or {}).get("id") or ""
            await client.views_open(trigger_id=body["trigger_id"], view=new_ticket.slack_modal(
                self.desk.config.categories, self.priority_labels(), private_metadata=channel))
        except Exception as exc:
            await self.refuse(client, body, friendly(exc, PLATFORM))


__all__ = ["SlackCommands"]
