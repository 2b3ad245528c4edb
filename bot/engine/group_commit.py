"""Group commit: many writers share one transaction."""


import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """Writes items in batches: each ``record`` waits for the batch that carries it, and the next batch
    takes everything that arrived while the previous one was being written. One writer at a time,
    so concurrent callers share a transaction instead of each paying for their own."""

    def __init__(self, write: Callable[[list[T]], Awaitable[None]]) -> None:
        self._write = write
        self._waiting: list[tuple[T, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, item: T) -> None:
        """Add ``item`` to the next batch and return once it is written (or raise what writing it raised)."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all())
        await done

    async def _write_all(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self._write([item for item, _ in batch])
            except BaseException as exc:  # each caller decides about retrying its own item
                for _, done in batch:
                    if done.done():
                        continue
                    if isinstance(exc, Exception):
                        done.set_exception(exc)
                    else:  # the writer itself was cancelled (shutdown): nobody may wait for it forever
                        done.cancel()
                if not isinstance(exc, Exception):
                    for _, done in self._waiting:
                        done.cancel()
                    self._waiting = []
                    raise
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
