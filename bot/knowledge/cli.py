"""``ithelp kb reindex``: bring the knowledge-base index in step with the folder and links in app.yaml."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bot.clock import SystemClock
from bot.config import AppConfig
from bot.config_cli import config_path, load_or_complain
from bot.knowledge.articles import load_articles
from bot.knowledge.index import reindex
from store.db import Database


def folder_problems(config: AppConfig) -> list[tuple[str, str]]:
    """What ``check-config`` reports about ``knowledge.folder``: each unusable file, by file and key."""
    if not config.knowledge.folder:
        return []
    return load_articles(config.knowledge)[1]


def cmd_kb_reindex(args: argparse.Namespace) -> int:
    config = load_or_complain(config_path(args.config))
    if config is None:
        return 2
    if not config.knowledge.enabled:
        print("knowledge: has no folder or links in app.yaml; nothing to index")
        return 1

    async def run() -> int:
        db = Database(config.database.url, schema=config.database.schema_name)
        try:
            result = await reindex(db, SystemClock(), config.knowledge)
        finally:
            await db.dispose()
        for where, message in result.problems:
            print(f"{where}: {message}")
        print(f"indexed: {result.added} added, {result.changed} changed, {result.removed} removed, "
              f"{result.unchanged} unchanged")
        return 1 if result.problems else 0

    return asyncio.run(run())


def add_kb_parser(sub: Any) -> None:
    """Add ``ithelp kb …`` to the command line."""
    kb = sub.add_parser("kb", help="knowledge base")
    kb_sub = kb.add_subparsers(dest="kb_command", required=True)
    again = kb_sub.add_parser("reindex", help="index the articles of knowledge.folder and knowledge.links")
    again.add_argument("--config")
    again.set_defaults(func=cmd_kb_reindex)
