"""The knowledge base finds the right article for what people actually type, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bot.clock import ManualClock
from bot.config_knowledge import KnowledgeConfig
from bot.knowledge.articles import load_articles
from bot.knowledge.index import reindex, sync_articles
from store.db import Database
from store.knowledge import search

DATA = Path(__file__).parent / "data" / "kb"
TOP3_TARGET = 0.85


def _queries() -> list[dict[str, Any]]:
    queries: list[dict[str, Any]] = yaml.safe_load((DATA / "queries.yaml").read_text())
    return queries


async def _top3_hits(db: Database) -> tuple[int, list[str]]:
    hits, misses = 0, []
    async with db.reading() as session:
        for case in _queries():
            found = [hit.source.removesuffix(".md") for hit in await search(session, case["q"], limit=3)]
            if set(found) & set(case["expect"]):
                hits += 1
            else:
                misses.append(f"{case['q']!r}: got {found}, wanted {case['expect']}")
    return hits, misses


def test_the_shipped_collection_is_big_enough_and_every_label_names_an_article() -> None:
    articles, problems = load_articles(KnowledgeConfig(folder=str(DATA / "articles")))
    assert problems == []
    assert len(articles) >= 60
    queries = _queries()
    assert len(queries) >= 100
    sources = {article.source.removesuffix(".md") for article in articles}
    assert {slug for case in queries for slug in case["expect"]} <= sources


async def test_the_right_article_is_in_the_top_three_for_most_real_questions(db: Database,
                                                                           clock: ManualClock) -> None:
    result = await reindex(db, clock, KnowledgeConfig(folder=str(DATA / "articles")))
    assert result.added >= 60 and result.problems == []
    hits, misses = await _top3_hits(db)
    rate = hits / len(_queries())
    print(f"\ntop-3 hit rate on {db.dialect}: {rate:.1%} ({hits}/{len(_queries())})")
    assert rate >= TOP3_TARGET, "\n".join(misses)


async def test_stemming_matches_other_forms_of_a_word(db: Database, clock: ManualClock) -> None:
    await reindex(db, clock, KnowledgeConfig(folder=str(DATA / "articles")))
    async with db.reading() as session:
        # "printing" and "jammed" are stemmed to the "print"/"jam" the articles use.
        found = [hit.source for hit in await search(session, "printing jammed", limit=3)]
    assert "printer-jam.md" in found


async def test_a_changed_file_is_reindexed_and_a_removed_one_leaves_the_index(db: Database, clock: ManualClock,
                                                                             tmp_path: Path) -> None:
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "a.md").write_text("---\ntitle: Fix the coffee machine\ntags: [coffee]\n---\nDescale it.\n")
    (folder / "b.md").write_text("---\ntitle: Reset the badge reader\ntags: [badge]\n---\nUnplug it.\n")
    config = KnowledgeConfig(folder=str(folder))
    assert (await reindex(db, clock, config)).added == 2
    (folder / "a.md").write_text("---\ntitle: Fix the espresso machine\ntags: [coffee]\n---\nDescale it.\n")
    (folder / "b.md").unlink()
    result = await reindex(db, clock, config)
    assert (result.changed, result.removed, result.unchanged) == (1, 1, 0)
    async with db.reading() as session:
        assert [hit.title for hit in await search(session, "espresso")] == ["Fix the espresso machine"]
        assert await search(session, "badge reader") == []


async def test_a_missing_folder_does_not_empty_the_index(db: Database, clock: ManualClock, tmp_path: Path) -> None:
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "a.md").write_text("---\ntitle: Fix the coffee machine\n---\nDescale it.\n")
    await reindex(db, clock, KnowledgeConfig(folder=str(folder)))
    result = await reindex(db, clock, KnowledgeConfig(folder=str(tmp_path / "gone")))
    assert result.problems and result.removed == 0
    async with db.reading() as session:
        assert len(await search(session, "coffee")) == 1


async def test_search_words_that_look_like_query_syntax_are_just_words(db: Database, clock: ManualClock) -> None:
    await sync_articles(db, clock, [])
    async with db.reading() as session:
        assert await search(session, 'NEAR("x" AND title:y) OR * ^ -z |&! \'') == []
        assert await search(session, "the my is") == []


def test_a_broken_article_is_reported_with_its_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "ok.md").write_text("---\ntitle: Fine\n---\nbody\n")
    (tmp_path / "untitled.md").write_text("---\ntags: [x]\n---\nbody\n")
    (tmp_path / "bare.md").write_text("no front matter here\n")
    (tmp_path / "typo.md").write_text("---\ntitle: T\ntgas: [x]\nurl: ftp://x\n---\n")
    articles, problems = load_articles(KnowledgeConfig(folder=str(tmp_path)))
    assert [a.source for a in articles] == ["ok.md"]
    wheres = {where for where, _ in problems}
    assert wheres == {"knowledge.folder: untitled.md: title", "knowledge.folder: bare.md",
                      "knowledge.folder: typo.md: tgas", "knowledge.folder: typo.md: url"}


async def test_replicas_reindexing_at_the_same_minute_index_each_article_once(databases: Any,
                                                                             clock: ManualClock) -> None:
    import asyncio

    db = await databases.create()
    other = databases.another_handle(db)
    config = KnowledgeConfig(folder=str(DATA / "articles"))
    first, second = await asyncio.gather(reindex(db, clock, config), reindex(other, clock, config))
    assert sorted((first.added, second.added)) == [0, 70]
    assert sorted((first.unchanged, second.unchanged)) == [0, 70]
