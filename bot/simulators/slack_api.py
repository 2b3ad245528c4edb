"""A fake Slack Web API served over real HTTP for end-to-end tests.

Point ``slack_sdk.web.async_client.AsyncWebClient(base_url=fake.url)`` at it and the real
client code (serialisation, headers, retry handlers) runs against it unchanged.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

Json = dict[str, Any]

BOT_USER_ID = "UBOT"
BOT_ID = "B0001"
TEAM_ID = "T0001"
APP_ID = "A0001"
BOT_NAME = "ithelp"

_RATE_LIMITED_METHODS = frozenset({"chat.postMessage", "chat.update"})
_FIRST_TS_MICROS = 1_700_000_000_000_000


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


class _MethodError(Exception):
    """Raised by a method implementation to answer ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _ts_micros(ts: object) -> int:
    """Slack ``ts`` ("1700000000.000100") as integer microseconds, for ordering and comparison."""
    seconds, _, fraction = str(ts).partition(".")
    return int(seconds or "0") * 1_000_000 + int((fraction + "000000")[:6])


def _format_ts(micros: int) -> str:
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.lower() in {"1", "true", "yes"}
    return bool(value)


def _maybe_json(value: str) -> object:
    """Decode a form/query value that slack_sdk JSON-encoded (``blocks``, ``view``...), else keep it."""
    if value[:1] not in {"[", "{"}:
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, list | dict) else value


def _required(args: Json, *names: str) -> None:
    for name in names:
        if not args.get(name):
            raise _MethodError("invalid_arguments")


class FakeSlackApi:
    """An aiohttp server on 127.0.0.1 that answers Slack Web API methods like Slack does.

    Every call is recorded in :attr:`calls`. Posted messages are kept per channel (see
    :attr:`messages`), opened views in :attr:`views` and published home tabs in :attr:`home_views`.
    :attr:`accepted` counts ``chat.postMessage``/``chat.update`` calls answered ``ok``;
    :attr:`rejected_429` counts every HTTP 429 answer (injected or rate-limited).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.calls: list[SlackCall] = []
        self.messages: dict[str, list[Json]] = {}
        self.views: dict[str, Json] = {}
        self.home_views: dict[str, Json] = {}
        self.accepted = 0
        self.rejected_429 = 0
        self._clock = clock
        self._users: dict[str, Json] = {}
        self._usergroups: dict[str, list[str]] = {}
        self._faults: dict[str, list[_Fault]] = {}
        self._revoked: str | None = None
        self._paused: frozenset[str] = frozenset()
        self._resumed = asyncio.Event()
        self._rate_limit: _RateLimit | None = None
        self._next_ts = _FIRST_TS_MICROS
        self._next_view = 0
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._methods: dict[str, Callable[[Json], Json]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "views.open": self._views_open,
            "views.push": self._views_push,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroups_users_list,
            "conversations.open": self._conversations_open,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "reactions.add": self._reactions_add,
            "apps.connections.open": self._apps_connections_open,
        }
        self.socket_acks: dict[str, Json] = {}
        self._sockets: list[web.WebSocketResponse] = []

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving on an ephemeral port."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle)
        app.router.add_get("/socket-mode", self._socket_mode)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop serving."""
        self.resume()  # a held answer must not hold up the shutdown
        for socket in list(self._sockets):
            await socket.close()
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

    def add_user(
        self,
        user_id: str,
        *,
        name: str | None = None,
        real_name: str | None = None,
        tz: str = "Europe/London",
        is_bot: bool = False,
        email: str | None = None,
    ) -> Json:
        """Add a person to the directory served by ``users.info``; returns the user object."""
        now = datetime.fromtimestamp(time.time(), ZoneInfo(tz))
        offset = now.utcoffset()
        handle = name or user_id.lower()
        display = real_name or handle
        profile: Json = {
            "real_name": display,
            "real_name_normalized": display,
            "display_name": handle,
            "display_name_normalized": handle,
            "team": TEAM_ID,
        }
        if email is not None:
            profile["email"] = email
        user: Json = {
            "id": user_id,
            "team_id": TEAM_ID,
            "name": handle,
            "deleted": False,
            "real_name": display,
            "tz": tz,
            "tz_label": now.tzname(),
            "tz_offset": int(offset.total_seconds()) if offset is not None else 0,
            "is_admin": False,
            "is_owner": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "profile": profile,
        }
        self._users[user_id] = user
        return user

    def add_usergroup(self, group_id: str, user_ids: list[str]) -> None:
        """Define the members returned by ``usergroups.users.list`` for ``group_id``."""
        self._usergroups[group_id] = list(user_ids)

    def add_message(self, channel: str, ts: str, user: str, text: str, thread_ts: str | None = None) -> Json:
        """Seed a message for ``conversations.history``/``replies``; returns the stored message."""
        message: Json = {"type": "message", "user": user, "text": text, "ts": ts, "team": TEAM_ID}
        if thread_ts is not None:
            message["thread_ts"] = thread_ts
        self._next_ts = max(self._next_ts, _ts_micros(ts))
        self._store(channel, message)
        return message

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
        where = self._channel({"channel": channel}) if channel else None
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
        """Hold the answers to calls of ``methods`` (received and recorded once answered) until :meth:`resume`:
        Slack being slow to answer while people keep clicking."""
        self._paused = frozenset(methods)
        self._resumed.clear()

    def resume(self) -> None:
        """Answer the calls held by :meth:`pause`, and later ones at once."""
        self._paused = frozenset()
        self._resumed.set()

    def set_rate_limit(self, per_channel_per_second: float | None, workspace_per_minute: int | None) -> None:
        """Enforce Slack-like limits on ``chat.postMessage``/``chat.update`` (``None`` disables one).

        A call is answered 429 if the channel had an accepted call less than
        ``1 / per_channel_per_second`` seconds ago, or if ``workspace_per_minute`` calls were
        accepted in the last 60 seconds (sliding window).
        """
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
        args = await self._read_args(request)
        if method in self._paused:
            await self._resumed.wait()
        call = SlackCall(method, args, dict(request.headers), self._clock())
        response = self._answer(call, request.headers.get("Authorization", ""))
        call.status = response.status
        self.calls.append(call)
        async with self._changed:
            self._changed.notify_all()
        return response

    @staticmethod
    async def _read_args(request: web.Request) -> Json:
        args: Json = {k: _maybe_json(v) for k, v in request.query.items()}
        if request.content_type == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                args.update(body)
        elif request.can_read_body:
            form = await request.post()
            args.update({k: _maybe_json(v) for k, v in form.items() if isinstance(v, str)})
        return args

    def _answer(self, call: SlackCall, authorization: str) -> web.Response:
        # Socket Mode connections are opened with the app-level token (xapp-), everything else with xox*.
        token_prefix = "Bearer xapp" if call.method == "apps.connections.open" else "Bearer xox"
        if not authorization.startswith(token_prefix):
            return self._error(call, "not_authed")
        if self._revoked is not None:
            return self._error(call, self._revoked)
        fault = self._take_fault(call.method, self._channel(call.args))
        if fault is not None:
            if fault.error is not None:
                return self._error(call, fault.error)
            return self._http_error(call, fault.status, fault.retry_after)
        implementation = self._methods.get(call.method)
        if implementation is None:
            return self._error(call, "unknown_method")
        rate_limited = call.method in _RATE_LIMITED_METHODS
        if rate_limited:
            retry_after = self._rate_limit_retry_after(self._channel(call.args))
            if retry_after is not None:
                return self._http_error(call, 429, retry_after)
        try:
            body = implementation(call.args)
        except _MethodError as e:
            return self._error(call, e.error)
        if rate_limited:
            self._record_accepted(self._channel(call.args))
        return web.json_response({"ok": True, **body})

    @staticmethod
    def _error(call: SlackCall, error: str) -> web.Response:
        call.error = error
        return web.json_response({"ok": False, "error": error})

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

    def _take_fault(self, method: str, channel: str) -> _Fault | None:
        pending = self._faults.get(method)
        fault = next((f for f in pending or () if f.channel in (None, channel)), None)
        if fault is None or pending is None:
            return None
        fault.remaining -= 1
        if fault.remaining <= 0:
            pending.remove(fault)
        return fault

    # -- rate limiting ---------------------------------------------------------------------------

    def _rate_limit_retry_after(self, channel: str) -> int | None:
        limit = self._rate_limit
        if limit is None:
            return None
        now = self._clock()
        waits: list[float] = []
        last = limit.last_by_channel.get(channel)
        if limit.per_channel_per_second is not None and last is not None:
            interval = 1.0 / limit.per_channel_per_second
            if now - last < interval:
                waits.append(last + interval - now)
        window = limit.workspace_window
        while window and window[0] <= now - 60.0:
            window.popleft()
        if limit.workspace_per_minute is not None and len(window) >= limit.workspace_per_minute:
            waits.append(window[0] + 60.0 - now)
        if not waits:
            return None
        return max(1, math.ceil(max(waits)))

    def _record_accepted(self, channel: str) -> None:
        self.accepted += 1
        if self._rate_limit is not None:
            now = self._clock()
            self._rate_limit.last_by_channel[channel] = now
            self._rate_limit.workspace_window.append(now)

    # -- messages --------------------------------------------------------------------------------

    @staticmethod
    def _channel(args: Json) -> str:
        """The conversation a chat call lands in: a user id posts to that user's IM ``D<user id>``."""
        channel = str(args.get("channel") or "")
        return f"D{channel}" if channel[:1] in {"U", "W"} else channel

    def _new_ts(self) -> str:
        self._next_ts += 100
        return _format_ts(self._next_ts)

    def _store(self, channel: str, message: Json) -> None:
        messages = self.messages.setdefault(channel, [])
        messages.append(message)
        messages.sort(key=lambda m: _ts_micros(m["ts"]))
        thread_ts = message.get("thread_ts")
        if thread_ts is None or thread_ts == message["ts"]:
            return
        parent = self._find(channel, thread_ts)
        if parent is not None:
            parent["thread_ts"] = thread_ts
            parent["reply_count"] = int(parent.get("reply_count", 0)) + 1
            users = parent.setdefault("reply_users", [])
            if message.get("user") not in users:
                users.append(message.get("user"))
            parent["latest_reply"] = message["ts"]

    def _find(self, channel: str, ts: object) -> Json | None:
        return next((m for m in self.messages.get(channel, []) if m["ts"] == str(ts)), None)

    def _find_or_fail(self, channel: str, ts: object) -> Json:
        message = self._find(channel, ts)
        if message is None:
            raise _MethodError("message_not_found")
        return message

    # -- method implementations ------------------------------------------------------------------

    def _auth_test(self, args: Json) -> Json:
        return {
            "url": "https://t0001.slack.com/",
            "team": "IT Help Test",
            "user": BOT_NAME,
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, args: Json) -> Json:
        channel = self._channel(args)
        if not channel:
            raise _MethodError("channel_not_found")
        if not (args.get("text") or args.get("blocks") or args.get("attachments")):
            raise _MethodError("no_text")
        message: Json = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "team": TEAM_ID,
            "text": args.get("text", ""),
            "ts": self._new_ts(),
        }
        for key in ("blocks", "attachments", "metadata"):
            if key in args:
                message[key] = args[key]
        if args.get("thread_ts"):
            message["thread_ts"] = str(args["thread_ts"])
            if _truthy(args.get("reply_broadcast")):
                message["subtype"] = "thread_broadcast"
        self._store(channel, message)
        return {"channel": channel, "ts": message["ts"], "message": dict(message)}

    def _chat_update(self, args: Json) -> Json:
        _required(args, "channel", "ts")
        channel = str(args["channel"])
        message = self._find_or_fail(channel, args["ts"])
        for key in ("text", "blocks", "attachments", "metadata"):
            if key in args:
                message[key] = args[key]
        message["edited"] = {"user": BOT_USER_ID, "ts": self._new_ts()}
        return {
            "channel": channel,
            "ts": message["ts"],
            "text": message.get("text", ""),
            "message": dict(message),
        }

    def _chat_post_ephemeral(self, args: Json) -> Json:
        _required(args, "channel", "user")
        return {"message_ts": self._new_ts()}

    def _chat_get_permalink(self, args: Json) -> Json:
        _required(args, "channel", "message_ts")
        channel = str(args["channel"])
        message = self._find_or_fail(channel, args["message_ts"])
        path = "p" + message["ts"].replace(".", "")
        return {"channel": channel, "permalink": f"https://t0001.slack.com/archives/{channel}/{path}"}

    def _make_view(self, view: Json, *, view_id: str | None = None, previous: str | None = None) -> Json:
        if not isinstance(view, dict) or "type" not in view:
            raise _MethodError("invalid_arguments")
        self._next_view += 1
        if view_id is None:
            view_id = f"V{self._next_view:04d}"
        stored: Json = {
            "id": view_id,
            "team_id": TEAM_ID,
            "app_id": APP_ID,
            "bot_id": BOT_ID,
            "callback_id": "",
            "private_metadata": "",
            "external_id": "",
            "blocks": [],
            "clear_on_close": False,
            "notify_on_close": False,
            "previous_view_id": previous,
            "root_view_id": view_id,
            **view,
            "state": {"values": {}},
            "hash": f"1700000000.{self._next_view:08x}",
        }
        self.views[view_id] = stored
        return stored

    def _views_open(self, args: Json) -> Json:
        if not (args.get("trigger_id") or args.get("interactivity_pointer")):
            raise _MethodError("invalid_arguments")
        _required(args, "view")
        return {"view": self._make_view(args["view"])}

    def _views_push(self, args: Json) -> Json:
        return self._views_open(args)

    def _views_update(self, args: Json) -> Json:
        _required(args, "view")
        view_id = args.get("view_id")
        if not view_id and args.get("external_id"):
            view_id = next((v["id"] for v in self.views.values() if v.get("external_id") == args["external_id"]), None)
        current = self.views.get(str(view_id))
        if current is None:
            raise _MethodError("not_found")
        if args.get("hash") and args["hash"] != current["hash"]:
            raise _MethodError("hash_conflict")
        view = self._make_view(args["view"], view_id=current["id"], previous=current["previous_view_id"])
        return {"view": view}

    def _views_publish(self, args: Json) -> Json:
        _required(args, "user_id", "view")
        user_id = str(args["user_id"])
        current = self.home_views.get(user_id)
        view = self._make_view(args["view"], view_id=current["id"] if current else None)
        self.home_views[user_id] = view
        return {"view": view}

    def _users_info(self, args: Json) -> Json:
        user = self._users.get(str(args.get("user")))
        if user is None:
            raise _MethodError("user_not_found")
        return {"user": user}

    def _usergroups_users_list(self, args: Json) -> Json:
        users = self._usergroups.get(str(args.get("usergroup")))
        if users is None:
            raise _MethodError("no_such_subteam")
        return {"users": list(users)}

    def _conversations_open(self, args: Json) -> Json:
        if args.get("channel"):
            return {"channel": {"id": str(args["channel"])}, "no_op": True, "already_open": True}
        users = [u for u in str(args.get("users") or "").split(",") if u]
        if len(users) != 1:
            raise _MethodError("invalid_arguments" if not users else "not_supported_by_fake")
        return {"channel": {"id": f"D{users[0]}"}, "no_op": True, "already_open": True}

    @staticmethod
    def _in_range(message: Json, args: Json) -> bool:
        ts = _ts_micros(message["ts"])
        oldest = _ts_micros(args.get("oldest") or "0")
        latest = _ts_micros(args["latest"]) if args.get("latest") else None
        if _truthy(args.get("inclusive")):
            return ts >= oldest and (latest is None or ts <= latest)
        return ts > oldest and (latest is None or ts < latest)

    def _conversations_history(self, args: Json) -> Json:
        _required(args, "channel")
        top_level = [
            m
            for m in self.messages.get(str(args["channel"]), [])
            if m.get("thread_ts") in {None, m["ts"]} or m.get("subtype") == "thread_broadcast"
        ]
        newest_first = [m for m in reversed(top_level) if self._in_range(m, args)]
        limit = int(args.get("limit") or 100)
        return {
            "messages": newest_first[:limit],
            "has_more": len(newest_first) > limit,
            "pin_count": 0,
            "response_metadata": {"next_cursor": ""},
        }

    def _conversations_replies(self, args: Json) -> Json:
        _required(args, "channel", "ts")
        channel, ts = str(args["channel"]), str(args["ts"])
        if self._find(channel, ts) is None:
            raise _MethodError("thread_not_found")
        thread = [
            m
            for m in self.messages.get(channel, [])
            if (m["ts"] == ts or m.get("thread_ts") == ts) and self._in_range(m, args)
        ]
        limit = int(args.get("limit") or 1000)
        return {
            "messages": thread[:limit],
            "has_more": len(thread) > limit,
            "response_metadata": {"next_cursor": ""},
        }

    def _apps_connections_open(self, args: Json) -> Json:
        return {"url": f"ws://127.0.0.1:{self._port}/socket-mode"}

    # -- Socket Mode -----------------------------------------------------------------------------

    async def _socket_mode(self, request: web.Request) -> web.WebSocketResponse:
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

    def _reactions_add(self, args: Json) -> Json:
        _required(args, "channel", "timestamp", "name")
        message = self._find_or_fail(str(args["channel"]), args["timestamp"])
        reactions: list[Json] = message.setdefault("reactions", [])
        reaction = next((r for r in reactions if r["name"] == args["name"]), None)
        if reaction is None:
            reaction = {"name": args["name"], "users": [], "count": 0}
            reactions.append(reaction)
        if BOT_USER_ID in reaction["users"]:
            raise _MethodError("already_reacted")
        reaction["users"].append(BOT_USER_ID)
        reaction["count"] += 1
        return {}


__all__ = ["FakeSlackApi", "SlackCall"]
