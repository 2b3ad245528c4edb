"""The report's read model: one row of facts per ticket, kept by the SLA clock as the ticket changes.

Every fact is also in the ticket's event trail; this row is the same facts, written in the same transaction
as the event that changed them, so a report over a year of a large desk reads one narrow row per ticket
instead of every event. ``changed_at`` is when any fact last changed: a report whose period ends after it
can take the row as it is, an earlier one replays the ticket's events (``surveys.report_data``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from store.models import Base, BigId


class ReportFacts(Base):
    """What one ticket contributes to reports, as of ``changed_at``."""

    __tablename__ = "report_facts"
    __table_args__ = (
        Index("ix_report_facts_opened_at", "opened_at"),
        Index("ix_report_facts_resolved_at", "resolved_at"),
        Index("ix_report_facts_changed_at", "changed_at"),
        Index("ix_report_facts_survey_sent_at", "survey_sent_at"),
    )

    ticket_id: Mapped[int] = mapped_column(BigId, ForeignKey("tickets.id"), primary_key=True, autoincrement=False)
    opened_at: Mapped[datetime]
    priority: Mapped[str] = mapped_column(String(8))
    """The ticket's priority now (a report groups by the current one)."""
    category: Mapped[str | None] = mapped_column(String(64))
    first_response: Mapped[str | None] = mapped_column(String(8))
    """The SLA clock's verdict: ``met``/``missed`` (missed once breached while still running)."""
    first_response_seconds: Mapped[float | None] = mapped_column(Float)
    resolved_at: Mapped[datetime | None]
    """The latest resolution (kept while a reopened ticket is open again)."""
    resolution: Mapped[str | None] = mapped_column(String(8))
    resolution_seconds: Mapped[float | None] = mapped_column(Float)
    reopened_at: Mapped[datetime | None]
    """The first reopen."""
    resolver_id: Mapped[int | None] = mapped_column(BigId)
    claimer_id: Mapped[int | None] = mapped_column(BigId)
    survey_sent_at: Mapped[datetime | None]
    """The latest satisfaction survey sent (a re-survey after a reopen replaces it)."""
    survey_answer: Mapped[str | None] = mapped_column(String(8))
    """The latest answer (up/down), kept through a re-survey until a new answer comes."""
    changed_at: Mapped[datetime]
