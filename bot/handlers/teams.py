"""Teams adapter: Bot Framework activities on ``POST /api/messages`` translated into ticket-service calls.

Thin on purpose, like the Slack adapter: parse, remember the conversation, dedupe, resolve the person, call a
service, answer in the turn. Cards and notices go out through the outbox (``bot.channels.teams``), which is
kicked right after the change commits.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web
from botbuilder.core import InvokeResponse, MessageFactory, TurnContext
from botbuilder.integration.aiohttp import CloudAdapter, ConfigurationBotFrameworkAuthentication
from botbuilder.schema import Activity, ActivityTypes, Attachment
from botframework.connector.auth import AuthenticateRequestResult
from sqlalchemy import select

from bot.actions import ACTIONS, Click, check_allowed, perform
from bot.cards import CardBuilder
from bot.channels.teams import (
    CHANNEL,
    PERSON,
    SEED,
    THREAD_MARK,
    TeamsChannel,
    channel_of,
    remember_conversation,
    teams_ref,
)
from bot.config import TeamsConfig
from bot.deadlines import SAVED_LATE, DeadlineExceeded, within
from bot.desk import Desk
from bot.dialogs import incident_note, new_ticket, resolve_note, survey_reason
from bot.handlers import teams_text
from bot.handlers.errors import OUTAGE, friendly
from bot.handlers.payloads import contains_nul, without_nul
from bot.handlers.teams_auth import HeaderCheck, install_key_sets
from bot.people import PersonRef
from bot.renderers import adaptive_cards
from bot.routing import Action, Form
from bot.text import escape_typed, to_plain, to_spans, without_controls
from bot.tickets import InvalidInput, NotAllowed, Origin, TicketSnapshot
from bot.views import Message, Notice, TicketList, TicketListItem
from store.models import MessageRef, OutboxMessage

PLATFORM = "Teams"
log = logging.getLogger("ithelp.teams")

HELP = (
    "**ITHelp**: ask IT for help right here.\n\n"
    "- Just tell me what's wrong (or `ithelp <what's wrong>`) and I'll open a ticket\n"
    "- `ithelp` on its own or `new ticket` opens a form\n"
    "- `status` shows your open tickets and where they stand\n"
    "- `list` lists your recent tickets\n"
    "- In a channel, mention me: `@ITHelp printer on floor 3 is jammed`\n"
    "- Reply to one of my messages about a ticket to add details to it"
)
DEDUP_SOURCE = "teams-activity"
# Teams puts the replied-to message id in a quoted-reply blockquote in 1:1 chats, where replyToId is unreliable.
_QUOTED_REPLY = re.compile(r'itemtype="http://schema\.skype\.com/Reply"[^>]*\bitemid="([^"]+)"')
REFUSAL_LOG_EVERY = timedelta(minutes=1)




class _BotSettings:
    """The attribute names ``ConfigurationBotFrameworkAuthentication`` reads its credentials from."""

    def __init__(self, teams: TeamsConfig) -> None:
        # Without credentials botbuilder runs unauthenticated; config and server allow that on loopback only.
        self.APP_ID = teams.app_id if teams.authenticated else ""
        self.APP_PASSWORD = teams.app_password if teams.authenticated else ""
        self.APP_TYPE = teams.app_type
        self.APP_TENANTID = teams.tenant_id


class TeamsAdapter:
    """Mounts at ``POST /api/messages``; registers the Teams outbox channel on ``desk.outbox``."""

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

    # -- transport ----------------------------------------------------------------------------------
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

    # -- turns --------------------------------------------------------------------------------------
    async def _on_turn(self, turn: TurnContext) -> None:
        activity = turn.activity
        if activity.type in (ActivityTypes.message, ActivityTypes.conversation_update, "installationUpdate"):
            try:
                await self._remember(activity)
            except Exception:  # replying still works from the inbound activity; the next message retries
                log.exception("could not store the conversation reference of activity %s", activity.id)
        if activity.type == ActivityTypes.message:
            await self._on_message(turn)
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
        await self._on_submit(turn, person, data)
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

    def _person(self, activity: Activity) -> PersonRef | None:
        user = activity.from_property
        if user is None or not user.aad_object_id:
            return None
        zone = _valid_zone(activity.local_timezone) or _valid_zone(_client_info_zone(activity))
        return PersonRef("teams", user.aad_object_id, user.name or None, zone)

    def _dedup(self, activity: Activity) -> tuple[str, str]:
        # Channel message ids are timestamps, unique per conversation only.
        return DEDUP_SOURCE, f"{activity.conversation.id}|{activity.id}"[-256:]

    async def _on_message(self, turn: TurnContext) -> None:
        activity = turn.activity
        person = self._person(activity)
        if person is None:
            log.info("ignoring a Teams message without an AAD object id (%s)", activity.id)
            return
        value = activity.value if isinstance(activity.value, dict) else None
        if value is not None and not (activity.text or "").strip():
            await self._on_submit(turn, person, value)
            return
        personal = (activity.conversation.conversation_type or "personal") == "personal"
        mentioned = self._strip_bot_mention(activity)
        text = teams_text.decode(activity.text).strip()
        if not personal:
            if await self._thread_comment(turn, person, text):
                return
            if not mentioned:
                return  # channel chatter the bot was not asked about
        elif await self._reply_comment(turn, person, text):
            return
        await self._on_text(turn, person, text)

    @staticmethod
    def _strip_bot_mention(activity: Activity) -> bool:
        """Remove ``<at>ITHelp</at>`` from the text; True when the bot was mentioned."""
        bot_id = activity.recipient.id if activity.recipient else None
        mentioned = False
        for entity in activity.entities or []:
            properties: dict[str, Any] = getattr(entity, "additional_properties", None) or {}
            if (entity.type or "").lower() == "mention" and (properties.get("mentioned") or {}).get("id") == bot_id:
                mentioned = True
                if properties.get("text"):
                    activity.text = (activity.text or "").replace(properties["text"], " ")
        return mentioned

    async def _on_text(self, turn: TurnContext, person: PersonRef, text: str) -> None:
        word = text.lower()
        if word.startswith("ithelp"):
            rest = text[len("ithelp"):]
            if not rest or rest[0].isspace():
                text, word = rest.strip(), rest.strip().lower()
        if word in ("", "new ticket"):
            await self._send_card(turn, new_ticket.teams_form(self.desk.config.categories, self._priority_labels()))
            return
        if word == "help":
            await turn.send_activity(MessageFactory.text(HELP))
            return
        if word in ("status", "list"):
            await self._send_card(turn, await self._list_card(person, open_only=word == "status"))
            return
        if word.startswith("incident ") and text[len("incident "):].strip():
            await self._say(turn, await self._declare_incident(turn, person, text[len("incident "):].strip()), person)
            return
        activity = turn.activity
        try:
            result = await self.desk.tickets.open(
                person, text, origin=Origin("teams", conversation=activity.conversation.id, thread=activity.id),
                dedup=self._dedup(activity), defer_setup=True)
        except Exception as exc:
            await self._say(turn, f"{friendly(exc, PLATFORM)}\n\nWhat you wrote: {to_plain(text)}", person)
            return
        if result.created:
            await self._acknowledge(turn, person, result.ticket)

    async def _declare_incident(self, turn: TurnContext, person: PersonRef, title: str) -> str:
        """``incident <title>`` (agents): the answer to show the agent."""
        activity = turn.activity
        try:
            number = await self.desk.incidents.declare_new(
                title, person, Origin("teams", conversation=activity.conversation.id, thread=activity.id))
        except Exception as exc:
            return friendly(exc, PLATFORM)
        return f"{number} declared; its card is in the triage channel."

    def _ack_notice(self, ticket: TicketSnapshot) -> Notice:
        wording = self.desk.acknowledgement(ticket)
        return Notice(ticket_id=ticket.id, number=ticket.number, headline=wording,
                      body=(*to_spans(ticket.summary),
                            "\n\nI'll keep you posted in our chat; reply to my messages to add details."),
                      numbered=False)

    async def _acknowledge(self, turn: TurnContext, person: PersonRef, ticket: TicketSnapshot, *,
                           replace: bool = False) -> None:
        """Tell the requester their ticket number and targets in the turn; if Teams refuses that reply (429, 5xx),
        the outbox owes it to them and delivers it with retries."""
        notice = self._ack_notice(ticket)
        card = adaptive_cards.notice_card(notice)
        sent = await self._replace_card(turn, card) if replace else await self._send_card(turn, card)
        if not sent:
            await self.desk.tickets.tell(person, notice, key=f"ack:{ticket.id}")

    def _priority_labels(self) -> dict[str, str]:
        return {code: f"{code} · {p.label}" for code, p in self.desk.config.priorities.items()}

    async def _list_card(self, person: PersonRef, *, open_only: bool) -> dict[str, Any]:
        tickets = await self.desk.tickets.tickets_of(person, open_only=open_only)
        items = tuple(TicketListItem(number=t.number, summary=to_plain(t.summary),
                                     status_label=t.requester_status_label, assignee=t.assignee_name,
                                     next_update=None) for t in tickets)
        title = "Your open tickets" if open_only else "Your recent tickets"
        empty = "You have no open tickets." if open_only else "You haven't opened any tickets yet."
        known = await self.desk.incidents.known_issues(None)  # open incidents, before the person files
        return adaptive_cards.ticket_list_card(TicketList(title=title, sections=((title, items),), empty_text=empty,
                                                          intro=known))

    # -- comments relayed from threads and replies ----------------------------------------------------
    async def _thread_comment(self, turn: TurnContext, person: PersonRef, text: str) -> bool:
        """A message in the thread under a triage card: an agent's comment for the requester."""
        conversation_id = turn.activity.conversation.id
        if THREAD_MARK not in conversation_id:
            return False
        channel, _, root = conversation_id.partition(THREAD_MARK)
        async with self.desk.db.reading() as session:
            ref = (await session.execute(select(MessageRef).where(
                MessageRef.platform == "teams", MessageRef.role == "triage",
                MessageRef.message_id == teams_ref(channel, root)))).scalars().first()
            ticket_id = ref.ticket_id if ref else None
        if ticket_id is None:
            return False
        if not self.desk.tickets.is_agent(person) or not text:
            return True  # colleagues chatting under the card: not relayed to the requester
        await self._comment(turn, ticket_id, person, text, "triage_thread")
        return True

    async def _reply_comment(self, turn: TurnContext, person: PersonRef, text: str) -> bool:
        """A reply, in a 1:1 chat, to one of the bot's messages about a ticket: the requester's comment."""
        activity = turn.activity
        replied = activity.reply_to_id
        for attachment in activity.attachments or []:
            found = _QUOTED_REPLY.search(str(attachment.content or ""))
            if found:
                replied = found.group(1)
        if not replied or not text:
            return False
        async with self.desk.db.reading() as session:
            ticket_id = await session.scalar(select(OutboxMessage.ticket_id).where(
                OutboxMessage.target == f"teams:user:{person.user_id}",
                OutboxMessage.delivered_message_id == teams_ref(activity.conversation.id, replied)).limit(1))
        if ticket_id is None:
            return False
        await self._comment(turn, ticket_id, person, text, "requester_thread")
        return True

    async def _comment(self, turn: TurnContext, ticket_id: int, person: PersonRef, text: str, source: str) -> None:
        try:
            await self.desk.tickets.comment(ticket_id, person, text, dedup=self._dedup(turn.activity), source=source)
        except Exception as exc:
            await self._say(turn, friendly(exc, PLATFORM), person)

    # -- card submissions ---------------------------------------------------------------------------
    async def _on_submit(self, turn: TurnContext, person: PersonRef, value: dict[str, Any]) -> None:
        form, action = value.get("form"), value.get("action")
        if form == Form.NEW_TICKET:
            await self._on_new_ticket_submit(turn, person, value)
        elif form == Form.RESOLVE_NOTE:
            await self._on_resolve_submit(turn, person, value)
        elif form == Form.SURVEY_REASON:
            await self._on_survey_reason_submit(turn, person, value)
        elif form in (Form.INCIDENT_UPDATE, Form.INCIDENT_RESOLVE):
            await self._on_incident_submit(turn, person, value, Form(form))
        elif isinstance(action, str) and action in {a.value for a in Action}:
            await self._on_action(turn, person, Action(action), value)
        else:
            await self._say(turn, "That card is out of date; type `help` to see what I can do.")

    async def _on_new_ticket_submit(self, turn: TurnContext, person: PersonRef, value: dict[str, Any]) -> None:
        draft = new_ticket.parse_teams_submission(value)
        error = new_ticket.teams_error(draft)
        if error is None:
            activity = turn.activity
            # Keyed on the form card, not the click: a second click on the same form opens nothing new.
            form_id = activity.reply_to_id or activity.id
            try:
                priority = draft.urgency if draft.urgency in self.desk.config.priorities else None
                result = await self.desk.tickets.open(
                    person, escape_typed(draft.summary), description=escape_typed(draft.description),
                    category=draft.category,
                    priority=priority, origin=Origin("teams", conversation=activity.conversation.id),
                    dedup=(DEDUP_SOURCE, f"{activity.conversation.id}|form|{form_id}"[-256:]), defer_setup=True)
            except Exception as exc:
                error = str(exc) if isinstance(exc, InvalidInput) else friendly(exc, PLATFORM)
            else:
                await self._acknowledge(turn, person, result.ticket, replace=True)
                return
        # The form comes back with the error and everything the person typed.
        await self._replace_card(turn, new_ticket.teams_form(self.desk.config.categories, self._priority_labels(),
                                                             draft=draft, error=error))

    async def _on_resolve_submit(self, turn: TurnContext, person: PersonRef, value: dict[str, Any]) -> None:
        try:
            ticket_id, note = resolve_note.parse_teams_submission(value)
        except (KeyError, TypeError, ValueError):
            await self._say(turn, "That form doesn't point at a ticket any more.")
            return
        error = resolve_note.teams_error(note)
        if error is None:
            try:
                ticket = await self.desk.tickets.resolve(ticket_id, person, escape_typed(note))
            except Exception as exc:
                error = friendly(exc, PLATFORM)
            else:
                await self._replace_card(turn, adaptive_cards.notice_card(Notice(
                    ticket_id=ticket.id, number=ticket.number, headline="Resolved.", body=note)))
                return
        try:
            number = (await self.desk.tickets.get(ticket_id)).number
        except Exception:  # the form still says what went wrong, just without the ticket number
            number = ""
        await self._replace_card(turn, resolve_note.teams_form(ticket_id, number, error=error, note=note))

    async def _on_action(self, turn: TurnContext, person: PersonRef, action: Action, value: dict[str, Any]) -> None:
        ticket_id = _ticket_id(value)
        if ticket_id is None:
            await self._say(turn, "That button doesn't point at a ticket any more.")
            return
        if action == Action.RESOLVE:
            try:
                check_allowed(self.desk, action, person)
                ticket = await self.desk.tickets.get(ticket_id)
            except Exception as exc:
                await self._say(turn, friendly(exc, PLATFORM))
                return
            await self._send_card(turn, resolve_note.teams_form(ticket.id, ticket.number))
            return
        if action == Action.SURVEY_REASON:
            await self._on_survey_reason_button(turn, person, ticket_id)
            return
        if action in incident_note.FORM_OF:
            await self._on_incident_form_button(turn, person, action, str(value.get("value") or ""))
            return
        conversation = turn.activity.conversation
        where = f"teams:channel:{channel_of(conversation.id)}" if conversation.conversation_type == "channel" else None
        if action not in ACTIONS:
            await self._say(turn, "I can't do that from Teams yet.")
            return
        try:
            await perform(self.desk, Click(action, ticket_id, person, where=where,
                                           choice=str(value.get(adaptive_cards.CHOICE_INPUT_ID)
                                                      or value.get("value") or "")))
        except Exception as exc:
            await self._say(turn, friendly(exc, PLATFORM))


    async def _on_incident_form_button(self, turn: TurnContext, person: PersonRef, action: Action, value: str
                                       ) -> None:
        """"Post update" / "Resolve incident" on an incident card: the agent writes the text in a card form."""
        incident_id = incident_note.incident_of(value)
        try:
            if incident_id is None:
                raise NotAllowed("That button doesn't point at an incident any more.")
            check_allowed(self.desk, action, person)
            number = await self.desk.incident_updates.number_of(incident_id)
        except Exception as exc:
            await self._say(turn, friendly(exc, PLATFORM))
            return
        await self._send_card(turn, incident_note.teams_form(incident_note.FORM_OF[action], incident_id, number))

    async def _on_incident_submit(self, turn: TurnContext, person: PersonRef, value: dict[str, Any], form: Form
                                  ) -> None:
        try:
            incident_id, text = incident_note.parse_teams(value)
        except (KeyError, TypeError, ValueError):
            await self._say(turn, "That form doesn't point at an incident any more.")
            return
        try:
            if not text:
                raise NotAllowed(incident_note.required(form))
            if form == Form.INCIDENT_UPDATE:
                reached = await self.desk.incident_updates.post_update(incident_id, person, escape_typed(text))
                done = f"Update sent to {reached} affected {'person' if reached == 1 else 'people'}."
            else:
                resolved = await self.desk.incident_updates.resolve(incident_id, person, escape_typed(text))
                done = f"Incident resolved with {resolved} ticket{'' if resolved == 1 else 's'}."
        except Exception as exc:
            await self._replace_card(turn, incident_note.teams_form(form, incident_id, f"INC-{incident_id}",
                                                                    error=friendly(exc, PLATFORM)))
            return
        await self._replace_card(turn, adaptive_cards.notice_card(Notice(
            ticket_id=0, number="", numbered=False, headline=done, body=text)))

    async def _on_survey_reason_button(self, turn: TurnContext, person: PersonRef, ticket_id: int) -> None:
        try:
            check_allowed(self.desk, Action.SURVEY_REASON, person)
            view = await self.desk.surveys.view(ticket_id)
        except Exception as exc:
            await self._say(turn, friendly(exc, PLATFORM))
            return
        await self._send_card(turn, survey_reason.teams_card(view.ticket_id, view.number))

    async def _on_survey_reason_submit(self, turn: TurnContext, person: PersonRef, value: dict[str, Any]) -> None:
        try:
            check_allowed(self.desk, Action.SURVEY_REASON, person)
            ticket_id, reason, comment = survey_reason.read_teams(value)
            await self.desk.surveys.add_reason(ticket_id, person, reason, comment)
        except Exception as exc:
            await self._say(turn, friendly(exc, PLATFORM))
            return
        await self._say(turn, "Thank you — that helps us do better.")

    # -- answering in the turn ----------------------------------------------------------------------
    async def _say(self, turn: TurnContext, text: str, person: PersonRef | None = None) -> None:
        """Answer in plain text (it may quote what the person typed, which must not turn into markup); when
        Teams refuses the reply and we know who asked, the outbox owes it to them."""
        message = MessageFactory.text(without_controls(text))
        message.text_format = "plain"
        if not await self._answer(turn, message) and person is not None:
            key = f"say:{turn.activity.conversation.id}|{turn.activity.id}"
            await self.desk.tickets.tell(person, Message(escape_typed(text)), key=key)

    async def _send_card(self, turn: TurnContext, card: dict[str, Any]) -> bool:
        return await self._answer(turn, MessageFactory.attachment(_attachment(card)))

    async def _replace_card(self, turn: TurnContext, card: dict[str, Any]) -> bool:
        """Update the card that was submitted in place (a form, usually); post it anew if that fails."""
        activity = turn.activity
        if activity.reply_to_id:
            message = MessageFactory.attachment(_attachment(card))
            message.id = activity.reply_to_id
            try:
                await turn.update_activity(message)
                return True
            except Exception as exc:  # an old card Teams no longer has: send the new one instead
                log.warning("could not update card %s in place: %s", activity.reply_to_id, exc)
        return await self._send_card(turn, card)

    async def _answer(self, turn: TurnContext, message: Activity) -> bool:
        try:
            await turn.send_activity(message)
        except Exception as exc:  # the change is committed either way; callers hand what is owed to the outbox
            log.warning("could not answer in Teams conversation %s: %s", turn.activity.conversation.id, exc)
            return False
        return True


def _attachment(card: dict[str, Any]) -> Attachment:
    return Attachment(content_type=adaptive_cards.CONTENT_TYPE, content=adaptive_cards.clean(card))


def _ticket_id(value: dict[str, Any]) -> int | None:
    """The ticket a card submission points at: ASCII digits only ("١٢", "²", 10**30 and True name no ticket)."""
    raw = value.get("ticket_id")
    if isinstance(raw, bool) or raw is None or raw == "":
        raw = str(value.get("value") or "").split(":", 1)[0]
    text = str(raw)
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def _valid_zone(zone: str | None) -> str | None:
    try:
        ZoneInfo(zone or "")
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return zone


def _client_info_zone(activity: Activity) -> str | None:
    """The IANA zone Teams clients report in their ``clientInfo`` entity (when ``localTimezone`` is absent)."""
    for entity in activity.entities or []:
        if (entity.type or "").lower() == "clientinfo":
            properties: dict[str, Any] = getattr(entity, "additional_properties", None) or {}
            zone = properties.get("timezone")
            return zone if isinstance(zone, str) else None
    return None
