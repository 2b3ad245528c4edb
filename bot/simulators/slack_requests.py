"""Requests into the bot, built and signed exactly as Slack builds and signs them.

The signature is computed here with ``hmac``/``hashlib`` (not slack_sdk) so tests stay
independent of the code under test. Post ``req.body`` with ``req.headers`` to ``/slack/events``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

Json = dict[str, Any]

TEAM_ID = "T0001"
TEAM_DOMAIN = "ithelp-test"
API_APP_ID = "A0001"
BOT_USER_ID = "UBOT"
VERIFICATION_TOKEN = "legacy-verification-token"  # noqa: S105  (the simulator's fixed value, not a secret)
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

_serial = itertools.count(1)


@dataclass(frozen=True)
class SignedRequest:
    """A raw request body plus the headers Slack sends with it (content type and signature)."""

    body: bytes
    headers: dict[str, str]


def signed(
    body: bytes,
    content_type: str,
    secret: str,
    timestamp: int | None = None,
    retry_num: int | None = None,
    *,
    retry_reason: str = "http_timeout",
) -> SignedRequest:
    """Sign ``body`` with Slack's v0 scheme; ``retry_num`` adds Slack's retry headers."""
    ts = int(time.time()) if timestamp is None else timestamp
    base = b"v0:" + str(ts).encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": f"v0={digest}",
    }
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
        headers["X-Slack-Retry-Reason"] = retry_reason
    return SignedRequest(body, headers)


def _trigger_id() -> str:
    n = next(_serial)
    return f"{1700000000 + n}.{n}.{n:032x}"


def _user(user_id: str, team_id: str) -> Json:
    name = user_id.lower()
    return {"id": user_id, "username": name, "name": name, "team_id": team_id}


def _team(team_id: str) -> Json:
    return {"id": team_id, "domain": TEAM_DOMAIN}


def _interactive(payload: Json, secret: str, timestamp: int | None) -> SignedRequest:
    body = urlencode({"payload": json.dumps(payload)}).encode()
    return signed(body, FORM, secret, timestamp)


def _full_view(view: Json, team_id: str) -> Json:
    """A view as Slack echoes it back in interactivity payloads, with defaults filled in."""
    view_id = str(view.get("id") or f"V{next(_serial):04d}")
    return {
        "id": view_id,
        "team_id": team_id,
        "type": "modal",
        "blocks": [],
        "private_metadata": "",
        "callback_id": "",
        "state": {"values": {}},
        "hash": f"1700000000.{next(_serial):08x}",
        "clear_on_close": False,
        "notify_on_close": False,
        "previous_view_id": None,
        "root_view_id": view_id,
        "app_id": API_APP_ID,
        "external_id": "",
        "app_installed_team_id": team_id,
        "bot_id": "B0001",
        **view,
    }


def slash_command_fields(
    text: str,
    user_id: str,
    *,
    command: str = "/ithelp",
    channel_id: str = "C0GENERAL",
    channel_name: str = "general",
    team_id: str = TEAM_ID,
    trigger_id: str | None = None,
    response_url: str | None = None,
    user_name: str | None = None,
) -> dict[str, str]:
    """The fields Slack sends for a slash command (over HTTP form-encoded, in Socket Mode as JSON)."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "team_domain": TEAM_DOMAIN,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name or user_id.lower(),
        "command": command,
        "text": text,
        "api_app_id": API_APP_ID,
        "is_enterprise_install": "false",
        "response_url": response_url or f"https://hooks.slack.com/commands/{team_id}/{next(_serial)}/fake",
        "trigger_id": trigger_id or _trigger_id(),
    }


def slash_command(text: str, user_id: str, secret: str, *, timestamp: int | None = None, **fields: Any,
                  ) -> SignedRequest:
    """A slash command invocation, form-encoded and signed as Slack sends it."""
    body = urlencode(slash_command_fields(text, user_id, **fields)).encode()
    return signed(body, FORM, secret, timestamp)


def event_callback(
    event: Json,
    secret: str,
    *,
    event_id: str | None = None,
    team_id: str = TEAM_ID,
    api_app_id: str = API_APP_ID,
    timestamp: int | None = None,
    retry_num: int | None = None,
) -> SignedRequest:
    """An Events API ``event_callback`` envelope around ``event`` (JSON)."""
    ts = int(time.time()) if timestamp is None else timestamp
    envelope = event_callback_payload(event, event_id=event_id, team_id=team_id, api_app_id=api_app_id, ts=ts)
    return signed(json.dumps(envelope).encode(), JSON, secret, ts, retry_num)


def event_callback_payload(event: Json, *, event_id: str | None = None, team_id: str = TEAM_ID,
                           api_app_id: str = API_APP_ID, ts: int | None = None) -> Json:
    """The ``event_callback`` body itself: what Socket Mode carries as an ``events_api`` envelope's payload."""
    ts = int(time.time()) if ts is None else ts
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "api_app_id": api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{next(_serial):010d}",
        "event_time": ts,
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": BOT_USER_ID,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": f"4-{next(_serial):x}",
    }


def block_action(
    action_id: str, value: str, user_id: str, secret: str, *, timestamp: int | None = None, **fields: Any,
) -> SignedRequest:
    """A ``block_actions`` interaction, signed as Slack posts it (fields as :func:`block_action_payload`)."""
    return _interactive(block_action_payload(action_id, value, user_id, **fields), secret, timestamp)


def _pressed(action_id: str, value: str, block_id: str, action_type: str) -> Json:
    """The ``actions[0]`` of a ``block_actions`` payload: a button press or a select's choice."""
    action: Json = {
        "type": action_type,
        "action_id": action_id,
        "block_id": block_id,
        "action_ts": f"{int(time.time())}.{next(_serial):06d}",
    }
    if action_type == "static_select":
        action["selected_option"] = {"text": {"type": "plain_text", "text": value}, "value": value}
    else:
        action["value"] = value
        action["text"] = {"type": "plain_text", "text": value}
    return action


def _on_message(channel_id: str, message_ts: str, message: Json | None, team_id: str) -> Json:
    """What a ``block_actions`` payload says about the message whose button was pressed."""
    payload: Json = {}
    payload["container"] = {
        "type": "message",
        "message_ts": message_ts,
        "channel_id": channel_id,
        "is_ephemeral": False,
    }
    payload["channel"] = {"id": channel_id, "name": channel_id.lower()}
    payload["message"] = message or {
        "type": "message",
        "user": BOT_USER_ID,
        "bot_id": "B0001",
        "text": "",
        "ts": message_ts,
        "blocks": [],
    }
    payload["state"] = {"values": {}}
    payload["response_url"] = f"https://hooks.slack.com/actions/{team_id}/{next(_serial)}/fake"
    return payload


def block_action_payload(
    action_id: str,
    value: str,
    user_id: str,
    *,
    block_id: str = "actions",
    action_type: str = "button",
    channel_id: str = "C0GENERAL",
    message_ts: str | None = None,
    message: Json | None = None,
    view: Json | None = None,
    trigger_id: str | None = None,
    team_id: str = TEAM_ID,
) -> Json:
    """A ``block_actions`` payload, in a view when ``view`` is given, else on a message.

    For a message pass ``message_ts`` (and optionally the full ``message``). With
    ``action_type="static_select"`` the action carries ``selected_option`` instead of ``value``.
    """
    action = _pressed(action_id, value, block_id, action_type)
    payload: Json = {
        "type": "block_actions",
        "user": _user(user_id, team_id),
        "api_app_id": API_APP_ID,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id or _trigger_id(),
        "team": _team(team_id),
        "enterprise": None,
        "is_enterprise_install": False,
        "actions": [action],
    }
    if view is not None:
        full = _full_view(view, team_id)
        payload["container"] = {"type": "view", "view_id": full["id"]}
        payload["view"] = full
        payload["state"] = full["state"]
    elif message_ts is not None:
        payload.update(_on_message(channel_id, message_ts, message, team_id))
    else:
        raise ValueError("block_action needs either view= or message_ts=")
    return payload


def view_submission(
    callback_id: str,
    values: Json,
    user_id: str,
    secret: str,
    *,
    private_metadata: str = "",
    view_id: str | None = None,
    blocks: list[Json] | None = None,
    team_id: str = TEAM_ID,
    timestamp: int | None = None,
) -> SignedRequest:
    """A modal ``view_submission``.

    ``values`` is ``view.state.values``: ``{block_id: {action_id: element_state}}``; a plain string
    as element state is shorthand for ``{"type": "plain_text_input", "value": s}``.
    """
    state = {
        block_id: {
            action_id: {"type": "plain_text_input", "value": v} if isinstance(v, str) else v
            for action_id, v in actions.items()
        }
        for block_id, actions in values.items()
    }
    view: Json = {
        "type": "modal",
        "callback_id": callback_id,
        "private_metadata": private_metadata,
        "state": {"values": state},
        "blocks": blocks or [],
        "title": {"type": "plain_text", "text": "IT help"},
        "submit": {"type": "plain_text", "text": "Submit"},
        "close": {"type": "plain_text", "text": "Cancel"},
    }
    if view_id is not None:
        view["id"] = view_id
    payload: Json = {
        "type": "view_submission",
        "team": _team(team_id),
        "user": _user(user_id, team_id),
        "api_app_id": API_APP_ID,
        "token": VERIFICATION_TOKEN,
        "trigger_id": _trigger_id(),
        "view": _full_view(view, team_id),
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }
    return _interactive(payload, secret, timestamp)


def message_shortcut(
    callback_id: str,
    user_id: str,
    message: Json,
    channel_id: str,
    secret: str,
    *,
    trigger_id: str | None = None,
    team_id: str = TEAM_ID,
    timestamp: int | None = None,
) -> SignedRequest:
    """A message shortcut (``message_action``) invoked on ``message`` (which must carry ``ts``)."""
    payload: Json = {
        "type": "message_action",
        "token": VERIFICATION_TOKEN,
        "action_ts": f"{int(time.time())}.{next(_serial):06d}",
        "team": _team(team_id),
        "user": _user(user_id, team_id),
        "channel": {"id": channel_id, "name": channel_id.lower()},
        "is_enterprise_install": False,
        "enterprise": None,
        "callback_id": callback_id,
        "trigger_id": trigger_id or _trigger_id(),
        "message_ts": message["ts"],
        "message": message,
        "response_url": f"https://hooks.slack.com/app/{team_id}/{next(_serial)}/fake",
    }
    return _interactive(payload, secret, timestamp)


def url_verification(challenge: str, secret: str) -> SignedRequest:
    """The Events API ``url_verification`` handshake (JSON)."""
    payload = {"token": VERIFICATION_TOKEN, "challenge": challenge, "type": "url_verification"}
    return signed(json.dumps(payload).encode(), JSON, secret)


__all__ = [
    "SignedRequest",
    "block_action",
    "event_callback",
    "message_shortcut",
    "signed",
    "slash_command",
    "url_verification",
    "view_submission",
]
