"""Reads the articles ``knowledge:`` names: Markdown files with YAML front matter, and external links.

Each problem names the file (or ``knowledge.links[i]``) and the key, so ``check-config`` can point at it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from bot.config_knowledge import KnowledgeConfig

MAX_BODY = 20_000
"""Characters of an article's body that are indexed (the rest is rarely what a search is about)."""


@dataclass(frozen=True)
class ArticleSource:
    """One article as read from its source, before it is indexed."""

    source: str
    title: str
    tags: str
    url: str | None
    body: str

    @property
    def checksum(self) -> str:
        text = "\x1f".join((self.title, self.tags, self.url or "", self.body))
        return hashlib.sha256(text.encode()).hexdigest()


def _split_front_matter(text: str) -> tuple[str, str] | None:
    """(front matter, body) of a Markdown file that starts with a ``---`` block, else None."""
    if not text.startswith("---"):
        return None
    lines = text.splitlines(keepends=True)
    for number, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            return "".join(lines[1:number]), "".join(lines[number + 1:])
    return None


def read_markdown(path: Path, source: str) -> tuple[ArticleSource | None, list[tuple[str, str]]]:
    """The article in ``path`` (None with the problems when it can't be used)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [(source, f"can't be read: {exc}")]
    parts = _split_front_matter(text)
    if parts is None:
        return None, [(source, "has no front matter: start the file with a '---' block holding 'title:'")]
    try:
        meta = yaml.safe_load(parts[0]) or {}
    except yaml.YAMLError as exc:
        return None, [(source, f"front matter is not valid YAML: {exc}")]
    if not isinstance(meta, dict):
        return None, [(source, "front matter must be keys and values (title:, tags:, url:)")]
    problems = [(f"{source}: {key}", "is not a front-matter key (use title, tags, url)")
                for key in meta if key not in ("title", "tags", "url")]
    title = meta.get("title")
    if not isinstance(title, str) or not title.strip():
        problems.append((f"{source}: title", "is missing; every article needs a title"))
    tags = meta.get("tags") or []
    if isinstance(tags, str):
        tags = [part.strip() for part in tags.split(",")]
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        problems.append((f"{source}: tags", "must be a list of words, e.g. [vpn, remote]"))
        tags = []
    url = meta.get("url")
    if url is not None and (not isinstance(url, str) or not url.startswith(("https://", "http://"))):
        problems.append((f"{source}: url", "must be an http(s) address"))
    if problems:
        return None, problems
    assert isinstance(title, str)
    return ArticleSource(source=source, title=title.strip(), tags=" ".join(tags), url=url,
                         body=parts[1].strip()[:MAX_BODY]), []


def load_articles(config: KnowledgeConfig) -> tuple[list[ArticleSource], list[tuple[str, str]]]:
    """Every article ``config`` names, and the problems found (each: where, what is wrong)."""
    articles: list[ArticleSource] = []
    problems: list[tuple[str, str]] = []
    if config.folder:
        folder = Path(config.folder)
        if not folder.is_dir():
            problems.append(("knowledge.folder", f"{folder} is not a folder"))
        else:
            for path in sorted(folder.rglob("*.md")):
                article, found = read_markdown(path, path.relative_to(folder).as_posix())
                problems.extend((f"knowledge.folder: {where}", message) for where, message in found)
                if article is not None:
                    articles.append(article)
    for link in config.links:
        url = str(link.url)
        articles.append(ArticleSource(source=f"link:{url}", title=link.title, tags=" ".join(link.keywords),
                                      url=url, body=""))
    return articles, problems
