"""Work a chat request leaves for after its answer, written down before the answer so that none is lost.

A platform that wants its answer within seconds (Slack: 3 s) never sends an answered request again. What the
answer must not wait for (reading the message a :ticket: reaction names, replying in its thread) is recorded
first: a timer row due now, in one short transaction. The engine, woken after every request, runs it straight
away with the task its adapter registered for the kind (``TimerEngine.register_task``), retries it when it
fails, and a replica that dies meanwhile hands it to another.
"""

from __future__ import annotations

from typing import Any

from bot.core import Core
from store.queries import schedule_timer


class DeferredWork:
    """Schedules work for after the ack, as timer rows due now."""

    def __init__(self, core: Core) -> None:
        self.core = core

    async def schedule(self, kind: str, payload: dict[str, Any], *, key: str | None = None,
                       ticket_id: int | None = None) -> bool:
        """Run ``kind`` with ``payload`` (JSON) as soon as the engine can; True if scheduled.

        With ``key`` a second schedule under the same key (the platform retrying its request, a second
        replica doing the same) is a no-op and returns False.
        """
        now = self.core.clock.now()
        async with self.core.db.transaction() as session:
            return await schedule_timer(session, kind=kind, due_at=now, now=now, payload=payload,
                                        dedup_key=key[:200] if key else None, ticket_id=ticket_id)


__all__ = ["DeferredWork"]
