"""Tables owned by conversations (kept apart so features migrate independently)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from store.models import Base, BigId


class HeldMessage(Base):
    """A direct message the bot holds while it asks its author which ticket it is about (or whether it is
    something new); kept until answered, so nothing the person wrote is lost while the question is open."""

    __tablename__ = "held_messages"
    __table_args__ = (Index("ix_held_messages_person_answered", "person_id", "answered_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    platform: Mapped[str] = mapped_column(String(16))
    conversation: Mapped[str | None] = mapped_column(String(255))
    """Where the message was written, so a ticket it starts answers there."""
    thread: Mapped[str | None] = mapped_column(String(255))
    text: Mapped[str] = mapped_column(Text)
    """The message as the desk stores text (neutral, decoded at the platform edge); empty for files alone."""
    files: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)
    """Files shared with it (``{"name", "url"}``): a file-only message waits here for the ticket the next
    message starts."""
    created_at: Mapped[datetime]
    answered_at: Mapped[datetime | None]
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    """The ticket the message joined or started, once answered."""


class Welcome(Base):
    """That a person was greeted (Teams app installed, Slack App Home first opened): once per person."""

    __tablename__ = "welcomes"

    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), primary_key=True)
    welcomed_at: Mapped[datetime]
