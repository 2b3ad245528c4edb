"""Slack adapter: Bolt listeners that translate Slack payloads into ticket-service calls.

Thin on purpose: parse, dedupe, resolve the person, call a service, answer. Every listener runs
before the HTTP response (``process_before_response``) and does only database work there; messages
go out through the outbox, which is kicked right after the change commits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select

from bot.actions import ACTIONS, Click, check_allowed, perform
from bot.cards import CardBuilder
from bot.channels.slack import SlackChannel, make_client, slack_ref
from bot.desk import Desk
from bot.dialogs import incident_note, new_ticket, resolve_note, survey_reason
from bot.handlers import slack_text
from bot.handlers.errors import OUTAGE, friendly, is_database_outage
from bot.handlers.payloads import contains_nul, without_nul
from bot.people import PersonRef
from bot.renderers import slack_blocks
from bot.routing import Action, Form, Shortcut
from bot.text import escape_typed, to_plain
from bot.tickets import (
    CLOSED,
    OPEN_STATUSES,
    InvalidInput,
    Origin,
    TicketError,
    TicketSnapshot,
)
from store.models import MessageRef, Person, Ticket

PLATFORM = "Slack"
# A renamed or relocated person shows up with their new name/zone within this long.
PEOPLE_CACHE_SECONDS = 300.0
PEOPLE_CACHE_SIZE = 50_000
log = logging.getLogger("ithelp.slack")

HELP = (
    "*ITHelp* — ask IT for help right here.\n"
    "• `/ithelp <what's wrong>` opens a ticket, e.g. `/ithelp VPN keeps disconnecting`\n"
    "• `/ithelp` on its own opens a form\n"
    "• `/ithelp status` shows your open tickets and where they stand\n"
    "• `/ithelp list` lists your recent tickets\n"
    "• Or just DM me, or react with :ticket: to any message to turn it into a ticket."
)




class SlackAdapter:
    """Mounts at ``POST /slack/events``; also runs Socket Mode when asked."""

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
        self._people: dict[str, tuple[float, PersonRef]] = {}
        self._socket_mode: Any = None
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
            bolt_request.body = dict(parse_qsl(text, keep_blank_values=True))
            bolt_request.context = build_async_context(AsyncBoltContext({}), bolt_request.body)
        if contains_nul(bolt_request.body):
            bolt_request.body = without_nul(bolt_request.body)
            bolt_request.context = build_async_context(AsyncBoltContext({}), bolt_request.body)
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

    # -- people -------------------------------------------------------------------------------------
    async def person(self, user_id: str, *, name: str | None = None) -> PersonRef:
        """Who is this Slack user? Name and time zone from ``users.info``, once, then from our store
        (kept in memory for a few minutes: every ticket, click and message starts here).

        ``name`` (a handle from the payload) is only a fallback for someone new whom ``users.info`` can't
        describe: a person is always shown by their directory display name."""
        cached = self._people.get(user_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        async with self.desk.db.reading() as session:
            known = (await session.execute(select(Person).where(
                Person.platform == "slack", Person.platform_user_id == user_id))).scalar_one_or_none()
            if known is not None and known.timezone:
                ref = PersonRef("slack", user_id, known.display_name, known.timezone, known.email)
                if len(self._people) >= PEOPLE_CACHE_SIZE:
                    self._people.clear()
                self._people[user_id] = (time.monotonic() + PEOPLE_CACHE_SECONDS, ref)
                return ref
        try:
            info = await asyncio.wait_for(self.client.users_info(user=user_id), timeout=2)
            user: dict[str, Any] = info["user"]
            profile = user.get("profile", {})
            display = user.get("real_name") or profile.get("real_name") or profile.get("display_name")
            return PersonRef("slack", user_id, display or None, user.get("tz"), profile.get("email"),
                             fallback_name=name)
        except (TimeoutError, SlackApiError, OSError) as exc:
            # Unknown or unreachable: still serve them; the calendar's zone stands in for theirs.
            log.warning("users.info %s failed: %s", user_id, exc)
            return PersonRef("slack", user_id, fallback_name=name)

    async def neutral(self, text: str) -> str:
        """Slack message text as the desk stores it (``bot.text``): entities decoded once, links kept, mentions
        as display names."""
        users = slack_text.mentioned_users(text)
        names: dict[str, str] = {}
        if users:
            async with self.desk.db.reading() as session:
                rows = await session.execute(select(Person.platform_user_id, Person.display_name).where(
                    Person.platform == "slack", Person.platform_user_id.in_(users)))
                names = {user: name for user, name in rows.tuples()}
            for user in users - names.keys():
                names[user] = (await self.person(user)).display_name or user
        return slack_text.decode(text, names)

    async def refresh_agent_groups(self) -> None:
        for group in self.desk.config.agents.slack_usergroups:
            try:
                response = await self.client.usergroups_users_list(usergroup=group)
                users: list[str] = response.get("users", [])
                members = {f"slack:{user}" for user in users}
                self.desk.roster.set_group_members(group, members)
            except SlackApiError as exc:
                log.warning("could not read Slack user group %s: %s", group, exc)

    # -- listeners ----------------------------------------------------------------------------------
    def _register(self) -> None:
        app = self.app
        app.command(self.config.command)(self._on_command)
        app.view(Form.NEW_TICKET.value)(self._on_new_ticket_submit)
        app.view(Form.RESOLVE_NOTE.value)(self._on_resolve_submit)
        app.view(Form.SURVEY_REASON.value)(self._on_survey_reason_submit)
        app.view(Form.INCIDENT_UPDATE.value)(self._on_incident_form_submit)
        app.view(Form.INCIDENT_RESOLVE.value)(self._on_incident_form_submit)
        app.shortcut(Shortcut.CREATE_FROM_MESSAGE.value)(self._on_message_shortcut)
        app.event("app_home_opened")(self._on_home_opened)
        app.event("reaction_added")(self._on_reaction)
        app.event("message")(self._on_message)
        app.event("app_mention")(self._on_mention)
        for action, handler in self._action_handlers().items():
            app.action(action.value)(handler)

    def _action_handlers(self) -> dict[Action, Callable[..., Awaitable[None]]]:
        # Every button of the shared table goes through one handler; the two that open a modal have their own.
        handlers: dict[Action, Callable[..., Awaitable[None]]] = dict.fromkeys(ACTIONS, self._on_click)
        handlers[Action.RESOLVE] = self._on_resolve_button
        handlers[Action.SURVEY_REASON] = self._on_survey_reason_button
        for action in incident_note.FORM_OF:
            handlers[action] = self._on_incident_form_button
        return handlers

    async def _on_command(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        text = (await self.neutral(body.get("text") or "")).strip()
        user_id = body["user_id"]
        word = text.lower()
        if not text:
            try:
                await client.views_open(trigger_id=body["trigger_id"], view=new_ticket.slack_modal(
                    self.desk.config.categories, self._priority_labels(), private_metadata=body.get("channel_id", "")))
                await ack()
            except SlackApiError as exc:
                log.warning("views.open failed: %s", exc)
                await ack(response_type="ephemeral", text="I couldn't open the form just now. Type "
                          "`/ithelp <what's wrong>` instead and I'll open the ticket straight away.")
            return
        if word == "help":
            await ack(response_type="ephemeral", text=HELP)
            return
        if word in ("status", "list"):
            await ack(response_type="ephemeral", text=await self._status_text(user_id, open_only=word == "status"))
            return
        if word.startswith("incident ") and text[len("incident "):].strip():
            await ack(response_type="ephemeral", text=await self._declare_incident(
                user_id, body, text[len("incident "):].strip()))
            return
        try:
            requester = await self.person(user_id, name=body.get("user_name"))
            result = await self.desk.tickets.open(
                requester, text, origin=Origin("slack", conversation=body.get("channel_id")),
                dedup=("slack-command", body.get("trigger_id") or f"{user_id}:{text}"), defer_setup=True,
            )
        except Exception as exc:
            await ack(response_type="ephemeral", text=f"{friendly(exc, PLATFORM)}\n\nWhat you typed: {_quote(text)}")
            return
        await ack(response_type="ephemeral", text=self._ack_text(result.ticket))

    async def _declare_incident(self, user_id: str, body: dict[str, Any], title: str) -> str:
        """``/ithelp incident <title>`` (agents): the answer to show the agent."""
        try:
            agent = await self.person(user_id, name=body.get("user_name"))
            number = await self.desk.incidents.declare_new(
                title, agent, Origin("slack", conversation=body.get("channel_id")))
        except Exception as exc:
            return friendly(exc, PLATFORM)
        return f"{number} declared; its card is in the triage channel."

    def _ack_text(self, ticket: TicketSnapshot) -> str:
        wording = self.desk.acknowledgement(ticket)
        summary = slack_blocks.mrkdwn(to_plain(ticket.summary), slack_blocks.MAX_SUMMARY)
        return (f"{slack_blocks.mrkdwn(wording)} — _{summary}_\n"
                "I'll keep you posted in a DM thread; reply there to add details.")

    def _priority_labels(self) -> dict[str, str]:
        return {code: f"{code} · {p.label}" for code, p in self.desk.config.priorities.items()}

    async def _status_text(self, user_id: str, *, open_only: bool) -> str:
        # Known issues first, so a person checks them before filing (incidents).
        known = await self.desk.incidents.known_issues(None)
        known_text = "".join(f"{slack_blocks.mrkdwn(line)}\n" for line in known) + ("\n" if known else "")
        tickets = await self.desk.tickets.tickets_of(PersonRef("slack", user_id), open_only=open_only)
        if not tickets:
            return known_text + ("You have no open tickets." if open_only else "You haven't opened any tickets yet.")
        lines = [f"*{t.number}* {slack_blocks.escape_mrkdwn(to_plain(t.summary))} — {t.requester_status_label}"
                 + (f", with {slack_blocks.escape_mrkdwn(t.assignee_name)}" if t.assignee_name else "")
                 for t in tickets]
        return known_text + ("Your open tickets:\n" if open_only else "Your recent tickets:\n") + "\n".join(lines)

    async def _on_new_ticket_submit(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        draft = new_ticket.parse_slack_submission(view["state"]["values"])
        errors = new_ticket.slack_errors(draft)
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        user_id = body["user"]["id"]
        try:
            requester = await self.person(user_id, name=body["user"].get("name"))
            priority = draft.urgency if draft.urgency in self.desk.config.priorities else None
            await self.desk.tickets.open(
                requester, escape_typed(draft.summary), description=escape_typed(draft.description),
                category=draft.category,
                priority=priority, origin=Origin("slack", conversation=view.get("private_metadata") or None),
                dedup=("slack-view", view["id"]), defer_setup=True,
            )
        except InvalidInput as exc:
            field = new_ticket.SUMMARY_BLOCK if exc.field == "summary" else new_ticket.DESCRIPTION_BLOCK
            await ack(response_action="errors", errors={field: str(exc)})
            return
        except Exception as exc:
            # Keep the form open with the person's text in it; nothing they typed is lost.
            await ack(response_action="errors", errors={new_ticket.SUMMARY_BLOCK: friendly(exc, PLATFORM)})
            return
        await ack()

    async def _on_resolve_submit(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        note = resolve_note.parse_slack_submission(view["state"]["values"])
        try:
            ticket_id = _ticket_number(view.get("private_metadata"))
            if ticket_id is None:
                raise _Refusal("That form doesn't point at a ticket any more.")
            await self.desk.tickets.resolve(ticket_id, await self.person(body["user"]["id"]), escape_typed(note))
        except Exception as exc:
            await ack(response_action="errors", errors={resolve_note.NOTE_BLOCK: friendly(exc, PLATFORM)})
            return
        await ack()

    # -- card buttons -------------------------------------------------------------------------------
    async def _refuse(self, client: AsyncWebClient, body: dict[str, Any], message: str) -> None:
        channel = (body.get("channel") or {}).get("id") or body.get("container", {}).get("channel_id")
        user = body["user"]["id"]
        try:
            if channel:
                await client.chat_postEphemeral(channel=channel, user=user, text=message)
            else:
                await client.chat_postMessage(channel=user, text=message)
        except SlackApiError as exc:
            log.warning("could not tell %s: %s (%s)", user, message, exc)

    @staticmethod
    def _ticket_id(body: dict[str, Any]) -> int | None:
        action = (body.get("actions") or [{}])[0]
        raw = action.get("value") or (action.get("selected_option") or {}).get("value") or ""
        return _ticket_number(str(raw).split(":", 1)[0])

    async def _on_click(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        """A button or menu from the shared action table (``bot.actions``)."""
        await ack()
        ticket_id = self._ticket_id(body)
        if ticket_id is None:
            await self._refuse(client, body, "That button doesn't point at a ticket any more.")
            return
        user = body["user"]
        pressed = (body.get("actions") or [{}])[0]
        channel = (body.get("channel") or {}).get("id") or ""
        try:
            person = await self.person(user["id"], name=user.get("name") or user.get("username"))
            await perform(self.desk, Click(
                Action(pressed["action_id"]), ticket_id, person,
                choice=str((pressed.get("selected_option") or {}).get("value") or pressed.get("value") or ""),
                # A page posted in a channel may be acknowledged by anyone in it (DMs name the person).
                where=f"slack:channel:{channel}" if channel[:1] in ("C", "G") else None))
        except Exception as exc:
            await self._refuse(client, body, friendly(exc, PLATFORM))

    async def _on_survey_reason_button(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        ticket_id = self._ticket_id(body)
        if ticket_id is None:
            return
        try:
            check_allowed(self.desk, Action.SURVEY_REASON, PersonRef("slack", body["user"]["id"]))
            view = await self.desk.surveys.view(ticket_id)
            await client.views_open(trigger_id=body["trigger_id"], view=survey_reason.slack_modal(view.ticket_id,
                                                                                                  view.number))
        except Exception as exc:
            await self._refuse(client, body, friendly(exc, PLATFORM))

    async def _on_survey_reason_submit(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        try:
            ticket_id, reason, comment = survey_reason.read_slack(view)
            who = PersonRef("slack", body["user"]["id"])
            check_allowed(self.desk, Action.SURVEY_REASON, who)
            await self.desk.surveys.add_reason(ticket_id, who, reason, comment)
        except Exception as exc:
            await ack(response_action="errors", errors={"reason": friendly(exc, PLATFORM)})
            return
        await ack()

    async def _on_resolve_button(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        ticket_id = self._ticket_id(body)
        user = body["user"]
        if ticket_id is None:
            return
        try:
            check_allowed(self.desk, Action.RESOLVE, PersonRef("slack", user["id"]))
            ticket = await self.desk.tickets.get(ticket_id)
            await client.views_open(trigger_id=body["trigger_id"],
                                    view=resolve_note.slack_modal(ticket.id, ticket.number))
        except Exception as exc:
            await self._refuse(client, body, friendly(exc, PLATFORM))

    async def _on_incident_form_button(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        """"Post update" / "Resolve incident" on an incident card: the agent writes the text in a modal."""
        await ack()
        pressed = (body.get("actions") or [{}])[0]
        action = Action(pressed["action_id"])
        incident_id = incident_note.incident_of(str(pressed.get("value") or ""))
        try:
            if incident_id is None:
                raise _Refusal("That button doesn't point at an incident any more.")
            check_allowed(self.desk, action, PersonRef("slack", body["user"]["id"]))
            number = await self.desk.incident_updates.number_of(incident_id)
            await client.views_open(trigger_id=body["trigger_id"], view=incident_note.slack_modal(
                incident_note.FORM_OF[action], incident_id, number))
        except Exception as exc:
            await self._refuse(client, body, friendly(exc, PLATFORM))

    async def _on_incident_form_submit(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        form = Form(view["callback_id"])
        text = escape_typed(incident_note.parse_slack(view["state"]["values"]))
        try:
            incident_id = _ticket_number(view.get("private_metadata"))
            if incident_id is None:
                raise _Refusal("That form doesn't point at an incident any more.")
            if not text:
                raise _Refusal(incident_note.required(form))
            agent = await self.person(body["user"]["id"])
            if form == Form.INCIDENT_UPDATE:
                await self.desk.incident_updates.post_update(incident_id, agent, text)
            else:
                await self.desk.incident_updates.number_of(incident_id)  # refused here, while the form is open
        except Exception as exc:
            await ack(response_action="errors", errors={incident_note.NOTE_BLOCK: friendly(exc, PLATFORM)})
            return
        await ack()
        if form == Form.INCIDENT_RESOLVE:
            # Every linked ticket is resolved in turn: after the ack, which Slack wants within 3 seconds.
            try:
                await self.desk.incident_updates.resolve(incident_id, agent, text)
            except Exception as exc:
                log.warning("resolving incident %s failed: %s", incident_id, exc)

    # -- intake from messages, reactions, shortcuts ---------------------------------------------------
    async def _on_message(self, body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient) -> None:
        if event.get("bot_id") or event.get("subtype") not in (None, "file_share", "thread_broadcast"):
            return  # our own posts, edits, joins: not something a person asked
        user_id = event.get("user")
        text = (await self.neutral(event.get("text") or "")).strip()
        if not user_id or not text:
            return
        channel = event.get("channel", "")
        thread_ts = event.get("thread_ts")
        event_key = body.get("event_id") or f"{channel}:{event.get('ts')}"
        if thread_ts:
            ticket_id, role = await self._ticket_for_thread(channel, thread_ts)
            if ticket_id is not None:
                person = await self.person(user_id)
                if role == "triage" and not self.desk.tickets.is_agent(person):
                    return  # colleagues chatting under the card: not relayed to the requester
                try:
                    await self.desk.tickets.comment(ticket_id, person, text, dedup=("slack-event", event_key),
                                                    source=f"{role}_thread")
                except TicketError as exc:
                    await client.chat_postMessage(channel=channel, thread_ts=thread_ts,
                                                  text=slack_blocks.escape_mrkdwn(str(exc)))
                return
        if event.get("channel_type") != "im":
            return
        try:
            person = await self.person(user_id)
            await self.desk.tickets.open(person, text, origin=Origin("slack", conversation=channel,
                                                                     thread=event.get("ts")),
                                         dedup=("slack-event", event_key), defer_setup=True)
        except Exception as exc:
            sorry = friendly(exc, PLATFORM)
            await client.chat_postMessage(channel=channel, text=f"{sorry}\n\nWhat you wrote: {_quote(text)}")

    async def _on_mention(self, body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient) -> None:
        if event.get("thread_ts"):
            return  # thread replies are handled as messages
        bot_user = (body.get("authorizations") or [{}])[0].get("user_id") or ""
        raw = (event.get("text") or "").replace(f"<@{bot_user}>", " ") if bot_user else " ".join(
            word for word in (event.get("text") or "").split() if not word.startswith("<@"))
        text = (await self.neutral(raw)).strip()
        if not text:
            return
        try:
            person = await self.person(event["user"])
            link = await self._permalink(client, event["channel"], event["ts"])
            result = await self.desk.tickets.open(
                person, text, origin=Origin("slack", conversation=event["channel"], thread=event["ts"], link=link),
                dedup=("slack-event", body.get("event_id") or f"{event['channel']}:{event['ts']}"), defer_setup=True)
            if result.created:
                await client.chat_postMessage(channel=event["channel"], thread_ts=event["ts"],
                                              text=self._ack_text(result.ticket))
        except Exception as exc:
            await client.chat_postMessage(channel=event["channel"], thread_ts=event["ts"], text=friendly(exc, PLATFORM))

    async def _ticket_for_thread(self, channel: str, thread_ts: str) -> tuple[int | None, str | None]:
        async with self.desk.db.reading() as session:
            query = select(MessageRef).where(
                MessageRef.platform == "slack", MessageRef.message_id == slack_ref(channel, thread_ts))
            ref = (await session.execute(query)).scalars().first()
            return (ref.ticket_id, ref.role) if ref else (None, None)

    async def _on_reaction(self, body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient) -> None:
        item = event.get("item") or {}
        if event.get("reaction") != "ticket" or item.get("type") != "message":
            return
        channel, ts = item["channel"], item["ts"]
        message = await self._fetch_message(client, channel, ts)
        if message is None:
            return
        author = message.get("user") or event.get("item_user")
        if not author or message.get("bot_id"):
            return
        await self._ticket_from_message(client, channel, ts, author, await self.neutral(message.get("text") or ""),
                                        reporter=event.get("user"))

    async def _on_message_shortcut(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        message = body.get("message") or {}
        channel = (body.get("channel") or {}).get("id", "")
        if not channel or not message.get("ts"):
            # Slack always sends both; without them there is no message to file and nowhere to say so.
            raise ValueError("a message shortcut without its message or channel")
        author = message.get("user") or body["user"]["id"]
        await self._ticket_from_message(client, channel, message.get("ts", ""), author,
                                        await self.neutral(message.get("text") or ""), reporter=body["user"]["id"])

    async def _ticket_from_message(self, client: AsyncWebClient, channel: str, ts: str, author: str, text: str,
                                   *, reporter: str | None) -> None:
        try:
            person = await self.person(author)
            link = await self._permalink(client, channel, ts)
            result = await self.desk.tickets.open(
                person, text or "(message without text)",
                origin=Origin("slack", conversation=channel, thread=ts, link=link),
                dedup=("slack-message", f"{channel}:{ts}"), defer_setup=True,
            )
        except Exception as exc:
            if reporter:
                try:
                    await client.chat_postEphemeral(channel=channel, user=reporter, text=friendly(exc, PLATFORM))
                except SlackApiError as told:
                    log.error("could not file message %s in %s (%s), nor tell %s why: %s", ts, channel, exc,
                              reporter, told)
            return
        if result.created:
            try:
                await client.reactions_add(channel=channel, timestamp=ts, name="eyes")
                await client.chat_postMessage(channel=channel, thread_ts=ts, text=self._ack_text(result.ticket))
            except SlackApiError as exc:
                log.warning("could not acknowledge ticket %s in %s: %s", result.ticket.number, channel, exc)
        elif reporter:
            await client.chat_postEphemeral(channel=channel, user=reporter,
                                            text=f"That message is already {result.ticket.number}.")

    async def _fetch_message(self, client: AsyncWebClient, channel: str, ts: str) -> dict[str, Any] | None:
        try:
            response = await client.conversations_history(channel=channel, latest=ts, inclusive=True, limit=1)
            messages = response.get("messages") or []
            if messages and messages[0].get("ts") == ts:
                return dict(messages[0])
            replies = await client.conversations_replies(channel=channel, ts=ts, limit=1, inclusive=True)
            for message in replies.get("messages") or []:
                if message.get("ts") == ts:
                    return dict(message)
        except SlackApiError as exc:
            log.warning("could not read message %s in %s: %s", ts, channel, exc)
        return None

    async def _permalink(self, client: AsyncWebClient, channel: str, ts: str) -> str | None:
        try:
            response = await client.chat_getPermalink(channel=channel, message_ts=ts)
            return str(response["permalink"])
        except SlackApiError:
            return None

    async def _on_home_opened(self, event: dict[str, Any], client: AsyncWebClient) -> None:
        if event.get("tab", "home") != "home":
            return
        user_id = event["user"]
        await self.publish_home(user_id, client)

    async def publish_home(self, user_id: str, client: AsyncWebClient | None = None) -> None:
        person_ref = await self.person(user_id)
        async with self.desk.db.transaction() as session:
            person = await self.desk.tickets.person(session, person_ref)
            listing = await self.cards.requester_list(session, person, self.desk.clock.now(),
                                                      include_agent_sections=person.is_agent)
        listing = dataclasses.replace(listing, intro=(*await self.desk.incidents.known_issues(person.timezone),
                                                      *listing.intro))
        await (client or self.client).views_publish(user_id=user_id, view=slack_blocks.home_view(listing))


class _Refusal(TicketError):
    pass


def _ticket_number(raw: object) -> int | None:
    """A ticket id from a button or form value: ASCII digits only ("١٢", "²" and 10**30 name no ticket)."""
    text = str(raw or "")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def _quote(text: str) -> str:
    escaped = slack_blocks.escape_mrkdwn(to_plain(text)[:2500])
    return "\n".join(f"> {line}" for line in escaped.splitlines()) or "> (empty)"


__all__ = ["CLOSED", "OPEN_STATUSES", "SlackAdapter", "Ticket"]
