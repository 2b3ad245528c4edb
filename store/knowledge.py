"""Knowledge-base tables and the one search query, full-text with stemming and ranking in the database.

SQLite searches an FTS5 table (``porter`` tokenizer, ranked by ``bm25``); PostgreSQL searches a stored,
weighted ``tsvector`` column through a GIN index (English stemming, ranked by ``ts_rank``). Both index the
title above the tags above the body, so an article named for a problem outranks one that mentions it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from store.models import Base, BigId, Timer
from store.queries import serialise_across_replicas

INDEX_LOCK = 2_021_021
"""The advisory lock key reindexing holds on PostgreSQL."""
# KbUse.kind values.
SUGGESTED, SOLVED, SENT = "suggested", "solved", "sent"

FTS_TABLE = "kb_fts"
"""SQLite's FTS5 table (and its shadow tables ``kb_fts_*``): not a model, created by migration 0011."""
PG_SEARCH_INDEX = "ix_kb_articles_search"
"""PostgreSQL's GIN expression index: not a model either, created by migration 0011."""

PG_DOCUMENT_COLUMN = "kb_fts_document"
"""PostgreSQL's stored, weighted ``tsvector`` of each article (a generated column made by migration 0011)."""

# FTS5 has no stop words; leaving them in an OR query lets "my" and "the" match every article.
_STOP = frozenset(
    "a an and are as at be been but by can could do does doing for from get got has have having how i i'm im "
    "if in into is it it's its me my myself no not of on or our please should so some still that the their "
    "them then there this to too up us was we were what when where which who why will with won't would you "
    "your hi hello thanks thank help need want just keep keeps again any anyone".split())
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def is_search_object(name: str | None) -> bool:
    """True for the search structures migrations create outside the models (schema comparisons skip them):
    SQLite's ``kb_fts*`` tables, PostgreSQL's ``kb_fts_document`` column and its index."""
    return bool(name) and (str(name).startswith(FTS_TABLE) or name == PG_SEARCH_INDEX)


class KbArticle(Base):
    """One article: a Markdown file of the folder or an external link from ``knowledge.links``."""

    __tablename__ = "kb_articles"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(String(512), unique=True)
    """Where it came from: the file's path relative to the folder, or ``link:<url>``."""
    title: Mapped[str] = mapped_column(String(300))
    tags: Mapped[str] = mapped_column(Text, default="")
    """Tags and keywords, space-separated."""
    url: Mapped[str | None] = mapped_column(String(1000))
    body: Mapped[str] = mapped_column(Text, default="")
    checksum: Mapped[str] = mapped_column(String(64))
    """SHA-256 of what was indexed, so a reindex rewrites only what changed."""
    updated_at: Mapped[datetime]


class KbUse(Base):
    """An article shown with a ticket, solving it ("This solved it"), or sent by an agent."""

    __tablename__ = "kb_uses"
    __table_args__ = (
        Index("ix_kb_uses_ticket", "ticket_id", "kind"),
        Index("ix_kb_uses_article", "article_id", "kind"),
        Index("ix_kb_uses_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    article_id: Mapped[int] = mapped_column(ForeignKey("kb_articles.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    at: Mapped[datetime]


# KbHeldRequest.status values.
HELD, FILED, SELF_SOLVED = "held", "filed", "solved"


class KbHeldRequest(Base):
    """A request held back in ``ask_first`` mode while the person reads the articles offered.

    Filed as a ticket on "I still need help" or when its timer (``due_at``) fires; dropped on "Solved".
    Kept durable so a restart loses nothing: the timer row finds it again.
    """

    __tablename__ = "kb_held_requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    intake_key: Mapped[str] = mapped_column(String(300), unique=True)
    """The inbound event (``source:key``), so a platform's retry is held once."""
    status: Mapped[str] = mapped_column(String(16), default=HELD)
    person: Mapped[dict[str, Any]] = mapped_column(JSON)
    """Who asked, as the adapter saw them (platform, user id, name, zone)."""
    summary: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str | None] = mapped_column(String(100))
    priority: Mapped[str | None] = mapped_column(String(16))
    origin: Mapped[dict[str, Any]] = mapped_column(JSON)
    articles: Mapped[dict[str, Any]] = mapped_column(JSON)
    """``{"ids": [...]}``: the articles offered, best first."""
    created_at: Mapped[datetime]
    due_at: Mapped[datetime]
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"))


@dataclass(frozen=True)
class Hit:
    """A search result, best first."""

    article_id: int
    title: str
    url: str | None
    source: str
    score: float


def query_terms(query: str, limit: int = 24) -> list[str]:
    """The words of ``query`` worth searching for (lower-cased, stop words out, at most ``limit``)."""
    words: list[str] = []
    for word in _WORD.findall(query.lower()):
        word = word.replace("'", "")
        if word and word not in _STOP and word not in words:
            words.append(word)
    return words[:limit]


def _dialect(session: AsyncSession | AsyncConnection) -> str:
    if isinstance(session, AsyncConnection):
        return session.dialect.name
    return session.get_bind().dialect.name


async def search(session: AsyncSession | AsyncConnection, query: str, *, limit: int = 3) -> list[Hit]:
    """The ``limit`` best articles for ``query``: one indexed statement, ranked by the database."""
    terms = query_terms(query)
    if not terms:
        return []
    if _dialect(session) == "postgresql":
        # Any word may match (OR); the english configuration stems and drops its own stop words. The best
        # few are picked in the subquery, so only they are joined back to their rows.
        statement = text(
            "SELECT a.id, a.title, a.url, a.source, best.score FROM ("
            f"SELECT id, ts_rank({PG_DOCUMENT_COLUMN}, q) AS score FROM kb_articles, to_tsquery('english', :q) q "
            f"WHERE {PG_DOCUMENT_COLUMN} @@ q ORDER BY score DESC, id LIMIT :limit) best "
            "JOIN kb_articles a ON a.id = best.id ORDER BY best.score DESC, a.id")
        pg_query = " | ".join(f"'{term}'" for term in terms)
        rows = (await session.execute(statement, {"q": pg_query, "limit": limit})).all()
    else:
        # Each term quoted, so FTS5 reads none of them as its own syntax (NEAR, AND, column filters);
        # ``rank`` is the weighted bm25 configured by migration 0011.
        fts_query = " OR ".join(f'"{term}"' for term in terms)
        statement = text(
            "SELECT a.id, a.title, a.url, a.source, -best.rank FROM ("
            f"SELECT rowid, rank FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q ORDER BY rank LIMIT :limit) best "
            "JOIN kb_articles a ON a.id = best.rowid ORDER BY best.rank")
        rows = (await session.execute(statement, {"q": fts_query, "limit": limit})).all()
    return [Hit(int(r[0]), str(r[1]), r[2], str(r[3]), float(r[4])) for r in rows]


async def write_search_row(session: AsyncSession, article: KbArticle) -> None:
    """Keep SQLite's FTS table in step with ``article`` (PostgreSQL's index follows the row by itself)."""
    if _dialect(session) != "sqlite":
        return
    await session.execute(text(f"DELETE FROM {FTS_TABLE} WHERE rowid = :id"), {"id": article.id})
    await session.execute(text(f"INSERT INTO {FTS_TABLE} (rowid, title, tags, body) VALUES (:id, :t, :g, :b)"),
                          {"id": article.id, "t": article.title, "g": article.tags, "b": article.body})


async def delete_articles(session: AsyncSession, ids: list[int]) -> None:
    """Remove articles (and, on SQLite, their search rows)."""
    if not ids:
        return
    if _dialect(session) == "sqlite":
        for article_id in ids:
            await session.execute(text(f"DELETE FROM {FTS_TABLE} WHERE rowid = :id"), {"id": article_id})
    await session.execute(delete(KbUse).where(KbUse.article_id.in_(ids)))
    await session.execute(delete(KbArticle).where(KbArticle.id.in_(ids)))


async def lock_index(session: AsyncSession) -> None:
    """Serialise reindexing across replicas (every replica runs the cron at the same minute) for the rest of
    the transaction. SQLite's writers are serialised already; PostgreSQL takes a transaction advisory lock."""
    await serialise_across_replicas(session, INDEX_LOCK)


async def articles_by_source(session: AsyncSession) -> dict[str, KbArticle]:
    """Every indexed article, by its source."""
    return {a.source: a for a in (await session.scalars(select(KbArticle))).all()}


async def cancel_timer(session: AsyncSession, dedup_key: str, now: datetime) -> None:
    """Cancel the pending timer with ``dedup_key`` (a held request's, which has no ticket)."""
    await session.execute(update(Timer).where(Timer.dedup_key == dedup_key, Timer.done_at.is_(None))
                          .values(done_at=now, outcome="cancelled").execution_options(synchronize_session=False))
