"""Slack Socket Mode, faked: the WebSocket an app connects to, envelopes sent over it and the app's acks."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp
from aiohttp import web

Json = dict[str, Any]


class SocketModeFake:
    """The Socket Mode side of ``FakeSlackApi`` (``/socket-mode``)."""

    def __init__(self) -> None:
        self.socket_acks: dict[str, Json] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._changed = asyncio.Condition()

    async def close(self) -> None:
        """Close every connection (the server is stopping)."""
        for socket in list(self._sockets):
            await socket.close()

    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self._sockets.append(socket)
        await socket.send_json({"type": "hello", "num_connections": len(self._sockets),
                                "connection_info": {"app_id": "A0FAKE"}})
        async with self._changed:
            self._changed.notify_all()
        try:
            async for message in socket:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                ack = json.loads(message.data)
                self.socket_acks[str(ack.get("envelope_id"))] = ack.get("payload") or {}
                async with self._changed:
                    self._changed.notify_all()
        finally:
            self._sockets.remove(socket)
        return socket

    async def send_envelope(self, kind: str, payload: Json, *, timeout: float = 10) -> Json:  # noqa: ASYNC109
        """Deliver ``payload`` over Socket Mode (``kind``: ``slash_commands``, ``interactive``,
        ``events_api``) once the app is connected, and return the payload of the app's ack."""
        envelope_id = f"env-{uuid.uuid4().hex}"
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self._sockets))
            await self._sockets[0].send_json({"envelope_id": envelope_id, "type": kind, "payload": payload,
                                              "accepts_response_payload": True, "retry_attempt": 0,
                                              "retry_reason": ""})
            async with self._changed:
                await self._changed.wait_for(lambda: envelope_id in self.socket_acks)
        return self.socket_acks[envelope_id]

    async def drop_sockets(self) -> int:
        """Close every Socket Mode connection, as when Slack rotates its servers or the network drops;
        returns how many there were."""
        sockets = list(self._sockets)
        for socket in sockets:
            await socket.close()
        return len(sockets)

    async def wait_for_sockets(self, count: int = 1, *, timeout: float = 10) -> None:  # noqa: ASYNC109
        """Wait until ``count`` Socket Mode connections are open."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self._sockets) >= count)


__all__ = ["SocketModeFake"]
