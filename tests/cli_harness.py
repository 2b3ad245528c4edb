"""Running ``ithelp`` maintenance commands from tests, as from a shell, against the test's database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bot.cli import main
from tests.conftest import TEST_CONFIG


def cli_config(tmp_path: Path, db: Any) -> Path:
    """An app.yaml naming the test's database (SQLite file or PostgreSQL schema)."""
    url = db.url.render_as_string(hide_password=False)
    path = tmp_path / "app.yaml"
    path.write_text(TEST_CONFIG + f'database: {{url: "{url}", schema_name: {db.schema or "null"}}}\n')
    return path


async def ithelp(*argv: str) -> int:
    """Run ``ithelp argv…``; its exit status. The command runs its own event loop, as it does from a shell."""
    return await asyncio.to_thread(main, list(argv))
