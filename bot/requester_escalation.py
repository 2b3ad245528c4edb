"""The escalation matrix in the requester's hands: once IT has let a target pass, they may go up the chain.

Whether a target has passed is the SLA clock's verdict (``sla_breached`` / ``sla_missed`` events, ``bot.sla``),
never re-derived here. Each request notifies the next level of the ticket's escalation chain (the chain its
priority names in ``app.yaml``; the triage channel when it names none) through the paging service, once per
level, and is recorded as an ``escalation_requested`` event that the triage card shows.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import AppConfig
from bot.core import Core
from bot.engine import TimerRun
from bot.escalation import EscalationService
from bot.escalation.chain import PAGER_PREFIXES
from bot.messages import NOTICE, TICKET_CARD, notice_payload
from bot.notifications import person_target, triage_targets
from bot.people import PersonRef
from bot.sla_rules import FIRST_RESPONSE, RESOLUTION, SLA_BREACHED, SLA_MISSED
from bot.text import plain, to_plain, to_spans
from bot.tickets import IllegalTransition, InvalidInput, NotAllowed, TicketError, TicketNotFound
from bot.views import Moment, Notice, Span, Text
from store.models import Person, Ticket, TicketEvent, ticket_number
from store.queries import enqueue_message

ESCALATION_REQUESTED = "escalation_requested"
"""Event: the requester (or an agent) escalated the ticket; payload ``level``, ``levels``, ``text`` (why),
``targets``."""
MAX_REASON = 500
_METRICS = (FIRST_RESPONSE, RESOLUTION)
_LABELS = {FIRST_RESPONSE: "first-response", RESOLUTION: "resolution"}


class NotYet(TicketError):
    """Escalating is not open yet (no target has passed); ``text`` says when it will be, in the reader's zone."""

    def __init__(self, text: Text) -> None:
        super().__init__(plain(text))
        self.text = text


def target_passed(events: list[TicketEvent]) -> str | None:
    """The metric whose target the SLA clock judged passed (breached, or stopped late), or None."""
    for event in events:
        metric = event.payload.get("metric")
        if event.kind in (SLA_BREACHED, SLA_MISSED) and metric in _METRICS:
            return str(metric)
    return None


class RequesterEscalation:
    """``escalate`` (the command, the button) and the triage card's line about it."""

    def __init__(self, core: Core, escalation: EscalationService) -> None:
        self.core = core
        self.escalation = escalation

    async def can_escalate(self, session: AsyncSession, ticket: Ticket) -> bool:
        """Whether the requester's card offers "Escalate": open, a target passed, a level left to notify."""
        if not ticket.is_open:
            return False
        events = await _events(session, ticket.id)
        return target_passed(events) is not None and _next_level(events) < len(self._levels(ticket, events))

    async def escalate(self, ticket_id: int, person: PersonRef, reason: str = "") -> str:
        """Notify the next level of the ticket's chain with ``reason``; returns what to tell ``person``.

        Raises ``NotAllowed`` for anyone but the requester or an agent, ``NotYet`` before a target has passed,
        and says so (without notifying anyone again) when every level was already told."""
        why = " ".join(reason.split())[:MAX_REASON]
        core = self.core
        async with core.db.transaction() as session:
            now = core.clock.now()
            ticket = (await session.execute(
                select(Ticket).where(Ticket.id == ticket_id).with_for_update())).scalar_one_or_none()
            if ticket is None:
                raise TicketNotFound(f"There is no ticket {ticket_number(ticket_id)}.")
            actor = await core.tickets.record_person(session, person)
            if actor.id != ticket.requester_id and not actor.is_agent:
                raise NotAllowed(f"Only the person who asked for {ticket.number} or an IT agent can escalate it.")
            if not ticket.is_open:
                raise IllegalTransition(f"{ticket.number} is closed; there is nothing to escalate.")
            events = await _events(session, ticket.id)
            metric = target_passed(events)
            if metric is None:
                raise NotYet(self._not_yet(ticket, actor))
            levels = self._levels(ticket, events, metric)
            level = _next_level(events)
            if level >= len(levels):
                return (f"{ticket.number} is already escalated to every level ({len(levels)} of {len(levels)}); "
                        "they have your reasons.")
            last = max((e for e in events if e.kind == ESCALATION_REQUESTED), key=lambda e: e.id, default=None)
            if last is not None and now < last.at + levels[level - 1][1]:
                # A second click straight after the first must not skip a level before it had time to act.
                return (f"{ticket.number} was escalated to level {level} of {len(levels)} moments ago; "
                        "give them a little time before going higher.")
            targets = await self.escalation.paging.expand(session, ticket, levels[level][0]) or triage_targets(
                core.config)
            await self._notify(session, ticket, actor, targets, why, level, len(levels), now)
            names = [await self.escalation.paging.name(session, target) for target in targets]
            said = (f"Escalated {ticket.number} to level {level + 1} of {len(levels)}: "
                    f"{', '.join(names)} {'has' if len(names) == 1 else 'have'} been told"
                    + (" why." if why else "."))
            requester = await session.get(Person, ticket.requester_id)
            assert requester is not None
            await enqueue_message(
                session, target=person_target(requester), kind=NOTICE, ticket_id=ticket.id, now=now,
                idempotency_key=f"escalated:{ticket.id}:{level}",
                payload=notice_payload(Notice(ticket.id, ticket.number, said, numbered=False), thread="requester"))
            return said

    def _levels(self, ticket: Ticket, events: list[TicketEvent],
                metric: str | None = None) -> list[tuple[list[str], timedelta]]:
        """The notify lists of the ticket's chain (the passed metric's own, else its ``breach`` chain)."""
        metric = metric or target_passed(events)
        name = (self.escalation.chain_for(ticket.priority, metric) if metric else None) or \
            self.escalation.chain_for(ticket.priority, "breach")
        if name is None:
            return [([], timedelta(0))]  # no chain: one level, the triage channel
        return [(list(level.notify), level.wait) for level in self.core.config.escalation.chains[name].levels]

    def _not_yet(self, ticket: Ticket, actor: Person) -> Text:
        metric = FIRST_RESPONSE if ticket.first_response_at is None else RESOLUTION
        due = ticket.first_response_due if metric == FIRST_RESPONSE else ticket.resolution_due
        if due is None:
            return (f"Not yet: {ticket.number}'s targets are paused while it waits on you. Reply in its thread "
                    "and the clock runs again.")
        zone = actor.timezone or self.core.config.calendars[self.core.config.default_calendar].timezone
        return (f"Not yet: the {_LABELS[metric]} target for {ticket.number} is ",
                Moment(due, zone, label="your time" if actor.timezone else None),
                ". If it passes, you can escalate.")

    async def _notify(self, session: AsyncSession, ticket: Ticket, actor: Person, targets: list[str], why: str,
                      level: int, levels: int, now: datetime) -> None:
        headline = f"📣 {ticket.number} escalated by {actor.display_name} — level {level + 1} of {levels}"
        body: tuple[Span, ...] = (*to_spans(ticket.summary), "\n", "Why: ", *(to_spans(why) if why else
                                                                             ("no reason given",)))
        paging = self.escalation.paging
        for target in targets:
            key = f"asked:{ticket.id}:{level}:{target}"[:200]
            if target.split(":", 1)[0] in PAGER_PREFIXES:
                await paging.pager_message(session, ticket, target, "trigger", key, now, level=level + 1,
                                           levels=levels, summary=f"{headline}: {to_plain(why)}"[:1000],
                                           body=plain(body))
            else:
                view = Notice(ticket.id, ticket.number, headline, body, numbered=False)
                await enqueue_message(session, target=target, kind=NOTICE, ticket_id=ticket.id, now=now,
                                      idempotency_key=key, payload=notice_payload(view, urgent=True))
        event = TicketEvent(ticket_id=ticket.id, at=now, actor_id=actor.id, kind=ESCALATION_REQUESTED,
                            payload={"level": level + 1, "levels": levels, "text": why, "targets": targets})
        session.add(event)
        await session.flush()
        requester = await session.get(Person, ticket.requester_id)
        assert requester is not None
        # The triage card shows the escalation; the requester's copy drops "Escalate" once no level is left.
        cards = [(target, "triage") for target in triage_targets(self.core.config)]
        for target, audience in [*cards, (person_target(requester), "requester")]:
            await enqueue_message(session, target=target, kind=TICKET_CARD, ticket_id=ticket.id, now=now,
                                  payload={"ticket_id": ticket.id, "event_id": event.id, "audience": audience},
                                  idempotency_key=f"card:{event.id}:{target}")

    async def card_line(self, session: AsyncSession, ticket_id: int) -> Text | None:
        """The triage card's line about the latest request: who escalated, to which level, why."""
        event = (await session.execute(select(TicketEvent).where(
            TicketEvent.ticket_id == ticket_id, TicketEvent.kind == ESCALATION_REQUESTED)
            .order_by(TicketEvent.id.desc()).limit(1))).scalar_one_or_none()
        if event is None:
            return None
        who = await session.get(Person, event.actor_id) if event.actor_id else None
        why = str(event.payload.get("text") or "")
        zone = self.core.config.calendars[self.core.config.default_calendar].timezone
        return (f"📣 Escalated by {who.display_name if who else 'someone'} to level {event.payload.get('level')} of "
                f"{event.payload.get('levels')} ", Moment(event.at, zone), *((" — why: ", *to_spans(why)) if why
                                                                               else ()))

    async def on_breach(self, run: TimerRun, ticket: Ticket, metric: str, level: Literal["warn", "breach"]) -> None:
        """SLA hook: a first-response or resolution target passed, so the requester's card now offers "Escalate"."""
        if level != "breach" or metric not in _METRICS:
            return
        run_session, now = run.session, run.now
        requester = await run_session.get(Person, ticket.requester_id)
        if requester is None:
            return
        target = person_target(requester)
        await enqueue_message(run_session, target=target, kind=TICKET_CARD, ticket_id=ticket.id, now=now,
                              payload={"ticket_id": ticket.id, "event_id": None, "audience": "requester"},
                              idempotency_key=f"card:escalate-offer:{ticket.id}:{now.isoformat()}:{target}"[:200])


async def _events(session: AsyncSession, ticket_id: int) -> list[TicketEvent]:
    return list((await session.execute(select(TicketEvent).where(
        TicketEvent.ticket_id == ticket_id,
        TicketEvent.kind.in_((SLA_BREACHED, SLA_MISSED, ESCALATION_REQUESTED))).order_by(TicketEvent.id))).scalars())


def _next_level(events: list[TicketEvent]) -> int:
    return sum(1 for event in events if event.kind == ESCALATION_REQUESTED)


_WHO = {"assignee": "the agent on your ticket", "lead": "their team lead"}


def matrix_lines(config: AppConfig) -> list[str]:
    """What help says about who handles what and how to escalate (plain text, one line each)."""
    if config.escalation_matrix:
        lines = [f"{row.handles}: {row.contact}" for row in config.escalation_matrix]
    else:
        lines = []
        for priority, triggers in config.escalation.policies.items():
            name = triggers.breach or triggers.first_response or triggers.resolution
            chain = config.escalation.chains.get(name or "")
            if chain is not None:
                steps = [", ".join(_WHO.get(n, n.split(":")[-1]) for n in level.notify) for level in chain.levels]
                lines.append(f"{priority} tickets: " + ", then ".join(steps))
        lines = lines or ["Every ticket: the IT desk's triage channel"]
    return [*lines, "Once a ticket's first-response or resolution target has passed, press Escalate on it or "
            "type `escalate <ticket number> <why>`; each press goes one level up."]


def parse_escalate(text: str) -> tuple[int, str] | None:
    """``escalate IT-3 why`` / ``escalate 3 why`` → (3, "why"); None when the text is not that command."""
    word, _, rest = text.strip().partition(" ")
    if word.casefold() != "escalate":
        return None
    number, _, why = rest.strip().partition(" ")
    digits = number.upper().removeprefix("IT-").removeprefix("#")
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 18):
        raise InvalidInput("Which ticket? Type `escalate IT-3 <why>` with your ticket's number.")
    return int(digits), why.strip()
