"""``knowledge:`` in ``app.yaml``: where the articles are, and how the bot offers them at intake."""

from __future__ import annotations

from datetime import time, timedelta
from typing import Literal

from pydantic import Field, HttpUrl, field_validator

from bot.config_types import Duration, Section
from bot.durations import format_duration


class KnowledgeLink(Section):
    """An article kept elsewhere (an intranet page, a vendor's guide): searched by its title and keywords."""

    title: str = Field(min_length=1, max_length=300)
    url: HttpUrl
    keywords: list[str] = Field(default_factory=list)


class KnowledgeConfig(Section):
    """The self-service knowledge base (off until ``folder`` or ``links`` names some articles)."""

    folder: str | None = None
    """A folder of Markdown files with front matter (``title``, ``tags``, optional ``url``); relative paths
    are read from the directory the desk runs in."""
    links: list[KnowledgeLink] = Field(default_factory=list)
    mode: Literal["suggest", "ask_first"] = "suggest"
    """``suggest``: file the ticket at once and offer articles with it; ``ask_first``: offer articles first and
    file only on "I still need help" (or after ``ask_timeout`` of silence)."""
    ask_timeout: Duration = timedelta(minutes=10)
    max_suggestions: int = Field(default=3, ge=1, le=5)
    survey_self_served: bool = False
    """Whether a ticket closed by "This solved it" still gets the satisfaction poll."""
    reindex_times: list[time] = Field(default_factory=lambda: [time(hour) for hour in range(24)])
    """When every replica checks the folder for changed files (the desk's default calendar zone)."""

    @property
    def enabled(self) -> bool:
        return bool(self.folder or self.links)

    @field_validator("ask_timeout")
    @classmethod
    def _sensible_timeout(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=30):
            raise ValueError(f"{format_duration(value)} is too short for a person to read; write e.g. 10m")
        return value
