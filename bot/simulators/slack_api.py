"""A fake Slack Web API served over real HTTP for end-to-end tests.

Point ``slack_sdk.web.async_client.AsyncWebClient(base_url=fake.url)`` at it and the real
client code (serialisation, headers, retry handlers) runs against it unchanged.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from bot.simulators.slack_messages import conversation_of
from bot.simulators.slack_method_basics import APP_ID, BOT_ID, BOT_NAME, BOT_USER_ID, TEAM_ID, Json, MethodError
from bot.simulators.slack_socket_mode import SocketModeFake
from bot.simulators.slack_workspace import SlackWorkspace

_RATE_LIMITED_METHODS = frozenset({"chat.postMessage", "chat.update"})
_EVERY_METHOD = "*"


@dataclass
class SlackCall:
    """One request received by the fake, with the answer it got."""

    method: str
    args: Json
    headers: dict[str, str]
    at: float
    status: int = 200
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the call was answered with HTTP 200 and ``ok: true``."""
        return self.status == 200 and self.error is None


@dataclass
class _Fault:
    status: int
    retry_after: int
    error: str | None
    remaining: int
    channel: str | None = None


@dataclass
class _RateLimit:
    per_channel_per_second: float | None
    workspace_per_minute: int | None
    last_by_channel: dict[str, float] = field(default_factory=dict)
    workspace_window: deque[float] = field(default_factory=deque)

    def retry_after(self, channel: str, now: float) -> int | None:
        """Seconds to answer in ``Retry-After`` if a call to ``channel`` now is over a limit, else None."""
        waits: list[float] = []
        last = self.last_by_channel.get(channel)
        if self.per_channel_per_second is not None and last is not None:
            interval = 1.0 / self.per_channel_per_second
            if now - last < interval:
                waits.append(last + interval - now)
        window = self.workspace_window
        while window and window[0] <= now - 60.0:
            window.popleft()
        if self.workspace_per_minute is not None and len(window) >= self.workspace_per_minute:
            waits.append(window[0] + 60.0 - now)
        if not waits:
            return None
        return max(1, math.ceil(max(waits)))

    def accepted(self, channel: str, now: float) -> None:
        """Count a call to ``channel`` answered ok at ``now``."""
        self.last_by_channel[channel] = now
        self.workspace_window.append(now)


def _maybe_json(value: str) -> object:
    """Decode a form/query value that slack_sdk JSON-encoded (``blocks``, ``view``...), else keep it."""
    if value[:1] not in {"[", "{"}:
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, list | dict) else value


async def read_args(request: web.Request) -> Json:
    """A Web API call's arguments, from its query string and its form or JSON body."""
    args: Json = {k: _maybe_json(v) for k, v in request.query.items()}
    if request.content_type == "application/json":
        body = await request.json()
        if isinstance(body, dict):
            args.update(body)
    elif request.can_read_body:
        form = await request.post()
        args.update({k: _maybe_json(v) for k, v in form.items() if isinstance(v, str)})
    return args


def _error(call: SlackCall, error: str) -> web.Response:
    call.error = error
    return web.json_response({"ok": False, "error": error})


def _take_fault(faults: dict[str, list[_Fault]], method: str, channel: str) -> _Fault | None:
    pending = faults.get(method)
    fault = next((f for f in pending or () if f.channel in (None, channel)), None)
    if fault is None or pending is None:
        return None
    fault.remaining -= 1
    if fault.remaining <= 0:
        pending.remove(fault)
    return fault


class FakeSlackApi(SlackWorkspace):
    """An aiohttp server on 127.0.0.1 that answers Slack Web API methods like Slack does.

    Every call is recorded in :attr:`calls`. Posted messages are kept per channel (see
    :attr:`messages`), opened views in :attr:`views` and published home tabs in :attr:`home_views`.
    :attr:`accepted` counts ``chat.postMessage``/``chat.update`` calls answered ``ok``;
    :attr:`rejected_429` counts every HTTP 429 answer (injected or rate-limited).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.calls: list[SlackCall] = []
        self.accepted = 0
        self.rejected_429 = 0
        self._clock = clock
        self._faults: dict[str, list[_Fault]] = {}
        self._revoked: str | None = None
        self._paused: frozenset[str] = frozenset()
        self._resumed = asyncio.Event()
        self._rate_limit: _RateLimit | None = None
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._methods["apps.connections.open"] = self._apps_connections_open
        self.socket_mode = SocketModeFake()
        self.socket_acks = self.socket_mode.socket_acks

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving on an ephemeral port."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle)
        app.router.add_get("/socket-mode", self.socket_mode.serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop serving."""
        self.resume()  # a held answer must not hold up the shutdown
        await self.socket_mode.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None
        self._port = None

    async def __aenter__(self) -> FakeSlackApi:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """Base URL for ``AsyncWebClient(base_url=...)``, ending in ``/api/``."""
        if self._port is None:
            raise RuntimeError("FakeSlackApi is not started")
        return f"http://127.0.0.1:{self._port}/api/"

    # -- seeding and configuration ---------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        status: int = 429,
        retry_after: int = 1,
        times: int = 1,
        *,
        error: str | None = None,
        channel: str | None = None,
    ) -> None:
        """Answer the next ``times`` calls to ``method`` with a failure.

        HTTP 429 with ``Retry-After: retry_after`` when ``status == 429``, any other HTTP status
        with a JSON error body, or, when ``error`` is given, HTTP 200 ``{"ok": false, "error": error}``.
        With ``channel`` (``C…``, or a user id for their IM) only calls landing in that conversation
        fail, as Slack rate-limits ``chat.postMessage`` per channel; calls elsewhere are answered normally.
        """
        where = conversation_of({"channel": channel}) if channel else None
        self._faults.setdefault(method, []).append(_Fault(status, retry_after, error, times, where))

    def revoke_token(self, error: str = "token_revoked") -> None:
        """Refuse every Web API call with ``{"ok": false, "error": error}`` (HTTP 200, as Slack answers a
        revoked or invalid token: ``token_revoked``, ``invalid_auth``, ``account_inactive`` …) until
        :meth:`restore_token`."""
        self._revoked = error

    def restore_token(self) -> None:
        """Accept the bot's token again after :meth:`revoke_token`."""
        self._revoked = None

    def pause(self, *methods: str) -> None:
        """Hold the answers to calls of ``methods`` (every method when none is named; received, and recorded
        once answered) until :meth:`resume`: Slack being slow to answer while people keep clicking."""
        self._paused = frozenset(methods or (_EVERY_METHOD,))
        self._resumed.clear()

    def resume(self) -> None:
        """Answer the calls held by :meth:`pause`, and later ones at once."""
        self._paused = frozenset()
        self._resumed.set()

    def set_rate_limit(self, per_channel_per_second: float | None, workspace_per_minute: int | None, *,
                       clock: Callable[[], float] | None = None) -> None:
        """Enforce Slack-like limits on ``chat.postMessage``/``chat.update`` (``None`` disables one): 429 if the
        channel had an accepted call less than ``1 / per_channel_per_second`` s ago, or ``workspace_per_minute``
        calls were accepted in the last 60 s (sliding window), on ``clock`` if given (e.g. a test's moved one)."""
        if clock is not None:
            self._clock = clock
        if per_channel_per_second is None and workspace_per_minute is None:
            self._rate_limit = None
        else:
            self._rate_limit = _RateLimit(per_channel_per_second, workspace_per_minute)

    def reset(self) -> None:
        """Forget calls, messages, views, pending faults, rate-limit windows and counters.

        The user and user-group directory and the rate-limit settings are kept.
        """
        self.calls.clear()
        self.messages.clear()
        self.views.clear()
        self.home_views.clear()
        self._faults.clear()
        self._revoked = None
        if self._rate_limit is not None:
            self._rate_limit = _RateLimit(
                self._rate_limit.per_channel_per_second, self._rate_limit.workspace_per_minute
            )
        self.accepted = 0
        self.rejected_429 = 0

    # -- inspection ------------------------------------------------------------------------------

    def calls_to(self, method: str, *, include_failed: bool = False) -> list[Json]:
        """Arguments of the calls to ``method``, oldest first (successful ones unless ``include_failed``)."""
        return [c.args for c in self.calls if c.method == method and (include_failed or c.ok)]

    async def wait_for_calls(
        self,
        method: str,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 - part of the fake's documented API
        *,
        include_failed: bool = False,
    ) -> list[Json]:
        """Wait until at least ``count`` matching calls were received; returns all of them.

        Raises AssertionError listing the calls seen so far if that does not happen in ``timeout`` s.
        """

        def enough() -> bool:
            return len(self.calls_to(method, include_failed=include_failed)) >= count

        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(enough)
        except TimeoutError:
            seen = "\n".join(f"  {c.method} -> {c.status} {c.error or 'ok'} {c.args}" for c in self.calls) or "  (none)"
            raise AssertionError(
                f"expected {count} {'' if include_failed else 'successful '}call(s) to {method} "
                f"within {timeout}s, got {len(self.calls_to(method, include_failed=include_failed))}."
                f" Calls seen:\n{seen}"
            ) from None
        return self.calls_to(method, include_failed=include_failed)

    # -- HTTP ------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await read_args(request)
        if method in self._paused or _EVERY_METHOD in self._paused:
            await self._resumed.wait()
        call = SlackCall(method, args, dict(request.headers), self._clock())
        response = self._answer(call, request.headers.get("Authorization", ""))
        call.status = response.status
        self.calls.append(call)
        async with self._changed:
            self._changed.notify_all()
        return response

    def _answer(self, call: SlackCall, authorization: str) -> web.Response:
        # Socket Mode connections are opened with the app-level token (xapp-), everything else with xox*.
        token_prefix = "Bearer xapp" if call.method == "apps.connections.open" else "Bearer xox"
        if not authorization.startswith(token_prefix):
            return _error(call, "not_authed")
        if self._revoked is not None:
            return _error(call, self._revoked)
        fault = _take_fault(self._faults, call.method, conversation_of(call.args))
        if fault is not None:
            if fault.error is not None:
                return _error(call, fault.error)
            return self._http_error(call, fault.status, fault.retry_after)
        implementation = self._methods.get(call.method)
        if implementation is None:
            return _error(call, "unknown_method")
        rate_limited = call.method in _RATE_LIMITED_METHODS
        if rate_limited:
            limit = self._rate_limit
            retry_after = limit.retry_after(conversation_of(call.args), self._clock()) if limit else None
            if retry_after is not None:
                return self._http_error(call, 429, retry_after)
        try:
            body = implementation(call.args)
        except MethodError as e:
            return _error(call, e.error)
        if rate_limited:
            self.accepted += 1
            if self._rate_limit is not None:
                self._rate_limit.accepted(conversation_of(call.args), self._clock())
        return web.json_response({"ok": True, **body})

    def _http_error(self, call: SlackCall, status: int, retry_after: int) -> web.Response:
        if status == 429:
            self.rejected_429 += 1
            call.error = "ratelimited"
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": str(retry_after)},
            )
        call.error = "internal_error"
        return web.json_response({"ok": False, "error": "internal_error"}, status=status)

    # -- method implementations ------------------------------------------------------------------

    def _apps_connections_open(self, args: Json) -> Json:
        return {"url": f"ws://127.0.0.1:{self._port}/socket-mode"}

    # -- Socket Mode (served by SocketModeFake) -------------------------------------------------------

    async def send_envelope(self, kind: str, payload: Json, *, timeout: float = 10) -> Json:  # noqa: ASYNC109
        """Deliver ``payload`` over Socket Mode (``kind``: ``slash_commands``, ``interactive``,
        ``events_api``) once the app is connected, and return the payload of the app's ack."""
        return await self.socket_mode.send_envelope(kind, payload, timeout=timeout)

    async def drop_sockets(self) -> int:
        """Close every Socket Mode connection; returns how many there were."""
        return await self.socket_mode.drop_sockets()

    async def wait_for_sockets(self, count: int = 1, *, timeout: float = 10) -> None:  # noqa: ASYNC109
        """Wait until ``count`` Socket Mode connections are open."""
        await self.socket_mode.wait_for_sockets(count, timeout=timeout)


__all__ = ["APP_ID", "BOT_ID", "BOT_NAME", "BOT_USER_ID", "TEAM_ID", "FakeSlackApi", "SlackCall", "read_args"]
