"""Builders for inbound Microsoft Teams activities (JSON dicts shaped the way Teams posts them to the bot).

Every builder needs ``service_url`` (point it at ``FakeBotConnector.service_url``) and accepts the
:class:`Where` keywords to say who is talking and where. ``conversation_type`` picks the shape:

- ``"personal"``: 1:1 chat, conversation id ``a:1...``, channelData carries only the tenant.
- ``"channel"``: a team channel; the conversation id is the channel id plus ``;messageid=<root post id>``
  (the thread), channelData carries ``team``, ``channel``, ``teamsTeamId``, ``teamsChannelId``.
- ``"groupChat"``: a group chat, conversation id ``19:...@thread.v2``.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict, Unpack
from zoneinfo import ZoneInfo

BOT_ID = "28:bot-app-id"
BOT_NAME = "ITHelp"
DEFAULT_TIMESTAMP = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
"""The ``timestamp`` used when a builder is not given one (builders never read the wall clock)."""

_ids = itertools.count(1)

ConversationType = Literal["personal", "channel", "groupChat"]


class Where(TypedDict, total=False):
    """Who sends the activity and in which conversation; every key is optional."""

    user_id: str
    aad_object_id: str
    user_name: str
    conversation_id: str
    conversation_type: ConversationType
    activity_id: str
    tenant_id: str
    local_timezone: str
    locale: str
    team_id: str
    channel_id_teams: str
    timestamp: datetime


def message(
    text: str | None,
    *,
    service_url: str,
    mention_bot: bool = False,
    value: dict[str, Any] | None = None,
    reply_to_id: str | None = None,
    **where: Unpack[Where],
) -> dict[str, Any]:
    """A ``message`` activity: typed text, or an Action.Submit (``text=None``, ``value`` = the card's data).

    ``mention_bot`` prefixes ``<at>ITHelp</at>`` and adds the mention entity, as Teams does in channels.
    For Action.Submit pass ``reply_to_id`` (the id of the message holding the card) as Teams sets it.
    """
    activity = _base("message", service_url, where, reply_to_id)
    activity["textFormat"] = "plain"
    if text is not None:
        activity["text"] = f"<at>{BOT_NAME}</at> {text}" if mention_bot else text
    if mention_bot:
        activity["entities"].insert(
            0,
            {
                "type": "mention",
                "text": f"<at>{BOT_NAME}</at>",
                "mentioned": {"id": BOT_ID, "name": BOT_NAME},
            },
        )
    if value is not None:
        activity["value"] = value
    return activity


def invoke_adaptive_card_action(
    verb: str,
    data: dict[str, Any],
    *,
    service_url: str,
    reply_to_id: str | None = None,
    action_id: str | None = None,
    **where: Unpack[Where],
) -> dict[str, Any]:
    """An ``invoke`` named ``adaptiveCard/action``, as an Adaptive Card ``Action.Execute`` sends it.

    The bot must answer the HTTP request with ``{"statusCode": 200, "type":
    "application/vnd.microsoft.card.adaptive", "value": <card>}`` (or ``...activity.message`` + text).
    """
    activity = _base("invoke", service_url, where, reply_to_id)
    activity["name"] = "adaptiveCard/action"
    action: dict[str, Any] = {"type": "Action.Execute", "verb": verb, "data": data}
    if action_id is not None:
        action["id"] = action_id
    activity["value"] = {"action": action, "trigger": "manual"}
    return activity


def conversation_update_installed(*, service_url: str, **where: Unpack[Where]) -> dict[str, Any]:
    """The ``conversationUpdate`` Teams sends when the bot is added (``membersAdded`` holds the bot).

    In a team (``conversation_type="channel"``) the conversation is the team's channel itself (no
    ``;messageid=``) and channelData says ``eventType: teamMemberAdded``.
    """
    activity = _base("conversationUpdate", service_url, where, None)
    activity["membersAdded"] = [{"id": BOT_ID}]
    if activity["conversation"]["conversationType"] == "channel":
        activity["channelData"]["eventType"] = "teamMemberAdded"
    return activity


def installation_update(
    action: Literal["add", "remove", "add-upgrade", "remove-upgrade"] = "add",
    *,
    service_url: str,
    **where: Unpack[Where],
) -> dict[str, Any]:
    """The ``installationUpdate`` Teams sends when the app is installed, upgraded or removed."""
    activity = _base("installationUpdate", service_url, where, None)
    activity["action"] = action
    if activity["conversation"]["conversationType"] == "channel":
        activity["channelData"]["settings"] = {"selectedChannel": activity["channelData"]["channel"]}
    return activity


def _base(kind: str, service_url: str, where: Where, reply_to_id: str | None) -> dict[str, Any]:
    timestamp = where.get("timestamp", DEFAULT_TIMESTAMP)
    activity_id = where.get("activity_id") or str(int(timestamp.timestamp() * 1000) + next(_ids))
    conversation_type = where.get("conversation_type", "personal")
    tenant_id = where.get("tenant_id", "tenant-1")
    local_timezone = where.get("local_timezone", "Europe/London")
    locale = where.get("locale", "en-GB")
    channel_data: dict[str, Any] = {"tenant": {"id": tenant_id}}
    if conversation_type == "channel":
        team_id = where.get("team_id", "19:team-it@thread.tacv2")
        channel = where.get("channel_id_teams", "19:helpdesk@thread.tacv2")
        in_thread = kind not in ("conversationUpdate", "installationUpdate")
        default_conversation = f"{channel};messageid={activity_id}" if in_thread else channel
        channel_data |= {
            "teamsTeamId": team_id,
            "teamsChannelId": channel,
            "team": {"id": team_id},
            "channel": {"id": channel},
        }
    elif conversation_type == "groupChat":
        default_conversation = "19:group-chat@thread.v2"
    else:
        default_conversation = "a:1personal-chat"
    if reply_to_id is not None:
        channel_data |= {"source": {"name": "message"}, "legacy": {"replyToId": reply_to_id}}
    activity: dict[str, Any] = {
        "type": kind,
        "id": activity_id,
        "channelId": "msteams",
        "serviceUrl": service_url,
        "timestamp": _iso(timestamp.astimezone(UTC)).replace("+00:00", "Z"),
        "localTimestamp": _iso(timestamp.astimezone(ZoneInfo(local_timezone))),
        "localTimezone": local_timezone,
        "locale": locale,
        "from": {
            "id": where.get("user_id", "29:1user"),
            "name": where.get("user_name", "Alex Requester"),
            "aadObjectId": where.get("aad_object_id", "6f1c2d3e-0000-4000-8000-00000000a1a1"),
        },
        "recipient": {"id": BOT_ID, "name": BOT_NAME},
        "conversation": {
            "id": where.get("conversation_id", default_conversation),
            "conversationType": conversation_type,
            "tenantId": tenant_id,
            "isGroup": conversation_type != "personal",
        },
        "channelData": channel_data,
        "entities": [{"type": "clientInfo", "locale": locale, "timezone": local_timezone, "platform": "Web"}],
    }
    if reply_to_id is not None:
        activity["replyToId"] = reply_to_id
    return activity


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")
