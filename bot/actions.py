"""The one action table: what each card button does and who may press it, for Slack and Teams alike.

Adapters turn a platform's click payload into a ``Click`` and call ``perform``; they never decide on their
own what a button means or whom it is for. Buttons that open a form (Resolve's note, a survey's "Tell us
more") are listed in ``FORMS``: the adapter shows its platform's form, after the same permission check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from bot.conversation import held_choice
from bot.desk import Desk
from bot.people import PersonRef
from bot.routing import Action
from bot.tickets import IN_PROGRESS, WAITING, NotAllowed
from surveys.nps import score_of

__all__ = ["ACTIONS", "FORMS", "Click", "Rule", "Who", "check_allowed", "perform"]


@dataclass(frozen=True)
class Click:
    """A person pressing a button (or picking from a menu) on a ticket's card or message."""

    action: Action
    ticket_id: int
    person: PersonRef
    choice: str = ""
    """The value the click carries beyond the ticket: a menu's chosen option (the priority picker), or a
    button's own value (an NPS score button's ``<pulse id>:<score>``)."""
    where: str | None = None
    """The channel target the click came from when it was a shared channel (anyone paged there may
    acknowledge); None in a direct message."""


class Who(Enum):
    """Who may press a button before the service is asked at all."""

    AGENTS = "agents"
    """Only IT agents: refused up front, with the same sentence on both platforms."""
    SERVICE = "service"
    """The service decides (the requester for their own survey or mute, paged people for a page)."""


@dataclass(frozen=True)
class Rule:
    """What a button does (``run``), who may press it, and what to call the deed in a refusal."""

    run: Callable[[Desk, Click], Awaitable[object]]
    who: Who
    doing: str


def _surveys_on(desk: Desk) -> None:
    if not desk.config.surveys.enabled:
        raise NotAllowed("Surveys are turned off in app.yaml.")


async def _claim(desk: Desk, click: Click) -> object:
    return await desk.tickets.claim(click.ticket_id, click.person)


async def _start(desk: Desk, click: Click) -> object:
    return await desk.tickets.set_status(click.ticket_id, click.person, IN_PROGRESS)


async def _wait(desk: Desk, click: Click) -> object:
    return await desk.tickets.set_status(click.ticket_id, click.person, WAITING)


async def _priority(desk: Desk, click: Click) -> object:
    # Menus carry "<ticket>:<priority>" so the value alone names both.
    priority = click.choice.split(":", 1)[1] if ":" in click.choice else click.choice
    return await desk.tickets.set_priority(click.ticket_id, click.person, priority)


async def _reopen(desk: Desk, click: Click) -> object:
    return await desk.tickets.reopen(click.ticket_id, click.person, "Reopened from the card")


async def _mute(desk: Desk, click: Click) -> object:
    return await desk.tickets.mute_updates(click.ticket_id, click.person, True)


async def _unmute(desk: Desk, click: Click) -> object:
    return await desk.tickets.mute_updates(click.ticket_id, click.person, False)


async def _thumbs_up(desk: Desk, click: Click) -> object:
    _surveys_on(desk)
    return await desk.surveys.answer(click.ticket_id, click.person, "up")


async def _thumbs_down(desk: Desk, click: Click) -> object:
    _surveys_on(desk)
    return await desk.surveys.answer(click.ticket_id, click.person, "down")


async def _reopen_from_survey(desk: Desk, click: Click) -> object:
    _surveys_on(desk)
    return await desk.surveys.reopen_from_survey(click.ticket_id, click.person)


async def _nps_score(desk: Desk, click: Click) -> object:
    # The pulse's buttons carry "<pulse id>:<score>"; a malformed score is refused by the service.
    score = score_of(click.choice)
    return await desk.nps.answer(click.ticket_id, click.person, -1 if score is None else score)


async def _kb_solved(desk: Desk, click: Click) -> object:
    return await desk.knowledge.solved(click.ticket_id, click.person, click.choice)


async def _ask_solved(desk: Desk, click: Click) -> object:
    # ask_first buttons carry a held request's id where other buttons carry a ticket's.
    await desk.knowledge.held.solved(click.ticket_id, click.person)
    return None


async def _ask_file(desk: Desk, click: Click) -> object:
    return await desk.knowledge.held.still_need_help(click.ticket_id, click.person)


async def _acknowledge_page(desk: Desk, click: Click) -> object:
    return await desk.escalation.acknowledge(click.ticket_id, click.person, where=click.where)


async def _claim_from_page(desk: Desk, click: Click) -> object:
    # A paged person who is not an agent acknowledges only; the escalation service decides.
    return await desk.escalation.acknowledge(click.ticket_id, click.person, claim=True, where=click.where)


async def _escalate(desk: Desk, click: Click) -> object:
    return await desk.requester_escalation.escalate(click.ticket_id, click.person)


async def _held_message(desk: Desk, click: Click) -> object:
    # The question's buttons carry "<ticket id or 0>:<held id>"; the service checks the held message is theirs.
    ticket_id, held_id = held_choice(click.choice)
    if held_id is None:
        raise NotAllowed("That question is out of date.")
    return await desk.conversations.answer(click.person, held_id, ticket_id)


def _incident_id(choice: str) -> int:
    # Incident buttons and menus carry "<ticket id>:<incident or suggestion id>".
    tail = choice.rsplit(":", 1)[-1]
    if ":" not in choice or not tail.isdigit():
        raise NotAllowed("That button doesn't point at an incident any more.")
    return int(tail)


async def _declare_incident(desk: Desk, click: Click) -> object:
    return await desk.incidents.declare(click.ticket_id, click.person)


async def _link_incident(desk: Desk, click: Click) -> object:
    await desk.incidents.link(click.ticket_id, _incident_id(click.choice), click.person)
    return None


async def _unlink_incident(desk: Desk, click: Click) -> object:
    await desk.incidents.unlink(click.ticket_id, click.person)
    return None


async def _accept_suggestion(desk: Desk, click: Click) -> object:
    return await desk.incidents.accept_suggestion(_incident_id(click.choice), click.person)


async def _dismiss_suggestion(desk: Desk, click: Click) -> object:
    await desk.incidents.dismiss_suggestion(_incident_id(click.choice), click.person)
    return None


async def _thats_my_problem(desk: Desk, click: Click) -> object:
    await desk.incidents.confirm(click.ticket_id, click.person)
    return None


ACTIONS: dict[Action, Rule] = {
    Action.CLAIM: Rule(_claim, Who.AGENTS, "claim tickets"),
    Action.START: Rule(_start, Who.SERVICE, "change a ticket's status"),
    Action.WAIT: Rule(_wait, Who.SERVICE, "change a ticket's status"),
    Action.PRIORITY: Rule(_priority, Who.SERVICE, "change a ticket's priority"),
    Action.REOPEN: Rule(_reopen, Who.SERVICE, "reopen tickets"),
    Action.MUTE: Rule(_mute, Who.SERVICE, "mute updates"),
    Action.UNMUTE: Rule(_unmute, Who.SERVICE, "turn updates back on"),
    Action.SURVEY_UP: Rule(_thumbs_up, Who.SERVICE, "answer this survey"),
    Action.SURVEY_DOWN: Rule(_thumbs_down, Who.SERVICE, "answer this survey"),
    Action.SURVEY_REOPEN: Rule(_reopen_from_survey, Who.SERVICE, "reopen this ticket"),
    Action.NPS_SCORE: Rule(_nps_score, Who.SERVICE, "answer this pulse"),
    Action.ESCALATION_ACK: Rule(_acknowledge_page, Who.SERVICE, "acknowledge this page"),
    Action.ESCALATION_CLAIM: Rule(_claim_from_page, Who.SERVICE, "claim this ticket"),
    Action.ESCALATE: Rule(_escalate, Who.SERVICE, "escalate this ticket"),
    Action.CONVERSATION_JOIN: Rule(_held_message, Who.SERVICE, "answer this question"),
    Action.CONVERSATION_NEW: Rule(_held_message, Who.SERVICE, "answer this question"),
    Action.KB_SOLVED: Rule(_kb_solved, Who.SERVICE, "say this ticket is solved"),
    Action.KB_ASK_SOLVED: Rule(_ask_solved, Who.SERVICE, "answer this question"),
    Action.KB_ASK_FILE: Rule(_ask_file, Who.SERVICE, "answer this question"),
    Action.INCIDENT_DECLARE: Rule(_declare_incident, Who.AGENTS, "declare incidents"),
    Action.INCIDENT_LINK: Rule(_link_incident, Who.AGENTS, "link tickets to incidents"),
    Action.INCIDENT_UNLINK: Rule(_unlink_incident, Who.AGENTS, "unlink tickets from incidents"),
    Action.INCIDENT_ACCEPT: Rule(_accept_suggestion, Who.AGENTS, "declare incidents"),
    Action.INCIDENT_DISMISS: Rule(_dismiss_suggestion, Who.AGENTS, "dismiss suggestions"),
    # The requester's answers to "This looks like a known issue"; the service checks it is their report.
    Action.INCIDENT_MINE: Rule(_thats_my_problem, Who.SERVICE, "answer this"),
    Action.INCIDENT_NOT_MINE: Rule(_unlink_incident, Who.SERVICE, "answer this"),
}

FORMS: dict[Action, tuple[Who, str]] = {
    Action.RESOLVE: (Who.AGENTS, "resolve tickets"),
    Action.SURVEY_REASON: (Who.SERVICE, "answer this survey"),
    Action.NEW_TICKET: (Who.SERVICE, "open a ticket"),
    Action.KB_SEND: (Who.AGENTS, "send articles"),
    Action.INCIDENT_POST_UPDATE: (Who.AGENTS, "post incident updates"),
    Action.INCIDENT_RESOLVE: (Who.AGENTS, "resolve incidents"),
}
"""Buttons that open a form; the adapter checks ``check_allowed`` first, then shows its platform's form."""


def check_allowed(desk: Desk, action: Action, person: PersonRef) -> None:
    """Refuse (``NotAllowed``) a button the person may not press, before anything else is done."""
    rule = ACTIONS.get(action)
    who, doing = (rule.who, rule.doing) if rule is not None else FORMS.get(action, (Who.SERVICE, ""))
    if who is Who.AGENTS and not desk.tickets.is_agent(person):
        raise NotAllowed(f"Only IT agents can {doing}.")
    if action in (Action.SURVEY_UP, Action.SURVEY_DOWN, Action.SURVEY_REOPEN, Action.SURVEY_REASON):
        _surveys_on(desk)


async def perform(desk: Desk, click: Click) -> object:
    """Carry out ``click`` through the table, refusing it (``NotAllowed``) when the person may not."""
    rule = ACTIONS.get(click.action)
    if rule is None:
        raise NotAllowed("That button can't be used here.")
    check_allowed(desk, click.action, click.person)
    return await rule.run(desk, click)
