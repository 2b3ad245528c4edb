"""Tables owned by incidents (outages): the incident, which tickets it covers, and suggested clusters."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from store.models import Base, BigId

# Incident.status and IncidentSuggestion.status values.
INCIDENT_OPEN, INCIDENT_RESOLVED = "open", "resolved"
SUGGESTION_OPEN, SUGGESTION_ACCEPTED, SUGGESTION_DISMISSED = "open", "accepted", "dismissed"


def incident_number(incident_id: int) -> str:
    """How people see an incident's id: ``INC-7``."""
    return f"INC-{incident_id}"


class Incident(Base):
    """One fault many people report: its own title, priority and timeline; its card lives on ``anchor_ticket_id``."""

    __tablename__ = "incidents"
    __table_args__ = (Index("ix_incidents_status", "status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    priority: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default=INCIDENT_OPEN)
    anchor_ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    """The ticket the incident was declared from: its card's message refs are kept under this ticket."""
    declared_by_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    created_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    latest_update: Mapped[str | None] = mapped_column(Text)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    """Bumped on every change to the card, so each refresh gets its own outbox idempotency key."""

    @property
    def number(self) -> str:
        return incident_number(self.id)


class IncidentLink(Base):
    """A ticket covered by an incident (one incident per ticket at a time)."""

    __tablename__ = "incident_links"
    __table_args__ = (Index("ix_incident_links_incident", "incident_id"),)

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    linked_at: Mapped[datetime]
    via: Mapped[str] = mapped_column(String(16))
    """``declared`` / ``agent`` / ``intake`` / ``suggestion``: how the ticket came to be linked."""


class IncidentSuggestion(Base):
    """A cluster of similar open reports the desk offers to turn into an incident, on one card."""

    __tablename__ = "incident_suggestions"
    __table_args__ = (Index("ix_incident_suggestions_status", "status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    anchor_ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    status: Mapped[str] = mapped_column(String(16), default=SUGGESTION_OPEN)
    count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    revision: Mapped[int] = mapped_column(Integer, default=0)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"))
