"""The few queries that need care: claiming due timers and outbox rows across replicas."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from functools import cache
from typing import Any, NamedTuple, TypeVar, cast

from sqlalchemy import (
    Integer,
    Table,
    and_,
    bindparam,
    case,
    delete,
    literal,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased
from sqlalchemy.sql.elements import ColumnElement

from store.models import Base, Counter, InboundDedup, OutboxMessage, Ticket, Timer

Model = TypeVar("Model", bound=Base)


def _lease_free(
    lease_until: InstrumentedAttribute[datetime | None], now: datetime | ColumnElement[datetime]
) -> ColumnElement[bool]:
    return or_(lease_until.is_(None), lease_until < now)


class ClaimedTimer(NamedTuple):
    """A timer leased by :func:`claim_due_timers`: enough to decide how to run it before loading it."""

    id: int
    kind: str
    ticket_id: int | None


async def claim_due_timers(
    session: AsyncSession, *, owner: str, now: datetime, lease: timedelta, limit: int,
    urgent_kinds: Collection[str] = (), urgent_lease: timedelta | None = None,
) -> list[ClaimedTimer]:
    """Lease up to ``limit`` due timers to ``owner`` in one statement and return them, soonest due first.

    PostgreSQL: the inner SELECT takes ``FOR UPDATE SKIP LOCKED`` so concurrent replicas split the
    work instead of queueing on each other. SQLite: a single ``UPDATE … RETURNING`` under
    ``BEGIN IMMEDIATE`` is already exclusive. An expired lease (a crashed replica) is claimable again.
    Timers of ``urgent_kinds`` get the short ``urgent_lease`` instead (the caller renews it while it works).
    """
    candidates = (
        select(Timer.id)
        .where(Timer.done_at.is_(None), Timer.due_at <= now, _lease_free(Timer.lease_until, now))
        .order_by(Timer.due_at, Timer.id)
        .limit(limit)
    )
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    until: Any = literal(now + lease, Timer.lease_until.type)
    if urgent_kinds and urgent_lease is not None:
        until = case((Timer.kind.in_(sorted(urgent_kinds)), literal(now + urgent_lease, Timer.lease_until.type)),
                     else_=until)
    statement = (
        update(Timer)
        .where(Timer.id.in_(candidates.scalar_subquery()))
        .values(lease_owner=owner, lease_until=until, attempts=Timer.attempts + 1)
        .returning(Timer.id, Timer.kind, Timer.ticket_id, Timer.due_at)
        .execution_options(synchronize_session=False)
    )
    # RETURNING comes back in no promised order.
    rows = sorted((await session.execute(statement)).all(), key=lambda row: (row.due_at, row.id))
    return [ClaimedTimer(row.id, row.kind, row.ticket_id) for row in rows]


async def claim_outbox(
    session: AsyncSession, *, owner: str, now: datetime, lease: timedelta, limit: int
) -> list[int]:
    """Lease deliverable outbox rows: due, unleased, and first in line for their ordering key.

    "First in line" keeps a ticket's thread in order on each target (the thread root must exist
    before replies to it), while different tickets and targets deliver in parallel.
    """
    statement = _claim_outbox(_dialect_of(session))
    return list((await session.execute(statement, _claim_values(owner, now, lease, limit))).scalars())


def claim_outbox_statement(dialect: str, *, owner: str, now: datetime, lease: timedelta, limit: int) -> Any:
    """The UPDATE … RETURNING id that :func:`claim_outbox` runs, with these values in it (to explain it)."""
    return _claim_outbox_update(dialect, now=now, owner=owner, lease_until=now + lease, limit=limit)


def _claim_values(owner: str, now: datetime, lease: timedelta, limit: int) -> dict[str, Any]:
    return {"claim_owner": owner, "claim_now": now, "claim_lease_until": now + lease, "claim_limit": limit}


@cache
def _claim_outbox(dialect: str) -> Any:
    # Built once per dialect with named parameters: the engine claims on every pass, and building the
    # statement and its cache key each time cost more than running it on a small backlog.
    return _claim_outbox_update(
        dialect, now=bindparam("claim_now", type_=OutboxMessage.next_attempt_at.type),
        owner=bindparam("claim_owner", type_=OutboxMessage.lease_owner.type),
        lease_until=bindparam("claim_lease_until", type_=OutboxMessage.lease_until.type),
        limit=bindparam("claim_limit", type_=Integer))


def _claim_outbox_update(dialect: str, *, now: Any, owner: Any, lease_until: Any, limit: Any) -> Any:
    earlier = aliased(OutboxMessage)
    # "Is an earlier unsent row in line first?" is asked row by row, each time one probe of the
    # (ordering_key, id) index of unsent rows. OFFSET 0 keeps PostgreSQL from turning it into an
    # anti-join: a burst of rows (a breach storm's pages, a fan-out) is claimed before autovacuum
    # has analyzed them, and on those stale statistics the join became a nested loop comparing every
    # unsent row with every other (quadratic in the backlog).
    blocked = select(earlier.id).where(
        and_(
            earlier.ordering_key == OutboxMessage.ordering_key,
            earlier.id < OutboxMessage.id,
            earlier.delivered_at.is_(None),
            earlier.dead_at.is_(None),
        )
    ).offset(0).exists()
    candidates = (
        select(OutboxMessage.id)
        .where(
            OutboxMessage.delivered_at.is_(None),
            OutboxMessage.dead_at.is_(None),
            OutboxMessage.next_attempt_at <= now,
            _lease_free(OutboxMessage.lease_until, now),
            ~blocked,
        )
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
    )
    if dialect == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True, of=OutboxMessage)
    return (
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(candidates.scalar_subquery()))
        .values(lease_owner=owner, lease_until=lease_until, attempts=OutboxMessage.attempts + 1)
        .returning(OutboxMessage.id)
        .execution_options(synchronize_session=False)
    )


Leased = type[Timer] | type[OutboxMessage]


def _unfinished(model: Leased) -> ColumnElement[bool]:
    if model is Timer:
        return Timer.done_at.is_(None)
    return and_(OutboxMessage.delivered_at.is_(None), OutboxMessage.dead_at.is_(None))


async def set_leases(session: AsyncSession, model: Leased, ids: Collection[int], *, owner: str,
                     until: datetime) -> None:
    """Set the lease of rows ``owner`` has just claimed in this transaction (e.g. a short one on pages)."""
    if ids:
        await session.execute(update(model).where(model.id.in_(sorted(ids)), model.lease_owner == owner)
                              .values(lease_until=until).execution_options(synchronize_session=False))


async def extend_leases(session: AsyncSession, model: Leased, ids: Collection[int], *, owner: str,
                        until: datetime) -> int:
    """Move the lease of unfinished rows ``owner`` still holds out to ``until`` (a heartbeat); returns how many.

    Never shortens a lease (a failed timer's backoff is a lease too). On PostgreSQL rows another
    transaction has locked are skipped, not waited for: a timer being run holds its row, and while it
    does nobody else can claim it either.
    """
    if not ids:
        return 0
    held = select(model.id).where(model.id.in_(sorted(ids)), model.lease_owner == owner, _unfinished(model),
                                  or_(model.lease_until.is_(None), model.lease_until < until))
    if _dialect_of(session) == "postgresql":
        held = held.with_for_update(skip_locked=True)
    result = await session.execute(update(model).where(model.id.in_(held.scalar_subquery()))
                                   .values(lease_until=until).execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def claim_pending_setup(session: AsyncSession, *, limit: int) -> list[int]:
    """Take up to ``limit`` fast-intake tickets still to be set up, clearing their flag; returns their ids.

    Same shape as :func:`claim_due_timers`, but without a lease: the flag flips in the transaction that
    writes the setup, so a crash rolls both back and another replica takes the ticket.
    """
    return list((await session.execute(claim_pending_setup_statement(_dialect_of(session), limit=limit))).scalars())


# Written exactly as the partial index's WHERE: neither PostgreSQL nor SQLite sees that
# "setup_pending IS true" (or "= 1") is the same, and each engine tick then scanned every ticket
# to find none pending.
_SETUP_PENDING: ColumnElement[Any] = literal_column("setup_pending")


def claim_pending_setup_statement(dialect: str, *, limit: int) -> Any:
    """The UPDATE … RETURNING id that :func:`claim_pending_setup` runs."""
    candidates = select(Ticket.id).where(_SETUP_PENDING).order_by(Ticket.id).limit(limit)
    if dialect == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    return (
        update(Ticket)
        .where(Ticket.id.in_(candidates.scalar_subquery()), _SETUP_PENDING)
        .values(setup_pending=False)
        .returning(Ticket.id)
        .execution_options(synchronize_session=False)
    )


async def serialise_across_replicas(session: AsyncSession, key: int) -> None:
    """Hold ``key`` for the rest of the transaction: a second transaction (on any replica) asking for it waits
    until this one ends, then sees what it committed. SQLite's writers are serialised already; PostgreSQL takes
    a transaction advisory lock."""
    if _dialect_of(session) == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _dialect_of(session: AsyncSession | AsyncConnection) -> str:
    if isinstance(session, AsyncConnection):
        return session.dialect.name
    return session.bind.dialect.name if session.bind is not None else "sqlite"


def upsert_insert(session: AsyncSession | AsyncConnection) -> Any:
    """The session's dialect's ``insert`` (PostgreSQL's or SQLite's): the one with ``on_conflict_*``."""
    return _dialect_insert(_dialect_of(session))


def _dialect_insert(dialect: str) -> Any:
    return pg_insert if dialect == "postgresql" else sqlite_insert


@cache
def _insert_ignoring(dialect: str, model: type[Any], conflict: tuple[str, ...]) -> Any:
    # Built once per table and dialect with parameters bound at execute time: it compiles once, and
    # a list of rows goes out as one executemany.
    return _dialect_insert(dialect)(cast(Table, model.__table__)).on_conflict_do_nothing(
        index_elements=list(conflict))


@cache
def _insert_new_returning(dialect: str, model: type[Any], conflict: tuple[str, ...]) -> Any:
    return _dialect_insert(dialect)(model).on_conflict_do_nothing(index_elements=list(conflict)).returning(model)


async def insert_if_absent(session: AsyncSession, model: type[Model], row: dict[str, Any],
                           conflict: tuple[str, ...]) -> Model | None:
    """Insert ``row`` unless one with the same ``conflict`` key exists; the new row as an ORM object, else None.

    One statement, no read-back: the row is ours alone until the transaction commits (a concurrent
    insert of the same key waits on the unique index), so it needs no ``FOR UPDATE``.
    """
    statement = _insert_new_returning(_dialect_of(session), model, conflict)
    return cast("Model | None", (await session.scalars(statement, [row])).one_or_none())


def outbox_row(
    *,
    target: str,
    kind: str,
    payload: dict[str, Any],
    idempotency_key: str,
    now: datetime,
    ticket_id: int | None = None,
    ordering_key: str | None = None,
    deliver_at: datetime | None = None,
) -> dict[str, Any]:
    """An outbox row for :func:`enqueue_messages`."""
    return {"target": target, "kind": kind, "payload": payload, "idempotency_key": idempotency_key,
            "ticket_id": ticket_id, "ordering_key": ordering_key or f"{target}#{ticket_id or 0}", "created_at": now,
            "next_attempt_at": deliver_at or now, "attempts": 0}


async def enqueue_message(session: AsyncSession, **row: Any) -> bool:
    """Add a row to the outbox unless one with the same idempotency key exists; True if added.
    Takes the keyword arguments of :func:`outbox_row`."""
    statement = _insert_ignoring(_dialect_of(session), OutboxMessage, ("idempotency_key",))
    result = await session.execute(statement, outbox_row(**row))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def delivered_message_id(session: AsyncSession, idempotency_key: str) -> str | None:
    """The platform message id the outbox row with this key was delivered as (None: not delivered, or gone)."""
    return cast("str | None", await session.scalar(select(OutboxMessage.delivered_message_id).where(
        OutboxMessage.idempotency_key == idempotency_key)))


async def enqueue_messages(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Add several :func:`outbox_row` rows in one round trip (each skipped if its key exists)."""
    if rows:
        await session.execute(_insert_ignoring(_dialect_of(session), OutboxMessage, ("idempotency_key",)), rows)


def timer_row(
    *,
    kind: str,
    due_at: datetime,
    now: datetime,
    ticket_id: int | None = None,
    payload: dict[str, Any] | None = None,
    dedup_key: str | None = None,
) -> dict[str, Any]:
    """A timer row for :func:`schedule_timers`."""
    return {"kind": kind, "due_at": due_at, "ticket_id": ticket_id, "payload": payload or {}, "dedup_key": dedup_key,
            "created_at": now, "attempts": 0}


async def schedule_timer(session: AsyncSession, **row: Any) -> bool:
    """Add a timer row; with a ``dedup_key`` a second schedule of the same deadline is a no-op.
    Takes the keyword arguments of :func:`timer_row`."""
    result = await session.execute(_insert_ignoring(_dialect_of(session), Timer, ("dedup_key",)), timer_row(**row))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def schedule_timers(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Add several :func:`timer_row` rows in one round trip (each skipped if its dedup key exists)."""
    if rows:
        await session.execute(_insert_ignoring(_dialect_of(session), Timer, ("dedup_key",)), rows)


async def cancel_timers(
    session: AsyncSession, *, ticket_id: int, kinds: list[str] | tuple[str, ...], now: datetime
) -> int:
    """Mark a ticket's pending timers of these kinds as cancelled; returns how many."""
    result = await session.execute(
        update(Timer)
        .where(Timer.ticket_id == ticket_id, Timer.kind.in_(kinds), Timer.done_at.is_(None))
        .values(done_at=now, outcome="cancelled")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def mark_seen(session: AsyncSession | AsyncConnection, *, source: str, key: str, expires_at: datetime) -> bool:
    """Record an inbound event id; False if it was already seen (a retry or duplicate)."""
    result = await session.execute(mark_seen_statement(_dialect_of(session)),
                                   {"source": source, "key": key, "expires_at": expires_at})
    return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_seen_statement(dialect: str) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` into inbound_dedup for this dialect (parameters bound at execute)."""
    return _insert_ignoring(dialect, InboundDedup, ("source", "key"))



async def prune(session: AsyncSession, *, now: datetime, keep: timedelta, limit: int = 5000) -> dict[str, int]:
    """Delete rows that only ever grow: expired inbound-dedup marks and page-cap counters, and
    delivered outbox rows and finished timers older than ``keep``. Dead-lettered messages stay for
    inspection. At most ``limit`` rows per table per call, so no delete holds its locks for long."""
    before = now - keep
    doomed = {
        "inbound_dedup": (InboundDedup, InboundDedup.expires_at < now),
        "counters": (Counter, Counter.expires_at < now),
        "outbox": (OutboxMessage, OutboxMessage.delivered_at < before),
        "timers": (Timer, Timer.done_at < before),
    }
    counts: dict[str, int] = {}
    for name, (model, condition) in doomed.items():
        table = cast(Table, model.__table__)
        keys = select(*table.primary_key.columns).where(condition).limit(limit)
        if len(table.primary_key.columns) == 1:
            (column,) = table.primary_key.columns
            statement = delete(table).where(column.in_(keys.scalar_subquery()))
        else:
            statement = delete(table).where(tuple_(*table.primary_key.columns).in_(keys))
        counts[name] = int((await session.execute(statement)).rowcount)  # type: ignore[attr-defined]
    return counts
