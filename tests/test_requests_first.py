"""During a burst of chat requests background work steps aside, keeping only its share of the time."""

from __future__ import annotations

import asyncio
from itertools import pairwise

import pytest

from bot.engine import RequestsFirst


class FakeTime:
    """A monotonic clock that only moves when someone sleeps or a unit of work "takes" time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def make_requests_first(time: FakeTime, share: float = 0.1, **kwargs: float) -> RequestsFirst:
    return RequestsFirst(share, monotonic=time.monotonic, sleep=time.sleep, **kwargs)


async def test_background_work_goes_at_once_when_no_request_is_in_flight() -> None:
    time = FakeTime()
    requests = make_requests_first(time)
    async with requests.turn():
        pass
    assert time.now == 1000.0 and not requests.busy()


async def test_background_work_waits_for_the_burst_to_settle_then_goes() -> None:
    time = FakeTime()
    requests = make_requests_first(time, share=0.01, settle=0.05)
    async with requests.turn():
        time.now += 0.01  # a unit before the burst: with a 1 % share the next may go 0.99 s later
    started: list[float] = []

    async def unit() -> None:
        async with requests.turn():
            started.append(time.now)

    with requests.serving():
        waiting = asyncio.ensure_future(unit())
        for _ in range(3):
            await asyncio.sleep(0)
        assert requests.busy() and not started
        ended = time.now
    await asyncio.wait_for(waiting, 1)
    # Quiet = 50 ms without a request: it goes then (polled every 25 ms), long before its share allows.
    assert ended + 0.05 <= started[0] <= ended + 0.05 + 0.026


async def test_during_a_long_burst_background_work_keeps_to_its_share_of_the_time() -> None:
    time = FakeTime()
    requests = make_requests_first(time, share=0.1)
    starts: list[float] = []
    with requests.serving():  # a request is in flight the whole time
        for _ in range(4):
            async with requests.turn():
                starts.append(time.now)
                time.now += 0.02  # each unit takes 20 ms...
    gaps = [b - a for a, b in pairwise(starts)]
    assert gaps == pytest.approx([0.2, 0.2, 0.2], abs=0.011)  # ...so it runs once per 200 ms: 10 %


async def test_a_slow_unit_never_holds_background_work_back_for_more_than_max_pause() -> None:
    time = FakeTime()
    requests = make_requests_first(time, share=0.1, max_pause=1.0)
    starts: list[float] = []
    with requests.serving():
        for _ in range(2):
            async with requests.turn():
                starts.append(time.now)
                time.now += 5.0  # a setup batch that took 5 s (a slow database)
    assert starts[1] - starts[0] == pytest.approx(6.0, abs=0.011)  # 5 s of work + 1 s pause, not 45 s


async def test_under_a_burst_background_units_go_one_at_a_time() -> None:
    time = FakeTime()
    requests = make_requests_first(time)
    running = 0
    most = 0

    async def unit() -> None:
        nonlocal running, most
        async with requests.turn():
            running += 1
            most = max(most, running)
            await time.sleep(0.01)
            running -= 1

    with requests.serving():
        await asyncio.wait_for(asyncio.gather(*(unit() for _ in range(5))), 5)
    assert most == 1


async def test_with_a_share_of_one_background_work_never_steps_aside() -> None:
    time = FakeTime()
    requests = make_requests_first(time, share=1.0)
    with requests.serving():
        for _ in range(3):
            async with requests.turn():
                time.now += 0.5
    assert time.now == pytest.approx(1001.5)  # no pauses at all


def test_a_share_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="share"):
        RequestsFirst(0)
