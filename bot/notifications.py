"""Turns ticket events into outbox rows: card refreshes and threaded notices to the people involved.

Runs inside the transaction of the change (a ``TicketService`` subscriber), so a change and the
messages it owes commit together. What the messages say is decided here, as neutral view models
(``bot.views``); delivery renders them per platform.
"""

from __future__ import annotations

from typing import Any

from bot.config import AppConfig
from bot.messages import NOTICE, TICKET_CARD, notice_payload
from bot.text import to_spans
from bot.tickets import REQUESTER_STATUS_LABELS, TicketChange
from bot.views import Notice, Text
from store.models import Person
from store.queries import enqueue_messages, outbox_row

CARD = TICKET_CARD
COLLAPSED = "incident_collapsed"
"""``TicketChange.extra`` flag set by an earlier subscriber (incidents): the ticket is covered by an incident
and has no triage card or triage thread of its own."""


def triage_targets(config: AppConfig) -> list[str]:
    """Where triage cards go: the configured Slack channel and/or Teams conversation."""
    targets = []
    if config.slack.enabled and config.slack.triage_channel:
        targets.append(f"slack:channel:{config.slack.triage_channel}")
    if config.teams.active and config.teams.triage_conversation:
        targets.append(f"teams:channel:{config.teams.triage_conversation}")
    return targets


def person_target(person: Person) -> str:
    """A person's direct-message target (``slack:user:U1`` / ``teams:user:<aad id>``)."""
    return f"{person.platform}:user:{person.platform_user_id}"


def _user_text(value: Any) -> Text | None:
    return to_spans(value) if isinstance(value, str) and value else None


def _headline(change: TicketChange) -> tuple[Text, Text | None] | None:
    """What the requester is told about this event: (headline, body), or None for nothing."""
    event, payload = change.event, change.event.payload
    actor = change.actor.display_name if change.actor else "The IT desk"
    ticket = change.ticket
    if event.kind == "claimed":
        return f"{actor} is on it.", None
    if event.kind == "status_changed":
        if ticket.status == "waiting_on_requester":
            return f"{actor} is waiting on you: please reply here.", _user_text(payload.get("note"))
        label = REQUESTER_STATUS_LABELS.get(ticket.status, ticket.status)
        return f"{actor} changed the status to {label}.", _user_text(payload.get("note"))
    if event.kind == "priority_changed":
        return f"Priority changed from {payload['from']} to {payload['to']}.", None
    if event.kind == "commented" and payload.get("role") == "agent":
        return f"{actor} replied:", _user_text(payload.get("text"))
    if event.kind == "resolved" and payload.get("self_served"):
        return "Marked as solved. Glad the article helped!", _user_text(payload.get("note"))
    if event.kind == "resolved":
        return f"{actor} resolved your ticket.", _user_text(payload.get("note"))
    if event.kind == "reopened":
        return "Your ticket was reopened.", _user_text(payload.get("reason"))
    if event.kind == "closed":
        return "Your ticket is closed.", None
    if event.kind == "unassigned":
        return "Your ticket is back in the queue; the next free agent will pick it up.", None
    return None


async def enqueue_for_change(change: TicketChange) -> None:
    """Subscriber: refresh every card showing the ticket and notify the requester / triage thread."""
    ticket, event, now = change.ticket, change.event, change.now
    if event.kind == "noted":
        return  # an internal note stays among agents: nothing to send or refresh
    base: dict[str, Any] = {"ticket_id": ticket.id, "event_id": event.id}
    triage = [] if change.extra.get(COLLAPSED) else triage_targets(change.config)
    rows = [outbox_row(target=target, kind=CARD, payload={**base, "audience": "triage"},
                       idempotency_key=f"card:{event.id}:{target}", now=now, ticket_id=ticket.id)
            for target in triage]
    requester_dm = person_target(change.requester)
    rows.append(outbox_row(target=requester_dm, kind=CARD, payload={**base, "audience": "requester"},
                           idempotency_key=f"card:{event.id}:{requester_dm}", now=now, ticket_id=ticket.id))
    said = _headline(change)
    source = event.payload.get("source")
    if said is not None and source != "requester_thread":
        headline, body = said
        view = Notice(ticket_id=ticket.id, number=ticket.number, headline=headline, body=body,
                      author=change.actor.display_name if change.actor else None)
        rows.append(outbox_row(
            target=requester_dm, kind=NOTICE, ticket_id=ticket.id,
            payload=notice_payload(view, thread="requester", event_id=event.id),
            idempotency_key=f"notice:{event.id}:{requester_dm}", now=now,
        ))
    if event.kind in ("commented", "reopened") and change.actor is not None and change.actor.id == ticket.requester_id:
        text = event.payload.get("text") or event.payload.get("reason") or ""
        name = change.actor.display_name
        view = Notice(ticket_id=ticket.id, number=ticket.number,
                      headline=f"{name} replied:" if event.kind == "commented" else f"{name} reopened the ticket.",
                      body=_user_text(text), author=name)
        rows.extend(outbox_row(
            target=target, kind=NOTICE, ticket_id=ticket.id,
            payload=notice_payload(view, thread="triage", event_id=event.id),
            idempotency_key=f"notice:{event.id}:{target}", now=now,
        ) for target in triage)
    # One round trip for all of them; the ordering keys still deliver them in this order.
    await enqueue_messages(change.session, rows)
