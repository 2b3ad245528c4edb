"""Search every table of the desk's database for strings: what a privacy test uses to prove something is gone."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

import store.escalation_models
import store.privacy_models
import store.survey_models  # noqa: F401  (every table on Base.metadata)
from store.db import Database
from store.models import Base


@dataclass(frozen=True)
class Found:
    table: str
    column: str
    row: dict[str, Any]
    needle: str

    def __str__(self) -> str:
        return f"{self.needle!r} in {self.table}.{self.column}: {self.row[self.column]!r}"[:300]


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


async def find_everywhere(db: Database, needles: Iterable[str], *, case_sensitive: bool = False) -> list[Found]:
    """Every (table, column, row) whose string or JSON value contains one of ``needles``: every row of every
    table is read (``Base.metadata.sorted_tables``), and JSON is searched both decoded and as stored."""
    wanted = [n for n in needles if n]
    fold = (lambda s: s) if case_sensitive else str.casefold
    found: list[Found] = []
    async with db.reading() as session:
        for table in Base.metadata.sorted_tables:
            for row in (await session.execute(select(table))).mappings():
                for column, value in row.items():
                    if value is None or not isinstance(value, str | dict | list):
                        continue
                    texts = [*_strings(value), json.dumps(value)] if not isinstance(value, str) else [value]
                    for needle in wanted:
                        if any(fold(needle) in fold(text) for text in texts):
                            found.append(Found(table.name, column, dict(row), needle))
    return found


async def table_rows(db: Database) -> dict[str, int]:
    """How many rows each table holds (to show a search had something to search)."""
    counts: dict[str, int] = {}
    async with db.reading() as session:
        for table in Base.metadata.sorted_tables:
            counts[table.name] = len((await session.execute(select(table))).all())
    return counts
