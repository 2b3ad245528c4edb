"""How offered articles read in a message: a numbered list, each a link or, without a page, its opening lines."""

from __future__ import annotations

from collections.abc import Sequence

from bot.views import Link, Span
from store.knowledge import KbArticle

EXCERPT = 280


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def excerpt(article: KbArticle, limit: int = EXCERPT) -> str:
    """The article's body as one paragraph of plain words (Markdown headings' marks dropped)."""
    return clip(" ".join(article.body.replace("#", " ").split()), limit)


def article_lines(articles: Sequence[KbArticle]) -> tuple[Span, ...]:
    """One numbered line per article: its link, or its title and opening lines when it has no page."""
    body: list[Span] = []
    for position, article in enumerate(articles, start=1):
        if body:
            body.append("\n")
        body.append(f"{position}. ")
        body.append(Link(article.url, article.title) if article.url else article.title)
        if not article.url and article.body:
            body.append("\n" + excerpt(article))
    return tuple(body)
