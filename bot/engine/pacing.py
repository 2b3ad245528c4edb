"""When the outbox may next call a platform: per-conversation spacing, and the holds a 429 + Retry-After asks for.

A platform limits twice: each conversation (Slack: about one message a second) and the whole workspace or app
(Slack's per-method tiers, Teams' per-app limits). A 429 does not say which limit was hit, so the first one
holds just its conversation; a second conversation answering 429 while the first is still held means the
limit is the platform's, and then every non-urgent delivery to that platform waits out the Retry-After instead
of each conversation spending a call to learn it again. For a while after such a hold, deliveries to that
platform take turns a few at a time, so the minute the budget refills does not start with every waiting
conversation calling at once and all but a few being told to wait again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from bot.clock import Clock

_REMEMBERED = 10_000
"""How many conversations' last send and hold are kept before the ones that no longer matter are dropped."""
CAREFUL_CALLS = 2
"""Calls in flight at once to a platform that held the whole workspace lately."""
CAREFUL_FOR = timedelta(minutes=2)
"""How long after a platform-wide hold its deliveries stay careful (its budgets are per minute)."""


class Pacing:
    """The outbox's memory of each pacing key's last send, its booked slots and the platforms' holds."""

    def __init__(self, clock: Clock, monotonic: Callable[[], float]) -> None:
        self.clock = clock
        self._monotonic = monotonic
        self._last_send: dict[str, float] = {}  # pacing key -> monotonic time of its last send
        self._booked: dict[str, float] = {}  # pacing key -> latest slot given to a message put back for pacing
        self._held_until: dict[str, datetime] = {}  # pacing key -> end of the platform's Retry-After
        self._platform_held_until: dict[str, datetime] = {}  # channel prefix -> end of a platform-wide hold
        self._careful_turns: dict[str, asyncio.Semaphore] = {}

    def wait_before_sending(self, key: str, interval: float) -> float:
        """Seconds to wait before the next call on ``key`` keeps it ``interval`` after the last one."""
        return self._last_send.get(key, -1e9) + interval - self._monotonic() if interval > 0 else 0.0

    def sent(self, key: str) -> None:
        self._last_send[key] = self._monotonic()

    def book(self, key: str, backlog: float, interval: float) -> datetime:
        """A later slot on ``key`` for a message put back in the store: after the ``backlog`` in hand and
        every slot booked before it."""
        now = self._monotonic()
        slot = max(self._booked.get(key, now), now + backlog) + interval
        self._booked[key] = slot
        return self.clock.now() + timedelta(seconds=slot - now)

    def held_until(self, key: str, platform: str, *, urgent: bool) -> datetime | None:
        """When ``key`` (on ``platform``) may be called again, if a 429 holds it now. Urgent deliveries (pages)
        ignore a platform-wide hold: one call to find out costs less than a page late."""
        now = self.clock.now()
        holds = [self._held_until.get(key)]
        if not urgent:
            holds.append(self._platform_held_until.get(platform))
        live = [until for until in holds if until is not None and until > now]
        return max(live) if live else None

    def hold(self, key: str, platform: str, retry_after: float) -> None:
        """``key`` answered 429 + Retry-After; a second held conversation of ``platform`` holds the platform."""
        now = self.clock.now()
        until = now + timedelta(seconds=retry_after)
        if any(held > now and other != key and other.startswith(f"{platform}:")
               for other, held in self._held_until.items()):
            self._platform_held_until[platform] = max(until, self._platform_held_until.get(platform, until))
        self._held_until[key] = until

    @asynccontextmanager
    async def turn(self, platform: str) -> AsyncIterator[None]:
        """A non-urgent call's turn: a few at a time while ``platform`` has lately held the whole workspace,
        at once otherwise. The caller looks at ``held_until`` again once it has its turn."""
        until = self._platform_held_until.get(platform)
        if until is None or until + CAREFUL_FOR < self.clock.now():
            yield
            return
        turns = self._careful_turns.setdefault(platform, asyncio.Semaphore(CAREFUL_CALLS))
        async with turns:
            yield

    def forget_the_past(self, busy: Collection[str]) -> None:
        """A fan-out to thousands of people leaves one entry per conversation: once there are many, drop
        those that no longer matter (``busy`` keys have messages in hand and are kept)."""
        if len(self._last_send) + len(self._held_until) + len(self._booked) < _REMEMBERED:
            return
        now, mono = self.clock.now(), self._monotonic()
        self._held_until = {key: until for key, until in self._held_until.items() if until > now}
        self._booked = {key: slot for key, slot in self._booked.items() if slot > mono}
        self._last_send = {key: at for key, at in self._last_send.items() if at > mono - 60 or key in busy}
