"""The audit export: every ticket event of a period (who, when, what changed), as JSON lines or CSV.

Streamed with flat memory whatever the period holds: one read-only transaction, a server-side cursor on
PostgreSQL (``yield_per``; SQLite's cursor is read in the same slices), plain Core rows (no ORM objects), and each
record written out before the next is read. Privacy actions (retention batches, erasures, access exports) of the
period are merged in by time, as records without a ticket.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import datetime
from json.encoder import encode_basestring as _quote
from typing import Any, TextIO

from sqlalchemy import Text, cast, select

from store.db import Database
from store.models import Person, TicketEvent, ticket_number
from store.privacy_models import PrivacyLog

FORMATS = ("jsonl", "csv")
COLUMNS = ("event_id", "ticket", "at", "kind", "actor", "actor_name", "change")
YIELD_PER = 2000
"""Rows fetched per round trip: large enough to stream fast, small enough to keep memory flat."""


def _events_between(since: datetime, until: datetime) -> Any:
    # The change comes back as the JSON text it is stored as, and goes out as is: no parse and re-encode per event.
    return (select(TicketEvent.id, TicketEvent.ticket_id, TicketEvent.at, TicketEvent.kind,
                   cast(TicketEvent.payload, Text).label("change"),
                   Person.platform, Person.platform_user_id, Person.display_name)
            .outerjoin(Person, Person.id == TicketEvent.actor_id)
            .where(TicketEvent.at >= since, TicketEvent.at < until)
            .order_by(TicketEvent.at, TicketEvent.id)
            .execution_options(yield_per=YIELD_PER))


class _Writer:
    """One record per line; ``change`` arrives as JSON text."""

    def __init__(self, out: TextIO, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")
        self.out = out
        self._csv = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(COLUMNS)

    def write(self, event_id: int | None, ticket: str | None, at: str, kind: str, actor: str | None,
              actor_name: str | None, change: str) -> None:
        if self._csv is not None:
            self._csv.writerow((event_id, ticket, at, kind, actor, actor_name, change))
            return
        self.out.write(f'{{"event_id": {_json(event_id)}, "ticket": {_json(ticket)}, "at": "{at}", '
                       f'"kind": {_json(kind)}, "actor": {_json(actor)}, "actor_name": {_json(actor_name)}, '
                       f'"change": {change or "null"}}}\n')


def _json(value: str | int | None) -> str:
    if value is None:
        return "null"
    return str(value) if isinstance(value, int) else _quote(value)


async def export_audit(db: Database, out: TextIO, *, since: datetime, until: datetime, fmt: str = "jsonl") -> int:
    """Write every ticket event in [since, until) (and the privacy log's entries) to ``out``; returns how many."""
    writer = _Writer(out, fmt)
    written = 0
    async with db.reading() as session:
        # The privacy log holds one row per batch or request: small enough to hold while the events stream.
        privacy = iter(list((await session.execute(select(PrivacyLog.at, PrivacyLog.action, PrivacyLog.actor,
                                                          PrivacyLog.detail).where(
            PrivacyLog.at >= since, PrivacyLog.at < until).order_by(PrivacyLog.at, PrivacyLog.id))).all()))
        pending = next(privacy, None)
        # Core rows from the connection, a slice at a time: per-row async iteration and ORM row handling cost
        # more than writing the event out.
        result = await (await session.connection()).stream(_events_between(since, until))
        async for rows in result.partitions():
            for row in rows:
                while pending is not None and pending.at <= row.at:
                    _write_privacy(writer, pending)
                    written += 1
                    pending = next(privacy, None)
                writer.write(row.id, ticket_number(row.ticket_id), row.at.isoformat(), row.kind,
                             f"{row.platform}:{row.platform_user_id}" if row.platform else None, row.display_name,
                             row.change)
            written += len(rows)
        for rest in _remaining(pending, privacy):
            _write_privacy(writer, rest)
            written += 1
    out.flush()
    return written


def _remaining(pending: Any, privacy: Iterator[Any]) -> Iterator[Any]:
    if pending is not None:
        yield pending
    yield from privacy


def _write_privacy(writer: _Writer, row: Any) -> None:
    writer.write(None, None, row.at.isoformat(), row.action, row.actor, None, json.dumps(row.detail))
