"""An access request: everything the desk holds about one person, written out as one JSON document.

The document is written as it is read (one read-only transaction, a consistent snapshot), so a person with
thousands of tickets costs no more memory than one with a few. Sections:

``person`` (their profile), ``tickets`` (as requester and as assignee, each with its events and survey),
``actions_on_other_tickets`` (what they did on tickets not theirs: comments, claims, notes), ``surveys``,
``nps_pulses`` (the NPS questions they were sent and their scores),
``pages_to_them`` and ``messages_to_them`` (the outbox rows addressed to them), ``conversation_references``
and ``escalations_acknowledged``. The privacy log records who exported whose data, and when.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.messages import PAGE
from bot.privacy.people import RequestError, erased_on, find_person, not_found, parse_address
from store.conversation_models import HeldMessage
from store.db import Database
from store.escalation_models import Escalation
from store.models import ConversationRef, OutboxMessage, Person, Ticket, TicketEvent, ticket_number
from store.nps_models import NpsPulse
from store.privacy_models import PrivacyLog
from store.survey_models import Survey

FORMAT = "ithelp-person-export/1"
_STREAM = 500


class PersonErased(RequestError):
    pass


@dataclass
class Exported:
    """How many items each section of an export held."""

    person_id: int
    sections: dict[str, int] = field(default_factory=dict)


async def export_person(db: Database, clock: Clock, address: str, out: TextIO, *, by: str) -> Exported:
    """Write everything held about the person at ``address`` to ``out`` as JSON; raises :class:`RequestError`."""
    platform, user_id = parse_address(address)
    canonical = f"{platform}:{user_id}"
    async with db.reading() as session:
        person = await find_person(session, platform, user_id)
        if person is None:
            when = await erased_on(session, canonical)
            if when is not None:
                raise PersonErased(f"{canonical} was erased on {when:%Y-%m-%d %H:%M} UTC; the desk holds nothing "
                                   "that identifies them any more.")
            raise not_found(canonical)
        exported = Exported(person.id)
        writer = _JsonDocument(out)
        writer.value("format", FORMAT)
        writer.value("exported_at", clock.now().isoformat())
        writer.value("person", _plain(_columns(person)) | {"address": canonical})
        target = f"{platform}:user:{user_id}"
        mine = or_(Ticket.requester_id == person.id, Ticket.assignee_id == person.id)
        sections: dict[str, AsyncIterator[dict[str, Any]]] = {
            "tickets": _tickets(session, person, mine),
            "actions_on_other_tickets": _events(session, (TicketEvent.actor_id == person.id)
                                                & TicketEvent.ticket_id.not_in(select(Ticket.id).where(mine))),
            "surveys": _rows(session, select(Survey).where(Survey.requester_id == person.id).order_by(Survey.id)),
            "nps_pulses": _rows(session, select(NpsPulse).where(NpsPulse.person_id == person.id).order_by(
                NpsPulse.id)),
            "held_messages": _rows(session, select(HeldMessage).where(HeldMessage.person_id == person.id).order_by(
                HeldMessage.id)),
            "pages_to_them": _rows(session, _outbox(target).where(OutboxMessage.kind == PAGE)),
            "messages_to_them": _rows(session, _outbox(target).where(OutboxMessage.kind != PAGE)),
            "conversation_references": _rows(session, select(ConversationRef).where(
                ConversationRef.platform == platform, ConversationRef.key == user_id)),
            "escalations_acknowledged": _rows(session, select(Escalation).where(
                Escalation.acknowledged_by_id == person.id).order_by(Escalation.id)),
        }
        for name, items in sections.items():
            exported.sections[name] = await writer.array(name, items)
        writer.close()
    async with db.transaction() as session:
        session.add(PrivacyLog(at=clock.now(), action="privacy.export", actor=by, subject=f"person #{person.id}",
                               detail={"sections": exported.sections}))
    return exported


def _outbox(target: str) -> Select[Any]:
    return select(OutboxMessage).where(OutboxMessage.target == target).order_by(OutboxMessage.id)


async def _tickets(session: AsyncSession, person: Person, mine: Any) -> AsyncIterator[dict[str, Any]]:
    tickets = (await session.execute(select(Ticket).where(mine).order_by(Ticket.id))).scalars().all()
    for ticket in tickets:
        roles = [role for role, who in (("requester", ticket.requester_id), ("assignee", ticket.assignee_id))
                 if who == person.id]
        survey = (await session.execute(select(Survey).where(Survey.ticket_id == ticket.id))).scalar_one_or_none()
        yield _plain(_columns(ticket)) | {
            "number": ticket.number, "roles": roles,
            "events": [event async for event in _events(session, TicketEvent.ticket_id == ticket.id)],
            "survey": _plain(_columns(survey)) if survey is not None else None,
        }


async def _events(session: AsyncSession, where: Any) -> AsyncIterator[dict[str, Any]]:
    query = (select(TicketEvent.id, TicketEvent.ticket_id, TicketEvent.at, TicketEvent.kind, TicketEvent.payload,
                    Person.platform, Person.platform_user_id, Person.display_name)
             .outerjoin(Person, Person.id == TicketEvent.actor_id).where(where)
             .order_by(TicketEvent.ticket_id, TicketEvent.at, TicketEvent.id).execution_options(yield_per=_STREAM))
    async for row in await session.stream(query):
        yield {"id": row.id, "ticket": ticket_number(row.ticket_id), "at": row.at.isoformat(), "kind": row.kind,
               "actor": f"{row.platform}:{row.platform_user_id}" if row.platform else None,
               "actor_name": row.display_name, "change": row.payload}


async def _rows(session: AsyncSession, query: Select[Any]) -> AsyncIterator[dict[str, Any]]:
    async for obj in await session.stream_scalars(query.execution_options(yield_per=_STREAM)):
        yield _plain(_columns(obj))


def _columns(obj: Any) -> dict[str, Any]:
    return {column.key: getattr(obj, column.key) for column in obj.__table__.columns}


def _plain(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()}


class _JsonDocument:
    """Writes one JSON object key by key, arrays item by item, so nothing is held whole in memory."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.out.write("{")
        self._first = True

    def _key(self, name: str) -> None:
        self.out.write(("\n  " if self._first else ",\n  ") + json.dumps(name) + ": ")
        self._first = False

    def value(self, name: str, value: Any) -> None:
        self._key(name)
        self.out.write(json.dumps(value, ensure_ascii=False))

    async def array(self, name: str, items: AsyncIterator[dict[str, Any]]) -> int:
        self._key(name)
        self.out.write("[")
        count = 0
        async for item in items:
            self.out.write(("\n    " if count == 0 else ",\n    ") + json.dumps(item, ensure_ascii=False))
            count += 1
        self.out.write("\n  ]" if count else "]")
        return count

    def close(self) -> None:
        self.out.write("\n}\n")
