"""What incidents say, as neutral views queued in the outbox: the incident card, the suggestion card, and
the requester's "known issue" notice.

The incident and suggestion cards are notices remembered under a role of their anchor ticket, so each later
revision edits the one message in place. Revisions queued close together share a slot: a row not yet
delivered is overwritten with the newest view, so a storm of reports edits the card a few times, not once
per report.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import AppConfig
from bot.messages import NOTICE, notice_payload
from bot.notifications import triage_targets
from bot.routing import Action
from bot.text import to_spans
from bot.views import CardAction, Fact, Moment, Notice, Text
from store.incident_models import INCIDENT_OPEN, Incident, IncidentSuggestion
from store.models import OutboxMessage
from store.queries import enqueue_messages, outbox_row, upsert_insert

INCIDENT_ROLE = "incident"
SUGGESTION_ROLE = "incident_suggestion"
_SLOT_SECONDS = 5
"""Card revisions within one slot are coalesced into a single edit."""


def incident_view(incident: Incident, affected: int, desk_zone: str, priority_label: str) -> Notice:
    """The incident's card in the triage channel."""
    is_open = incident.status == INCIDENT_OPEN
    facts = (
        Fact("Status", "Open" if is_open else "Resolved"),
        Fact("Priority", priority_label),
        Fact("Affected", f"{affected} report{'s' if affected != 1 else ''}"),
        Fact("Since", (Moment(incident.created_at, desk_zone),)),
    )
    latest: Text = ("Latest update: ", *to_spans(incident.latest_update)) if incident.latest_update else (
        "No update posted yet.")
    value = f"{incident.anchor_ticket_id}:{incident.id}"
    actions = (CardAction(Action.INCIDENT_POST_UPDATE, "Post update", value, style="primary"),
               CardAction(Action.INCIDENT_RESOLVE, "Resolve incident", value, style="danger")) if is_open else ()
    return Notice(ticket_id=incident.anchor_ticket_id, number=incident.number,
                  headline=("Incident: ", *to_spans(incident.title)), body=latest, facts=facts, actions=actions)


def suggestion_view(suggestion: IncidentSuggestion) -> Notice:
    """The one card offering to turn a cluster of similar reports into an incident."""
    value = f"{suggestion.anchor_ticket_id}:{suggestion.id}"
    actions: tuple[CardAction, ...] = ()
    body: Text = "Turn them into one incident so everyone affected hears the same updates."
    if suggestion.status == "open":
        actions = (CardAction(Action.INCIDENT_ACCEPT, "Create incident", value, style="primary"),
                   CardAction(Action.INCIDENT_DISMISS, "Not related", value))
    elif suggestion.status == "accepted":
        body = "Made into an incident."
    else:
        body = "Marked as not related."
    return Notice(ticket_id=suggestion.anchor_ticket_id, number="", numbered=False,
                  headline=(f"{suggestion.count} similar reports: '", *to_spans(suggestion.title), "'"),
                  body=body, actions=actions)


def known_issue_view(ticket_id: int, number: str, incident: Incident, zone: str | None) -> Notice:
    """What a requester is told when their new report is linked to an open incident."""
    value = str(ticket_id)
    since = Moment(incident.created_at, zone or "UTC", label="your time" if zone else None)
    return Notice(
        ticket_id=ticket_id, number=number,
        headline=("This looks like a known issue: ", *to_spans(incident.title), " (since ", since, ")."),
        body="We're on it; you'll hear every update.",
        actions=(CardAction(Action.INCIDENT_MINE, "That's my problem", value, style="primary"),
                 CardAction(Action.INCIDENT_NOT_MINE, "Something else", value)))


async def enqueue_card(session: AsyncSession, config: AppConfig, view: Notice, *, role: str, key: str,
                       revision: int, now: datetime) -> None:
    """Queue ``view`` as the card under ``role`` in every triage conversation, coalesced per slot."""
    slot = int(now.timestamp()) // _SLOT_SECONDS
    payload = notice_payload(view, ref_role=role, replace=True)
    for target in triage_targets(config):
        row = outbox_row(target=target, kind=NOTICE, payload=payload, idempotency_key=f"{key}:{slot}:{target}",
                         now=now, ticket_id=view.ticket_id)
        if not await _upsert_undelivered(session, row):
            # The slot's row is out (or on its way): this revision gets a row of its own.
            await enqueue_messages(session, [{**row, "idempotency_key": f"{key}:{slot}:{revision}:{target}"}])


async def _upsert_undelivered(session: AsyncSession, row: dict[str, Any]) -> bool:
    insert = upsert_insert(session)(OutboxMessage).values(**row)
    statement = insert.on_conflict_do_update(
        index_elements=["idempotency_key"], set_={"payload": insert.excluded.payload},
        where=OutboxMessage.delivered_at.is_(None) & OutboxMessage.lease_owner.is_(None))
    return bool((await session.execute(statement)).rowcount)  # type: ignore[attr-defined]
