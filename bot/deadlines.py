"""Deadlines for work someone is waiting on: a chat request, a health check.

A hung dependency (a database that stopped answering, not one that is down) makes every await on it wait
for its own timeout, typically tens of seconds, and Slack gives up on a request after 3. :func:`within`
bounds the wait: past the deadline the work is cancelled and the caller gets :class:`DeadlineExceeded`
at once, so it can answer. The cancelled work finishes its clean-up (rolling back, closing connections)
in the background, because that clean-up waits on the same hung dependency.

The deadline also travels with the work (``store.db.REQUEST_DEADLINE``), for the parts that run in tasks
of their own, like the shared intake batch, so they can stop waiting at the same moment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from store.db import REQUEST_DEADLINE, RequestDeadline

T = TypeVar("T")
log = logging.getLogger("ithelp.server")
_abandoned: set[asyncio.Task[Any]] = set()


class DeadlineExceeded(TimeoutError):
    """The work did not finish in time; it has been cancelled. ``saved``: its ticket was committed (or being
    committed) by then, so the answer must not say that nothing was saved."""

    def __init__(self, message: str, *, saved: bool = False) -> None:
        super().__init__(message)
        self.saved = saved


SAVED_LATE = "Got it: your ticket is saved, and I'll send you its number in a moment."
"""The answer, past the deadline, to a request whose ticket was committed (or being committed) by then."""
WROTE_GRACE = 0.3
"""Seconds a request whose ticket is already committed may run past its deadline to give its real answer."""


async def within(seconds: float, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` for at most ``seconds``; past that, cancel it and raise :class:`DeadlineExceeded` without
    waiting for its clean-up. A deadline already running (an outer ``within``) is kept if it is sooner.

    Work whose ticket is committed, or being committed, by then (``RequestDeadline.wrote``) gets
    :data:`WROTE_GRACE` more to give its real answer, and if it still can't, the exception says so."""
    loop = asyncio.get_running_loop()
    outer = REQUEST_DEADLINE.get()
    deadline = RequestDeadline(loop.time() + seconds if outer is None else min(outer.at, loop.time() + seconds))
    token = REQUEST_DEADLINE.set(deadline)
    try:
        task = loop.create_task(work)  # the task copies the context, deadline included
    finally:
        REQUEST_DEADLINE.reset(token)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
        if not done and deadline.wrote:
            done, _ = await asyncio.wait({task}, timeout=WROTE_GRACE)
    except BaseException:  # our own caller went away: so does the work
        _abandon(task)
        raise
    if done:
        return task.result()
    _abandon(task)
    raise DeadlineExceeded(f"not done within {seconds:g}s", saved=deadline.wrote)


def _abandon(task: asyncio.Task[Any]) -> None:
    task.cancel()
    _abandoned.add(task)  # held until it is done: the loop keeps only weak references to tasks
    task.add_done_callback(_forget)


def _forget(task: asyncio.Task[Any]) -> None:
    _abandoned.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.debug("abandoned work ended with %r", task.exception())


async def settle_abandoned(timeout: float) -> None:  # noqa: ASYNC109 - a bound on shutdown, not a deadline rule
    """Give cancelled work of this event loop up to ``timeout`` seconds to finish its clean-up (at shutdown)."""
    loop = asyncio.get_running_loop()
    mine = [task for task in _abandoned if task.get_loop() is loop]
    if mine:
        await asyncio.wait(mine, timeout=timeout)
