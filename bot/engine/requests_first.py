"""Requests first: background work steps aside while people wait for an answer."""


import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager


class RequestsFirst:
    """Background work (setting up new tickets, delivering the outbox) steps aside for chat requests.

    Slack and Teams give a request about 3 seconds; a burst of ``/ithelp`` during an outage must be
    answered first. A burst lasts while requests are in flight or one ended less than ``settle``
    seconds ago. During it background units go one at a time, each after the burst ends or after a
    pause that keeps background work to ``share`` of the time (a unit that took d seconds is followed
    by d * (1 - share) / share, at most ``max_pause``): it slows right down, never stops, and runs at
    full speed the moment the burst ends. Pages skip this entirely (``urgent``).
    """

    def __init__(
        self, share: float = 0.1, *, settle: float = 0.05, max_pause: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be more than 0 and at most 1")
        self.share = share
        self.settle = settle
        self.max_pause = max_pause
        self.in_flight = 0
        self._monotonic = monotonic
        self._sleep = sleep
        self._last_request_end = -1e9
        self._next_turn_at = -1e9
        self._turn: asyncio.Lock | None = None

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Wrap the handling of one inbound request."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self._last_request_end = self._monotonic()

    def busy(self) -> bool:
        """True while a burst of requests is going on."""
        return self.in_flight > 0 or self._monotonic() - self._last_request_end < self.settle

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Run one unit of background work: at once when no burst is going on; otherwise one unit at
        a time, when the burst ends or background work's share of the time allows, whichever is first."""
        if self.share >= 1 or not self.busy():
            async with self._paced():
                yield
            return
        if self._turn is None:
            self._turn = asyncio.Lock()
        async with self._turn:
            while self.busy() and (wait := self._next_turn_at - self._monotonic()) > 0:
                # Polled: a burst's end is "no request for `settle` seconds", which no single event marks.
                await self._sleep(min(wait, max(self.settle / 2, 0.005)))
            async with self._paced():
                yield

    @asynccontextmanager
    async def _paced(self) -> AsyncIterator[None]:
        # Every unit, in a burst or not, sets when the next one may go if a burst is on by then.
        started = self._monotonic()
        try:
            yield
        finally:
            now = self._monotonic()
            pause = min((now - started) * (1 - self.share) / self.share, self.max_pause)
            self._next_turn_at = max(self._next_turn_at, now + pause)
