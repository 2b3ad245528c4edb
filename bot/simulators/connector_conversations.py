"""What a fake Bot Connector holds: the conversations the bot posted to, each activity's latest body, and the
roster; and the v3 REST operations over them (send, update, delete, create conversation, members).

``FakeBotConnector`` serves these over HTTP; each operation takes the decoded path segments
(``["v3", "conversations", <conversation>, "activities", <activity>]``) and the JSON body, and returns the
status and body the real service answers with.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

JSONDict = dict[str, Any]
Answer = tuple[int, JSONDict | list[JSONDict] | None]


def error_body(code: str, message: str) -> JSONDict:
    """The connector's error body: ``{"error": {"code": …, "message": …}}``."""
    return {"error": {"code": code, "message": message}}


class ConnectorConversations:
    """Activities by conversation (latest body of each), the 1:1 chat opened per person, and the roster served
    by the members endpoints (the same for every conversation)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._roster: dict[str, JSONDict] = {}
        self._store: dict[str, dict[str, JSONDict]] = {}
        self._personal_chats: dict[str, str] = {}

    def add_member(self, user_id: str, name: str, aad_object_id: str, email: str | None = None) -> None:
        """Add a person to the roster served by the members endpoints (for every conversation)."""
        upn = email or f"{name.lower().replace(' ', '.')}@example.com"
        given, _, surname = name.partition(" ")
        self._roster[user_id] = {
            "id": user_id,
            "name": name,
            "aadObjectId": aad_object_id,
            "email": upn,
            "userPrincipalName": upn,
            "givenName": given,
            "surname": surname or None,
            "userRole": "user",
            "tenantId": "tenant-1",
        }

    def activity(self, conversation_id: str, activity_id: str) -> JSONDict | None:
        """The current (latest updated) body of an activity the bot posted, or None if unknown or deleted."""
        return self._store.get(conversation_id, {}).get(activity_id)

    def reset(self) -> None:
        """Forget stored activities, opened chats and the roster."""
        self._store.clear()
        self._personal_chats.clear()
        self._roster.clear()

    def _new_id(self) -> str:
        return f"1:{next(self._ids)}-{uuid.uuid4().hex[:8]}"

    def send(self, segments: list[str], body: JSONDict | None) -> Answer:
        """POST an activity (or a reply to one): store it under a new id."""
        new_id = self._new_id()
        self._store.setdefault(segments[2], {})[new_id] = {**(body or {}), "id": new_id}
        return 201, {"id": new_id}

    def update(self, segments: list[str], body: JSONDict | None) -> Answer:
        """PUT an activity: replace its body, 404 if the conversation holds no such activity."""
        stored = self._store.get(segments[2], {})
        if segments[4] not in stored:
            return 404, error_body("NotFound", f"Activity {segments[4]} not found in conversation.")
        stored[segments[4]] = {**(body or {}), "id": segments[4]}
        return 200, {"id": segments[4]}

    def delete(self, segments: list[str], body: JSONDict | None) -> Answer:
        """DELETE an activity, 404 if the conversation holds no such activity."""
        if self._store.get(segments[2], {}).pop(segments[4], None) is None:
            return 404, error_body("NotFound", f"Activity {segments[4]} not found in conversation.")
        return 200, None

    def create_conversation(self, segments: list[str], body: JSONDict | None) -> Answer:
        """POST a conversation: a new thread in a channel (its first activity posted with it), or the person's
        1:1 chat, the same id each time for the same person."""
        params = body or {}
        activity = params.get("activity")
        channel = (params.get("channelData") or {}).get("channel") or {}
        activity_id = self._new_id() if activity else None
        if channel.get("id"):
            conversation_id = f"{channel['id']};messageid={activity_id or self._new_id()}"
        else:
            member = (params.get("members") or [{}])[0].get("id", "")
            conversation_id = self._personal_chats.setdefault(member, f"a:1conv-{next(self._ids)}")
        if activity and activity_id:
            self._store.setdefault(conversation_id, {})[activity_id] = {**activity, "id": activity_id}
        return 201, {"id": conversation_id, "activityId": activity_id}

    def members(self, segments: list[str], body: JSONDict | None) -> Answer:
        """GET the members of a conversation: the whole roster."""
        return 200, list(self._roster.values())

    def paged_members(self, segments: list[str], body: JSONDict | None) -> Answer:
        """GET one page of members: the whole roster."""
        return 200, {"members": list(self._roster.values())}

    def member(self, segments: list[str], body: JSONDict | None) -> Answer:
        """GET one member by Teams id or AAD object id, 404 if not on the roster."""
        wanted = segments[4]
        for member in self._roster.values():
            if wanted in (member["id"], member["aadObjectId"]):
                return 200, member
        return 404, error_body("MemberNotFoundInConversation", f"Member {wanted} not found in the conversation.")
