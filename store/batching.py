"""Deadlines and queues shared by the group-commit writers (``store.intake``, ``store.people_writer``).

A request served under a deadline (``store.db.REQUEST_DEADLINE``) is answered "nothing was saved" once it
passes, so its row must not be written after that: a batch gives up just before the first deadline in
it, and a request whose caller has already answered, or that is too close to its deadline, is left out.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, TypeVar

from store.db import RequestDeadline

MIN_TIME_LEFT = 0.1
"""Seconds a request must have left before its deadline to go into a batch: one closer to it is left out
(its caller answers that nothing was saved) rather than cut its batch's time short."""
SETTLE_MARGIN = 0.05
"""Seconds before the first deadline in it that a batch gives up: room to tell its requests they got a ticket
before their deadline answers for them."""
UNANSWERED_GRACE = 1.0
"""Seconds past its deadline after which a request left out of the batches is failed here: nobody else
answered it (its caller set no deadline of its own)."""


class Waiting(Protocol):
    done: asyncio.Future[Any]
    deadline: RequestDeadline | None


W = TypeVar("W", bound=Waiting)


def take_batch(queue: list[W], max_batch: int) -> tuple[list[W], list[W]]:
    """The next batch and what stays queued. A request whose caller has gone (answered already, e.g. past its
    deadline: told nothing was saved) is dropped; one too close to its deadline is left out, to be answered
    the same way, because writing its row now could make that answer a lie."""
    now = asyncio.get_running_loop().time()
    batch: list[W] = []
    waiting: list[W] = []
    for index, request in enumerate(queue):
        if request.done.done():
            continue
        if request.deadline is not None and request.deadline.at - now < MIN_TIME_LEFT:
            if now - request.deadline.at > UNANSWERED_GRACE:
                raise_into(request, TimeoutError("no time left to write before the request's deadline"))
            else:
                waiting.append(request)
            continue
        batch.append(request)
        if len(batch) == max_batch:
            return batch, waiting + queue[index + 1:]
    return batch, waiting


async def until_answered(waiting: list[W]) -> None:
    """Wait while only requests past their deadline are queued, until one of them is answered (or given up)."""
    await asyncio.wait([r.done for r in waiting], timeout=UNANSWERED_GRACE, return_when=asyncio.FIRST_COMPLETED)


def time_left(batch: list[W]) -> float | None:
    # A batch gives up when the first of its requests must be answered, so that a row is never written
    # after its requester was told nothing was saved.
    deadlines = [r.deadline.at for r in batch if r.deadline is not None]
    if not deadlines:
        return None
    return max(0.001, min(deadlines) - SETTLE_MARGIN - asyncio.get_running_loop().time())


def raise_into(request: Waiting, exc: BaseException) -> None:
    if request.done.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        request.done.cancel()
    else:
        request.done.set_exception(exc)



def fail_waiting(batch: list[W], queue: list[W], exc: BaseException) -> bool:
    """A batch failed with ``exc``: its requests hear so; on a cancellation (not an ``Exception``) so do the
    queued ones, the queue is emptied, and True says the caller must re-raise."""
    for request in batch:
        raise_into(request, exc)
    if isinstance(exc, Exception):
        return False
    for request in queue:
        raise_into(request, exc)
    queue.clear()
    return True


__all__ = ["MIN_TIME_LEFT", "SETTLE_MARGIN", "UNANSWERED_GRACE", "Waiting", "fail_waiting", "raise_into", "take_batch",
           "time_left", "until_answered"]
