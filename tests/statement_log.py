"""Records the SQL a ``Database``'s engine sends, for tests that count a hot path's statements."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event


class StatementLog:
    """Every SQL statement the bot's engine sends while it is listening (whitespace collapsed), and how
    many transactions it committed."""

    def __init__(self, db: Any) -> None:
        self.engine = db.engine.sync_engine
        self.statements: list[str] = []
        self.commits = 0

    def _log(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.statements.append(" ".join(statement.split()))

    def _commit(self, _conn: Any) -> None:
        self.commits += 1

    def __enter__(self) -> StatementLog:
        event.listen(self.engine, "before_cursor_execute", self._log)
        event.listen(self.engine, "commit", self._commit)
        return self

    def __exit__(self, *_: Any) -> None:
        event.remove(self.engine, "before_cursor_execute", self._log)
        event.remove(self.engine, "commit", self._commit)

    def starting(self, prefix: str) -> list[str]:
        return [s for s in self.statements if s.startswith(prefix)]
