"""Incidents at intake (``TicketService`` subscribers): a new report matching an open incident is linked at
once, and enough similar unlinked reports within ``incidents.window`` raise one suggestion card.

``before_notifications`` runs before the card notifications so a linked ticket's own triage card is never
posted (it collapses under the incident card); ``after_change`` runs after the SLA clock so the clocks it set
for a linked ticket are cancelled (the incident's clock covers them).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.incidents import cards
from bot.incidents.links import COVERED_TIMERS, add_link, link_of
from bot.incidents.service import IncidentService
from bot.incidents.similarity import best_key, similar_keys
from bot.messages import NOTICE, notice_payload
from bot.notifications import COLLAPSED, person_target
from bot.tickets import OPEN_STATUSES, TicketChange
from store.incident_models import (
    SUGGESTION_DISMISSED,
    SUGGESTION_OPEN,
    Incident,
    IncidentLink,
    IncidentSuggestion,
)
from store.models import Ticket, TicketEvent
from store.queries import cancel_timers, enqueue_messages, outbox_row, serialise_across_replicas

_LINKED_NOW = "incident_linked_now"
SUGGESTION_LOCK = 2_020_020
"""The advisory lock key under which a replica raises a new incident suggestion (PostgreSQL)."""
_CANDIDATES = 500
"""Recent reports compared with a new one before a suggestion exists."""


class IncidentIntake:
    """Links new reports to open incidents and suggests incidents for clusters of similar reports."""

    def __init__(self, incidents: IncidentService) -> None:
        self.incidents = incidents
        self.config = incidents.config

    async def before_notifications(self, change: TicketChange) -> None:
        """Subscriber: link a new matching report; mark linked tickets' changes as collapsed."""
        session, ticket = change.session, change.ticket
        link = await link_of(session, ticket.id)
        if link is None and change.event.kind == "opened":
            incident = await self.incidents.matching(session, ticket.summary)
            if incident is not None:
                await add_link(session, ticket, incident, via="intake", actor=None, now=change.now)
                await session.flush()
                change.extra[_LINKED_NOW] = incident
                change.extra[COLLAPSED] = True
                return
        if link is not None:
            incident = await session.get(Incident, link.incident_id)
            change.extra[COLLAPSED] = incident is not None and incident.anchor_ticket_id != ticket.id

    async def after_change(self, change: TicketChange) -> None:
        """Subscriber: tell the newly linked requester, keep covered clocks stopped, or count a suggestion."""
        session, ticket, now = change.session, change.ticket, change.now
        incident = change.extra.get(_LINKED_NOW)
        if isinstance(incident, Incident):
            await self._tell_known_issue(change, incident)
            await self.incidents.refresh_incident(session, incident, now)
        if change.extra.get(COLLAPSED):
            # The SLA clock (re)arms a ticket's timers on every change; the incident's clock covers this one's.
            await cancel_timers(session, ticket_id=ticket.id, kinds=COVERED_TIMERS, now=now)
        elif change.event.kind == "opened" and await link_of(session, ticket.id) is None:
            await self._count_towards_suggestion(session, ticket, change)

    async def _counted_towards_existing(self, session: AsyncSession, ticket: Ticket, change: TicketChange,
                                        alike: Iterable[str] = ()) -> bool:
        """Count this report towards a recent suggestion it resembles (open or dismissed), or that one of the
        ``alike`` reports' wordings resembles; False if none."""
        settings = self.config.incidents
        suggestions = {s.id: s for s in (await session.execute(select(IncidentSuggestion).where(
            IncidentSuggestion.status.in_((SUGGESTION_OPEN, SUGGESTION_DISMISSED)),
            IncidentSuggestion.updated_at >= change.now - settings.window))).scalars()}
        titles = {s.id: s.title for s in suggestions.values()}
        key = best_key(ticket.summary, titles, settings.similarity)
        for wording in dict.fromkeys(alike) if titles else ():
            if key is not None:
                break
            key = best_key(wording, titles, settings.similarity)
        if key is None:
            return False
        suggestion = await session.get(IncidentSuggestion, key, with_for_update=True, populate_existing=True)
        assert suggestion is not None
        if suggestion.status == SUGGESTION_OPEN:
            suggestion.count += 1
            await self.incidents.refresh_suggestion(session, suggestion, change.now)
        return True

    async def _tell_known_issue(self, change: TicketChange, incident: Incident) -> None:
        ticket, requester = change.ticket, change.requester
        view = cards.known_issue_view(ticket.id, ticket.number, incident, requester.timezone)
        target = person_target(requester)
        await enqueue_messages(change.session, [outbox_row(
            target=target, kind=NOTICE, ticket_id=ticket.id, now=change.now,
            payload=notice_payload(view, thread="requester", event_id=change.event.id),
            idempotency_key=f"known-issue:{ticket.id}:{incident.id}:{target}")])

    async def _count_towards_suggestion(self, session: AsyncSession, ticket: Ticket, change: TicketChange) -> None:
        settings = self.config.incidents
        since = change.now - settings.window
        # One transaction at a time counts reports, on every replica, until it commits: two reports set up side by
        # side each saw the other uncommitted, and one of them raised the suggestion from a cluster without the
        # other, which then counted towards nothing.
        await serialise_across_replicas(session, SUGGESTION_LOCK)
        if await self._counted_towards_existing(session, ticket, change):
            return
        # Only reports whose opening has been written count (a batch of fast-intake tickets is set up in turn,
        # each counting itself when its own turn comes).
        opened = select(TicketEvent.id).where(TicketEvent.ticket_id == Ticket.id, TicketEvent.kind == "opened")
        recent = (await session.execute(
            select(Ticket.id, Ticket.summary).outerjoin(IncidentLink, IncidentLink.ticket_id == Ticket.id)
            .where(IncidentLink.ticket_id.is_(None), Ticket.status.in_(OPEN_STATUSES), Ticket.created_at >= since,
                   opened.exists())
            .order_by(Ticket.id.desc()).limit(_CANDIDATES))).tuples().all()
        wordings = dict(recent)
        cluster = similar_keys(ticket.summary, wordings, settings.similarity)
        alike = [wordings[key] for key in cluster if key != ticket.id]
        if alike and await self._counted_towards_existing(session, ticket, change, alike):
            return  # worded unlike the suggestion, but like reports that count towards it
        if ticket.id not in cluster:
            cluster.append(ticket.id)
        if len(cluster) < settings.suggest_after:
            return
        suggestion = IncidentSuggestion(title=ticket.summary, anchor_ticket_id=min(cluster), status=SUGGESTION_OPEN,
                                        count=len(cluster), created_at=change.now, updated_at=change.now, revision=0)
        session.add(suggestion)
        await session.flush()
        await self.incidents.refresh_suggestion(session, suggestion, change.now)
