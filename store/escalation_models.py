"""Tables owned by the escalation feature (kept apart so features migrate independently)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from store.models import Base, BigId

ACTIVE_KEY = "active"
"""``active_key`` of a running escalation; a finished one holds its own id, so only one per (ticket, trigger) runs."""


class Escalation(Base):
    """One run of an escalation chain for a ticket and trigger, with the chain copied in (a snapshot).

    ``level``/``loop`` name the next level to page; ``run_token`` names the one timer allowed to page it,
    so a stale or repeated timer finds a different token and does nothing.
    """

    __tablename__ = "escalations"
    __table_args__ = (
        UniqueConstraint("ticket_id", "trigger", "active_key"),
        Index("ix_escalations_active", "status", "next_step_at",
              postgresql_where=text("status = 'active'"), sqlite_where=text("status = 'active'")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    trigger: Mapped[str] = mapped_column(String(32))
    metric: Mapped[str | None] = mapped_column(String(32))
    chain_name: Mapped[str] = mapped_column(String(64))
    chain: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    active_key: Mapped[str] = mapped_column(String(32))
    level: Mapped[int] = mapped_column(Integer, default=0)
    loop: Mapped[int] = mapped_column(Integer, default=0)
    pages: Mapped[int] = mapped_column(Integer, default=0)
    run_token: Mapped[str] = mapped_column(String(32))
    next_step_at: Mapped[datetime | None]
    breached_at: Mapped[datetime]
    paged_pagers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """``{"targets": [...]}``: pager targets triggered, so acknowledge/resolve reach the same alerts."""
    pagers_closed_at: Mapped[datetime | None]
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    acknowledged_at: Mapped[datetime | None]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    finish_reason: Mapped[str | None] = mapped_column(String(32))
