"""Slack adapter: Bolt listeners that translate Slack payloads into ticket-service calls.

Thin on purpose: parse, dedupe, resolve the person, call a service, answer. Every listener runs
before the HTTP response (``process_before_response``) and does only database work there; messages
go out through the outbox, which is kicked right after the change commits. What needs Slack's Web API
to read or to answer (a :ticket: reaction, a mention, the message shortcut) is written down as timer
rows due now and run by the engine after the ack (``slack_filing``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.cards import CardBuilder
from bot.channels.slack import SlackChannel, make_client
from bot.desk import Desk
from bot.handlers.errors import OUTAGE, friendly, is_database_outage
from bot.handlers.payloads import contains_nul, without_nul
from bot.handlers.slack_clicks import SlackClicks
from bot.handlers.slack_commands import SlackCommands
from bot.handlers.slack_events import SlackEvents
from bot.handlers.slack_filing import SlackFiling
from bot.handlers.slack_home import SlackHome
from bot.handlers.slack_part import PLATFORM, SlackPart
from bot.people import PersonRef
from bot.routing import Action, Form, Shortcut

log = logging.getLogger("ithelp.slack")


def _reparsed(body: dict[str, Any], request: web.Request) -> AsyncBoltRequest:
    """A Bolt request for a body we had to correct, built through Bolt's public constructor (as JSON, which it
    reads as is) so its context matches the corrected body. The signature was checked on the original bytes."""
    headers: dict[str, str | Sequence[str]] = {**request.headers, "Content-Type": "application/json"}
    return AsyncBoltRequest(body=json.dumps(body), query=request.query_string, headers=headers)


class SlackAdapter:
    """Mounts at ``POST /slack/events``; also runs Socket Mode when asked. Routes each Bolt listener to the part
    of the adapter that handles it (commands, events, clicks, home)."""

    def __init__(self, desk: Desk, *, client: AsyncWebClient | None = None) -> None:
        self.desk = desk
        self.config = desk.config.slack
        self.client = client or make_client(self.config.bot_token, self.config.api_url)
        self.cards: CardBuilder = desk.cards
        desk.outbox.register("slack", SlackChannel(self.client, desk.db, desk.clock, self.cards,
                                                   triage_channel=self.config.triage_channel))
        self.app = AsyncApp(
            client=self.client, signing_secret=self.config.signing_secret, process_before_response=True,
            # handle() checks signature and timestamp before anything is parsed; Socket Mode needs no
            # signature. Bolt checking the same HMAC again would only cost every request more time.
            request_verification_enabled=False, ignoring_self_events_enabled=True,
            raise_error_for_unhandled_request=False,
        )
        self.verifier = SignatureVerifier(self.config.signing_secret)
        self._socket_mode: Any = None
        part = SlackPart(desk, self.client)
        self.people = part
        self.commands = SlackCommands(part)
        self.events = SlackEvents(part)
        self.filing = SlackFiling(part)
        """The timer tasks that file a mentioned, reacted-to or shortcut message after the ack (the server
        registers them with the engine)."""
        self.clicks = SlackClicks(part)
        self.home = SlackHome(part)
        self.app.error(self._on_error)
        self._register()

    # -- transport ----------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        # Signature and freshness first, before parsing anything an outsider sent.
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        try:
            valid = timestamp.isdigit() and self.verifier.is_valid(raw, timestamp, signature)
        except ValueError:  # slack_sdk decodes the body to compute the signature: not UTF-8, not Slack
            valid = False
        if not valid:
            return web.json_response({"error": "invalid request signature or timestamp"}, status=401)
        try:
            text = raw.decode("utf-8")
            bolt_request = AsyncBoltRequest(body=text, query=request.query_string,
                                            headers=dict(request.headers))
        except (ValueError, TypeError, AttributeError, KeyError, IndexError):
            # Not UTF-8, JSON that doesn't parse, or a payload whose shape Bolt can't read.
            return web.json_response({"error": "malformed request body"}, status=400)
        if not isinstance(bolt_request.body, dict):
            return web.json_response({"error": "malformed request body"}, status=400)
        if bolt_request.body == {} and "application/x-www-form-urlencoded" in (request.content_type or ""):
            # Bolt mistakes any form body containing the word "payload" (e.g. "/ithelp payload service
            # down") for interactivity and drops it; re-parse slash commands ourselves.
            bolt_request = _reparsed(dict(parse_qsl(text, keep_blank_values=True)), request)
        if contains_nul(bolt_request.body):
            bolt_request = _reparsed(without_nul(bolt_request.body), request)
        try:
            response = await self.app.async_dispatch(bolt_request)
        except Exception as exc:  # raised by Bolt's own matchers on a payload missing fields
            response = await self._on_error(exc, bolt_request.body)
        self._kick()
        return await to_aiohttp_response(response)

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> BoltResponse:
        """Bolt's error handler: a clear answer instead of a 500, and the right one for Slack's retries."""
        kind = body.get("type") if isinstance(body, dict) else None
        if is_database_outage(error):
            log.warning("database unavailable while handling a Slack %s: %s", kind or "request", error)
            if kind == "event_callback":
                # Slack retries events; the event id dedup makes the retry safe, so nothing is lost.
                return BoltResponse(status=503, body="")
            if isinstance(body, dict) and body.get("command"):
                return BoltResponse(status=200, body=json.dumps({"response_type": "ephemeral", "text": OUTAGE}),
                                    headers={"content-type": "application/json"})
            return BoltResponse(status=503, body="")
        malformed = isinstance(error, KeyError | TypeError | ValueError | AttributeError | IndexError)
        if malformed:
            log.warning("malformed Slack %s ignored: %s: %s", kind or "request", type(error).__name__, error)
        else:
            log.error("error handling a Slack %s", kind or "request", exc_info=error)
        if kind == "event_callback":
            return BoltResponse(status=200, body="")  # retrying the same payload would fail the same way
        if isinstance(body, dict) and body.get("command"):
            answer = {"response_type": "ephemeral", "text": friendly(error, PLATFORM)}
            return BoltResponse(status=200, body=json.dumps(answer), headers={"content-type": "application/json"})
        return BoltResponse(status=400 if malformed else 500, body=json.dumps({"error": "could not handle that"}),
                            headers={"content-type": "application/json"})

    async def run_socket_mode(self) -> None:
        """Take Slack's requests over a Socket Mode websocket instead of HTTP (no public URL needed)."""
        from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
        from slack_sdk.socket_mode.aiohttp import SocketModeClient
        from slack_sdk.socket_mode.request import SocketModeRequest

        adapter = self

        class Handler(AsyncSocketModeHandler):
            # What handle() does around an HTTP request: count it as in flight, kick the engine after.
            async def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
                with adapter.desk.requests.serving():
                    await super().handle(client, req)
                adapter._kick()

        self._socket_mode = Handler(self.app, self.config.app_token)
        await self._socket_mode.start_async()

    async def close(self) -> None:
        if self._socket_mode is not None:
            await self._socket_mode.close_async()
        session = getattr(self.client, "session", None)
        if session is not None and not session.closed:
            await session.close()

    def _kick(self) -> None:
        self.desk.wake()

    # -- what the server and other parts ask of Slack -----------------------------------------------------
    async def person(self, user_id: str, *, name: str | None = None) -> PersonRef:
        """Who this Slack user is (see ``SlackPart.person``)."""
        return await self.people.person(user_id, name=name)

    async def refresh_agent_groups(self) -> None:
        """Re-read the members of the agents' Slack user groups."""
        await self.people.refresh_agent_groups()

    async def publish_home(self, user_id: str) -> None:
        """Publish ``user_id``'s App Home tab."""
        await self.home.publish_home(user_id)

    # -- listeners ----------------------------------------------------------------------------------
    def _register(self) -> None:
        app = self.app
        app.command(self.config.command)(self.commands.on_command)
        app.view(Form.NEW_TICKET.value)(self.commands.on_new_ticket_submit)
        app.view(Form.RESOLVE_NOTE.value)(self.clicks.on_resolve_submit)
        app.view(Form.SURVEY_REASON.value)(self.clicks.on_survey_reason_submit)
        app.view(Form.SEND_ARTICLE.value)(self.clicks.on_send_article_submit)
        app.view(Form.INCIDENT_UPDATE.value)(self.clicks.on_incident_form_submit)
        app.view(Form.INCIDENT_RESOLVE.value)(self.clicks.on_incident_form_submit)
        app.shortcut(Shortcut.CREATE_FROM_MESSAGE.value)(self.events.on_message_shortcut)
        app.event("app_home_opened")(self.home.on_home_opened)
        app.event("reaction_added")(self.events.on_reaction)
        app.event("message")(self.events.on_message)
        app.event("app_mention")(self.events.on_mention)
        handlers = self.clicks.action_handlers()
        handlers[Action.NEW_TICKET] = self.commands.on_new_ticket_button
        for action, handler in handlers.items():
            app.action(action.value)(handler)


__all__ = ["SlackAdapter"]
