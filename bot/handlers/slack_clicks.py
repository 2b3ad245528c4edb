"""Card buttons and the forms they open: the shared action table, resolve notes, survey reasons, articles."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.actions import ACTIONS, Click, check_allowed, perform
from bot.dialogs import incident_note, resolve_note, send_article, survey_reason
from bot.handlers.errors import friendly
from bot.handlers.slack_part import PLATFORM, Refusal, SlackListeners, ticket_number
from bot.people import PersonRef
from bot.routing import Action, Form
from bot.text import escape_typed

log = logging.getLogger("ithelp.slack")


class SlackClicks(SlackListeners):
    """Card buttons and the forms they open: the shared action table, resolve notes, survey reasons, articles."""

    def action_handlers(self) -> dict[Action, Callable[..., Awaitable[None]]]:
        """Every button of the shared table goes through one handler; those that open a modal have their own
        (the new-ticket button's is the commands part's)."""
        handlers: dict[Action, Callable[..., Awaitable[None]]] = dict.fromkeys(ACTIONS, self.on_click)
        handlers[Action.RESOLVE] = self.on_resolve_button
        handlers[Action.SURVEY_REASON] = self.on_survey_reason_button
        handlers[Action.KB_SEND] = self.on_send_article_button
        for action in incident_note.FORM_OF:
            handlers[action] = self.on_incident_form_button
        return handlers

    async def on_click(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        """A button or menu from the shared action table (``bot.actions``)."""
        await ack()
        ticket_id = self._ticket_id(body)
        if ticket_id is None:
            await self.refuse(client, body, "That button doesn't point at a ticket any more.")
            return
        user = body["user"]
        pressed = (body.get("actions") or [{}])[0]
        channel = (body.get("channel") or {}).get("id") or ""
        try:
            person = await self.person(user["id"], name=user.get("name") or user.get("username"))
            await perform(self.desk, Click(
                Action(pressed["action_id"]), ticket_id, person,
                choice=str((pressed.get("selected_option") or {}).get("value") or pressed.get("value") or ""),
                # A page posted in a channel may be acknowledged by anyone in it (DMs name the person).
                where=f"slack:channel:{channel}" if channel[:1] in ("C", "G") else None))
        except Exception as exc:
            await self.refuse(client, body, friendly(exc, PLATFORM))

    @staticmethod
    def _ticket_id(body: dict[str, Any]) -> int | None:
        action = (body.get("actions") or [{}])[0]
        raw = action.get("value") or (action.get("selected_option") or {}).get("value") or ""
        return ticket_number(str(raw).split(":", 1)[0])

    async def on_resolve_button(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        ticket_id = self._ticket_id(body)
        user = body["user"]
        if ticket_id is None:
            return
        try:
            check_allowed(self.desk, Action.RESOLVE, PersonRef("slack", user["id"]))
            ticket = await self.desk.tickets.get(ticket_id)
            await client.views_open(trigger_id=body["trigger_id"],
                                    view=resolve_note.slack_modal(ticket.id, ticket.number))
        except Exception as exc:
            await self.refuse(client, body, friendly(exc, PLATFORM))

    async def on_resolve_submit(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        note = resolve_note.parse_slack_submission(view["state"]["values"])
        try:
            ticket_id = ticket_number(view.get("private_metadata"))
            if ticket_id is None:
                raise Refusal("That form doesn't point at a ticket any more.")
            await self.desk.tickets.resolve(ticket_id, await self.person(body["user"]["id"]), escape_typed(note))
        except Exception as exc:
            await ack(response_action="errors", errors={resolve_note.NOTE_BLOCK: friendly(exc, PLATFORM)})
            return
        await ack()

    async def on_survey_reason_button(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        ticket_id = self._ticket_id(body)
        if ticket_id is None:
            return
        try:
            check_allowed(self.desk, Action.SURVEY_REASON, PersonRef("slack", body["user"]["id"]))
            view = await self.desk.surveys.view(ticket_id)
            await client.views_open(trigger_id=body["trigger_id"], view=survey_reason.slack_modal(view.ticket_id,
                                                                                                  view.number))
        except Exception as exc:
            await self.refuse(client, body, friendly(exc, PLATFORM))

    async def on_survey_reason_submit(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        try:
            ticket_id, reason, comment = survey_reason.read_slack(view)
            who = PersonRef("slack", body["user"]["id"])
            check_allowed(self.desk, Action.SURVEY_REASON, who)
            await self.desk.surveys.add_reason(ticket_id, who, reason, comment)
        except Exception as exc:
            await ack(response_action="errors", errors={"reason": friendly(exc, PLATFORM)})
            return
        await ack()

    async def on_send_article_button(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        ticket_id = self._ticket_id(body)
        if ticket_id is None:
            return
        try:
            check_allowed(self.desk, Action.KB_SEND, PersonRef("slack", body["user"]["id"]))
            number, choices = await self.desk.knowledge.search_for_agent(ticket_id, "")
            await client.views_open(trigger_id=body["trigger_id"],
                                    view=send_article.slack_modal(ticket_id, number, "", choices))
        except Exception as exc:
            await self.refuse(client, body, friendly(exc, PLATFORM))

    async def on_send_article_submit(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        # Picked an article: send it. Typed words only: search again and show what was found.
        query, article_id = send_article.parse_slack_submission(view["state"]["values"])
        try:
            ticket_id = ticket_number(view.get("private_metadata"))
            if ticket_id is None:
                raise Refusal("That form doesn't point at a ticket any more.")
            if article_id is None:
                if not query:
                    raise Refusal(send_article.PICK_ONE)
                number, choices = await self.desk.knowledge.search_for_agent(ticket_id, query)
                await ack(response_action="update", view=send_article.slack_modal(ticket_id, number, query, choices))
                return
            await self.desk.knowledge.send(ticket_id, await self.person(body["user"]["id"]), article_id)
        except Exception as exc:
            await ack(response_action="errors", errors={send_article.QUERY_BLOCK: friendly(exc, PLATFORM)})
            return
        await ack()


    async def on_incident_form_button(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        """"Post update" / "Resolve incident" on an incident card: the agent writes the text in a modal."""
        await ack()
        pressed = (body.get("actions") or [{}])[0]
        action = Action(pressed["action_id"])
        incident_id = incident_note.incident_of(str(pressed.get("value") or ""))
        try:
            if incident_id is None:
                raise Refusal("That button doesn't point at an incident any more.")
            check_allowed(self.desk, action, PersonRef("slack", body["user"]["id"]))
            number = await self.desk.incident_updates.number_of(incident_id)
            await client.views_open(trigger_id=body["trigger_id"], view=incident_note.slack_modal(
                incident_note.FORM_OF[action], incident_id, number))
        except Exception as exc:
            await self.refuse(client, body, friendly(exc, PLATFORM))

    async def on_incident_form_submit(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        """The incident update / resolution note: sent to everyone affected, or the incident resolved."""
        form = Form(view["callback_id"])
        text = escape_typed(incident_note.parse_slack(view["state"]["values"]))
        try:
            incident_id = ticket_number(view.get("private_metadata"))
            if incident_id is None:
                raise Refusal("That form doesn't point at an incident any more.")
            if not text:
                raise Refusal(incident_note.required(form))
            agent = await self.person(body["user"]["id"])
            if form == Form.INCIDENT_UPDATE:
                await self.desk.incident_updates.post_update(incident_id, agent, text)
            else:
                await self.desk.incident_updates.number_of(incident_id)  # refused here, while the form is open
        except Exception as exc:
            await ack(response_action="errors", errors={incident_note.NOTE_BLOCK: friendly(exc, PLATFORM)})
            return
        await ack()
        if form == Form.INCIDENT_RESOLVE:
            # Every linked ticket is resolved in turn: after the ack, which Slack wants within 3 seconds.
            try:
                await self.desk.incident_updates.resolve(incident_id, agent, text)
            except Exception as exc:
                log.warning("resolving incident %s failed: %s", incident_id, exc)


__all__ = ["SlackClicks"]
