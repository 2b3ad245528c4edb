"""The ticket lifecycle: one platform-neutral state machine every adapter drives.

Each change runs in one transaction that locks the ticket, checks the transition, writes a
``TicketEvent`` and lets subscribers (notifications, SLA clock, escalation, surveys) add the outbox
and timer rows the change implies — so a change and its consequences commit or vanish together.
The one exception is a ticket opened from chat (``defer_setup``): its row commits first so the person
is answered at once, flagged ``setup_pending``; its opening is then written exactly once, by whichever
replica's engine claims the flag first, or by the next change to the ticket.
"""

from __future__ import annotations

from bot.ticket_changes import TicketChanges
from bot.ticket_intake import TicketIntake
from bot.ticket_types import (
    CLAIMED,
    CLOSED,
    DEDUP_TTL,
    IN_PROGRESS,
    MAX_DESCRIPTION,
    MAX_SUMMARY,
    NEW,
    OPEN_STATUSES,
    REOPENED,
    REQUESTER_STATUS_LABELS,
    RESOLVED,
    STATUS_LABELS,
    TRANSITIONS,
    WAITING,
    AlreadyClaimed,
    IllegalTransition,
    InitialTargets,
    InvalidInput,
    NotAllowed,
    OpenResult,
    Origin,
    Subscriber,
    TicketChange,
    TicketError,
    TicketNotFound,
    TicketSnapshot,
    check_intake,
    log,
)


class TicketService(TicketIntake, TicketChanges):
    """Open, claim, move, comment on, resolve, reopen and close tickets (intake in ``bot.ticket_intake``,
    changes in ``bot.ticket_changes``, the shared machinery in ``bot.ticket_base``)."""


__all__ = [
    "CLAIMED",
    "CLOSED",
    "DEDUP_TTL",
    "IN_PROGRESS",
    "MAX_DESCRIPTION",
    "MAX_SUMMARY",
    "NEW",
    "OPEN_STATUSES",
    "REOPENED",
    "REQUESTER_STATUS_LABELS",
    "RESOLVED",
    "STATUS_LABELS",
    "TRANSITIONS",
    "WAITING",
    "AlreadyClaimed",
    "IllegalTransition",
    "InitialTargets",
    "InvalidInput",
    "NotAllowed",
    "OpenResult",
    "Origin",
    "Subscriber",
    "TicketChange",
    "TicketError",
    "TicketNotFound",
    "TicketService",
    "TicketSnapshot",
    "check_intake",
    "log",
]
