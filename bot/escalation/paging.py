"""Who gets paged and what the page says: chat pages (with Acknowledge / Claim), pager events, the hourly cap."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import Core
from bot.engine import TimerRun
from bot.escalation.chain import (
    METRIC_LABELS,
    PAGER_PREFIXES,
    SUMMARY_TIMER,
    Snapshot,
    due_of,
    page_role,
)
from bot.messages import NOTICE, PAGE, notice_payload
from bot.notifications import person_target
from bot.routing import Action
from bot.text import plain, to_plain, to_spans
from bot.views import CardAction, Moment, Notice, Span, Text
from store.escalation_models import Escalation
from store.models import Counter, Person, Ticket, TicketEvent, ticket_number
from store.queries import enqueue_message, schedule_timer, upsert_insert

log = logging.getLogger("ithelp.escalation")


class Paging:
    """Pages one level of a chain, ends the pages of an escalation, and holds back pages over the hourly cap."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.config = core.config

    async def page(self, session: AsyncSession, escalation: Escalation, ticket: Ticket, chain: Snapshot,
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
            ("Target due ", Moment(due_of(ticket, escalation.metric) or escalation.breached_at, zone), ".")
            if escalation.trigger == "warn" else ("Target passed ", Moment(escalation.breached_at, zone), "."))
        headline = f"🚨 {ticket.number} {verb} {target_text} — {step}"
        who = requester.display_name if requester else "unknown"
        body: tuple[Span, ...] = (
            *to_spans(ticket.summary), "\n", f"Requester: {who} · Priority: {ticket.priority}", "\n", *when_text)
        # Pagers get one line of plain text, the ticket number first (they have no thread to carry it).
        pager_summary = f"{ticket.number} {verb} {target_text} — {step}: {to_plain(ticket.summary)}"[:1000]
        base_key = f"esc:{escalation.id}:{escalation.loop}:{level}"
        paged: list[str] = []
        for target in await self.expand(session, ticket, chain.levels[level][0]):
            prefix = target.split(":", 1)[0]
            key = f"{base_key}:{target}"
            if prefix in PAGER_PREFIXES:
                await self.pager_message(session, ticket, target, "trigger", key, now,
                                          summary=pager_summary, body=plain(body), level=level + 1, levels=total)
                pagers = list(escalation.paged_pagers.get("targets", []))
                if target not in pagers:
                    escalation.paged_pagers = {"targets": [*pagers, target]}
            elif not await self._chat_page(session, ticket, escalation, target, key, now, headline, body):
                continue  # held back by the hourly cap; the summary will mention it
            paged.append(target)
            self.core.metrics.pages_sent.labels(prefix).inc()
        escalation.pages += 1
        session.add(TicketEvent(ticket_id=ticket.id, at=now, kind="escalation_paged",
                                payload={"escalation_id": escalation.id, "level": level + 1, "levels": total,
                                         "loop": escalation.loop, "targets": paged}))

    async def expand(self, session: AsyncSession, ticket: Ticket, notify: list[str]) -> list[str]:
        """Turn ``assignee``/``lead`` into concrete targets; drop the ones that name nobody right now."""
        assignee = await session.get(Person, ticket.assignee_id) if ticket.assignee_id else None
        out: list[str] = []
        for target in notify:
            resolved: str | None = target
            if target == "assignee":
                resolved = person_target(assignee) if assignee else None
            elif target == "lead":
                lead = self.core.roster.lead_of(assignee.address) if assignee else None
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
            payload=notice_payload(view, ref_role=page_role(escalation), urgent=True, escalation_id=escalation.id),
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

    async def on_summary(self, run: TimerRun) -> None:
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

    async def pager_message(self, session: AsyncSession, ticket: Ticket, target: str, action: str, key: str,
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

    async def tell_paged(self, session: AsyncSession, ticket: Ticket, escalation: Escalation, now: datetime,
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
                                                         ref_role=page_role(escalation), replace=True,
                                                         escalation_id=escalation.id))

    async def name(self, session: AsyncSession, target: str) -> str:
        platform, _, rest = target.partition(":")
        sub, _, ident = rest.partition(":")
        if sub == "user":
            person = (await session.execute(select(Person).where(
                Person.platform == platform, Person.platform_user_id == ident))).scalar_one_or_none()
            return person.display_name if person else ident
        if platform in PAGER_PREFIXES:
            return f"{ {'pagerduty': 'PagerDuty', 'opsgenie': 'Opsgenie', 'webhook': 'webhook'}[platform]} ({rest})"
        return f"#{ident}" if sub == "channel" else f"@{ident}"


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
