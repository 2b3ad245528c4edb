"""Brings the database's article index in step with the articles' sources (``ithelp kb reindex``, cron)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from bot.clock import Clock
from bot.config_knowledge import KnowledgeConfig
from bot.knowledge.articles import ArticleSource, load_articles
from store.db import Database
from store.knowledge import KbArticle, articles_by_source, delete_articles, lock_index, write_search_row

log = logging.getLogger("ithelp.knowledge")


@dataclass(frozen=True)
class ReindexResult:
    added: int
    changed: int
    removed: int
    unchanged: int
    problems: list[tuple[str, str]]


async def sync_articles(db: Database, clock: Clock, articles: list[ArticleSource]) -> ReindexResult:
    """Write ``articles`` into the index: new and changed ones (by checksum) rewritten, vanished ones removed."""
    added = changed = unchanged = 0
    now = clock.now()
    async with db.transaction() as session:
        await lock_index(session)
        indexed = await articles_by_source(session)
        for article in articles:
            row = indexed.pop(article.source, None)
            if row is not None and row.checksum == article.checksum:
                unchanged += 1
                continue
            if row is None:
                row = KbArticle(source=article.source)
                session.add(row)
                added += 1
            else:
                changed += 1
            row.title, row.tags, row.url, row.body = article.title, article.tags, article.url, article.body
            row.checksum, row.updated_at = article.checksum, now
            await session.flush()
            await write_search_row(session, row)
        await delete_articles(session, [row.id for row in indexed.values()])
    return ReindexResult(added, changed, len(indexed), unchanged, [])


async def reindex(db: Database, clock: Clock, config: KnowledgeConfig) -> ReindexResult:
    """Read the folder and links (off the event loop) and sync the index.

    A folder with problems is still indexed for the articles that read well, except that nothing is
    removed when the folder itself is missing (a mount that went away must not empty the knowledge base).
    """
    articles, problems = await asyncio.to_thread(load_articles, config)
    if any(where == "knowledge.folder" for where, _ in problems):
        log.warning("knowledge folder unavailable, index left as it is: %s", problems)
        return ReindexResult(0, 0, 0, 0, problems)
    result = await sync_articles(db, clock, articles)
    for where, message in problems:
        log.warning("knowledge article skipped: %s: %s", where, message)
    return ReindexResult(result.added, result.changed, result.removed, result.unchanged, problems)
