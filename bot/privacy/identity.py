"""Anonymising people: their row gets a pseudonym, and their ids, names and email are rewritten wherever they
were copied (targets, idempotency keys, view models, escalation snapshots, dedup marks, counters).

Every table is searched generically (``Base.metadata``), so a table added later is covered without a change
here: rows are picked by a ``LIKE`` on each text and JSON column (JSON as stored, so names with accents are
also searched in their escaped form), then rewritten in Python by the exact rules of
:class:`~bot.privacy.scrub.IdentityRewriter`. A caller may narrow the search of a large table with a
``scope`` (retention does, for tickets and their events); an erasure searches everything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ColumnElement, String, Table, Text, cast, delete, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

import store.escalation_models
import store.privacy_models
import store.survey_models  # noqa: F401  (every table must be on Base.metadata to be searched)
from bot.privacy.scrub import Identity, IdentityRewriter, rewrite_json
from store.models import Base, ConversationRef, MessageRef, Person

PAGE = 500
"""Rows read per round trip while searching a table."""
TERMS_PER_QUERY = 120
"""SQLite refuses expressions nested deeper than 1,000: a batch of people's LIKE terms goes in slices."""
NOT_SENT = "not delivered: the recipient's data was erased"
_SHORT = 16
_DROP_ROWS = frozenset({"inbound_dedup", "counters"})
"""Tables whose rows only mark something seen or counted: a row naming the person goes."""
_NULLED = {"tickets": frozenset({"intake_key", "origin_link"})}
"""Columns emptied rather than rewritten: an intake key embeds what the person typed as well as their id."""


def pseudonym_id(person_id: int) -> str:
    """The platform user id an anonymised person keeps: unique, stable, and says nothing about them."""
    return f"anon-{person_id}"


def pseudonym_name(person_id: int) -> str:
    return f"Former user #{person_id}"


@dataclass(frozen=True)
class Anonymised:
    """What :func:`anonymise_people` did, table by table."""

    people: int
    rows: dict[str, int]


async def identity_of(session: AsyncSession, person: Person) -> Identity:
    """Everything that names ``person``: their ids (with a Teams user's ``29:`` id from their chat reference),
    names and email, and the pseudonyms that replace them."""
    ids = {person.platform_user_id}
    names = {person.display_name}
    refs = await session.execute(select(ConversationRef.reference).where(
        ConversationRef.platform == person.platform, ConversationRef.key == person.platform_user_id))
    for (reference,) in refs:
        user = reference.get("user") if isinstance(reference, dict) else None
        if isinstance(user, dict):
            ids.update(str(v) for k, v in user.items() if k in ("id", "aadObjectId") and v)
            if user.get("name"):
                names.add(str(user["name"]))
    return Identity(ids=tuple(sorted(i for i in ids if i)), names=tuple(sorted(n for n in names if n.strip())),
                    emails=(person.email,) if person.email else (), pseudonym_id=pseudonym_id(person.id),
                    pseudonym_name=pseudonym_name(person.id))


async def anonymise_people(session: AsyncSession, people: Sequence[Person], now: datetime, *,
                           scope: Mapping[str, ColumnElement[bool]] | None = None) -> Anonymised:
    """Give ``people`` pseudonyms and rewrite their identity everywhere; returns what changed.

    ``scope`` narrows the search of the named tables (table name → extra condition); others are searched whole.
    Runs inside the caller's transaction, so a failure leaves everyone as they were.
    """
    if not people:
        return Anonymised(0, {})
    identities = [await identity_of(session, person) for person in people]
    rows: dict[str, int] = {}
    for person in people:
        rows["conversation_refs"] = rows.get("conversation_refs", 0) + await _count(session, delete(
            ConversationRef).where(ConversationRef.platform == person.platform,
                                   ConversationRef.key == person.platform_user_id))
        # Their direct-message threads: nothing will be posted there again.
        rows["message_refs"] = rows.get("message_refs", 0) + await _count(session, delete(MessageRef).where(
            MessageRef.platform == person.platform, MessageRef.channel == person.platform_user_id))
    for person in people:
        await session.execute(update(Person).where(Person.id == person.id).values(
            platform_user_id=pseudonym_id(person.id), display_name=pseudonym_name(person.id), email=None,
            timezone=None, anonymised_at=now, updated_at=now))
    rewriter = IdentityRewriter(identities)
    for table in Base.metadata.sorted_tables:
        if table.name == Person.__tablename__:
            continue
        changed = await _rewrite_table(session, table, identities, rewriter, (scope or {}).get(table.name), now)
        if changed:
            rows[table.name] = rows.get(table.name, 0) + changed
    return Anonymised(len(people), {name: count for name, count in rows.items() if count})


async def _count(session: AsyncSession, statement: Any) -> int:
    result: Any = await session.execute(statement.execution_options(synchronize_session=False))
    return int(result.rowcount)


def _text_columns(table: Table) -> list[Column[Any]]:
    # Columns of 16 characters or fewer (platform, status, answer…) are too short to hold an address or email.
    return [column for column in table.columns if isinstance(column.type, JSON) or (
        isinstance(column.type, String) and (column.type.length is None or column.type.length > _SHORT))]


def _terms(columns: Sequence[Column[Any]], identities: Sequence[Identity]) -> Iterator[ColumnElement[bool]]:
    """``LIKE`` conditions that every row naming one of ``identities`` meets (and a few more rows may)."""
    for column in columns:
        is_json = isinstance(column.type, JSON)
        searched: Any = cast(column, Text) if is_json else column
        for identity in identities:
            for token, exact in ([(i, True) for i in identity.ids] + [(n, False) for n in identity.names]
                                 + [(e, False) for e in identity.emails]):
                forms = {token, json.dumps(token)[1:-1]} if is_json else {token}
                for form in forms:
                    yield searched.contains(form, autoescape=True) if exact else searched.icontains(
                        form, autoescape=True)


async def _rewrite_table(session: AsyncSession, table: Table, identities: Sequence[Identity],
                         rewriter: IdentityRewriter, restriction: ColumnElement[bool] | None, now: datetime) -> int:
    columns = _text_columns(table)
    if not columns:
        return 0
    terms = list(_terms(columns, identities))
    key = list(table.primary_key.columns)
    changed = 0
    for start in range(0, len(terms), TERMS_PER_QUERY):
        condition = or_(*terms[start:start + TERMS_PER_QUERY])
        if restriction is not None:
            condition = condition & restriction
        after: tuple[Any, ...] | None = None
        while True:
            query = select(table).where(condition).order_by(*key).limit(PAGE)
            if after is not None:
                query = query.where(tuple_(*key) > tuple_(*after))
            page = (await session.execute(query)).mappings().all()
            for row in page:
                changed += await _rewrite_row(session, table, key, columns, row, rewriter, now)
            if len(page) < PAGE:
                break
            after = tuple(page[-1][column.name] for column in key)
    return changed


async def _rewrite_row(session: AsyncSession, table: Table, key: Sequence[Column[Any]], columns: Sequence[Column[Any]],
                       row: Any, rewriter: IdentityRewriter, now: datetime) -> int:
    changes: dict[str, Any] = {}
    for column in columns:
        old = row[column.name]
        if old is None:
            continue
        new = rewrite_json(old, rewriter.clean)
        if new != old:
            changes[column.name] = None if column.name in _NULLED.get(table.name, ()) else new
    if not changes:
        return 0
    where = [column == row[column.name] for column in key]
    if table.name in _DROP_ROWS:
        await session.execute(delete(table).where(*where))
        return 1
    changes.update(_consequences(table.name, row, rewriter, now))
    await session.execute(update(table).where(*where).values(**changes))
    return 1


def _consequences(table: str, row: Mapping[str, Any], rewriter: IdentityRewriter, now: datetime) -> dict[str, Any]:
    # A message still owed to the person is not sent to a pseudonym; a timer about them does not run.
    if table == "outbox" and row["delivered_at"] is None and row["dead_at"] is None and rewriter.mentions(
            row["target"]):
        return {"dead_at": now, "last_error": NOT_SENT, "lease_owner": None, "lease_until": None}
    if table == "timers" and row["done_at"] is None:
        return {"done_at": now, "outcome": "cancelled"}
    return {}
