"""The messages of a fake Slack workspace, per conversation, with their threads and reactions, and the Web API
methods over them: ``chat.postMessage``/``update``/``postEphemeral``/``getPermalink``,
``conversations.history``/``replies`` and ``reactions.add``."""

from __future__ import annotations

from bot.simulators.slack_method_basics import APP_ID, BOT_ID, BOT_USER_ID, TEAM_ID, Json, MethodError, require

_FIRST_TS_MICROS = 1_700_000_000_000_000


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


def conversation_of(args: Json) -> str:
    """The conversation a chat call lands in: a user id posts to that user's IM ``D<user id>``."""
    channel = str(args.get("channel") or "")
    return f"D{channel}" if channel[:1] in {"U", "W"} else channel


class SlackMessages:
    """Messages by conversation (:attr:`messages`, oldest first), each thread's parent kept up to date (reply
    count, repliers, latest reply), and the methods that post, edit, read and react to them."""

    def __init__(self) -> None:
        self.messages: dict[str, list[Json]] = {}
        self._next_ts = _FIRST_TS_MICROS

    def add(self, channel: str, ts: str, user: str, text: str, thread_ts: str | None = None) -> Json:
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
            raise MethodError("message_not_found")
        return message

    def post_message(self, args: Json) -> Json:
        """``chat.postMessage``: a new message from the bot, in a thread when ``thread_ts`` is given."""
        channel = conversation_of(args)
        if not channel:
            raise MethodError("channel_not_found")
        if not (args.get("text") or args.get("blocks") or args.get("attachments")):
            raise MethodError("no_text")
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

    def update(self, args: Json) -> Json:
        """``chat.update``: edit a message in place."""
        require(args, "channel", "ts")
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

    def post_ephemeral(self, args: Json) -> Json:
        """``chat.postEphemeral``: seen only by ``user``, so nothing is stored."""
        require(args, "channel", "user")
        return {"message_ts": self._new_ts()}

    def get_permalink(self, args: Json) -> Json:
        """``chat.getPermalink``: the message's link."""
        require(args, "channel", "message_ts")
        channel = str(args["channel"])
        message = self._find_or_fail(channel, args["message_ts"])
        path = "p" + message["ts"].replace(".", "")
        return {"channel": channel, "permalink": f"https://t0001.slack.com/archives/{channel}/{path}"}

    @staticmethod
    def _in_range(message: Json, args: Json) -> bool:
        ts = _ts_micros(message["ts"])
        oldest = _ts_micros(args.get("oldest") or "0")
        latest = _ts_micros(args["latest"]) if args.get("latest") else None
        if _truthy(args.get("inclusive")):
            return ts >= oldest and (latest is None or ts <= latest)
        return ts > oldest and (latest is None or ts < latest)

    def history(self, args: Json) -> Json:
        """``conversations.history``: top-level messages (and thread broadcasts), newest first."""
        require(args, "channel")
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

    def replies(self, args: Json) -> Json:
        """``conversations.replies``: a thread's parent and replies, oldest first."""
        require(args, "channel", "ts")
        channel, ts = str(args["channel"]), str(args["ts"])
        if self._find(channel, ts) is None:
            raise MethodError("thread_not_found")
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

    def add_reaction(self, args: Json) -> Json:
        """``reactions.add``: the bot's reaction on a message, once per name."""
        require(args, "channel", "timestamp", "name")
        message = self._find_or_fail(str(args["channel"]), args["timestamp"])
        reactions: list[Json] = message.setdefault("reactions", [])
        reaction = next((r for r in reactions if r["name"] == args["name"]), None)
        if reaction is None:
            reaction = {"name": args["name"], "users": [], "count": 0}
            reactions.append(reaction)
        if BOT_USER_ID in reaction["users"]:
            raise MethodError("already_reacted")
        reaction["users"].append(BOT_USER_ID)
        reaction["count"] += 1
        return {}
