"""SQLAlchemy 2 models. Timestamps are stored as UTC and always come back timezone-aware."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC (SQLite has no zones) and hands back aware UTC datetimes on every backend."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use the injected clock")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


# BigInteger ids on PostgreSQL, but SQLite only autoincrements a plain INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Person(Base):
    __tablename__ = "people"
    __table_args__ = (UniqueConstraint("platform", "platform_user_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    platform_user_id: Mapped[str] = mapped_column(String(128))
    display_name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str | None] = mapped_column(String(64))
    email: Mapped[str | None] = mapped_column(String(320))
    is_agent: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    anonymised_at: Mapped[datetime | None]
    """Set when retention or an erasure request replaced this person's identity with a pseudonym."""

    @property
    def address(self) -> str:
        """``slack:U123`` / ``teams:<aad id>``: how config and targets name this person."""
        return f"{self.platform}:{self.platform_user_id}"


def ticket_number(ticket_id: int) -> str:
    """How people see a ticket's id: ``IT-42``."""
    return f"IT-{ticket_id}"


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_status", "status"),
        Index("ix_tickets_requester_status", "requester_id", "status"),
        Index("ix_tickets_assignee_status", "assignee_id", "status"),
        Index("ix_tickets_setup_pending", "id", postgresql_where=text("setup_pending"),
              sqlite_where=text("setup_pending")),
        # The retention scan: tickets resolved long ago whose text is still there.
        Index("ix_tickets_unredacted_resolved", "resolved_at", postgresql_where=text("redacted_at IS NULL"),
              sqlite_where=text("redacted_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    origin_platform: Mapped[str] = mapped_column(String(16))
    origin_conversation: Mapped[str | None] = mapped_column(String(256))
    origin_thread: Mapped[str | None] = mapped_column(String(128))
    origin_link: Mapped[str | None] = mapped_column(String(512))
    intake_key: Mapped[str | None] = mapped_column(String(300), unique=True)
    summary: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str | None] = mapped_column(String(64))
    priority: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(32))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    calendar: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    first_response_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    paused_since: Mapped[datetime | None]
    paused_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    first_response_due: Mapped[datetime | None]
    resolution_due: Mapped[datetime | None]
    next_update_due: Mapped[datetime | None]
    last_requester_update_at: Mapped[datetime | None]
    updates_muted: Mapped[bool] = mapped_column(Boolean, default=False)
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Opened on the fast intake path: the row is committed (so the requester's ack can name it) but its
    # "opened" event, SLA timers and cards are still to be written by TicketService.finish_setup.
    setup_pending: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    redacted_at: Mapped[datetime | None]
    """Set when retention or an erasure request replaced this ticket's free text with a marker."""

    @property
    def number(self) -> str:
        return ticket_number(self.id)

    @property
    def is_open(self) -> bool:
        return self.status not in ("resolved", "closed")


class TicketEvent(Base):
    """The append-only audit trail; every metric is computed from it."""

    __tablename__ = "ticket_events"
    __table_args__ = (
        Index("ix_ticket_events_ticket_at", "ticket_id", "at"),
        # Audit exports and reports read a period in time order; retention and privacy requests read by actor.
        Index("ix_ticket_events_at", "at", "id"),
        Index("ix_ticket_events_actor_at", "actor_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    at: Mapped[datetime]
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    kind: Mapped[str] = mapped_column(String(48))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Timer(Base):
    """A deadline as a row; the engine claims due rows with a lease so replicas never double-run one."""

    __tablename__ = "timers"
    __table_args__ = (
        # Partial on PostgreSQL keeps the due-scan proportional to pending timers, not history.
        Index("ix_timers_pending_due", "due_at", postgresql_where=text("done_at IS NULL"),
              sqlite_where=text("done_at IS NULL")),
        Index("ix_timers_ticket_kind", "ticket_id", "kind"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(48))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    due_at: Mapped[datetime]
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dedup_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    done_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]


_UNSENT = "delivered_at IS NULL AND dead_at IS NULL"
_DEAD = "dead_at IS NOT NULL"


class OutboxMessage(Base):
    """A message the bot owes someone, written in the same transaction as the change that caused it."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_pending", "next_attempt_at", postgresql_where=text(_UNSENT), sqlite_where=text(_UNSENT)),
        # Unsent rows only, like ix_outbox_pending: the claim's "first in line" probe (store.queries).
        Index("ix_outbox_unsent_ordering", "ordering_key", "id", postgresql_where=text(_UNSENT),
              sqlite_where=text(_UNSENT)),
        Index("ix_outbox_ticket_kind", "ticket_id", "kind"),
        Index("ix_outbox_dead", "dead_at", postgresql_where=text(_DEAD), sqlite_where=text(_DEAD)),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    target: Mapped[str] = mapped_column(String(300))
    ordering_key: Mapped[str] = mapped_column(String(340))
    kind: Mapped[str] = mapped_column(String(48))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    delivered_message_id: Mapped[str | None] = mapped_column(String(256))
    dead_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    first_failed_at: Mapped[datetime | None]
    """When delivery first failed because the platform refused the bot's credentials (None otherwise):
    the start of the message's ``engine.credentials_outage_window``."""


class MessageRef(Base):
    """Where a ticket's card/thread lives on a platform, so later changes update it in place."""

    __tablename__ = "message_refs"
    __table_args__ = (
        UniqueConstraint("ticket_id", "role", "platform", "channel"),
        Index("ix_message_refs_lookup", "platform", "channel", "message_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    role: Mapped[str] = mapped_column(String(32))
    platform: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(256))
    message_id: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime]


class ConversationRef(Base):
    """A Teams ConversationReference, so the bot can message a person or channel proactively."""

    __tablename__ = "conversation_refs"
    __table_args__ = (UniqueConstraint("platform", "key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16), default="teams")
    key: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(16))
    reference: Mapped[dict[str, Any]] = mapped_column(JSON)
    usable: Mapped[bool] = mapped_column(Boolean, default=True)
    failure: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]


class InboundDedup(Base):
    """Seen Slack event ids / Teams activity ids, so a retried delivery changes nothing."""

    __tablename__ = "inbound_dedup"

    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Counter(Base):
    """Monotonic counters shared by replicas (e.g. page caps per person per hour)."""

    __tablename__ = "counters"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[datetime | None]
