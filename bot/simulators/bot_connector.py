"""A fake Microsoft Bot Connector service (the ``serviceUrl`` of Teams activities) for end-to-end tests.

The bot under test uses botbuilder's real ``CloudAdapter``/``ConnectorClient``; point the ``serviceUrl`` of
inbound activities at :attr:`FakeBotConnector.service_url` and every outbound call lands here, where it is
recorded and answered the way the real service answers (ids, 404 for unknown activities, 403/429 faults).

ConnectorClient percent-encodes every path parameter with ``quote(value, safe="")`` (``a:1x`` becomes
``a%3A1x``, ``19:x@thread.tacv2;messageid=1`` becomes ``19%3Ax%40thread.tacv2%3Bmessageid%3D1``); the fake
reads the raw path segments and decodes them itself, so recorded ids are the plain ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import unquote

from aiohttp import web

from bot.simulators.connector_conversations import Answer, ConnectorConversations, JSONDict, error_body

_Handler = Callable[[list[str], JSONDict | None], Answer]


@dataclass(frozen=True)
class ConnectorCall:
    """One HTTP call the bot made to the connector, as recorded by the fake."""

    method: str
    path: str
    conversation_id: str | None
    activity_id: str | None
    reply_to_id: str | None
    body: JSONDict | None
    at: float
    status: int
    response: JSONDict | list[JSONDict] | None
    authorization: str | None

    @property
    def ok(self) -> bool:
        """Whether the fake answered with a 2xx status."""
        return 200 <= self.status < 300


@dataclass(frozen=True)
class _Fault:
    status: int
    retry_after: int | None
    code: str | None


_DEFAULT_CODES = {403: "MessageWritesBlocked", 429: "TooManyRequests", 500: "InternalServerError"}


class FakeBotConnector:
    """Bot Connector REST API (v3 conversations) served by aiohttp on 127.0.0.1 with an ephemeral port.

    What the connector holds (activities, 1:1 chats, the roster) is :attr:`conversations`; this class serves it,
    records every call in :attr:`activities` and injects faults, blocks and refused credentials.
    ``path_prefix`` mimics regional service URLs such as ``https://smba.trafficmanager.net/amer/``.
    """

    def __init__(self, *, path_prefix: str = "") -> None:
        self._prefix = "/" + path_prefix.strip("/") if path_prefix.strip("/") else ""
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._changed = asyncio.Condition()
        self.conversations = ConnectorConversations()
        self.activities: list[ConnectorCall] = []
        self.accepted = 0
        self.rejected = 0
        self._faults: list[_Fault] = []
        self._blocked: dict[str, str] = {}
        self._refusing_credentials = False

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving on 127.0.0.1 with an ephemeral port."""
        app = web.Application()
        routes: list[tuple[str, str, _Handler]] = [
            ("POST", "/v3/conversations", self.conversations.create_conversation),
            ("POST", "/v3/conversations/{conversation}/activities", self.conversations.send),
            ("POST", "/v3/conversations/{conversation}/activities/{activity}", self.conversations.send),
            ("PUT", "/v3/conversations/{conversation}/activities/{activity}", self.conversations.update),
            ("DELETE", "/v3/conversations/{conversation}/activities/{activity}", self.conversations.delete),
            ("GET", "/v3/conversations/{conversation}/members", self.conversations.members),
            ("GET", "/v3/conversations/{conversation}/pagedmembers", self.conversations.paged_members),
            ("GET", "/v3/conversations/{conversation}/members/{member}", self.conversations.member),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, self._prefix + path, self._wrap(handler))
        app.router.add_route("*", "/{tail:.*}", self._wrap(self._unknown_route))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop serving; recorded calls stay readable."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def service_url(self) -> str:
        """The ``serviceUrl`` to put in inbound activities, e.g. ``http://127.0.0.1:PORT/``."""
        if self._port is None:
            raise RuntimeError("FakeBotConnector is not started")
        return f"http://127.0.0.1:{self._port}{self._prefix}/"

    # -- seeding, faults, inspection --------------------------------------------------------------------

    def add_member(self, user_id: str, name: str, aad_object_id: str, email: str | None = None) -> None:
        """Add a person to the roster served by the members endpoints (for every conversation)."""
        self.conversations.add_member(user_id, name, aad_object_id, email)

    def fail_next(
        self, status: int = 429, times: int = 1, retry_after: int | None = 1, code: str | None = None
    ) -> None:
        """Answer the next ``times`` calls (any route) with ``status`` (429 carries ``Retry-After``)."""
        self._faults.extend(_Fault(status, retry_after if status == 429 else None, code) for _ in range(times))

    def refuse_credentials(self) -> None:
        """Answer every call 401, as the connector does once the bot's app secret is rotated or revoked,
        until :meth:`accept_credentials`."""
        self._refusing_credentials = True

    def accept_credentials(self) -> None:
        """Accept the bot's token again after :meth:`refuse_credentials`."""
        self._refusing_credentials = False

    def block_conversation(self, conversation_id: str, code: str = "ConversationBlockedByUser") -> None:
        """Answer every later call to ``conversation_id`` with 403 ``code`` (a user who blocked the bot)."""
        self._blocked[conversation_id] = code

    def sent_to(self, conversation_id: str) -> list[JSONDict]:
        """Bodies of the activities accepted by POST to ``conversation_id`` (sends and replies), in order."""
        return [
            c.body
            for c in self.activities
            if c.ok and c.method == "POST" and c.conversation_id == conversation_id and c.body is not None
        ]

    def updates_to(self, conversation_id: str) -> list[ConnectorCall]:
        """Accepted PUTs (update_activity) to ``conversation_id``, in order."""
        return [c for c in self.activities if c.ok and c.method == "PUT" and c.conversation_id == conversation_id]

    def activity(self, conversation_id: str, activity_id: str) -> JSONDict | None:
        """The current (latest updated) body of an activity the bot posted, or None if unknown or deleted."""
        return self.conversations.activity(conversation_id, activity_id)

    async def wait_for(
        self,
        predicate: Callable[[ConnectorCall], bool],
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 - a plain deadline is the point of this helper
    ) -> list[ConnectorCall]:
        """Wait until ``count`` recorded calls match ``predicate``; return the first ``count`` of them.

        Raises AssertionError listing every recorded call if that does not happen within ``timeout`` seconds.
        """

        def matches() -> list[ConnectorCall]:
            return [c for c in self.activities if predicate(c)]

        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: len(matches()) >= count)
        except TimeoutError:
            seen = (
                "\n".join(f"  {c.method} {c.path} -> {c.status} body={c.body!r}" for c in self.activities)
                or "  (nothing)"
            )
            raise AssertionError(
                f"expected {count} matching connector call(s) within {timeout}s, got {len(matches())}; seen:\n{seen}"
            ) from None
        return matches()[:count]

    def reset(self) -> None:
        """Forget recorded calls, stored activities, roster, faults and blocks."""
        self.activities.clear()
        self.accepted = self.rejected = 0
        self.conversations.reset()
        self._faults.clear()
        self._blocked.clear()
        self._refusing_credentials = False

    # -- HTTP ------------------------------------------------------------------------------------------------

    def _wrap(self, handler: _Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def endpoint(request: web.Request) -> web.Response:
            raw = request.rel_url.raw_path.removeprefix(self._prefix).strip("/").split("/")
            segments = [unquote(s) for s in raw]
            conversation_id = segments[2] if len(segments) > 2 and segments[:2] == ["v3", "conversations"] else None
            activity_id = segments[4] if len(segments) > 4 and segments[3] == "activities" else None
            body: JSONDict | None = await request.json() if request.can_read_body else None
            status, response, headers = self._answer(handler, segments, body, conversation_id)
            if 200 <= status < 300:
                self.accepted += 1
            else:
                self.rejected += 1
            reply_to = body.get("replyToId") if body else None
            call = ConnectorCall(
                method=request.method,
                path="/" + "/".join(segments),
                conversation_id=conversation_id,
                activity_id=activity_id,
                reply_to_id=reply_to if isinstance(reply_to, str) else None,
                body=body,
                at=time.monotonic(),
                status=status,
                response=response,
                authorization=request.headers.get("Authorization"),
            )
            async with self._changed:
                self.activities.append(call)
                self._changed.notify_all()
            if response is None:
                return web.Response(status=status, headers=headers)
            return web.json_response(response, status=status, headers=headers)

        return endpoint

    def _answer(
        self, handler: _Handler, segments: list[str], body: JSONDict | None, conversation_id: str | None
    ) -> tuple[int, JSONDict | list[JSONDict] | None, dict[str, str]]:
        if self._refusing_credentials:
            return 401, error_body("Unauthorized", "Authorization has been denied for this request."), {}
        blocked = self._blocked.get(conversation_id) if conversation_id is not None else None
        if blocked is not None:
            return 403, error_body(blocked, "The bot may not post to this conversation."), {}
        if self._faults:
            fault = self._faults.pop(0)
            code = fault.code or _DEFAULT_CODES.get(fault.status, "ServiceError")
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            return fault.status, error_body(code, f"Injected fault {fault.status} {code}."), headers
        status, response = handler(segments, body)
        return status, response, {}

    def _unknown_route(self, segments: list[str], body: JSONDict | None) -> Answer:
        return 404, error_body("NotFound", "The fake connector does not serve /" + "/".join(segments) + ".")
