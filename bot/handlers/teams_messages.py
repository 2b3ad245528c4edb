"""Messages: new tickets, commands and small talk, comments relayed from threads and replies, the welcome."""

from __future__ import annotations

import logging
from typing import Any

from botbuilder.core import MessageFactory, TurnContext
from botbuilder.schema import Activity

from bot.attachments import SharedFile
from bot.channels.teams import (
    THREAD_MARK,
    teams_ref,
)
from bot.chat_commands import read_command
from bot.desk import Desk
from bot.dialogs import new_ticket
from bot.handlers import command_answers, teams_text
from bot.handlers.errors import friendly
from bot.handlers.teams_submits import TeamsSubmits
from bot.handlers.teams_turns import (
    HELP,
    PLATFORM,
    QUOTED_REPLY,
    TeamsTurns,
)
from bot.people import PersonRef
from bot.renderers import teams_notice_cards, teams_ticket_cards
from bot.requester_escalation import matrix_lines, parse_escalate
from bot.text import to_plain
from bot.tickets import InvalidInput, Origin
from bot.triage_notes import Posted

log = logging.getLogger("ithelp.teams")


class TeamsMessages(TeamsTurns):
    """Messages: new tickets, commands and small talk, comments relayed from threads and replies, the welcome."""

    def __init__(self, desk: Desk, submits: TeamsSubmits) -> None:
        super().__init__(desk)
        self.submits = submits  # a message carrying a card's values (Action.Submit) is a submission

    async def on_members_added(self, turn: TurnContext) -> None:
        """The app installed in someone's personal scope: greet them, once (Teams may send the update again)."""
        activity = turn.activity
        bot_id = activity.recipient.id if activity.recipient is not None else None
        added = {member.id for member in activity.members_added or []}
        personal = (activity.conversation.conversation_type or "personal") == "personal"
        person = self._person(activity)
        if not personal or bot_id not in added or person is None:
            return
        if not await self.desk.welcomes.first_time(person):
            return
        view = await self.desk.welcomes.view(person, "Just tell me what's wrong here, or press New ticket for a form.")
        if not await self._send_card(turn, teams_ticket_cards.ticket_list_card(view)):
            await self.desk.welcomes.forget(person)

    async def on_message(self, turn: TurnContext) -> None:
        activity = turn.activity
        person = self._person(activity)
        if person is None:
            log.info("ignoring a Teams message without an AAD object id (%s)", activity.id)
            return
        value = activity.value if isinstance(activity.value, dict) else None
        if value is not None and not (activity.text or "").strip():
            await self.submits.on_submit(turn, person, value)
            return
        personal = (activity.conversation.conversation_type or "personal") == "personal"
        mentioned = self._strip_bot_mention(activity)
        text = teams_text.decode(activity.text).strip()
        files = teams_text.shared_files(activity.attachments or [])
        if not personal:
            if await self._thread_comment(turn, person, text, files):
                return
            if not mentioned:
                return  # channel chatter the bot was not asked about
        elif await self._reply_comment(turn, person, text, files):
            return
        await self._on_text(turn, person, text, files)

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

    async def _on_text(self, turn: TurnContext, person: PersonRef, text: str,
                       files: list[SharedFile] | None = None) -> None:
        personal = (turn.activity.conversation.conversation_type or "personal") == "personal"
        if files and not text and not personal:
            return  # a file in a channel with a mention and no words: nothing to file
        if text.lower().startswith("ithelp"):
            rest = text[len("ithelp"):]
            if not rest or rest[0].isspace():
                text = rest.strip()
        if (text or not files) and await self._answer_command(turn, person, text):
            return
        activity = turn.activity
        origin = Origin("teams", conversation=activity.conversation.id, thread=activity.id)
        try:
            if personal:
                # A new ticket, the answer to one waiting on them (or a question which, when that is unclear), or
                # in ask_first mode the articles to try before filing.
                routed = await self.desk.conversations.route(person, text, origin=origin, dedup=self._dedup(activity),
                                                             files=files or ())
                if routed.articles is not None:
                    await self._send_card(turn, teams_notice_cards.notice_card(routed.articles))
                    return
                ticket, created = routed.ticket, routed.outcome == "opened" and routed.created
            else:
                question = await self.desk.knowledge.held.hold(person, text, origin, self._dedup(activity))
                if question is not None:  # ask_first: articles before filing
                    await self._send_card(turn, teams_notice_cards.notice_card(question))
                    return
                result = await self.desk.tickets.open(person, text, origin=origin, dedup=self._dedup(activity),
                                                      defer_setup=True)
                ticket, created = result.ticket, result.created
        except Exception as exc:
            await self._say(turn, f"{friendly(exc, PLATFORM)}\n\nWhat you wrote: {to_plain(text)}", person)
            return
        if created and ticket is not None:
            await self._acknowledge(turn, person, ticket)

    async def _answer_command(self, turn: TurnContext, person: PersonRef, text: str) -> bool:
        """``ithelp`` alone or ``new ticket`` (the form), help, status, list, small talk: True if it was one."""
        if text.lower() in ("", "new ticket"):
            await self._send_card(turn, new_ticket.teams_form(self.desk.config.categories, self._priority_labels()))
            return True
        if text.lower().startswith("incident ") and text[len("incident "):].strip():
            await self._say(turn, await self._declare_incident(turn, person, text[len("incident "):].strip()), person)
            return True
        try:
            escalating = parse_escalate(text)
        except InvalidInput as exc:
            await self._say(turn, str(exc), person)
            return True
        if escalating is not None:
            try:
                said = await self.desk.requester_escalation.escalate(escalating[0], person, escalating[1])
            except Exception as exc:
                said = friendly(exc, PLATFORM)  # "not yet" included: its time is written out in their zone
            await self._say(turn, said, person)
            return True
        command = read_command(text)
        if command is not None:
            answer = await command_answers.for_teams(self.desk.chat, person, command)
            if answer is None:
                matrix = "\n".join(f"- {line}" for line in matrix_lines(self.desk.config))
                await turn.send_activity(MessageFactory.text(
                    f"{HELP}\n\n**Who handles what, and how to escalate**\n\n{matrix}"))
            elif isinstance(answer, str):
                await self._say(turn, answer, person)
            else:
                await self._send_card(turn, answer)
            return True
        return False

    async def _thread_comment(self, turn: TurnContext, person: PersonRef, text: str, files: list[SharedFile]) -> bool:
        """A message in the thread under a triage card: an agent's comment for the requester."""
        conversation_id = turn.activity.conversation.id
        if THREAD_MARK not in conversation_id:
            return False
        channel, _, root = conversation_id.partition(THREAD_MARK)
        found = await self.desk.directory.ticket_for_message("teams", teams_ref(channel, root), role="triage")
        ticket_id = found.ticket_id if found else None
        if ticket_id is None:
            return False
        if not self.desk.tickets.is_agent(person) or not (text or files):
            return True  # colleagues chatting under the card: not relayed to the requester
        try:  # a reply or an internal note, marked as which in the thread
            await self.desk.triage_thread.agent_message(
                ticket_id, person, text, dedup=self._dedup(turn.activity),
                posted=Posted(f"teams:channel:{channel}", teams_ref(conversation_id, str(turn.activity.id))),
                files=files)
        except Exception as exc:
            await self._say(turn, friendly(exc, PLATFORM), person)
        return True

    async def _reply_comment(self, turn: TurnContext, person: PersonRef, text: str, files: list[SharedFile]) -> bool:
        """A reply, in a 1:1 chat, to one of the bot's messages about a ticket: the requester's comment."""
        activity = turn.activity
        replied = activity.reply_to_id
        for attachment in activity.attachments or []:
            found = QUOTED_REPLY.search(str(attachment.content or ""))
            if found:
                replied = found.group(1)
        if not replied or not (text or files):
            return False
        ticket_id = await self.desk.directory.ticket_for_delivered(
            f"teams:user:{person.user_id}", teams_ref(activity.conversation.id, replied))
        if ticket_id is None:
            return False
        await self._comment(turn, ticket_id, person, text, "requester_thread", files)
        return True

    async def _comment(self, turn: TurnContext, ticket_id: int, person: PersonRef, text: str, source: str,
                       files: list[SharedFile]) -> None:
        try:
            await self.desk.attachments.comment(ticket_id, person, text, files, dedup=self._dedup(turn.activity),
                                                source=source)
        except Exception as exc:
            await self._say(turn, friendly(exc, PLATFORM), person)


    async def _declare_incident(self, turn: TurnContext, person: PersonRef, title: str) -> str:
        """``incident <title>`` (agents): the answer to show the agent."""
        activity = turn.activity
        try:
            number = await self.desk.incidents.declare_new(
                title, person, Origin("teams", conversation=activity.conversation.id, thread=activity.id))
        except Exception as exc:
            return friendly(exc, PLATFORM)
        return f"{number} declared; its card is in the triage channel."


__all__ = ["TeamsMessages"]
