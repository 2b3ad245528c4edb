"""What the SLA clock says to people: the intake acknowledgement and the ticket card's target lines.

Met or breached on a card is the clock's rule (``bot.sla_rules``): a target that stopped by its due time was
met; the due times themselves are the clock's, kept on the ticket row.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.business_time import BusinessCalendar
from bot.durations import format_duration
from bot.local_time import zone_or_none
from bot.sla_rules import RUNNING
from bot.tickets import CLOSED, RESOLVED, WAITING, TicketSnapshot
from bot.views import Moment, Span, Text
from store.models import Ticket


def acknowledgement(ticket: TicketSnapshot | Ticket, requester_tz: str | None,
                    calendar: BusinessCalendar, zone_label: str = "your time") -> Text:
    """The intake acknowledgement, "IT-3 opened — first response by …", with each target a moment every reader
    sees on their own clock; the written-out fallback is on the requester's clock (``zone_label``: "your time" when
    the requester reads it, "Rita's time" when others do too), or the calendar's when their zone is unknown."""
    known = zone_or_none(requester_tz)
    zone, label = (known.key, zone_label) if known else (calendar.tz.key, None)
    clauses: list[tuple[Span, ...]] = []
    if ticket.first_response_due is not None:
        clauses.append(("first response by ", Moment(ticket.first_response_due, zone, label=label)))
    if ticket.resolution_due is not None:
        clauses.append(("resolution target ", Moment(ticket.resolution_due, zone, label=label)))
    if not clauses:
        return f"{ticket.number} opened."
    joined: list[Span] = [f"{ticket.number} opened — "]
    for index, clause in enumerate(clauses):
        joined.extend(((", ",) if index else ()) + clause)
    joined.append(".")
    return tuple(joined)


def sla_lines(ticket: Ticket, now: datetime, calendar: BusinessCalendar, zone: str | None = None,
              audience: str = "triage") -> list[Text]:
    """One line per target for a ticket card: absolute times ("due by <moment>") that each reader sees on their
    own clock and that never go stale; durations only for what is over ("met in 1h 20m").

    "met in" counts business time since opening (less paused time for the resolution); the exact,
    pause-aware figures are ``sla_outcomes``.
    """
    zone = zone or calendar.tz.key
    lines: list[Text] = []
    paused_time = timedelta(seconds=ticket.paused_seconds)
    targets = (("First response", ticket.first_response_due, ticket.first_response_at, timedelta(0)),
               ("Resolution", ticket.resolution_due, ticket.resolved_at, paused_time))
    waiting = "waiting on you" if audience == "requester" else "waiting on the requester"
    for label, due, done_at, paused in targets:
        if due is None:
            continue
        if done_at is not None:
            took = format_duration(max(calendar.between(ticket.created_at, done_at) - paused, timedelta(0)))
            lines.append(f"{label}: met in {took}" if done_at <= due else f"{label}: breached (took {took})")
        elif ticket.status == WAITING:
            lines.append(f"{label}: paused — {waiting}")
        elif ticket.status in (RESOLVED, CLOSED):
            continue
        elif now < due:
            lines.append((f"{label} due by ", Moment(due, zone)))
        else:
            lines.append((f"{label}: breached — was due ", Moment(due, zone)))
    if ticket.status in RUNNING and ticket.updates_muted:
        lines.append("Progress updates: muted by the requester")
    elif ticket.status in RUNNING and ticket.next_update_due is not None:
        lines.append(("Next update by ", Moment(ticket.next_update_due, zone)))
    return lines
