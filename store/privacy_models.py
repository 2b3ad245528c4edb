"""Tables owned by the privacy feature (kept apart so features migrate independently)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from store.models import Base, BigId


class PrivacyLog(Base):
    """One row per retention batch, erasure and access request: who acted and when, never what was removed.

    ``subject`` is empty for retention batches; for an erasure it is a salted fingerprint of the person's
    address (so a repeated request can be recognised without keeping the address itself).
    """

    __tablename__ = "privacy_log"
    __table_args__ = (Index("ix_privacy_log_at", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime]
    action: Mapped[str] = mapped_column(String(48))
    actor: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
