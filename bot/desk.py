"""Assembles the platform-neutral core: database, clock, services, timer engine and outbox worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.calendars import build_calendars
from bot.cards import CardBuilder
from bot.clock import Clock
from bot.config import AppConfig
from bot.engine import OutboxWorker, RequestsFirst, TimerEngine
from bot.metrics import Metrics
from bot.notifications import enqueue_for_change
from bot.people import AgentRoster
from bot.sla import SlaClock, acknowledgement, sla_lines
from bot.tickets import TicketChange, TicketService, TicketSnapshot
from bot.views import Text
from store.db import Database
from store.models import Ticket


@dataclass
class Desk:
    """Everything a platform adapter needs to run the service desk."""

    config: AppConfig
    db: Database
    clock: Clock
    metrics: Metrics
    roster: AgentRoster
    tickets: TicketService
    timers: TimerEngine
    outbox: OutboxWorker
    requests: RequestsFirst
    extras: dict[str, Any] = field(default_factory=dict)


def build_desk(config: AppConfig, db: Database, clock: Clock, *, metrics: Metrics | None = None,
               replica: str | None = None) -> Desk:
    """Wire the services together; platform channels are registered on ``desk.outbox`` by the server."""
    metrics = metrics or Metrics()
    roster = AgentRoster(config.agents)
    tickets = TicketService(db, clock, config, roster)
    tickets.subscribe(enqueue_for_change)

    async def count(change: TicketChange) -> None:
        if change.event.kind == "opened":
            metrics.tickets_opened.labels(change.ticket.origin_platform).inc()
        elif change.event.kind in ("resolved", "closed"):
            metrics.tickets_closed.labels(change.event.kind).inc()

    tickets.subscribe(count)
    timers = TimerEngine(db, clock, config.engine, metrics, owner=f"{replica}-timers" if replica else None)
    requests = RequestsFirst(config.engine.background_share)
    outbox = OutboxWorker(db, clock, config.engine, metrics, owner=f"{replica}-outbox" if replica else None,
                          min_interval=config.engine.min_interval_per_channel.total_seconds(), requests=requests)
    desk = Desk(config=config, db=db, clock=clock, metrics=metrics, roster=roster, tickets=tickets,
                timers=timers, outbox=outbox, requests=requests)
    sla = SlaClock(config, build_calendars(config))
    sla.install(desk)
    desk.extras["sla"] = sla

    def card_lines(ticket: Ticket, now: datetime, zone: str, audience: str) -> list[Text]:
        return sla_lines(ticket, now, sla.calendar(ticket.calendar), zone, audience)

    def ack_text(ticket: TicketSnapshot) -> Text:
        return acknowledgement(ticket, ticket.requester_timezone, sla.calendar(ticket.calendar))

    desk.extras["cards"] = CardBuilder(config, card_lines)
    desk.extras["ack_text"] = ack_text
    return desk
