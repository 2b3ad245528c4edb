"""Escalation chains: page the levels of a chain on an SLA breach until someone acknowledges.

A chain from ``app.yaml`` is copied onto the escalation row when it starts (so editing the config
never changes a running escalation). Each step runs inside a timer's transaction with the ticket and
the escalation row locked, and only the timer carrying the row's current ``run_token`` may page: a
stale, repeated or raced timer finds a different token and does nothing. Pages are outbox rows with
stable idempotency keys, so even a replayed step cannot page twice.

Chat pages are outbox ``notice`` messages (with Acknowledge / Claim actions in the payload); pager
pages are outbox kinds ``pagerduty.*``, ``opsgenie.*`` and ``webhook.event`` delivered by the channel
classes at the bottom of this module.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import String, cast, exists, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.business_time import BusinessCalendar
from bot.channels import PermanentDeliveryError
from bot.channels.pagers import OpsgenieClient, PagerDutyClient, WebhookClient, make_http_client
from bot.config import AppConfig, EscalationChain
from bot.engine import Delivered, OutboxItem, TimerRun
from bot.messages import NOTICE, PAGE, notice_payload
from bot.notifications import CARD, person_target, triage_targets
from bot.people import PersonRef
from bot.routing import Action
from bot.text import plain, to_plain, to_spans
from bot.tickets import AlreadyClaimed, IllegalTransition, NotAllowed, TicketChange, TicketNotFound
from bot.views import CardAction, Moment, Notice, Span, Text
from store.escalation_models import ACTIVE_KEY, Escalation
from store.models import Counter, Person, Ticket, TicketEvent, Timer, ticket_number
from store.queries import enqueue_message, insert_if_absent, schedule_timer, upsert_insert

if TYPE_CHECKING:
    from bot.desk import Desk

log = logging.getLogger("ithelp.escalation")

STEP_TIMER = "escalation.step"
AUDIT_TIMER = "escalation.audit"
SUMMARY_TIMER = "escalation.summary"
ACTIVE, ACKNOWLEDGED, FINISHED = "active", "acknowledged", "finished"
TRIGGERS = ("warn", "breach", "first_response", "update", "resolution")
METRIC_LABELS = {"first_response": "first response", "resolution": "resolution", "update": "update"}
PAGER_PREFIXES = ("pagerduty", "opsgenie", "webhook")
_AUDIT_GRACE = timedelta(seconds=30)


def _token() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Snapshot:
    """The chain as copied onto the escalation when it started."""

    levels: list[tuple[list[str], timedelta]]
    repeat: int
    window: tuple[time, time] | None
    zone: ZoneInfo

    @classmethod
    def load(cls, data: dict[str, Any]) -> Snapshot:
        window = data.get("only_between")
        return cls(
            levels=[(list(level["notify"]), timedelta(seconds=float(level["wait"]))) for level in data["levels"]],
            repeat=int(data.get("repeat", 0)),
            window=(time.fromisoformat(window[0]), time.fromisoformat(window[1])) if window else None,
            zone=ZoneInfo(data.get("zone") or "UTC"),
        )

    def next_open(self, now: datetime) -> datetime:
        """``now`` if inside the paging window (or there is none), else when the window next opens (UTC)."""
        if self.window is None:
            return now
        start, end = self.window
        local = now.astimezone(self.zone)
        clock = local.time().replace(tzinfo=None)
        inside = (start <= clock < end) if start < end else (clock >= start or clock < end)
        if inside or start == end:
            return now
        opening = datetime.combine(local.date(), start, tzinfo=self.zone)
        if opening <= local:
            opening = datetime.combine(local.date() + timedelta(days=1), start, tzinfo=self.zone)
        return max(now, opening.astimezone(UTC))


def snapshot_chain(chain: EscalationChain, zone: str) -> dict[str, Any]:
    """A JSON copy of ``chain`` (waits in seconds, window as HH:MM) with the zone it is read in."""
    return {
        "levels": [{"notify": list(level.notify), "wait": level.wait.total_seconds()} for level in chain.levels],
        "repeat": chain.repeat,
        "only_between": [chain.only_between[0].isoformat("minutes"), chain.only_between[1].isoformat("minutes")]
        if chain.only_between else None,
        "calendar": chain.calendar,
        "zone": zone,
    }


class EscalationService:
    """Starts, steps, acknowledges and audits escalations; see the module docstring."""

    def __init__(self, config: AppConfig, calendars: dict[str, BusinessCalendar] | None = None, *,
                 http: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.calendars = calendars or {}
        self._http = http
        self._owns_http = http is None
        self._desk: Desk | None = None
        self._audit_slot_seen = -1

    # -- wiring -------------------------------------------------------------------------------------
    @property
    def desk(self) -> Desk:
        if self._desk is None:
            raise RuntimeError("EscalationService.install(desk) was not called")
        return self._desk

    def install(self, desk: Desk) -> None:
        """Follow ticket changes, run escalation timers, and deliver pager outbox kinds."""
        self._desk = desk
        desk.tickets.subscribe(self._on_change)
        desk.timers.register(STEP_TIMER, self._on_step)
        desk.timers.register(AUDIT_TIMER, self._on_audit)
        desk.timers.register(SUMMARY_TIMER, self._on_summary)
        if self._http is None:
            self._http = make_http_client()
        pagers = self.config.pagers
        desk.outbox.register("pagerduty", PagerDutyChannel(
            {name: PagerDutyClient(self._http, t.routing_key, t.events_url) for name, t in pagers.pagerduty.items()}))
        desk.outbox.register("opsgenie", OpsgenieChannel(
            {name: OpsgenieClient(self._http, t.api_key, t.api_url) for name, t in pagers.opsgenie.items()}))
        desk.outbox.register("webhook", WebhookChannel(
            {name: WebhookClient(self._http, t.url, t.secret) for name, t in pagers.webhook.items()}))
        desk.extras["escalation"] = self

    async def aclose(self) -> None:
        """Close the shared HTTP client (if this service created it)."""
        if self._http is not None and self._owns_http:
            await self._http.aclose()

    # -- starting -----------------------------------------------------------------------------------
    def chain_for(self, priority: str, trigger: str) -> str | None:
        triggers = self.config.escalation.policies.get(priority)
        if triggers is None or trigger not in TRIGGERS:
            return None
        name: str | None = getattr(triggers, trigger)
        return name if name in self.config.escalation.chains else None

    async def on_breach(self, run: TimerRun, ticket: Ticket, metric: str, level: Literal["warn", "breach"]) -> None:
        """SLA hook: a warning starts the ``warn`` chain; a breach the metric's own chain, else ``breach``."""
        if level == "warn":
            await self.start(run.session, ticket, "warn", run.now, metric=metric)
            return
        trigger = metric if self.chain_for(ticket.priority, metric) else "breach"
        await self.start(run.session, ticket, trigger, run.now, metric=metric)

    async def start(self, session: AsyncSession, ticket: Ticket, trigger: str, now: datetime, *,
                    metric: str | None = None) -> bool:
        """Start the chain the ticket's priority names for ``trigger`` and page its first level.

        Runs in the caller's transaction. False when no chain applies, the ticket is closed, or an
        escalation for this ticket and trigger is already running.
        """
        chain_name = self.chain_for(ticket.priority, trigger)
        if chain_name is None or not ticket.is_open:
            return False
        chain = self.config.escalation.chains[chain_name]
        zone = self._zone_for(chain)
        metric = metric or (trigger if trigger in METRIC_LABELS else None)
        breached_at = self._due_of(ticket, metric) or now
        escalation = await insert_if_absent(session, Escalation, {
            "ticket_id": ticket.id, "trigger": trigger, "metric": metric, "chain_name": chain_name,
            "chain": snapshot_chain(chain, zone), "status": ACTIVE, "active_key": ACTIVE_KEY, "level": 0, "loop": 0,
            "pages": 0, "run_token": _token(), "next_step_at": now, "breached_at": min(breached_at, now),
            "paged_pagers": {"targets": []}, "started_at": now,
        }, ("ticket_id", "trigger", "active_key"))
        if escalation is None:
            return False
        session.add(TicketEvent(ticket_id=ticket.id, at=now, kind="escalation_started",
                                payload={"escalation_id": escalation.id, "trigger": trigger, "chain": chain_name,
                                         "metric": metric}))
        await self._step(session, escalation, ticket, now)
        await self._ensure_audit(session, now)
        return True

    def _zone_for(self, chain: EscalationChain) -> str:
        name = chain.calendar or self.config.default_calendar
        calendar = self.calendars.get(name)
        if calendar is not None:
            return calendar.tz.key
        spec = self.config.calendars.get(name)
        return spec.timezone if spec is not None else "UTC"

    @staticmethod
    def _due_of(ticket: Ticket, metric: str | None) -> datetime | None:
        return {"first_response": ticket.first_response_due, "resolution": ticket.resolution_due,
                "update": ticket.next_update_due}.get(metric or "")

    # -- stepping -----------------------------------------------------------------------------------
    async def _on_step(self, run: TimerRun) -> None:
        escalation_id = run.timer.payload.get("escalation_id")
        token = run.timer.payload.get("token")
        ticket = (await run.session.execute(
            select(Ticket).where(Ticket.id == run.timer.ticket_id).with_for_update())).scalar_one_or_none()
        escalation = (await run.session.execute(
            select(Escalation).where(Escalation.id == escalation_id).with_for_update())).scalar_one_or_none()
        if ticket is None or escalation is None or escalation.status != ACTIVE or escalation.run_token != token:
            run.timer.outcome = "stale"
            run.timer.done_at = run.now
            return
        await self._step(run.session, escalation, ticket, run.now)

    async def _step(self, session: AsyncSession, escalation: Escalation, ticket: Ticket, now: datetime) -> None:
        """Page the pending level (or wait for the window, or finish); the rows are locked by the caller."""
        if not ticket.is_open:
            await self._finish(session, escalation, now, "ticket_closed")
            return
        chain = Snapshot.load(escalation.chain)
        if escalation.loop > chain.repeat:  # every level of every loop was paged and waited out
            await self._finish(session, escalation, now, "exhausted")
            return
        opens = chain.next_open(now)
        if opens > now:  # outside the paging window: delay this level, never skip it
            await self._schedule(session, escalation, opens, now)
            return
        await self._page(session, escalation, ticket, chain, now)
        wait = chain.levels[escalation.level][1]
        escalation.level += 1
        if escalation.level >= len(chain.levels):
            escalation.level = 0
            escalation.loop += 1
        await self._schedule(session, escalation, now + wait, now)

    async def _schedule(self, session: AsyncSession, escalation: Escalation, due: datetime, now: datetime) -> None:
        escalation.run_token = _token()
        escalation.next_step_at = due
        await schedule_timer(session, kind=STEP_TIMER, due_at=due, now=now, ticket_id=escalation.ticket_id,
                             payload={"escalation_id": escalation.id, "token": escalation.run_token},
                             dedup_key=f"esc:{escalation.id}:{escalation.run_token}")

    async def _finish(self, session: AsyncSession, escalation: Escalation, now: datetime, reason: str,
                      *, status: str = FINISHED) -> None:
        escalation.status = status
        escalation.active_key = str(escalation.id)
        escalation.run_token = _token()
        escalation.next_step_at = None
        escalation.finished_at = now
        escalation.finish_reason = reason
        session.add(TicketEvent(ticket_id=escalation.ticket_id, at=now, kind=f"escalation_{status}",
                                payload={"escalation_id": escalation.id, "reason": reason}))

    # -- paging -------------------------------------------------------------------------------------
    async def _page(self, session: AsyncSession, escalation: Escalation, ticket: Ticket, chain: Snapshot,
                    now: datetime) -> None:
        level, total = escalation.level, len(chain.levels)
        requester = await session.get(Person, ticket.requester_id)
        what = METRIC_LABELS.get(escalation.metric or "", "")
        verb = "is close to breaching" if escalation.trigger == "warn" else "breached"
        target_text = f"its {what} target" if what else "its SLA"
        step = f"level {level + 1} of {total}" + (
            f" (round {escalation.loop + 1} of {chain.repeat + 1})" if chain.repeat else "")
        zone = chain.zone.key
        when_text: tuple[Span, ...] = (
            ("Target due ", Moment(self._due_of(ticket, escalation.metric) or escalation.breached_at, zone), ".")
            if escalation.trigger == "warn" else ("Target passed ", Moment(escalation.breached_at, zone), "."))
        headline = f"🚨 {ticket.number} {verb} {target_text} — {step}"
        who = requester.display_name if requester else "unknown"
        body: tuple[Span, ...] = (
            *to_spans(ticket.summary), "\n", f"Requester: {who} · Priority: {ticket.priority}", "\n", *when_text)
        # Pagers get one line of plain text, the ticket number first (they have no thread to carry it).
        pager_summary = f"{ticket.number} {verb} {target_text} — {step}: {to_plain(ticket.summary)}"[:1000]
        base_key = f"esc:{escalation.id}:{escalation.loop}:{level}"
        paged: list[str] = []
        for target in await self._expand(session, ticket, chain.levels[level][0]):
            prefix = target.split(":", 1)[0]
            key = f"{base_key}:{target}"
            if prefix in PAGER_PREFIXES:
                await self._pager_message(session, ticket, target, "trigger", key, now,
                                          summary=pager_summary, body=plain(body), level=level + 1, levels=total)
                pagers = list(escalation.paged_pagers.get("targets", []))
                if target not in pagers:
                    escalation.paged_pagers = {"targets": [*pagers, target]}
            elif not await self._chat_page(session, ticket, escalation, target, key, now, headline, body):
                continue  # held back by the hourly cap; the summary will mention it
            paged.append(target)
            self.desk.metrics.pages_sent.labels(prefix).inc()
        escalation.pages += 1
        session.add(TicketEvent(ticket_id=ticket.id, at=now, kind="escalation_paged",
                                payload={"escalation_id": escalation.id, "level": level + 1, "levels": total,
                                         "loop": escalation.loop, "targets": paged}))

    async def _expand(self, session: AsyncSession, ticket: Ticket, notify: list[str]) -> list[str]:
        """Turn ``assignee``/``lead`` into concrete targets; drop the ones that name nobody right now."""
        assignee = await session.get(Person, ticket.assignee_id) if ticket.assignee_id else None
        out: list[str] = []
        for target in notify:
            resolved: str | None = target
            if target == "assignee":
                resolved = person_target(assignee) if assignee else None
            elif target == "lead":
                lead = self.desk.roster.lead_of(assignee.address) if assignee else None
                resolved = _as_target(lead) if lead else None
            if resolved and resolved not in out:
                out.append(resolved)
        return out

    async def _chat_page(self, session: AsyncSession, ticket: Ticket, escalation: Escalation, target: str, key: str,
                         now: datetime, headline: str, body: Text) -> bool:
        if _is_person(target) and not await self._under_cap(session, target, ticket, now):
            return False
        view = Notice(ticket.id, ticket.number, headline, body, actions=(
            CardAction(Action.ESCALATION_ACK, "Acknowledge", str(ticket.id), style="primary"),
            CardAction(Action.ESCALATION_CLAIM, "Claim", str(ticket.id))), numbered=False)
        await enqueue_message(
            session, target=target, kind=PAGE, ticket_id=ticket.id, idempotency_key=key, now=now,
            payload=notice_payload(view, ref_role=_page_role(escalation), urgent=True, escalation_id=escalation.id),
        )
        return True

    async def _under_cap(self, session: AsyncSession, target: str, ticket: Ticket, now: datetime) -> bool:
        """Count a chat page against the person's hourly cap; over it, hold it back for the hourly summary."""
        hour = now.replace(minute=0, second=0, microsecond=0)
        cap = self.config.escalation.max_chat_pages_per_hour
        if await _bump(session, f"pages:{target}:{hour:%Y%m%d%H}", hour + timedelta(hours=2)) <= cap:
            return True
        session.add(TicketEvent(ticket_id=ticket.id, at=now, kind="escalation_page_held",
                                payload={"target": target, "hour": hour.isoformat()}))
        await schedule_timer(session, kind=SUMMARY_TIMER, due_at=hour + timedelta(hours=1), now=now,
                             payload={"target": target, "hour": hour.isoformat()},
                             dedup_key=f"esc-summary:{target}:{hour:%Y%m%d%H}"[:200])
        return False

    async def _on_summary(self, run: TimerRun) -> None:
        target, hour = run.timer.payload["target"], datetime.fromisoformat(run.timer.payload["hour"])
        events = (await run.session.execute(select(TicketEvent).where(
            TicketEvent.kind == "escalation_page_held", TicketEvent.at >= hour,
            TicketEvent.at < hour + timedelta(hours=1)).order_by(TicketEvent.id))).scalars().all()
        numbers: list[int] = []
        for event in events:
            if event.payload.get("target") == target and event.ticket_id not in numbers:
                numbers.append(event.ticket_id)
        held = sum(1 for event in events if event.payload.get("target") == target)
        if not held:
            return
        cap = self.config.escalation.max_chat_pages_per_hour
        listed = ", ".join(ticket_number(n) for n in numbers[:20]) + (" …" if len(numbers) > 20 else "")
        view = Notice(numbers[0], ticket_number(numbers[0]),
                      f"🚨 {held} more page{'s' if held != 1 else ''} held back in the last hour "
                      f"(you get at most {cap} an hour)", f"Still escalating: {listed}. Check the triage channel.",
                      numbered=False)
        await enqueue_message(
            run.session, target=target, kind=NOTICE, ticket_id=numbers[0], now=run.now,
            idempotency_key=f"esc-summary:{target}:{hour:%Y%m%d%H}"[:200], payload=notice_payload(view),
        )

    async def _pager_message(self, session: AsyncSession, ticket: Ticket, target: str, action: str, key: str,
                             now: datetime, *, summary: str = "", body: str = "", level: int = 0,
                             levels: int = 0) -> None:
        prefix = target.split(":", 1)[0]
        details = {"ticket": ticket.number, "summary": ticket.summary, "priority": ticket.priority,
                   "level": level, "levels": levels}
        if prefix == "pagerduty":
            kind, payload = f"pagerduty.{action}", {"dedup_key": ticket.number, "summary": summary,
                                                    "severity": "critical" if level > 1 else "error",
                                                    "custom_details": details}
        elif prefix == "opsgenie":
            og_action = "create" if action == "trigger" else "close" if action == "resolve" else action
            kind, payload = f"opsgenie.{og_action}", {"alias": ticket.number, "message": summary,
                                                      "description": body,
                                                      "details": {k: str(v) for k, v in details.items()}}
        else:
            event = {"event": {"trigger": "escalation.paged"}.get(action, f"escalation.{action}d"),
                     "ticket": ticket.number, "ticket_id": ticket.id, "at": now.isoformat()}
            if action == "trigger":
                event.update(summary=summary, level=level, levels=levels, description=body)
            kind, payload = "webhook.event", {"event": event}
        await enqueue_message(session, target=target, kind=kind, payload=payload, idempotency_key=key[:200],
                              now=now, ticket_id=ticket.id)

    # -- acknowledging and ending -------------------------------------------------------------------
    async def acknowledge(self, ticket_id: int, person: PersonRef, *, claim: bool = False,
                          where: str | None = None) -> str:
        """Someone pressed Acknowledge (or Claim) on a page: stop paging and say so.

        Agents may, and so may whoever this ticket's escalations paged: the person themselves, or anyone in a
        paged channel when ``where`` (the target the click came from, e.g. ``slack:channel:C1``) names it. Only
        agents can claim: a paged non-agent's Claim acknowledges. Anyone else gets ``NotAllowed``."""
        desk = self.desk
        agent = desk.roster.is_agent(person.address)
        if claim and agent:
            try:
                snapshot = await desk.tickets.claim(ticket_id, person)
            except (AlreadyClaimed, IllegalTransition) as exc:
                said = await self.acknowledge(ticket_id, person)
                return f"{exc} {said}"
            return f"You claimed {snapshot.number}; paging stopped."
        async with desk.db.transaction() as session:
            now = desk.clock.now()
            ticket = (await session.execute(
                select(Ticket).where(Ticket.id == ticket_id).with_for_update())).scalar_one_or_none()
            if ticket is None:
                raise TicketNotFound(f"There is no ticket IT-{ticket_id}.")
            if not agent and not await self._was_paged(session, ticket_id, person, where):
                raise NotAllowed(f"Only IT agents and the people paged about {ticket.number} can acknowledge "
                                 "its pages.")
            actor = await desk.tickets.person(session, person)
            running = await self._active(session, ticket_id)
            if not running:
                last = (await session.execute(select(Escalation).where(
                    Escalation.ticket_id == ticket_id, Escalation.acknowledged_at.is_not(None))
                    .order_by(Escalation.id.desc()).limit(1))).scalar_one_or_none()
                if last is not None and last.acknowledged_at is not None:
                    return (f"{ticket.number} was already acknowledged by {last.acknowledged_by} at "
                            f"{self._local(last, last.acknowledged_at)}.")
                return f"Nothing to acknowledge: {ticket.number} isn't escalating."
            await self._acknowledge_all(session, ticket, running, actor, now)
            if claim:
                return (f"Acknowledged {ticket.number}; paging stopped. Only IT agents can claim tickets, so it "
                        "stays in the queue for them.")
            return f"Acknowledged {ticket.number}; paging stopped."

    @staticmethod
    async def _was_paged(session: AsyncSession, ticket_id: int, person: PersonRef, where: str | None) -> bool:
        """Whether an escalation of this ticket paged ``person`` directly, or the channel ``where`` names."""
        mine = {f"{person.platform}:user:{person.user_id}", *([where] if where else [])}
        paged = (await session.execute(select(TicketEvent.payload).where(
            TicketEvent.ticket_id == ticket_id, TicketEvent.kind == "escalation_paged"))).scalars()
        return any(mine.intersection(payload.get("targets") or ()) for payload in paged)

    async def _active(self, session: AsyncSession, ticket_id: int) -> list[Escalation]:
        return list((await session.execute(select(Escalation).where(
            Escalation.ticket_id == ticket_id, Escalation.status == ACTIVE)
            .order_by(Escalation.id).with_for_update())).scalars())

    async def _acknowledge_all(self, session: AsyncSession, ticket: Ticket, running: list[Escalation],
                               actor: Person, now: datetime) -> None:
        for escalation in running:
            escalation.acknowledged_by_id = actor.id
            escalation.acknowledged_by = actor.display_name
            escalation.acknowledged_at = now
            await self._finish(session, escalation, now, "acknowledged", status=ACKNOWLEDGED)
            for target in escalation.paged_pagers.get("targets", []):
                await self._pager_message(session, ticket, target, "acknowledge",
                                          f"esc:{escalation.id}:ack:{target}", now)
            await self._tell_paged(session, ticket, escalation, now,
                                   f"✅ {ticket.number} acknowledged by {actor.display_name} — paging stopped.")
        await self._refresh_cards(session, ticket, now, running[-1].id)

    async def _tell_paged(self, session: AsyncSession, ticket: Ticket, escalation: Escalation, now: datetime,
                          headline: str) -> None:
        """End every chat page of this escalation: the page message is edited in place (its buttons go)."""
        events = (await session.execute(select(TicketEvent).where(
            TicketEvent.ticket_id == ticket.id, TicketEvent.kind == "escalation_paged"))).scalars().all()
        targets: list[str] = []
        for event in events:
            if event.payload.get("escalation_id") == escalation.id:
                targets += [t for t in event.payload.get("targets", [])
                            if t.split(":", 1)[0] not in PAGER_PREFIXES and t not in targets]
        for target in targets:
            await enqueue_message(session, target=target, kind=PAGE, ticket_id=ticket.id, now=now,
                                  idempotency_key=f"esc:{escalation.id}:done:{target}"[:200],
                                  payload=notice_payload(Notice(ticket.id, ticket.number, headline, numbered=False),
                                                         ref_role=_page_role(escalation), replace=True,
                                                         escalation_id=escalation.id))

    async def _refresh_cards(self, session: AsyncSession, ticket: Ticket, now: datetime, escalation_id: int) -> None:
        event = TicketEvent(ticket_id=ticket.id, at=now, kind="escalation_card", payload={})
        session.add(event)
        await session.flush()
        for target in triage_targets(self.config):
            await enqueue_message(session, target=target, kind=CARD, ticket_id=ticket.id, now=now,
                                  payload={"ticket_id": ticket.id, "event_id": event.id, "audience": "triage"},
                                  idempotency_key=f"card:{event.id}:{target}")

    async def _on_change(self, change: TicketChange) -> None:
        """Claiming acknowledges (by the claimer); resolving or closing ends escalations and their alerts."""
        kind, session, ticket, now = change.event.kind, change.session, change.ticket, change.now
        if kind == "claimed" and change.actor is not None:
            running = await self._active(session, ticket.id)
            if running:
                await self._acknowledge_all(session, ticket, running, change.actor, now)
        elif kind in ("resolved", "closed"):
            for escalation in await self._active(session, ticket.id):
                await self._finish(session, escalation, now, kind)
                await self._tell_paged(session, ticket, escalation, now,
                                       f"✅ {ticket.number} was {kind} — paging stopped.")
            open_alerts = (await session.execute(select(Escalation).where(
                Escalation.ticket_id == ticket.id, Escalation.pagers_closed_at.is_(None))
                .with_for_update())).scalars().all()
            for escalation in open_alerts:
                escalation.pagers_closed_at = now
                for target in escalation.paged_pagers.get("targets", []):
                    await self._pager_message(session, ticket, target, "resolve",
                                              f"esc:{escalation.id}:resolve:{target}", now)

    # -- reading ------------------------------------------------------------------------------------
    async def escalation_state(self, session: AsyncSession, ticket_id: int) -> Text | None:
        """A line for the triage card: "Escalated: level 2 of 3, paging Bob" / "Acknowledged by Alice 10:05"."""
        latest = (await session.execute(select(Escalation).where(Escalation.ticket_id == ticket_id)
                                        .order_by(Escalation.id.desc()).limit(1))).scalar_one_or_none()
        if latest is None:
            return None
        chain = Snapshot.load(latest.chain)
        if latest.status == ACTIVE:
            if latest.pages == 0:
                opens = latest.next_step_at or latest.started_at
                return ("Escalation waiting for its paging window (opens ", self._moment(latest, opens), ")")
            paged_level = (latest.level - 1) % len(chain.levels)
            ticket = await session.get(Ticket, ticket_id)
            names = [await self._name(session, t) for t in
                     (await self._expand(session, ticket, chain.levels[paged_level][0]) if ticket else [])]
            who = f", paging {', '.join(names)}" if names else ""
            return f"Escalated: level {paged_level + 1} of {len(chain.levels)}{who}"
        if latest.status == ACKNOWLEDGED and latest.acknowledged_at is not None:
            return (f"Acknowledged by {latest.acknowledged_by} ", self._moment(latest, latest.acknowledged_at))
        return None

    async def _name(self, session: AsyncSession, target: str) -> str:
        platform, _, rest = target.partition(":")
        sub, _, ident = rest.partition(":")
        if sub == "user":
            person = (await session.execute(select(Person).where(
                Person.platform == platform, Person.platform_user_id == ident))).scalar_one_or_none()
            return person.display_name if person else ident
        if platform in PAGER_PREFIXES:
            return f"{ {'pagerduty': 'PagerDuty', 'opsgenie': 'Opsgenie', 'webhook': 'webhook'}[platform]} ({rest})"
        return f"#{ident}" if sub == "channel" else f"@{ident}"

    @staticmethod
    def _moment(escalation: Escalation, at: datetime) -> Moment:
        return Moment(at, escalation.chain.get("zone") or "UTC")

    @staticmethod
    def _local(escalation: Escalation, at: datetime | None) -> str:
        if at is None:
            return "?"
        return at.astimezone(ZoneInfo(escalation.chain.get("zone") or "UTC")).strftime("%H:%M")

    # -- auditing -----------------------------------------------------------------------------------
    async def _ensure_audit(self, session: AsyncSession, now: datetime) -> None:
        every = self.config.escalation.audit_every
        slot = int(now.timestamp() // every.total_seconds()) + 1
        if slot == self._audit_slot_seen:
            return
        due = datetime.fromtimestamp(slot * every.total_seconds(), UTC)
        if await schedule_timer(session, kind=AUDIT_TIMER, due_at=due, now=now, dedup_key=f"esc-audit:{slot}"):
            session.info["audit_slot_inserted"] = slot
        elif session.info.get("audit_slot_inserted") != slot:
            # Already there and committed (an insert in flight elsewhere would have made ours wait for
            # it; our own, in a transaction shared by a group of breaches, may still roll back): the
            # rest of a breach storm's escalations in this slot need not ask again.
            self._audit_slot_seen = slot

    async def _on_audit(self, run: TimerRun) -> None:
        remaining, _stuck = await self._audit(run.session, run.now)
        if remaining:
            await self._ensure_audit(run.session, run.now)

    async def audit(self, now: datetime | None = None) -> int:
        """Re-queue active escalations with no pending step; returns how many were stuck."""
        async with self.desk.db.transaction() as session:
            return (await self._audit(session, now or self.desk.clock.now()))[1]

    async def _audit(self, session: AsyncSession, now: datetime) -> tuple[bool, int]:
        """Check every active escalation has a pending step timer; returns (any still active, re-queued)."""
        # One anti-join, not a lookup per escalation: a breach storm leaves thousands active at once.
        step_key = literal("esc:") + cast(Escalation.id, String) + literal(":") + Escalation.run_token
        query = select(Escalation).where(Escalation.status == ACTIVE, ~exists().where(
            Timer.dedup_key == step_key, Timer.done_at.is_(None))).order_by(Escalation.id)
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            # A step in progress holds its escalation: skip it, its own transaction schedules the next step.
            query = query.with_for_update(skip_locked=True, of=Escalation)
        stuck = (await session.execute(query)).scalars().all()
        for escalation in stuck:
            log.warning("escalation %s of ticket %s had no pending step; re-queued", escalation.id,
                        escalation.ticket_id)
            self.desk.metrics.escalations_stuck.inc()
            due = escalation.next_step_at if escalation.next_step_at and escalation.next_step_at > now else now
            await self._schedule(session, escalation, due, now)
        active = await session.scalar(select(exists().where(Escalation.status == ACTIVE)))
        return bool(active), len(stuck)


async def _bump(session: AsyncSession, key: str, expires_at: datetime) -> int:
    insert = upsert_insert(session)
    statement = insert(Counter).values(key=key, value=1, expires_at=expires_at)
    statement = statement.on_conflict_do_update(index_elements=["key"],
                                                set_={"value": Counter.value + 1}).returning(Counter.value)
    return int((await session.execute(statement)).scalar_one())


def _is_person(target: str) -> bool:
    return target.split(":")[1:2] == ["user"]


def _as_target(address: str) -> str:
    """``slack:U1`` (a person's address) → ``slack:user:U1``; full targets pass through."""
    platform, _, rest = address.partition(":")
    return address if ":" in rest or platform not in ("slack", "teams") else f"{platform}:user:{rest}"


# -- pager channels (outbox delivery) -----------------------------------------------------------------
class _PagerChannel:
    prefix = ""

    lanes = 4
    min_interval = 0.0  # pagers have no per-conversation limit; 429s are honoured through Retry-After
    urgent = True  # a page never waits behind a burst of chat requests (RequestsFirst)

    def pacing_key(self, item: OutboxItem) -> str:
        # A few lanes per pager so a storm of alerts goes out in parallel without draining the DB pool;
        # one ticket always maps to one lane (and the outbox keeps a ticket's messages in order anyway).
        return f"{item.target}#{(item.ticket_id or 0) % self.lanes}"

    def _name(self, item: OutboxItem) -> str:
        return item.target.split(":", 1)[1]

    def _missing(self, item: OutboxItem) -> PermanentDeliveryError:
        return PermanentDeliveryError(f"{item.target}: no such pager in pagers.{self.prefix}")


class PagerDutyChannel(_PagerChannel):
    """Outbox kinds ``pagerduty.trigger|acknowledge|resolve`` to ``pagerduty:<name>``."""

    prefix = "pagerduty"

    def __init__(self, clients: dict[str, PagerDutyClient]) -> None:
        self.clients = clients

    async def deliver(self, item: OutboxItem) -> Delivered:
        client = self.clients.get(self._name(item))
        if client is None:
            raise self._missing(item)
        payload, action = item.payload, item.kind.split(".", 1)[1]
        if action == "trigger":
            key = await client.trigger(payload["dedup_key"], payload["summary"], severity=payload["severity"],
                                       custom_details=payload.get("custom_details"))
            return Delivered(message_id=key)
        if action == "acknowledge":
            await client.acknowledge(payload["dedup_key"])
        elif action == "resolve":
            await client.resolve(payload["dedup_key"])
        else:
            raise PermanentDeliveryError(f"unknown PagerDuty outbox kind {item.kind!r}")
        return Delivered(message_id=payload["dedup_key"])


class OpsgenieChannel(_PagerChannel):
    """Outbox kinds ``opsgenie.create|acknowledge|close`` to ``opsgenie:<name>``."""

    prefix = "opsgenie"

    def __init__(self, clients: dict[str, OpsgenieClient]) -> None:
        self.clients = clients

    async def deliver(self, item: OutboxItem) -> Delivered:
        client = self.clients.get(self._name(item))
        if client is None:
            raise self._missing(item)
        payload, action = item.payload, item.kind.split(".", 1)[1]
        if action == "create":
            request_id = await client.create_alert(payload["alias"], payload["message"],
                                                   description=payload.get("description"),
                                                   priority="P1" if payload.get("details", {}).get("level") != "1"
                                                   else "P2", details=payload.get("details"), tags=["ithelp"])
            return Delivered(message_id=request_id or payload["alias"])
        if action == "acknowledge":
            await client.acknowledge(payload["alias"], note="Acknowledged in chat")
        elif action == "close":
            await client.close(payload["alias"], note="Ticket resolved")
        else:
            raise PermanentDeliveryError(f"unknown Opsgenie outbox kind {item.kind!r}")
        return Delivered(message_id=payload["alias"])


class WebhookChannel(_PagerChannel):
    """Outbox kind ``webhook.event`` to ``webhook:<name>`` (signed with the webhook's secret)."""

    prefix = "webhook"

    def __init__(self, clients: dict[str, WebhookClient]) -> None:
        self.clients = clients

    async def deliver(self, item: OutboxItem) -> Delivered:
        client = self.clients.get(self._name(item))
        if client is None:
            raise self._missing(item)
        await client.post(item.payload["event"])
        return Delivered(message_id=None)


def _page_role(escalation: Escalation) -> str:
    # message_refs role of this escalation's chat page to one target (fits the 32-character column).
    return f"page:{escalation.id}"
