"""The state of a fake Slack workspace and the Web API methods that read and change it: people, user groups,
messages and threads, modals and App Home views. ``FakeSlackApi`` serves it over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.simulators.slack_messages import SlackMessages
from bot.simulators.slack_method_basics import (
    APP_ID,
    BOT_ID,
    BOT_NAME,
    BOT_USER_ID,
    TEAM_ID,
    Json,
    MethodError,
    require,
)


class SlackViews:
    """Modals (``views.open``/``push``/``update``, in :attr:`views` by id) and App Home tabs
    (``views.publish``, in :attr:`home_views` by user)."""

    def __init__(self) -> None:
        self.views: dict[str, Json] = {}
        self.home_views: dict[str, Json] = {}
        self._next_view = 0

    def _make(self, view: Json, *, view_id: str | None = None, previous: str | None = None) -> Json:
        if not isinstance(view, dict) or "type" not in view:
            raise MethodError("invalid_arguments")
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
            raise MethodError("invalid_arguments")
        require(args, "view")
        return {"view": self._make(args["view"])}

    def push(self, args: Json) -> Json:
        return self.open(args)

    def update(self, args: Json) -> Json:
        require(args, "view")
        view_id = args.get("view_id")
        if not view_id and args.get("external_id"):
            view_id = next((v["id"] for v in self.views.values() if v.get("external_id") == args["external_id"]), None)
        current = self.views.get(str(view_id))
        if current is None:
            raise MethodError("not_found")
        if args.get("hash") and args["hash"] != current["hash"]:
            raise MethodError("hash_conflict")
        view = self._make(args["view"], view_id=current["id"], previous=current["previous_view_id"])
        return {"view": view}

    def publish(self, args: Json) -> Json:
        require(args, "user_id", "view")
        user_id = str(args["user_id"])
        current = self.home_views.get(user_id)
        view = self._make(args["view"], view_id=current["id"] if current else None)
        self.home_views[user_id] = view
        return {"view": view}


class SlackWorkspace:
    """Users, user groups, messages (:attr:`messages`, per channel, kept by :attr:`message_store`), opened
    :attr:`views` and published :attr:`home_views` (kept by :attr:`view_store`), and the Web API methods over them
    (in :attr:`_methods`, by method name)."""

    def __init__(self) -> None:
        self.message_store = SlackMessages()
        self.messages = self.message_store.messages
        self.view_store = SlackViews()
        self.views = self.view_store.views
        self.home_views = self.view_store.home_views
        self._users: dict[str, Json] = {}
        self._usergroups: dict[str, list[str]] = {}
        self._methods: dict[str, Callable[[Json], Json]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self.message_store.post_message,
            "chat.update": self.message_store.update,
            "chat.postEphemeral": self.message_store.post_ephemeral,
            "chat.getPermalink": self.message_store.get_permalink,
            "views.open": self.view_store.open,
            "views.push": self.view_store.push,
            "views.update": self.view_store.update,
            "views.publish": self.view_store.publish,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroups_users_list,
            "conversations.open": self._conversations_open,
            "conversations.history": self.message_store.history,
            "conversations.replies": self.message_store.replies,
            "reactions.add": self.message_store.add_reaction,
        }

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
        return self.message_store.add(channel, ts, user, text, thread_ts)

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

    def _users_info(self, args: Json) -> Json:
        user = self._users.get(str(args.get("user")))
        if user is None:
            raise MethodError("user_not_found")
        return {"user": user}

    def _usergroups_users_list(self, args: Json) -> Json:
        users = self._usergroups.get(str(args.get("usergroup")))
        if users is None:
            raise MethodError("no_such_subteam")
        return {"users": list(users)}

    def _conversations_open(self, args: Json) -> Json:
        if args.get("channel"):
            return {"channel": {"id": str(args["channel"])}, "no_op": True, "already_open": True}
        users = [u for u in str(args.get("users") or "").split(",") if u]
        if len(users) != 1:
            raise MethodError("invalid_arguments" if not users else "not_supported_by_fake")
        return {"channel": {"id": f"D{users[0]}"}, "no_op": True, "already_open": True}


__all__ = ["SlackViews", "SlackWorkspace"]
