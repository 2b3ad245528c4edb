"""The composition root: builds every service of the desk with what it needs, and wires them together.

Every subscription, timer kind, outbox channel and cron job is listed here, in the order it runs, so one
file shows how a ticket change travels through the desk. Platform adapters and their outbox channels are
added by the server (``bot.server``), which owns the HTTP side.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from bot.attachments import Attachments
from bot.calendars import build_calendars
from bot.cards import CardBuilder
from bot.channels.pager_delivery import pager_channels
from bot.channels.pagers import make_http_client
from bot.chat_commands import ChatCommands
from bot.clock import Clock
from bot.config import AppConfig
from bot.conversation import Conversations
from bot.core import Core, CronJob, Wake
from bot.deferred import DeferredWork
from bot.digests import REQUESTER_TIMER, TRIAGE_TIMER, Digests
from bot.directory import Directory
from bot.engine import OutboxWorker, RequestsFirst, TimerEngine
from bot.escalation import AUDIT_TIMER, STEP_TIMER, SUMMARY_TIMER, EscalationAudit, EscalationService, Paging
from bot.incidents import IncidentIntake, IncidentService, IncidentUpdates, incident_part
from bot.incidents.progress import INCIDENT_UPDATE_TIMER
from bot.knowledge.held import ASK_TIMER, HeldRequests
from bot.knowledge.service import KnowledgeService
from bot.metrics import Metrics
from bot.notifications import enqueue_for_change
from bot.people import AgentRoster
from bot.privacy.retention import PEOPLE_TIMER, TEXT_TIMER, RetentionService
from bot.requester_escalation import RequesterEscalation
from bot.sla import (
    FIRST_RESPONSE_TIMER,
    RESOLUTION_TIMER,
    UPDATE_DUE_TIMER,
    WARN_TIMER,
    SlaClock,
    acknowledgement,
    lock_tickets_of,
    sla_lines,
)
from bot.tickets import TicketChange, TicketService, TicketSnapshot
from bot.triage_notes import TriageThread
from bot.views import Text, spans
from bot.welcome import Welcomes
from store.db import Database
from store.models import Ticket
from surveys import nps
from surveys.nps import NpsService
from surveys.polls import EXPIRE, REMIND, SEND, SurveyService
from surveys.weekly import WEEKLY_TIMER, WeeklySummary


@dataclass
class Desk:
    """Everything a platform adapter needs to run the service desk."""

    core: Core
    sla: SlaClock
    cards: CardBuilder
    escalation: EscalationService
    surveys: SurveyService
    nps: NpsService
    """Off unless ``nps.enabled``; built anyway, so pulses already out can still be answered and close."""
    weekly: WeeklySummary
    digests: Digests
    retention: RetentionService
    directory: Directory
    """Lookups by platform ids for the adapters (who someone is, which ticket a thread belongs to)."""
    knowledge: KnowledgeService
    incidents: IncidentService
    incident_updates: IncidentUpdates
    cron_jobs: list[CronJob]
    triage_thread: TriageThread
    requester_escalation: RequesterEscalation
    chat: ChatCommands
    """Commands and small talk in direct messages (``status 13``, ``list``, ``hi``): answered, not filed."""
    conversations: Conversations
    """Plain direct messages: a new ticket, an answer to the one waiting on its requester, or a question which."""
    welcomes: Welcomes
    """Who was greeted on installing the Teams app or first opening the Slack App Home."""
    attachments: Attachments
    """Files and screenshots people share: linked to the other side, listed on the ticket."""
    deferred: DeferredWork
    """What a chat request leaves for after its ack (reading Slack, replying there): timer rows due now."""
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    """Called once when the server stops (the pagers' shared HTTP client)."""

    # The core's parts, by the names adapters and tests use.
    @property
    def config(self) -> AppConfig:
        return self.core.config

    @property
    def db(self) -> Database:
        return self.core.db

    @property
    def clock(self) -> Clock:
        return self.core.clock

    @property
    def metrics(self) -> Metrics:
        return self.core.metrics

    @property
    def roster(self) -> AgentRoster:
        return self.core.roster

    @property
    def tickets(self) -> TicketService:
        return self.core.tickets

    @property
    def timers(self) -> TimerEngine:
        return self.core.timers

    @property
    def outbox(self) -> OutboxWorker:
        return self.core.outbox

    @property
    def requests(self) -> RequestsFirst:
        return self.core.requests

    @property
    def wake(self) -> Wake:
        return self.core.wake

    def acknowledgement(self, ticket: TicketSnapshot, *, zone_label: str = "your time") -> Text:
        """The requester's "IT-1 opened — first response by …" line, in their own zone (named ``zone_label``)."""
        return acknowledgement(ticket, ticket.requester_timezone, self.sla.calendar(ticket.calendar), zone_label)

    async def aclose(self) -> None:
        for close in self.closers:
            await close()


def build_desk(config: AppConfig, db: Database, clock: Clock, *, metrics: Metrics | None = None,
               replica: str | None = None, http: httpx.AsyncClient | None = None) -> Desk:
    """Build and wire the desk; ``http`` (default: a new client, closed by ``Desk.aclose``) reaches the pagers."""
    core, sla = _build_core(config, db, clock, metrics or Metrics(), replica)
    escalation = EscalationService(core, Paging(core), EscalationAudit(core))
    requester_escalation = RequesterEscalation(core, escalation)
    attachments = Attachments(core)
    incidents = IncidentService(core)
    knowledge = KnowledgeService(core, HeldRequests(core, known_incident=incidents.matching))

    def card_lines(ticket: Ticket, now: datetime, zone: str, audience: str) -> list[Text]:
        return sla_lines(ticket, now, sla.calendar(ticket.calendar), zone, audience)

    async def escalation_line(session: AsyncSession, ticket_id: int) -> Text | None:
        # The chain's own state and the requester's latest escalation, side by side on the triage card.
        paged = await escalation.escalation_state(session, ticket_id)
        asked = await requester_escalation.card_line(session, ticket_id)
        return (*spans(paged), " · ", *spans(asked)) if paged and asked else paged or asked

    cards = CardBuilder(config, card_lines, escalation_state=escalation_line,
                        can_escalate=requester_escalation.can_escalate, resolution_fact=knowledge.self_served_fact,
                        incident_part=incident_part)
    digests, retention, weekly = Digests(core), RetentionService(core), WeeklySummary(core)
    desk = Desk(core=core, sla=sla, cards=cards, escalation=escalation, surveys=SurveyService(core),
                nps=NpsService(core), weekly=weekly, digests=digests, retention=retention, directory=Directory(db),
                chat=ChatCommands(core, incidents), conversations=Conversations(core, attachments, knowledge.held),
                attachments=attachments, deferred=DeferredWork(core), welcomes=Welcomes(core, incidents),
                knowledge=knowledge, incidents=incidents,
                incident_updates=IncidentUpdates(core, incidents),
                cron_jobs=[*digests.cron_jobs(), *retention.cron_jobs(), *weekly.cron_jobs(),
                           *knowledge.cron_jobs()],
                triage_thread=TriageThread(core), requester_escalation=requester_escalation)
    _follow_ticket_changes(desk, IncidentIntake(incidents))
    _register_timers(desk)

    # Outbox channels to the pagers (chat channels are registered by the server with its platform clients).
    owns_http = http is None
    http = http or make_http_client()
    for prefix, channel in pager_channels(config.pagers, http).items():
        core.outbox.register(prefix, channel)
    if owns_http:
        desk.closers.append(http.aclose)
    return desk


def _build_core(config: AppConfig, db: Database, clock: Clock, metrics: Metrics,
                replica: str | None) -> tuple[Core, SlaClock]:
    """What every service shares: database, clock, tickets, timers and the outbox; and the SLA clock the
    ticket service asks for a new ticket's targets."""
    calendars = build_calendars(config)
    roster = AgentRoster(config.agents)
    sla = SlaClock(config, calendars)
    tickets = TicketService(db, clock, config, roster, initial_targets=sla.initial_targets)
    requests = RequestsFirst(config.engine.background_share)
    wake = Wake()
    core = Core(
        config=config, db=db, clock=clock, metrics=metrics, roster=roster, calendars=calendars, tickets=tickets,
        # A timer task that ends wakes the engine: what it wrote (a ticket, a message owed) is for its next turn.
        timers=TimerEngine(db, clock, config.engine, metrics, owner=f"{replica}-timers" if replica else None,
                           wake=wake),
        outbox=OutboxWorker(db, clock, config.engine, metrics, owner=f"{replica}-outbox" if replica else None,
                            min_interval=config.engine.min_interval_per_channel.total_seconds(),
                            requests=requests),
        requests=requests, wake=wake,
    )
    return core, sla


def _follow_ticket_changes(desk: Desk, incident_intake: IncidentIntake) -> None:
    """Ticket changes, followed inside the change's own transaction, in this order."""
    tickets = desk.tickets
    # Incidents first link a matching new report, so its own triage card is never posted (it collapses).
    tickets.subscribe(incident_intake.before_notifications)
    tickets.subscribe(enqueue_for_change)
    tickets.subscribe(desk.knowledge.on_change)  # after the card, so the suggestions thread under it
    tickets.subscribe(_counter(desk.metrics))
    tickets.subscribe(desk.sla.on_change)
    # After the SLA clock: a linked ticket's own timers are cancelled (the incident's clock covers them).
    tickets.subscribe(incident_intake.after_change)
    tickets.subscribe(desk.escalation.on_change)
    tickets.subscribe(desk.surveys.on_change)
    tickets.subscribe(desk.nps.on_change)
    tickets.subscribe(desk.digests.on_change)
    tickets.subscribe(desk.retention.on_change)
    tickets.subscribe(desk.triage_thread.on_change)
    # A recorded SLA warning or breach starts the escalation chain, in the timer's transaction.
    desk.sla.on_breach.append(desk.escalation.on_breach)
    desk.sla.on_breach.append(desk.requester_escalation.on_breach)  # the requester's card now offers "Escalate"


def _counter(metrics: Metrics) -> Callable[[TicketChange], Awaitable[None]]:
    async def count(change: TicketChange) -> None:
        if change.event.kind == "opened":
            metrics.tickets_opened.labels(change.ticket.origin_platform).inc()
        elif change.event.kind in ("resolved", "closed"):
            metrics.tickets_closed.labels(change.event.kind).inc()
    return count


def _register_timers(desk: Desk) -> None:
    """Every timer kind and the service that runs it."""
    timers, sla, escalation = desk.timers, desk.sla, desk.escalation
    # SLA targets page people: short urgent leases, and a breach storm shares transactions (each touches only
    # its own ticket's rows and upserted counters).
    for kind, handler in ((FIRST_RESPONSE_TIMER, sla.on_first_response_due),
                          (RESOLUTION_TIMER, sla.on_resolution_due), (WARN_TIMER, sla.on_warn)):
        timers.register(kind, handler, shares_transaction=True, prepare=lock_tickets_of, urgent=True)
    timers.register(UPDATE_DUE_TIMER, sla.on_update_due)
    timers.register(STEP_TIMER, escalation.on_step)
    timers.register(AUDIT_TIMER, escalation.auditor.on_audit)
    timers.register(SUMMARY_TIMER, escalation.paging.on_summary)
    timers.register(SEND, desk.surveys.on_send)
    timers.register(REMIND, desk.surveys.on_remind)
    timers.register(EXPIRE, desk.surveys.on_expire)
    timers.register(nps.ROUND, desk.nps.on_round)
    timers.register(nps.SEND, desk.nps.on_send)
    timers.register(nps.EXPIRE, desk.nps.on_expire)
    timers.register(WEEKLY_TIMER, desk.weekly.post)
    timers.register(REQUESTER_TIMER, desk.digests.on_requester_slot)
    timers.register(TRIAGE_TIMER, desk.digests.on_triage_digest)
    timers.register(TEXT_TIMER, desk.retention.on_text)
    timers.register(PEOPLE_TIMER, desk.retention.on_people)
    timers.register(ASK_TIMER, desk.knowledge.held.on_timeout)
    timers.register(INCIDENT_UPDATE_TIMER, desk.incidents.progress.on_update_due)
