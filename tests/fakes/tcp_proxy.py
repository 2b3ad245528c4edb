"""A TCP proxy that can freeze: a database that hangs instead of going down, as a stuck server or a network
path that silently stops forwarding looks to its clients.

Put it between the bot and PostgreSQL. :meth:`FreezableProxy.freeze` stops relaying bytes in both directions:
connections stay open, new ones are accepted, and nothing answers. :meth:`FreezableProxy.thaw` ends the hang
the way such hangs usually end: every connection open during it is reset, and whatever was held is dropped
(never delivered late); new connections relay normally.
"""

from __future__ import annotations

import asyncio
import contextlib


class FreezableProxy:
    """Relays 127.0.0.1:``port`` to ``upstream_host``:``upstream_port`` until frozen."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._epoch = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def frozen(self) -> bool:
        return not self._flowing.is_set()

    async def start(self) -> FreezableProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        """Reset every connection of the frozen period (held bytes are dropped), then relay again."""
        self._epoch += 1
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        self._flowing.set()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        epoch = self._epoch
        self._writers.add(client_writer)
        await self._flowing.wait()
        if epoch != self._epoch:  # accepted while frozen: reset with the others
            client_writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.add(upstream_writer)
        pumps = [asyncio.ensure_future(self._pump(client_reader, upstream_writer, epoch)),
                 asyncio.ensure_future(self._pump(upstream_reader, client_writer, epoch))]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for writer in (client_writer, upstream_writer):
            writer.transport.abort()
            self._writers.discard(writer)
        for pump in pumps:
            pump.cancel()
            self._tasks.discard(pump)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, epoch: int) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                await self._flowing.wait()  # frozen: hold the bytes
                if epoch != self._epoch:  # the hang ended with a reset: what was held is lost
                    return
                writer.write(data)
                await writer.drain()

    async def close(self) -> None:
        self.thaw()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()

    async def __aenter__(self) -> FreezableProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
