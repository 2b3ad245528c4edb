"""Routing ids: defined once, used both when a card is built and when its click is routed."""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    """Buttons and menus on cards (Slack ``action_id`` / Teams ``data.action``)."""

    CLAIM = "ticket.claim"
    START = "ticket.in_progress"
    WAIT = "ticket.waiting"
    RESOLVE = "ticket.resolve"
    PRIORITY = "ticket.priority"
    REOPEN = "ticket.reopen"
    MUTE = "ticket.mute_updates"
    UNMUTE = "ticket.unmute_updates"
    ESCALATION_ACK = "escalation.acknowledge"
    ESCALATION_CLAIM = "escalation.claim"
    ESCALATE = "ticket.escalate"
    """The requester's "Escalate" on their ticket once a target has passed."""
    SURVEY_UP = "survey.thumbs_up"
    SURVEY_DOWN = "survey.thumbs_down"
    SURVEY_REASON = "survey.tell_us"
    SURVEY_REOPEN = "survey.reopen"
    NPS_SCORE = "nps.score"
    """A 0-10 button on an NPS pulse; its value is ``<pulse id>:<score>``."""
    NEW_TICKET = "ticket.new"
    CONVERSATION_JOIN = "conversation.join"
    """"It's about IT-3": a held direct message joins that ticket; value ``<ticket id>:<held id>``."""
    CONVERSATION_NEW = "conversation.new"
    """"Something new": a held direct message opens a ticket; value ``0:<held id>``."""
    KB_SOLVED = "kb.solved"
    """"This solved it" under a suggested article; its value is ``<ticket id>:<article id>``."""
    KB_ASK_SOLVED = "kb.ask_solved"
    """ask_first's "Solved"; its value is the held request's id (not a ticket's: none was filed)."""
    KB_ASK_FILE = "kb.ask_file"
    """ask_first's "I still need help"; its value is the held request's id."""
    KB_SEND = "kb.send"
    """"Send article" on the triage card: opens the article search (a form)."""
    INCIDENT_DECLARE = "incident.declare"
    """"Make incident" on a ticket's triage card."""
    INCIDENT_LINK = "incident.link"
    """The menu of open incidents on a ticket's triage card; its value is ``<ticket id>:<incident id>``."""
    INCIDENT_UNLINK = "incident.unlink"
    INCIDENT_ACCEPT = "incident.accept_suggestion"
    """"Create incident" on a suggestion card; value ``<anchor ticket id>:<suggestion id>``."""
    INCIDENT_DISMISS = "incident.dismiss_suggestion"
    INCIDENT_POST_UPDATE = "incident.post_update"
    """"Post update" on an incident card (opens a form); value ``<anchor ticket id>:<incident id>``."""
    INCIDENT_RESOLVE = "incident.resolve"
    """"Resolve incident" on an incident card (opens a form); value ``<anchor ticket id>:<incident id>``."""
    INCIDENT_MINE = "incident.thats_my_problem"
    INCIDENT_NOT_MINE = "incident.something_else"


class Form(StrEnum):
    """Forms (Slack modal ``callback_id`` / Teams card ``data.form``)."""

    NEW_TICKET = "form.new_ticket"
    RESOLVE_NOTE = "form.resolve_note"
    SURVEY_REASON = "form.survey_reason"
    SEND_ARTICLE = "form.send_article"
    INCIDENT_UPDATE = "form.incident_update"
    INCIDENT_RESOLVE = "form.incident_resolve"


class Shortcut(StrEnum):
    CREATE_FROM_MESSAGE = "ithelp.create_ticket_from_message"
