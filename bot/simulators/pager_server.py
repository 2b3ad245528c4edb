"""The base of the pager stand-ins: one aiohttp server on 127.0.0.1 with fault injection (``fail_next``,
``delay_next``) and waiting on the records it accepted (``wait_for``)."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Self, TypeGuard, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Fault:
    status: int | None  # None: answer normally once the delay is over
    retry_after: int | str | None = None
    delay: float = 0.0


class FakeServer(Generic[_T]):
    """One aiohttp server with fault injection and waiting on the records it accepted."""

    def __init__(self) -> None:
        self._records: list[_T] = []
        self._condition = asyncio.Condition()
        self._faults: deque[_Fault] = deque()
        # Set on exit so a delayed handler stops waiting instead of holding up the server's shutdown.
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (only while running)."""
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not running; use it with 'async with'")
        return f"http://127.0.0.1:{self._port}"

    def fail_next(self, status: int, times: int = 1, retry_after: int | str | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` (and ``Retry-After``, seconds or HTTP-date)."""
        self._faults.extend([_Fault(status, retry_after)] * times)

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Hold the next ``times`` requests for ``seconds`` before answering them normally."""
        self._faults.extend([_Fault(None, delay=seconds)] * times)

    # The deadline is the point of this helper, so it takes one despite ASYNC109.
    async def wait_for(self, count: int, timeout: float = 5.0) -> list[_T]:  # noqa: ASYNC109
        """Wait until at least ``count`` requests were accepted and return the records.

        Raises AssertionError listing what was seen if that does not happen within ``timeout`` seconds.
        """
        async with self._condition:
            try:
                async with asyncio.timeout(timeout):
                    await self._condition.wait_for(lambda: len(self._records) >= count)
            except TimeoutError:
                raise AssertionError(
                    f"{type(self).__name__}: waited {timeout}s for {count} accepted request(s), "
                    f"saw {len(self._records)}: {self._describe()}"
                ) from None
            return list(self._records)

    async def __aenter__(self) -> Self:
        app = web.Application(middlewares=[self._fault_middleware()])
        self._add_routes(app)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None
        self._port = None

    def _add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def _describe(self) -> str:
        return repr(self._records)

    async def _record(self, item: _T) -> None:
        async with self._condition:
            self._records.append(item)
            self._condition.notify_all()

    def _fault_middleware(self) -> Middleware:
        @web.middleware
        async def inject_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
            fault = self._faults.popleft() if self._faults else None
            if fault is not None and fault.delay:
                try:
                    await asyncio.wait_for(self._closing.wait(), fault.delay)
                except TimeoutError:
                    pass
                else:
                    return web.json_response({"message": "fake is shutting down"}, status=503)
            if fault is not None and fault.status is not None:
                headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
                return web.json_response(
                    {"status": "injected failure", "message": f"injected HTTP {fault.status}"},
                    status=fault.status,
                    headers=headers,
                )
            return await handler(request)

        return inject_faults


async def json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


def present(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value.strip())


__all__ = ["FakeServer", "json_body", "present"]
