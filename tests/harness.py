"""Runs the real ``Server`` in-process on an ephemeral port against fake platforms, with a moved clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bot.clock import ManualClock
from bot.config import AppConfig
from bot.server import Server
from store.db import Database


@asynccontextmanager
async def running_server(config: AppConfig, db: Database, clock: ManualClock, *,
                         replica: str | None = None, socket_mode: bool = False) -> AsyncIterator[Server]:
    """Start ``ithelp serve`` in this process on 127.0.0.1:<ephemeral>; stop it afterwards."""
    server = Server(config, clock=clock, db=db, host="127.0.0.1", port=0, replica=replica, socket_mode=socket_mode)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


