"""The spine every service is built on: database, clock, metrics, roster, tickets, timer engine and outbox.

``bot.desk.build_desk`` (the composition root) makes one ``Core`` and hands it to each service's
constructor, so no service imports the root and no service is patched after it is built.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import time

from bot.business_time import BusinessCalendar
from bot.clock import Clock
from bot.config import AppConfig
from bot.engine import OutboxWorker, RequestsFirst, TimerEngine
from bot.metrics import Metrics
from bot.people import AgentRoster
from bot.tickets import TicketService
from store.db import Database


class Wake:
    """Asks the engine to run now (new timers or outbox rows are due) instead of at its next interval.

    Services hold the ``Wake`` from the start; the engine runner connects itself when the server starts.
    Without a runner (unit tests drive the engine by hand) waking does nothing.
    """

    def __init__(self) -> None:
        self._run: Callable[[], None] | None = None

    def connect(self, run: Callable[[], None]) -> None:
        self._run = run

    def __call__(self) -> None:
        if self._run is not None:
            self._run()


@dataclass(frozen=True)
class CronJob:
    """A job at a wall-clock time in a zone: daily, or weekly on ``day`` (``mon`` … ``sun``).

    ``run`` returns True when it queued work, so the engine runs at once.
    """

    job_id: str
    at: time
    zone: str
    run: Callable[[], Awaitable[bool]]
    day: str | None = None


@dataclass(frozen=True)
class Core:
    """What every service of the desk shares."""

    config: AppConfig
    db: Database
    clock: Clock
    metrics: Metrics
    roster: AgentRoster
    calendars: dict[str, BusinessCalendar]
    tickets: TicketService
    timers: TimerEngine
    outbox: OutboxWorker
    requests: RequestsFirst
    wake: Wake
