"""The state of a fake Slack workspace and the Web API methods that read and change it: people, user groups,
messages and threads, modals and App Home views. ``FakeSlackApi`` serves it over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

Json = dict[str, Any]

BOT_USER_ID = "UBOT"
BOT_ID = "B0001"
TEAM_ID = "T0001"
APP_ID = "A0001"
BOT_NAME = "ithelp"
_FIRST_TS_MICROS = 1_700_000_000_000_000


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


def _required(args: Json, *names: str) -> None:
    for name in names:
        if not args.get(name):
            raise _MethodError("invalid_arguments")


class SlackViews:
    """Modals (``views.open``/``push``/``update``, in :attr:`views` by id) and App Home tabs
    (``views.publish``, in :attr:`home_views` by user)."""

    def __init__(self) -> None:
        self.views: dict[str, Json] = {}
        self.home_views: dict[str, Json] = {}
        self._next_view = 0

    def _make(self, view: Json, *, view_id: str | None = None, previous: str | None = None) -> Json:
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

    def open(self, args: Json) -> Json:
        if not (args.get("trigger_id") or args.get("interactivity_pointer")):
            raise _MethodError("invalid_arguments")
        _required(args, "view")
        return {"view": self._make(args["view"])}

    def push(self, args: Json) -> Json:
        return self.open(args)

    def update(self, args: Json) -> Json:
        _required(args, "view")
        view_id = args.get("view_id")
        if not view_id and args.get("external_id"):
            view_id = next((v["id"] for v in self.views.values() if v.get("external_id") == args["external_id"]), None)
        current = self.views.get(str(view_id))
        if current is None:
            raise _MethodError("not_found")
        if args.get("hash") and args["hash"] != current["hash"]:
            raise _MethodError("hash_conflict")
        view = self._make(args["view"], view_id=current["id"], previous=current["previous_view_id"])
        return {"view": view}

    def publish(self, args: Json) -> Json:
        _required(args, "user_id", "view")
        user_id = str(args["user_id"])
        current = self.home_views.get(user_id)
        view = self._make(args["view"], view_id=current["id"] if current else None)
        self.home_views[user_id] = view
        return {"view": view}


class SlackWorkspace:
    """Users, user groups, messages (:attr:`messages`, per channel), opened :attr:`views` and published
    :attr:`home_views`, and the Web API methods over them (in :attr:`_methods`, by method name)."""

    def __init__(self) -> None:
        self.messages: dict[str, list[Json]] = {}
        self.view_store = SlackViews()
        self.views = self.view_store.views
        self.home_views = self.view_store.home_views
        self._users: dict[str, Json] = {}
        self._usergroups: dict[str, list[str]] = {}
        self._next_ts = _FIRST_TS_MICROS
        self._methods: dict[str, Callable[[Json], Json]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "views.open": self.view_store.open,
            "views.push": self.view_store.push,
            "views.update": self.view_store.update,
            "views.publish": self.view_store.publish,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroups_users_list,
            "conversations.open": self._conversations_open,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "reactions.add": self._reactions_add,
        }

    @staticmethod
    def _channel(args: Json) -> str:
        """The conversation a chat call lands in: a user id posts to that user's IM ``D<user id>``."""
        channel = str(args.get("channel") or "")
        return f"D{channel}" if channel[:1] in {"U", "W"} else channel

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


__all__ = ["APP_ID", "BOT_ID", "BOT_NAME", "BOT_USER_ID", "TEAM_ID", "Json", "SlackViews", "SlackWorkspace"]
