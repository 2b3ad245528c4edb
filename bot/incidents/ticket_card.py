"""What incidents add to a ticket's card: which incident covers it, and the buttons to declare, link, unlink."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from bot.incidents.links import link_of, open_incidents
from bot.routing import Action
from bot.text import to_spans
from bot.tickets import OPEN_STATUSES
from bot.views import CardAction, Choice, Text
from store.incident_models import Incident
from store.models import Ticket

_MENU_LIMIT = 20


async def incident_part(session: AsyncSession, ticket: Ticket, audience: str
                        ) -> tuple[tuple[Text, ...], tuple[CardAction, ...]]:
    """Notes and buttons for ``ticket``'s card (``CardBuilder``'s ``incident_part``)."""
    value = str(ticket.id)
    link = await link_of(session, ticket.id)
    incident = await session.get(Incident, link.incident_id) if link else None
    if incident is not None:
        if audience != "triage":
            return ((f"Part of known issue {incident.number}: ", *to_spans(incident.title),
                     ". You'll hear every update here."),), ()
        if incident.anchor_ticket_id == ticket.id:
            return ((f"Carries {incident.number}: ", *to_spans(incident.title)),), ()
        unlink = (CardAction(Action.INCIDENT_UNLINK, f"Unlink from {incident.number}", value),)
        return ((f"Linked to {incident.number}: ", *to_spans(incident.title)),), (
            unlink if ticket.status in OPEN_STATUSES else ())
    if audience != "triage" or ticket.status not in OPEN_STATUSES:
        return (), ()
    actions = [CardAction(Action.INCIDENT_DECLARE, "Make incident", value)]
    incidents = (await open_incidents(session))[:_MENU_LIMIT]
    if incidents:
        actions.append(CardAction(Action.INCIDENT_LINK, "Link to incident", value, choices=tuple(
            Choice(f"{i.number} {i.title}"[:75], f"{ticket.id}:{i.id}") for i in incidents)))
    return (), tuple(actions)
