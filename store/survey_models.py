"""Tables owned by the survey feature (kept apart so features migrate independently)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from store.models import Base, BigId

# Survey.status values.
PENDING, SENT, ANSWERED, EXPIRED = "pending", "sent", "answered", "expired"


class Survey(Base):
    """One satisfaction poll per ticket: scheduled on resolution, sent once, answered (and changed) until expiry."""

    __tablename__ = "surveys"
    __table_args__ = (Index("ix_surveys_requester_created", "requester_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), unique=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    answer: Mapped[str | None] = mapped_column(String(8))
    answered_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(String(32))
    comment: Mapped[str | None] = mapped_column(Text)
    reminded_at: Mapped[datetime | None]
    reopened_at: Mapped[datetime | None]
    revision: Mapped[int] = mapped_column(Integer, default=0)
    """Bumped on every change to the card, so each card update gets its own outbox idempotency key."""
