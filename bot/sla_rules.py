"""The SLA rules the clock (``bot.sla``) runs on, and the one reading of the verdicts it stamps.

What counts as a response, what pauses the clock, how much time a target allows and when it is met or
missed are decided here and nowhere else. The clock stamps a verdict event when a target stops; reports,
the weekly summary and cards read those verdicts (``first_response_verdict``/``resolution_verdict``,
``sla_outcomes``) rather than re-deriving them.

Verdict events (``ticket_events.kind``), each with ``{"metric": "first_response" | "resolution" | "update"}``:

* ``sla_warning`` — ``warn_at`` of a budget was used (live mark; escalation may page).
* ``sla_breached`` — a budget ran out while the ticket was with IT (live mark, once per target; pages), or a
  target stopped late before the breach timer ran.
* ``sla_met`` / ``sla_missed`` — the target *stopped* (first response given; ticket resolved) within / beyond
  its budget, with ``elapsed_seconds`` and ``target_seconds`` (the budget in force at that moment). First
  response stops once; the resolution stops at every resolution (a reopen resumes the budget that was left).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.business_time import BusinessCalendar
    from bot.config import SlaPolicy
    from store.models import Ticket, TicketEvent

FIRST_RESPONSE, RESOLUTION, UPDATE = "first_response", "resolution", "update"
SLA_MET, SLA_MISSED = "sla_met", "sla_missed"
SLA_WARNING, SLA_BREACHED, AUTO_UPDATE = "sla_warning", "sla_breached", "auto_update"
STOP_VERDICTS = (SLA_MET, SLA_MISSED)
MET, MISSED = "met", "missed"

NEW = "new"
RUNNING = frozenset({NEW, "claimed", "in_progress", "reopened"})
"""Statuses in which the ticket is with IT and its clocks run (not waiting on the requester, not resolved).
Written out rather than imported from ``bot.tickets`` so that ``ithelp report`` starts without the ticket service;
``tests/test_sla_truth.py`` checks they are the service's names."""
ANSWER_KINDS = ("claimed", "resolved")
"""Events that give the first response, besides an agent's comment (``answers``)."""


def answers(kind: str, payload: dict[str, Any]) -> bool:
    """Whether an event is a response from IT: a claim, an agent's comment or a resolution."""
    return kind in ANSWER_KINDS or (kind == "commented" and payload.get("role") == "agent")


@dataclass(frozen=True)
class Budgets:
    """The business time a ticket's first response and resolution may take (the targets in force)."""

    first_response: timedelta
    resolution: timedelta

    def of(self, metric: str) -> timedelta:
        return self.first_response if metric == FIRST_RESPONSE else self.resolution

    def stamp(self) -> dict[str, float]:
        return {FIRST_RESPONSE: self.first_response.total_seconds(), RESOLUTION: self.resolution.total_seconds()}


def budgets(policy: SlaPolicy, cal: BusinessCalendar, opened_at: datetime) -> Budgets:
    """The policy's targets as business time for a ticket opened at ``opened_at`` on ``cal`` (working days
    become the business time between the opening and the same time that many working days later)."""
    return Budgets(policy.first_response.budget(cal, opened_at), policy.resolution.budget(cal, opened_at))


def running_spans(events: Iterable[TicketEvent], created_at: datetime,
                  until: datetime) -> list[tuple[datetime, datetime]]:
    """Wall-clock spans between ``created_at`` and ``until`` in which the ticket was with IT."""
    spans = []
    status, since = NEW, created_at
    for event in sorted(events, key=event_order):
        to_status = event.payload.get("to_status")
        if event.at >= until:
            break
        if to_status is None:
            continue
        if status in RUNNING and event.at > since:
            spans.append((since, event.at))
        status, since = to_status, event.at
    if status in RUNNING and until > since:
        spans.append((since, until))
    return spans


def business(cal: BusinessCalendar, spans: Iterable[tuple[datetime, datetime]]) -> timedelta:
    """Business time on ``cal`` within ``spans``."""
    return sum((cal.between(a, b) for a, b in spans), timedelta(0))


def deadline(cal: BusinessCalendar, spans: list[tuple[datetime, datetime]], budget: timedelta,
             now: datetime) -> datetime:
    """When ``budget`` of running business time runs out: in the past if already spent, else counted on from now."""
    used = timedelta(0)
    for a, b in spans:
        part = cal.between(a, b)
        if used + part >= budget:
            return cal.add(a, budget - used)
        used += part
    return cal.add(now, budget - used)


def stop_verdict(elapsed: timedelta, budget: timedelta) -> str:
    """``sla_met`` when a target stops within its budget (the boundary counts as met), else ``sla_missed``."""
    return SLA_MET if elapsed <= budget else SLA_MISSED


def first_response_verdict(stop: str | None, breached: bool) -> str | None:
    """The first response as the clock judged it, from its verdict events seen by some instant: the stop verdict
    (``sla_met``/``sla_missed``: it stops once) once given, ``missed`` once breached while still running, else
    None (still running, or no policy)."""
    if stop is not None:
        return MET if stop == SLA_MET else MISSED
    return MISSED if breached else None


def resolution_verdict(latest_stop: str | None) -> str | None:
    """The verdict of a ticket's latest resolution, from the kind of its latest stop verdict (None: no policy)."""
    if latest_stop is None:
        return None
    return MET if latest_stop == SLA_MET else MISSED


@dataclass(frozen=True)
class SlaOutcome:
    """How one target stands: ``met`` is None while it is still running and not yet breached."""

    metric: str
    target: timedelta
    elapsed_business: timedelta
    met: bool | None


def sla_outcomes(
    ticket: Ticket, events: Sequence[TicketEvent], calendar: BusinessCalendar, now: datetime,
) -> dict[str, SlaOutcome]:
    """First-response and resolution as they stood at ``now``, read from the clock's verdict events (empty without
    a policy). A stopped target gives its stamped verdict; a running one its elapsed business time so far on
    ``calendar`` (waiting and resolved spans left out) and ``met=False`` once the clock marked it breached."""
    seen = sorted((e for e in events if e.at <= now), key=event_order)
    stamped = next((e.payload["sla_targets"] for e in reversed(seen) if "sla_targets" in e.payload), None)
    if not stamped:
        return {}
    status = next((str(e.payload["to_status"]) for e in reversed(seen) if e.payload.get("to_status")), NEW)
    outcomes = {}
    for metric in (FIRST_RESPONSE, RESOLUTION):
        stops = [e for e in seen if e.kind in STOP_VERDICTS and e.payload.get("metric") == metric]
        # The first response stops once; a resolution's verdict stands only while the ticket stays resolved.
        if not stops or (metric == RESOLUTION and status in RUNNING):
            stop = None
        else:
            stop = stops[0] if metric == FIRST_RESPONSE else stops[-1]
        if stop is not None:
            outcomes[metric] = SlaOutcome(metric, timedelta(seconds=stop.payload["target_seconds"]),
                                          timedelta(seconds=stop.payload["elapsed_seconds"]), stop.kind == SLA_MET)
            continue
        breached = any(e.kind == SLA_BREACHED and e.payload.get("metric") == metric for e in seen)
        elapsed = business(calendar, running_spans(seen, ticket.created_at, now))
        outcomes[metric] = SlaOutcome(metric, timedelta(seconds=stamped[metric]), elapsed, False if breached else None)
    return outcomes


def event_order(event: TicketEvent) -> tuple[datetime, int]:
    return event.at, event.id
