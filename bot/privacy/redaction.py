"""Redacting tickets' free text: the ticket row, its events, its survey, and the copies in messages and timers.

Everything the metrics read stays: statuses, times, priorities, categories, who acted, survey answers and
reasons (a choice from a list). Only what someone typed is replaced by :data:`~bot.privacy.scrub.REDACTED`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, bindparam, case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.messages import DIGEST
from bot.privacy.scrub import REDACTED, Needles, redact_event_payload, rewrite_json
from store.models import OutboxMessage, Ticket, TicketEvent, Timer
from store.survey_models import Survey

PAGE = 500
_EVENTS: Table = TicketEvent.__table__  # type: ignore[assignment]
_SET_PAYLOAD = (update(_EVENTS).where(_EVENTS.c.id == bindparam("row_id"))
                .values(payload=bindparam("new_payload", type_=_EVENTS.c.payload.type)))


def _add(counts: dict[str, int], table: str, count: int) -> None:
    if count:
        counts[table] = counts.get(table, 0) + count


async def redact_tickets(session: AsyncSession, ticket_ids: Sequence[int], now: datetime) -> dict[str, int]:
    """Replace every piece of free text on these tickets (whoever typed it) and its copies; rows changed per table."""
    if not ticket_ids:
        return {}
    ids = list(ticket_ids)
    counts: dict[str, int] = {}
    rows = (await session.execute(select(Ticket.summary, Ticket.description, Ticket.resolved_at, Ticket.closed_at,
                                         Ticket.updated_at).where(Ticket.id.in_(ids)))).all()
    texts = [text for row in rows for text in (row.summary, row.description) if text]
    latest = max((row.updated_at for row in rows), default=now)
    result = await session.execute(update(Ticket).where(Ticket.id.in_(ids)).values(
        summary=REDACTED, description=case((Ticket.description == "", ""), else_=REDACTED), origin_link=None,
        intake_key=None, redacted_at=now).execution_options(synchronize_session=False))
    _add(counts, "tickets", int(result.rowcount))  # type: ignore[attr-defined]
    events, removed = await redact_events(session, TicketEvent.ticket_id.in_(ids))
    _add(counts, "ticket_events", events)
    texts += removed
    comments = list((await session.execute(select(Survey.comment).where(
        Survey.ticket_id.in_(ids), Survey.comment.is_not(None), Survey.comment != REDACTED))).scalars())
    if comments:
        await session.execute(update(Survey).where(Survey.ticket_id.in_(ids), Survey.comment.is_not(None)).values(
            comment=REDACTED).execution_options(synchronize_session=False))
        _add(counts, "surveys", len(comments))
        texts += [c for c in comments if c]
    # A digest lists several tickets under the first one's id; one naming these was written before they closed.
    copies = or_(OutboxMessage.ticket_id.in_(ids),
                 and_(OutboxMessage.kind == DIGEST, OutboxMessage.created_at <= latest))
    for table, count in (await clean_copies(session, Needles.of(texts), copies, Timer.ticket_id.in_(ids))).items():
        _add(counts, table, count)
    return counts


async def redact_events(session: AsyncSession, where: ColumnElement[bool]) -> tuple[int, list[str]]:
    """Redact the free text of the events matching ``where``; returns (events changed, the texts removed)."""
    changed, removed, after = 0, [], 0
    while True:
        page = (await session.execute(select(TicketEvent.id, TicketEvent.kind, TicketEvent.payload).where(
            where, TicketEvent.id > after).order_by(TicketEvent.id).limit(PAGE))).all()
        updates = []
        for event_id, kind, payload in page:
            new, texts = redact_event_payload(kind, payload or {})
            if texts:
                updates.append({"row_id": event_id, "new_payload": new})
                removed += texts
        if updates:
            await (await session.connection()).execute(_SET_PAYLOAD, updates)
            changed += len(updates)
        if len(page) < PAGE:
            return changed, removed
        after = page[-1].id


async def clean_copies(session: AsyncSession, needles: Needles, outbox: ColumnElement[bool] | None,
                       timers: ColumnElement[bool] | None) -> dict[str, int]:
    """Remove ``needles`` from the outbox rows and timers matching the conditions (None: all of them)."""
    if not needles:
        return {}
    counts: dict[str, int] = {}
    _add(counts, "outbox", await _rewrite(session, OutboxMessage.__table__, outbox,  # type: ignore[arg-type]
                                          ("payload", "last_error"), needles.clean))
    _add(counts, "timers", await _rewrite(session, Timer.__table__, timers,  # type: ignore[arg-type]
                                          ("payload",), needles.clean))
    return counts


async def _rewrite(session: AsyncSession, table: Table, where: ColumnElement[bool] | None, columns: Sequence[str],
                   clean: Callable[[str], str]) -> int:
    changed, after = 0, 0
    statement = (update(table).where(table.c.id == bindparam("row_id"))
                 .values({name: bindparam(f"new_{name}", type_=table.c[name].type) for name in columns}))
    while True:
        query = select(table.c.id, *(table.c[name] for name in columns)).where(table.c.id > after)
        if where is not None:
            query = query.where(where)
        page = (await session.execute(query.order_by(table.c.id).limit(PAGE))).all()
        updates: list[dict[str, Any]] = []
        for row in page:
            new = {f"new_{name}": rewrite_json(row[index + 1], clean) for index, name in enumerate(columns)}
            if any(new[f"new_{name}"] != row[index + 1] for index, name in enumerate(columns)):
                updates.append({"row_id": row.id, **new})
        if updates:
            await (await session.connection()).execute(statement, updates)
            changed += len(updates)
        if len(page) < PAGE:
            return changed
        after = page[-1].id
