"""Card submissions: the shared action table, new-ticket, resolve-note, survey-reason and article forms."""

from __future__ import annotations

import logging
from typing import Any

from botbuilder.core import TurnContext

from bot.actions import ACTIONS, Click, check_allowed, perform
from bot.channels.teams import (
    channel_of,
)
from bot.dialogs import incident_note, new_ticket, resolve_note, send_article, survey_reason
from bot.handlers.errors import friendly
from bot.handlers.teams_turns import (
    DEDUP_SOURCE,
    PLATFORM,
    TeamsTurns,
    ticket_id_of,
)
from bot.people import PersonRef
from bot.renderers import teams_card_parts, teams_notice_cards
from bot.routing import Action, Form
from bot.text import escape_typed
from bot.tickets import InvalidInput, NotAllowed, Origin
from bot.views import Notice

log = logging.getLogger("ithelp.teams")


class TeamsSubmits(TeamsTurns):
    """Card submissions: the shared action table, new-ticket, resolve-note, survey-reason and article forms."""

    async def on_submit(self, turn: TurnContext, person: PersonRef, value: dict[str, Any]) -> None:
        form, action = value.get("form"), value.get("action")
        if form == Form.NEW_TICKET:
            await self._on_new_ticket_submit(turn, person, value)
        elif form == Form.RESOLVE_NOTE:
            await self._on_resolve_submit(turn, person, value)
        elif form == Form.SURVEY_REASON:
            await self._on_survey_reason_submit(turn, person, value)
        elif form == Form.SEND_ARTICLE:
            await self._on_send_article_submit(turn, person, value)
        elif form in (Form.INCIDENT_UPDATE, Form.INCIDENT_RESOLVE):
            await self._on_incident_submit(turn, person, value, Form(form))
        elif isinstance(action, str) and action in {a.value for a in Action}:
            await self._on_action(turn, person, Action(action), value)
        else:
            await self._say(turn, "That card is out of date; type `help` to see what I can do.")

    async def _on_new_ticket_submit(self, turn: TurnContext, person: PersonRef, value: dict[str, Any]) -> None:
        draft = new_ticket.parse_teams_submission(value)
        error = new_ticket.teams_error(draft)
        if error is None:
            activity = turn.activity
            # Keyed on the form card, not the click: a second click on the same form opens nothing new.
            form_id = activity.reply_to_id or activity.id
            try:
                priority = draft.urgency if draft.urgency in self.desk.config.priorities else None
                origin = Origin("teams", conversation=activity.conversation.id)
                dedup = (DEDUP_SOURCE, f"{activity.conversation.id}|form|{form_id}"[-256:])
                question = await self.desk.knowledge.held.hold(  # ask_first: articles before filing
                    person, escape_typed(draft.summary), origin, dedup, description=escape_typed(draft.description),
                    category=draft.category, priority=priority)
                if question is not None:
                    card = teams_notice_cards.notice_card(question)
                    if not await self._replace_card(turn, card):
                        await self._send_card(turn, card)
                    return
                result = await self.desk.tickets.open(
                    person, escape_typed(draft.summary), description=escape_typed(draft.description),
                    category=draft.category, priority=priority, origin=origin, dedup=dedup, defer_setup=True)
            except Exception as exc:
                error = str(exc) if isinstance(exc, InvalidInput) else friendly(exc, PLATFORM)
            else:
                await self._acknowledge(turn, person, result.ticket, replace=True)
                return
        # The form comes back with the error and everything the person typed.
        await self._replace_card(turn, new_ticket.teams_form(self.desk.config.categories, self._priority_labels(),
                                                             draft=draft, error=error))

    async def _on_resolve_submit(self, turn: TurnContext, person: PersonRef, value: dict[str, Any]) -> None:
        try:
            ticket_id, note = resolve_note.parse_teams_submission(value)
        except (KeyError, TypeError, ValueError):
            await self._say(turn, "That form doesn't point at a ticket any more.")
            return
        error = resolve_note.teams_error(note)
        if error is None:
            try:
                ticket = await self.desk.tickets.resolve(ticket_id, person, escape_typed(note))
            except Exception as exc:
                error = friendly(exc, PLATFORM)
            else:
                await self._replace_card(turn, teams_notice_cards.notice_card(Notice(
                    ticket_id=ticket.id, number=ticket.number, headline="Resolved.", body=note)))
                return
        try:
            number = (await self.desk.tickets.get(ticket_id)).number
        except Exception:  # the form still says what went wrong, just without the ticket number
            number = ""
        await self._replace_card(turn, resolve_note.teams_form(ticket_id, number, error=error, note=note))

    async def _on_send_article_submit(self, turn: TurnContext, person: PersonRef, value: dict[str, Any]) -> None:
        # Picked an article: send it. Typed words only: search again and show what was found.
        try:
            ticket_id, query, article_id = send_article.parse_teams_submission(value)
        except (KeyError, TypeError, ValueError):
            await self._say(turn, "That form doesn't point at a ticket any more.")
            return
        try:
            if article_id is not None:
                ticket = await self.desk.knowledge.send(ticket_id, person, article_id)
                await self._replace_card(turn, teams_notice_cards.notice_card(Notice(
                    ticket_id=ticket.id, number=ticket.number, headline="Article sent to the requester.")))
                return
            number, choices = await self.desk.knowledge.search_for_agent(ticket_id, query)
        except Exception as exc:
            await self._say(turn, friendly(exc, PLATFORM))
            return
        await self._replace_card(turn, send_article.teams_form(
            ticket_id, number, query, choices, error=None if query else send_article.PICK_ONE))

    async def _on_action(self, turn: TurnContext, person: PersonRef, action: Action, value: dict[str, Any]) -> None:
        if action == Action.NEW_TICKET:  # the welcome's button: the same form as "new ticket"
            await self._send_card(turn, new_ticket.teams_form(self.desk.config.categories, self._priority_labels()))
            return
        ticket_id = ticket_id_of(value)
        if ticket_id is None:
            await self._say(turn, "That button doesn't point at a ticket any more.")
            return
        if action in incident_note.FORM_OF:
            await self._on_incident_form_button(turn, person, action, str(value.get("value") or ""))
            return
        if action == Action.RESOLVE:
            try:
                check_allowed(self.desk, action, person)
                ticket = await self.desk.tickets.get(ticket_id)
            except Exception as exc:
                await self._say(turn, friendly(exc, PLATFORM))
                return
            await self._send_card(turn, resolve_note.teams_form(ticket.id, ticket.number))
            return
        if action == Action.SURVEY_REASON:
            await self._on_survey_reason_button(turn, person, ticket_id)
            return
        if action == Action.KB_SEND:
            try:
                check_allowed(self.desk, action, person)
                number, choices = await self.desk.knowledge.search_for_agent(ticket_id, "")
            except Exception as exc:
                await self._say(turn, friendly(exc, PLATFORM))
                return
            await self._send_card(turn, send_article.teams_form(ticket_id, number, "", choices))
            return
        conversation = turn.activity.conversation
        where = f"teams:channel:{channel_of(conversation.id)}" if conversation.conversation_type == "channel" else None
        if action not in ACTIONS:
            await self._say(turn, "I can't do that from Teams yet.")
            return
        try:
            await perform(self.desk, Click(action, ticket_id, person, where=where,
                                           choice=str(value.get(teams_card_parts.CHOICE_INPUT_ID)
                                                      or value.get("value") or "")))
        except Exception as exc:
            await self._say(turn, friendly(exc, PLATFORM))

    async def _on_survey_reason_button(self, turn: TurnContext, person: PersonRef, ticket_id: int) -> None:
        try:
            check_allowed(self.desk, Action.SURVEY_REASON, person)
            view = await self.desk.surveys.view(ticket_id)
        except Exception as exc:
            await self._say(turn, friendly(exc, PLATFORM))
            return
        await self._send_card(turn, survey_reason.teams_card(view.ticket_id, view.number))

    async def _on_survey_reason_submit(self, turn: TurnContext, person: PersonRef, value: dict[str, Any]) -> None:
        try:
            check_allowed(self.desk, Action.SURVEY_REASON, person)
            ticket_id, reason, comment = survey_reason.read_teams(value)
            await self.desk.surveys.add_reason(ticket_id, person, reason, comment)
        except Exception as exc:
            await self._say(turn, friendly(exc, PLATFORM))
            return
        await self._say(turn, "Thank you — that helps us do better.")


    async def _on_incident_form_button(self, turn: TurnContext, person: PersonRef, action: Action, value: str
                                       ) -> None:
        """"Post update" / "Resolve incident" on an incident card: the agent writes the text in a card form."""
        incident_id = incident_note.incident_of(value)
        try:
            if incident_id is None:
                raise NotAllowed("That button doesn't point at an incident any more.")
            check_allowed(self.desk, action, person)
            number = await self.desk.incident_updates.number_of(incident_id)
        except Exception as exc:
            await self._say(turn, friendly(exc, PLATFORM))
            return
        await self._send_card(turn, incident_note.teams_form(incident_note.FORM_OF[action], incident_id, number))

    async def _on_incident_submit(self, turn: TurnContext, person: PersonRef, value: dict[str, Any], form: Form
                                  ) -> None:
        try:
            incident_id, text = incident_note.parse_teams(value)
        except (KeyError, TypeError, ValueError):
            await self._say(turn, "That form doesn't point at an incident any more.")
            return
        try:
            if not text:
                raise NotAllowed(incident_note.required(form))
            if form == Form.INCIDENT_UPDATE:
                reached = await self.desk.incident_updates.post_update(incident_id, person, escape_typed(text))
                done = f"Update sent to {reached} affected {'person' if reached == 1 else 'people'}."
            else:
                resolved = await self.desk.incident_updates.resolve(incident_id, person, escape_typed(text))
                done = f"Incident resolved with {resolved} ticket{'' if resolved == 1 else 's'}."
        except Exception as exc:
            await self._replace_card(turn, incident_note.teams_form(form, incident_id, f"INC-{incident_id}",
                                                                    error=friendly(exc, PLATFORM)))
            return
        await self._replace_card(turn, teams_notice_cards.notice_card(Notice(
            ticket_id=0, number="", numbered=False, headline=done, body=text)))


__all__ = ["TeamsSubmits"]
