"""Tables owned by the NPS pulse (kept apart so features migrate independently)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, SmallInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from store.models import Base, BigId

# NpsPulse.status values.
PULSE_PENDING, PULSE_SENT, PULSE_ANSWERED, PULSE_EXPIRED, PULSE_SKIPPED = (
    "pending", "sent", "answered", "expired", "skipped")


class NpsPulse(Base):
    """One person's NPS question in one round: planned, sent once, answered (and changed) until it expires."""

    __tablename__ = "nps_pulses"
    __table_args__ = (
        UniqueConstraint("person_id", "round"),
        Index("ix_nps_pulses_person_sent", "person_id", "sent_at"),
        Index("ix_nps_pulses_sent", "sent_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    round: Mapped[int] = mapped_column(Integer)
    """The period the person was active in (``surveys.nps.round_of``); one pulse per person and round."""
    status: Mapped[str] = mapped_column(String(16), default=PULSE_PENDING)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    score: Mapped[int | None] = mapped_column(SmallInteger)
    answered_at: Mapped[datetime | None]
    revision: Mapped[int] = mapped_column(Integer, default=0)
    """Bumped on every change to the message, so each update gets its own outbox idempotency key."""
