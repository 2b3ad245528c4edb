"""Builds the neutral view models (``bot.views``) of tickets from the store, for both platforms alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import AppConfig
from bot.routing import Action
from bot.text import to_plain, to_spans
from bot.tickets import (
    CLAIMED,
    IN_PROGRESS,
    NEW,
    OPEN_STATUSES,
    REOPENED,
    REQUESTER_STATUS_LABELS,
    STATUS_LABELS,
    WAITING,
)
from bot.views import CardAction, Choice, Fact, Text, TicketCard, TicketList, TicketListItem
from store.models import Person, Ticket

SlaLines = Callable[[Ticket, datetime, str, str], Sequence[Text]]
"""(ticket, now, reader's zone, audience) -> lines such as "First response due by <moment>"."""

TRIAGE, REQUESTER = "triage", "requester"
CardPart = Callable[[AsyncSession, Ticket, str], Awaitable[tuple[tuple[Text, ...], tuple[CardAction, ...]]]]
"""(session, ticket, audience) -> extra notes and buttons a feature adds to a ticket's card (incidents)."""


def _no_sla(ticket: Ticket, now: datetime, zone: str, audience: str) -> Sequence[Text]:
    return ()


def status_label(status: str, audience: str) -> str:
    """A status in the words of whoever reads it ("waiting on you" only to the requester)."""
    labels = REQUESTER_STATUS_LABELS if audience == REQUESTER else STATUS_LABELS
    return labels.get(status, status)


class CardBuilder:
    """Turns tickets into cards and lists; the SLA clock plugs in its lines via ``sla_lines``."""

    def __init__(self, config: AppConfig, sla_lines: SlaLines = _no_sla, *,
                 escalation_state: Callable[[AsyncSession, int], Awaitable[Text | None]] | None = None,
                 can_escalate: Callable[[AsyncSession, Ticket], Awaitable[bool]] | None = None,
                 resolution_fact: Callable[[AsyncSession, int], Awaitable[Fact | None]] | None = None,
                 incident_part: CardPart | None = None) -> None:
        self.config = config
        self.incident_part = incident_part
        self.sla_lines = sla_lines
        # (session, ticket id) -> "Escalated: level 2 of 3 …" or None, when escalation is on.
        self.escalation_state = escalation_state
        # (session, ticket) -> whether the requester's copy offers "Escalate" (a target has passed).
        self.can_escalate = can_escalate
        # (session, ticket id) -> how a resolved ticket was resolved ("Self-served with …"), or None.
        self.resolution_fact = resolution_fact
        self.desk_zone = config.calendars[config.default_calendar].timezone

    def priority_label(self, priority: str) -> str:
        entry = self.config.priorities.get(priority)
        return f"{priority} · {entry.label}" if entry else priority

    async def ticket_card(self, session: AsyncSession, ticket_id: int, audience: str, now: datetime) -> TicketCard:
        ticket = await session.get(Ticket, ticket_id)
        if ticket is None:
            raise LookupError(f"ticket {ticket_id} not found")
        requester = await session.get(Person, ticket.requester_id)
        assignee = await session.get(Person, ticket.assignee_id) if ticket.assignee_id else None
        assert requester is not None
        label = status_label(ticket.status, audience)
        facts = [
            Fact("Requester", requester.display_name),
            Fact("Priority", self.priority_label(ticket.priority)),
            Fact("Status", label),
            Fact("Assignee", assignee.display_name if assignee else "Unclaimed"),
        ]
        if ticket.category:
            facts.append(Fact("Category", ticket.category))
        if self.resolution_fact is not None and ticket.status not in OPEN_STATUSES:
            resolution = await self.resolution_fact(session, ticket.id)
            if resolution is not None:
                facts.append(resolution)
        zone = (requester.timezone or self.desk_zone) if audience == REQUESTER else self.desk_zone
        actions = self._actions(ticket, audience)
        if audience == REQUESTER and self.can_escalate is not None and await self.can_escalate(session, ticket):
            actions = (*actions, CardAction(Action.ESCALATE, "Escalate", str(ticket.id), style="danger"))
        notes, extra = await self.incident_part(session, ticket, audience) if self.incident_part else ((), ())
        return TicketCard(
            ticket_id=ticket.id, number=ticket.number, summary=to_plain(ticket.summary),
            description=to_plain(ticket.description), audience=audience, status=ticket.status, status_label=label,
            priority=ticket.priority, priority_label=self.priority_label(ticket.priority), facts=tuple(facts),
            sla=tuple(self.sla_lines(ticket, now, zone, audience)),
            escalation=(await self.escalation_state(session, ticket.id)
                        if audience == TRIAGE and self.escalation_state else None),
            link=ticket.origin_link, actions=(*actions, *extra), updated_at=ticket.updated_at,
            opened_at=ticket.created_at, zone=zone, notes=notes,
        )

    def _actions(self, ticket: Ticket, audience: str) -> tuple[CardAction, ...]:
        value = str(ticket.id)
        if audience == REQUESTER:
            if ticket.status not in OPEN_STATUSES:
                return ()
            if ticket.updates_muted:
                return (CardAction(Action.UNMUTE, "Resume updates", value),)
            return (CardAction(Action.MUTE, "Mute updates", value),)
        if ticket.status not in OPEN_STATUSES:
            return (CardAction(Action.REOPEN, "Reopen", value),) if ticket.status == "resolved" else ()
        actions: list[CardAction] = []
        if ticket.status in (NEW, REOPENED):
            actions.append(CardAction(Action.CLAIM, "Claim", value, style="primary"))
        if ticket.status in (NEW, REOPENED, CLAIMED, WAITING):
            actions.append(CardAction(Action.START, "In progress", value))
        if ticket.status in (NEW, REOPENED, CLAIMED, IN_PROGRESS):
            actions.append(CardAction(Action.WAIT, "Waiting on requester", value))
        actions.append(CardAction(Action.RESOLVE, "Resolve", value, style="danger"))
        actions.append(CardAction(
            Action.PRIORITY, "Priority", value,
            choices=tuple(Choice(self.priority_label(code), f"{ticket.id}:{code}") for code in self.config.priorities),
            selected=f"{ticket.id}:{ticket.priority}",
        ))
        if self.config.knowledge.enabled:
            actions.append(CardAction(Action.KB_SEND, "Send article", value))
        return tuple(actions)

    async def requester_list(self, session: AsyncSession, person: Person, now: datetime, *,
                             include_agent_sections: bool) -> TicketList:
        """App Home "My tickets": open and recently closed; for agents also assigned and unclaimed."""
        mine = (await session.execute(select(Ticket).where(Ticket.requester_id == person.id)
                                      .order_by(Ticket.id.desc()).limit(30))).scalars().all()
        names = await self._names(session, mine)
        zone = person.timezone or self.desk_zone
        open_items = tuple(self._item(t, now, zone, names, REQUESTER) for t in mine if t.status in OPEN_STATUSES)
        closed_items = tuple(
            self._item(t, now, zone, names, REQUESTER) for t in mine if t.status not in OPEN_STATUSES)[:10]
        sections: list[tuple[str, tuple[TicketListItem, ...]]] = [
            ("Your open tickets", open_items), ("Recently closed", closed_items)]
        if include_agent_sections:
            assigned = (await session.execute(select(Ticket).where(
                Ticket.assignee_id == person.id, Ticket.status.in_(OPEN_STATUSES)).order_by(Ticket.id).limit(30)
            )).scalars().all()
            unclaimed = (await session.execute(select(Ticket).where(
                Ticket.assignee_id.is_(None), Ticket.status.in_((NEW, REOPENED))).order_by(Ticket.id).limit(30)
            )).scalars().all()
            names = await self._names(session, [*assigned, *unclaimed])
            sections.append(("Assigned to me", tuple(self._item(t, now, zone, names, TRIAGE) for t in assigned)))
            sections.append(("Unclaimed", tuple(self._item(t, now, zone, names, TRIAGE) for t in unclaimed)))
        return TicketList(title="My tickets", sections=tuple(sections), empty_text="No tickets.")

    @staticmethod
    async def _names(session: AsyncSession, tickets: Sequence[Ticket]) -> dict[int, str]:
        ids = {t.assignee_id for t in tickets if t.assignee_id}
        if not ids:
            return {}
        rows = await session.execute(select(Person.id, Person.display_name).where(Person.id.in_(ids)))
        return {row[0]: row[1] for row in rows}

    def _item(self, ticket: Ticket, now: datetime, zone: str, names: dict[int, str],
              audience: str) -> TicketListItem:
        lines = self.sla_lines(ticket, now, zone, audience) if ticket.status in OPEN_STATUSES else ()
        return TicketListItem(
            number=ticket.number, summary=to_plain(ticket.summary),
            status_label=status_label(ticket.status, audience),
            assignee=names.get(ticket.assignee_id) if ticket.assignee_id else None,
            next_update=lines[0] if lines else None, link=ticket.origin_link,
        )


def user_text(neutral: str) -> Text:
    """Stored neutral text as view-model text (links kept)."""
    return to_spans(neutral)
