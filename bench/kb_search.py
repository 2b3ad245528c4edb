"""Knowledge-base search latency over 5,000 articles, on SQLite (FTS5) and PostgreSQL (GIN full-text).

The 70 articles of the shipped test collection are multiplied into ``--articles`` distinct ones (each copy
gets a numbered title and sentences borrowed from three other articles, so terms spread across the corpus
as in a real knowledge base), indexed through the same code as ``ithelp kb reindex``, then the 110
labelled queries of ``tests/data/kb/queries.yaml`` are searched round-robin, one ``store.knowledge.search``
(one SQL statement) each, timed on its own. Target: p99 <= 50 ms.

    python bench/kb_search.py [--articles 5000] [--searches 2000] [--sqlite-only]

PostgreSQL URL: ``ITHELP_BENCH_POSTGRES_URL`` (default postgresql+asyncpg://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from _support import POSTGRES_URL, ROOT, drop_schema, make_schema

from bot.clock import ManualClock
from bot.config_knowledge import KnowledgeConfig
from bot.knowledge.articles import ArticleSource, load_articles
from bot.knowledge.index import sync_articles
from store.db import Database
from store.knowledge import search
from store.migrate import upgrade

DATA = ROOT / "tests" / "data" / "kb"


def corpus(size: int) -> list[ArticleSource]:
    base, problems = load_articles(KnowledgeConfig(folder=str(DATA / "articles")))
    assert not problems, problems
    rng = random.Random(21)
    sentences = [s.strip() + "." for a in base for s in a.body.split(".") if len(s.strip()) > 20]
    out = []
    for n in range(size):
        article = base[n % len(base)]
        extra = " ".join(rng.sample(sentences, 3))
        out.append(ArticleSource(source=f"bench/{n}.md", title=f"{article.title} (KB{n:05d})", tags=article.tags,
                                 url=None, body=f"{article.body}\n\n{extra}"))
    return out


async def measure(db: Database, articles: list[ArticleSource], searches: int) -> tuple[float, list[float]]:
    await upgrade(db)
    clock = ManualClock(datetime(2026, 12, 3, 7, 0, tzinfo=UTC))
    started = time.perf_counter()
    await sync_articles(db, clock, articles)
    index_seconds = time.perf_counter() - started
    queries = [case["q"] for case in yaml.safe_load((DATA / "queries.yaml").read_text())]
    latencies = []
    async with db.reading() as session:
        for query in queries[:10]:  # warm the connection and the statement cache
            await search(session, query)
        for n in range(searches):
            t0 = time.perf_counter()
            hits = await search(session, queries[n % len(queries)], limit=3)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert hits, queries[n % len(queries)]
    return index_seconds, latencies


def line(name: str, size: int, index_seconds: float, latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (f"{name:<11} {size:>6} articles  indexed in {index_seconds:5.1f} s  {len(latencies)} searches: "
            f"p50 {statistics.median(ordered):6.2f} ms  p99 {p99:6.2f} ms  max {ordered[-1]:6.2f} ms  "
            f"(target p99 <= 50 ms: {'met' if p99 <= 50 else 'NOT met'})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=5000)
    parser.add_argument("--searches", type=int, default=2000)
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args()
    articles = corpus(args.articles)
    with tempfile.TemporaryDirectory() as folder:
        db = Database(f"sqlite+aiosqlite:///{Path(folder) / 'kb.db'}")
        try:
            print(line("SQLite", args.articles, *await measure(db, articles, args.searches)), flush=True)
        finally:
            await db.dispose()
    if args.sqlite_only:
        return
    schema = await make_schema("bench_kb")
    db = Database(POSTGRES_URL, schema=schema)
    try:
        print(line("PostgreSQL", args.articles, *await measure(db, articles, args.searches)), flush=True)
    finally:
        await db.dispose()
        await drop_schema(schema)


if __name__ == "__main__":
    asyncio.run(main())
