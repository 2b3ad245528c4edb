"""Incidents: declare one from a ticket, link and unlink tickets, accept or dismiss a suggestion.

Each action runs in one transaction that also queues the cards it changes, so an incident and what the
triage channel shows of it commit together.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import Core
from bot.incidents import cards
from bot.incidents.links import add_link, affected, link_of, open_incidents, refresh_ticket_cards, remove_link
from bot.incidents.progress import IncidentProgress
from bot.incidents.similarity import alike_to_group, best_key, similar_keys_one_hop
from bot.people import PersonRef
from bot.text import to_spans
from bot.tickets import OPEN_STATUSES, NotAllowed, Origin, TicketNotFound
from bot.views import Moment, Text
from store.incident_models import (
    INCIDENT_OPEN,
    SUGGESTION_ACCEPTED,
    SUGGESTION_DISMISSED,
    SUGGESTION_OPEN,
    Incident,
    IncidentLink,
    IncidentSuggestion,
)
from store.models import Person, Ticket

_KNOWN_ISSUES = 5
"""Open incidents listed as known issues (the most a home tab or status answer shows)."""
_LINKED_WORDINGS = 200
"""Distinct wordings of linked reports (newest first) a new report is compared with when unlike the title."""


DECLARED_SOURCE = "incident"
"""The intake key of the ticket ``/ithelp incident <title>`` opens to carry the incident's clock is
``incident:<random>``: it is the agent's declaration, not a request (no article suggestions)."""


class IncidentService:
    """What agents (and requesters, for their own report) do with incidents."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.config = core.config
        self.desk_zone = core.config.calendars[core.config.default_calendar].timezone
        self.progress = IncidentProgress(core)
        """The incident's scheduled progress updates to everyone affected."""

    # -- declaring ----------------------------------------------------------------------------------
    async def declare(self, ticket_id: int, agent: PersonRef) -> str:
        """Make an incident of ``ticket_id`` (its summary the title, its priority the incident's); its number."""
        self._require_agent(agent, "declare incidents")
        async with self.core.db.transaction() as session:
            actor = await self.core.tickets.record_person(session, agent)
            ticket = await self._open_ticket(session, ticket_id)
            incident = await self._new_incident(session, ticket, ticket.summary, actor)
            await session.flush()
            return incident.number

    async def declare_new(self, title: str, agent: PersonRef, origin: Origin) -> str:
        """``/ithelp incident <title>``: a ticket carrying the incident's clock, made into an incident."""
        self._require_agent(agent, "declare incidents")
        opened = await self.core.tickets.open(agent, title, origin=origin, priority=self._top_priority(),
                                              dedup=(DECLARED_SOURCE, uuid.uuid4().hex))
        return await self.declare(opened.ticket.id, agent)

    async def accept_suggestion(self, suggestion_id: int, agent: PersonRef) -> str:
        """"Create incident" on a suggestion: the incident covers every open similar report of its window."""
        self._require_agent(agent, "declare incidents")
        now = self.core.clock.now()
        async with self.core.db.transaction() as session:
            actor = await self.core.tickets.record_person(session, agent)
            suggestion = await self._suggestion(session, suggestion_id)
            anchor = await self._open_ticket(session, suggestion.anchor_ticket_id)
            incident = await self._new_incident(session, anchor, suggestion.title, actor, via="suggestion")
            for ticket in await self._similar_unlinked(session, suggestion.title, now):
                if ticket.id != anchor.id:
                    await add_link(session, ticket, incident, via="suggestion", actor=actor, now=now)
                    await refresh_ticket_cards(session, self.config, ticket, why=f"inc{incident.id}", now=now)
            suggestion.status, suggestion.incident_id = SUGGESTION_ACCEPTED, incident.id
            await self.refresh_suggestion(session, suggestion, now)
            await self.refresh_incident(session, incident, now)
            return incident.number

    async def dismiss_suggestion(self, suggestion_id: int, agent: PersonRef) -> None:
        """"Not related": the cluster is left alone (no second card for it)."""
        self._require_agent(agent, "dismiss suggestions")
        async with self.core.db.transaction() as session:
            suggestion = await self._suggestion(session, suggestion_id)
            suggestion.status = SUGGESTION_DISMISSED
            await self.refresh_suggestion(session, suggestion, self.core.clock.now())

    # -- linking ------------------------------------------------------------------------------------
    async def link(self, ticket_id: int, incident_id: int, agent: PersonRef) -> None:
        """An agent links a ticket to an open incident from the ticket's card."""
        self._require_agent(agent, "link tickets to incidents")
        now = self.core.clock.now()
        async with self.core.db.transaction() as session:
            actor = await self.core.tickets.record_person(session, agent)
            ticket = await self._open_ticket(session, ticket_id)
            incident = await session.get(Incident, incident_id, with_for_update=True)
            if incident is None or incident.status != INCIDENT_OPEN:
                raise NotAllowed("That incident is over; pick an open one.")
            if (existing := await link_of(session, ticket.id)) is not None:
                if existing.incident_id == incident_id:
                    return
                await remove_link(session, existing, actor=actor, now=now)
                await session.flush()
            await add_link(session, ticket, incident, via="agent", actor=actor, now=now)
            await refresh_ticket_cards(session, self.config, ticket, why=f"link{incident_id}:{now.timestamp()}",
                                       now=now)
            await self.refresh_incident(session, incident, now)

    async def unlink(self, ticket_id: int, person: PersonRef) -> None:
        """Take a ticket out of its incident: an agent from the card, or the requester ("Something else")."""
        now = self.core.clock.now()
        async with self.core.db.transaction() as session:
            actor = await self.core.tickets.record_person(session, person)
            ticket = await session.get(Ticket, ticket_id, with_for_update=True)
            if ticket is None:
                raise TicketNotFound("I can't find that ticket.")
            if not self.core.tickets.is_agent(person) and actor.id != ticket.requester_id:
                raise NotAllowed("Only IT agents can unlink tickets from incidents.")
            link = await link_of(session, ticket.id)
            if link is None:
                return
            incident = await session.get(Incident, link.incident_id, with_for_update=True)
            assert incident is not None
            if incident.anchor_ticket_id == ticket.id:
                raise NotAllowed(f"{ticket.number} carries {incident.number}; resolve the incident instead.")
            await remove_link(session, link, actor=actor, now=now)
            await session.flush()
            await refresh_ticket_cards(session, self.config, ticket, why=f"unlink:{now.timestamp()}", now=now)
            await self.refresh_incident(session, incident, now)

    async def confirm(self, ticket_id: int, person: PersonRef) -> None:
        """"That's my problem": nothing changes; the requester stays linked and hears every update."""
        async with self.core.db.reading() as session:
            ticket = await session.get(Ticket, ticket_id)
            requester = await session.get(Person, ticket.requester_id) if ticket else None
            if ticket is None or requester is None or requester.address != person.address:
                raise NotAllowed("Only the person who reported this can answer that.")

    async def known_issues(self, zone: str | None) -> tuple[Text, ...]:
        """One line per open incident ("Known issue INC-1: Email down (since …)"), for people checking before
        they file; times in ``zone`` (the reader's) where the platform cannot show them in the reader's own."""
        async with self.core.db.reading() as session:
            incidents = await open_incidents(session)
        return tuple((f"Known issue {i.number}: ", *to_spans(i.title), " (since ",
                      Moment(i.created_at, zone or self.desk_zone, label="your time" if zone else None), ")",
                      *((" — latest: ", *to_spans(i.latest_update)) if i.latest_update else ()))
                     for i in incidents[:_KNOWN_ISSUES])

    # -- cards --------------------------------------------------------------------------------------
    async def matching(self, session: AsyncSession, summary: str) -> Incident | None:
        """The open incident a report with this ``summary`` belongs to (``incidents.similarity``), if any."""
        incidents = {i.id: i for i in (await session.execute(
            select(Incident).where(Incident.status == INCIDENT_OPEN))).scalars()}
        if not incidents:
            return None
        cutoff = self.config.incidents.similarity
        key = best_key(summary, {i.id: i.title for i in incidents.values()}, cutoff)
        if key is None:  # worded unlike the title: alike to a report already linked?
            linked = await session.execute(
                select(IncidentLink.incident_id, Ticket.summary).join(Ticket, Ticket.id == IncidentLink.ticket_id)
                .where(IncidentLink.incident_id.in_(incidents))
                .group_by(IncidentLink.incident_id, Ticket.summary)
                .order_by(func.max(IncidentLink.ticket_id).desc()).limit(_LINKED_WORDINGS))
            groups: dict[int, list[str]] = {}
            for incident_id, text in linked.tuples():
                groups.setdefault(incident_id, []).append(text)
            key = alike_to_group(summary, groups, cutoff)
        return None if key is None else incidents[key]

    async def refresh_incident(self, session: AsyncSession, incident: Incident, now: datetime) -> None:
        """Queue the incident card as it now stands (count, latest update, status)."""
        incident.revision += 1
        await session.flush()
        view = cards.incident_view(incident, await affected(session, incident.id), self.desk_zone,
                                   self._priority_label(incident.priority))
        await cards.enqueue_card(session, self.config, view, role=cards.INCIDENT_ROLE, key=f"inc:{incident.id}",
                                 revision=incident.revision, now=now)

    async def refresh_suggestion(self, session: AsyncSession, suggestion: IncidentSuggestion, now: datetime) -> None:
        """Queue the suggestion card as it now stands (count, or how it was answered)."""
        suggestion.revision += 1
        suggestion.updated_at = now
        await cards.enqueue_card(session, self.config, cards.suggestion_view(suggestion), role=cards.SUGGESTION_ROLE,
                                 key=f"sugg:{suggestion.id}", revision=suggestion.revision, now=now)

    # -- helpers ------------------------------------------------------------------------------------
    async def _new_incident(self, session: AsyncSession, ticket: Ticket, title: str, actor: Person, *,
                            via: str = "declared") -> Incident:
        now = self.core.clock.now()
        if (existing := await link_of(session, ticket.id)) is not None:
            raise NotAllowed(f"{ticket.number} is already part of INC-{existing.incident_id}.")
        incident = Incident(title=title[:300], priority=ticket.priority, status=INCIDENT_OPEN,
                            anchor_ticket_id=ticket.id, declared_by_id=actor.id, created_at=now, revision=0)
        session.add(incident)
        await session.flush()
        await add_link(session, ticket, incident, via=via, actor=actor, now=now)
        await refresh_ticket_cards(session, self.config, ticket, why=f"inc{incident.id}", now=now)
        await self.refresh_incident(session, incident, now)
        await self.progress.arm(session, incident, now)
        return incident

    async def _similar_unlinked(self, session: AsyncSession, title: str, now: datetime) -> list[Ticket]:
        window_start = now - self.config.incidents.window
        rows = (await session.execute(
            select(Ticket).outerjoin(IncidentLink, IncidentLink.ticket_id == Ticket.id)
            .where(IncidentLink.ticket_id.is_(None), Ticket.status.in_(OPEN_STATUSES),
                   Ticket.created_at >= window_start).order_by(Ticket.id))).scalars().all()
        by_id = {t.id: t for t in rows}
        keys = similar_keys_one_hop(title, {t.id: t.summary for t in rows}, self.config.incidents.similarity)
        return [by_id[k] for k in sorted(keys)]

    @staticmethod
    async def _open_ticket(session: AsyncSession, ticket_id: int) -> Ticket:
        ticket = await session.get(Ticket, ticket_id, with_for_update=True)
        if ticket is None:
            raise TicketNotFound("I can't find that ticket.")
        if ticket.status not in OPEN_STATUSES:
            raise NotAllowed(f"{ticket.number} is closed; reopen it first.")
        return ticket

    @staticmethod
    async def _suggestion(session: AsyncSession, suggestion_id: int) -> IncidentSuggestion:
        suggestion = await session.get(IncidentSuggestion, suggestion_id, with_for_update=True)
        if suggestion is None or suggestion.status != SUGGESTION_OPEN:
            raise NotAllowed("That suggestion was already answered.")
        return suggestion

    def _require_agent(self, person: PersonRef, what: str) -> None:
        if not self.core.tickets.is_agent(person):
            raise NotAllowed(f"Only IT agents can {what}.")

    def _top_priority(self) -> str:
        return next(iter(self.config.priorities), self.config.default_priority)

    def _priority_label(self, priority: str) -> str:
        entry = self.config.priorities.get(priority)
        return f"{priority} · {entry.label}" if entry else priority
