"""Teams adapter: Bot Framework activities on ``POST /api/messages`` translated into ticket-service calls.

Thin on purpose, like the Slack adapter: parse, remember the conversation, dedupe, resolve the person, call a
service, answer in the turn. Cards and notices go out through the outbox (``bot.channels.teams``), which is
kicked right after the change commits.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from aiohttp import web
from botbuilder.core import InvokeResponse, MessageFactory, TurnContext
from botbuilder.integration.aiohttp import CloudAdapter, ConfigurationBotFrameworkAuthentication
from botbuilder.schema import Activity, ActivityTypes
from botframework.connector.auth import AuthenticateRequestResult

from bot.cards import CardBuilder
from bot.channels.teams import (
    CHANNEL,
    PERSON,
    SEED,
    TeamsChannel,
    channel_of,
    remember_conversation,
)
from bot.config import TeamsConfig
from bot.deadlines import SAVED_LATE, DeadlineExceeded, within
from bot.desk import Desk
from bot.handlers.errors import OUTAGE
from bot.handlers.payloads import contains_nul, without_nul
from bot.handlers.teams_auth import HeaderCheck, install_key_sets
from bot.handlers.teams_messages import TeamsMessages
from bot.handlers.teams_submits import TeamsSubmits
from bot.handlers.teams_turns import REFUSAL_LOG_EVERY, TeamsTurns

log = logging.getLogger("ithelp.teams")


class _BotSettings:
    """The attribute names ``ConfigurationBotFrameworkAuthentication`` reads its credentials from."""

    def __init__(self, teams: TeamsConfig) -> None:
        # Without credentials botbuilder runs unauthenticated; config and server allow that on loopback only.
        self.APP_ID = teams.app_id if teams.authenticated else ""
        self.APP_PASSWORD = teams.app_password if teams.authenticated else ""
        self.APP_TYPE = teams.app_type
        self.APP_TENANTID = teams.tenant_id


class TeamsAdapter(TeamsTurns):
    """Mounts at ``POST /api/messages``; registers the Teams outbox channel on ``desk.outbox``. Authenticates and
    routes each turn to the messages or the card submissions."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        self.config = desk.config.teams
        # Key fetching that can't stall the event loop, installed before botbuilder validates any token.
        install_key_sets(self.config, desk.clock)
        self.adapter = CloudAdapter(ConfigurationBotFrameworkAuthentication(_BotSettings(self.config)))
        self.header_check = HeaderCheck(self.config) if self.config.authenticated else None
        self.deadline = desk.config.server.request_deadline.total_seconds()
        self.cards: CardBuilder = desk.cards
        desk.outbox.register("teams", TeamsChannel(self.adapter, desk.db, desk.clock, self.cards, desk.config))
        self._refused = 0
        self._refusal_logged_at: datetime | None = None
        self.submits = TeamsSubmits(desk)
        self.messages = TeamsMessages(desk, self.submits)

    async def handle(self, request: web.Request) -> web.Response:
        """401 for a missing or bad token (decided on the header, before the body is read), 400 for a body
        that isn't an activity, else run the turn: 201 or the invoke's answer."""
        authorization = request.headers.get("Authorization", "")
        if self.header_check is not None:
            try:
                await self.header_check.check(authorization)
            except Exception as exc:  # botbuilder raises PermissionError, ValueError or jwt errors for bad tokens
                return self._refuse(exc)
        activity = await self._read_activity(request)
        if isinstance(activity, web.Response):
            return activity
        try:
            # The full check: what needs the activity too (channel endorsement, serviceUrl claim).
            auth = await self.adapter.bot_framework_authentication.authenticate_request(activity, authorization)
        except Exception as exc:
            return self._refuse(exc)
        try:
            invoke = await within(self.deadline, self.adapter.process_activity(auth, activity, self._on_turn))
        except DeadlineExceeded as exc:
            return await self._too_late(auth, activity, exc.saved)
        except Exception:
            log.exception("Teams activity %s failed", activity.id)
            return web.json_response({"error": "internal error"}, status=500)
        finally:
            self._kick()
        if invoke is None:
            return web.Response(status=201)
        return web.json_response(invoke.body, status=int(invoke.status))

    @staticmethod
    async def _read_activity(request: web.Request) -> Activity | web.Response:
        try:
            body = json.loads(await request.read())
            if contains_nul(body):  # Slack's edge rule: a forged NUL names nothing and reaches no database
                body = without_nul(body)
        except (ValueError, RecursionError):  # not JSON or not UTF-8, nested past the recursion limit, a huge number
            return web.json_response({"error": "the request body is not JSON"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            return web.json_response({"error": "the request body is not a Bot Framework activity"}, status=400)
        try:
            activity = Activity().deserialize(body)
        except (TypeError, ValueError, AttributeError, RecursionError):  # msrest DeserializationError is a ValueError
            return web.json_response({"error": "the activity could not be read"}, status=400)
        if not activity.service_url or activity.conversation is None or not activity.conversation.id:
            return web.json_response({"error": "the activity has no serviceUrl or conversation"}, status=400)
        return activity

    def _refuse(self, exc: Exception) -> web.Response:
        # One line a minute at most: a flood of forged requests must not turn into a flood of log lines.
        self._refused += 1
        now = self.desk.clock.now()
        if self._refusal_logged_at is None or now - self._refusal_logged_at >= REFUSAL_LOG_EVERY:
            log.warning("refused %d Teams request(s) without a valid token; the latest: %s: %s", self._refused,
                        type(exc).__name__, exc)
            self._refused, self._refusal_logged_at = 0, now
        return web.json_response({"error": "unauthorized"}, status=401)

    async def _too_late(self, auth: AuthenticateRequestResult, activity: Activity, saved: bool) -> web.Response:
        """The turn outlived ``server.request_deadline`` (the database hangs) and was cancelled: tell whoever is
        waiting that nothing was saved (or, if its ticket made it, that it did) and answer the HTTP request."""
        log.warning("Teams %s activity %s not handled within %.1fs; the sender was told %s", activity.type,
                    activity.id, self.deadline, "the ticket is on its way" if saved else "to try again")
        answer = SAVED_LATE if saved else OUTAGE
        if activity.type == ActivityTypes.invoke:
            return web.json_response({"statusCode": 200, "type": "application/vnd.microsoft.activity.message",
                                      "value": answer})
        if activity.type != ActivityTypes.message:
            return web.json_response({"error": "not handled in time; try again"}, status=503)

        async def apologise(turn: TurnContext) -> None:
            await turn.send_activity(MessageFactory.text(answer))

        try:
            await within(self.deadline, self.adapter.process_activity(auth, activity, apologise))
        except Exception as exc:  # the connector is away too: the HTTP answer still goes back
            log.warning("could not tell the sender of Teams activity %s to try again: %s", activity.id, exc)
        return web.Response(status=201)

    async def close(self) -> None:
        """Nothing to release: botbuilder opens a connector session per call."""

    def _kick(self) -> None:
        self.desk.wake()

    async def _on_turn(self, turn: TurnContext) -> None:
        activity = turn.activity
        if activity.type in (ActivityTypes.message, ActivityTypes.conversation_update, "installationUpdate"):
            try:
                await self._remember(activity)
            except Exception:  # replying still works from the inbound activity; the next message retries
                log.exception("could not store the conversation reference of activity %s", activity.id)
        if activity.type == ActivityTypes.conversation_update:
            await self.messages.on_members_added(turn)
        if activity.type == ActivityTypes.message:
            await self.messages.on_message(turn)
        elif activity.type == ActivityTypes.invoke:
            await self._on_invoke(turn)

    async def _on_invoke(self, turn: TurnContext) -> None:
        """Action.Execute (``adaptiveCard/action``) takes the same path as Action.Submit; other invokes: 400."""
        activity = turn.activity
        value: dict[str, Any] = activity.value if isinstance(activity.value, dict) else {}
        raw_action = value.get("action")
        action: dict[str, Any] = raw_action if isinstance(raw_action, dict) else {}
        person = self._person(activity)
        if activity.name != "adaptiveCard/action" or person is None:
            await turn.send_activity(Activity(type=ActivityTypes.invoke_response, value=InvokeResponse(
                status=400, body={"statusCode": 400, "type": "application/vnd.microsoft.error",
                                  "value": {"code": "BadRequest", "message": "ITHelp can't handle that request"}})))
            return
        data = dict(action.get("data") or {}) if isinstance(action.get("data"), dict) else {}
        data.setdefault("action", action.get("verb"))
        await self.submits.on_submit(turn, person, data)
        await turn.send_activity(Activity(type=ActivityTypes.invoke_response, value=InvokeResponse(
            status=200, body={"statusCode": 200, "type": "application/vnd.microsoft.activity.message",
                              "value": "Done"})))

    async def _remember(self, activity: Activity) -> None:
        """Keep a ConversationReference for the person (1:1 chats) and the channel (team installs, mentions)."""
        reference = TurnContext.get_conversation_reference(activity)
        reference.activity_id = None
        # botbuilder reads conversation.tenantID, Teams sends tenantId: take the tenant from channelData.
        channel_data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
        tenant_info = channel_data.get("tenant")
        tenant = tenant_info.get("id") if isinstance(tenant_info, dict) else None
        if tenant:
            reference.conversation.tenant_id = tenant
        conversation_type = activity.conversation.conversation_type or "personal"
        user = activity.from_property
        async with self.desk.db.transaction() as session:
            now = self.desk.clock.now()
            if conversation_type == "personal":
                if user is not None and user.aad_object_id:
                    await remember_conversation(session, key=user.aad_object_id, kind=PERSON,
                                                reference=reference.serialize(), now=now)
                return
            # A channel post lives in a thread (";messageid="); new posts go to the channel itself.
            key = channel_of(activity.conversation.id) if conversation_type == "channel" else activity.conversation.id
            reference.conversation.id = key
            await remember_conversation(session, key=key, kind=CHANNEL, reference=reference.serialize(), now=now)
            if user is not None and user.aad_object_id:
                # Enough to open a 1:1 chat with them later; never replaces a chat they started themselves.
                await remember_conversation(session, key=user.aad_object_id, kind=SEED,
                                            reference=reference.serialize(), now=now, replace=False)


__all__ = ["TeamsAdapter"]
