"""One-click CSAT: a 👍/👎 poll DM'd to the requester after their ticket is resolved.

Flow: the ``resolved`` event (a ``TicketService`` subscriber, inside the change's transaction) creates the
ticket's one ``Survey`` row and a ``survey.send`` timer after ``surveys.delay``. The timer DMs the card
(outbox) and schedules ``survey.expire`` (and ``survey.remind`` when configured). Clicks come back through
``answer``/``add_reason``/``reopen_from_survey``; each change bumps ``Survey.revision`` and queues a card
update that lands in place of the first card.

Delivery: outbox kind ``survey`` to the requester's DM with the neutral card (``surveys.cards``) and
``ref_role: "survey"``: the channel posts the first one, remembers it under that role, and edits it in place for
every later revision.

Every answer writes a ``TicketEvent`` (``survey_sent``, ``survey_answered`` {answer, previous},
``survey_reason`` {reason, comment}, ``survey_expired``), which is what ``surveys.report`` counts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import desc, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import report_facts
from bot.core import Core
from bot.dialogs.survey_reason import MAX_COMMENT, REASON_LABELS
from bot.engine import TimerRun
from bot.messages import NOTICE, SURVEY, notice_payload, survey_payload
from bot.notifications import person_target, triage_targets
from bot.people import PersonRef
from bot.text import escape_typed, to_spans
from bot.tickets import CLOSED, RESOLVED, InvalidInput, NotAllowed, TicketChange, TicketError, TicketNotFound
from bot.views import Notice
from store.models import Person, Ticket, TicketEvent
from store.queries import cancel_timers, enqueue_message, schedule_timer
from store.survey_models import ANSWERED, EXPIRED, PENDING, SENT, Survey
from surveys import cards
from surveys.cards import ANSWERS, DOWN, EMOJI, SurveyState
from surveys.cooldown import nps_blocks_csat

SEND, REMIND, EXPIRE = "survey.send", "survey.remind", "survey.expire"
REF_ROLE = "survey"


class SurveyError(TicketError):
    """A survey click that can't be taken; ``str()`` is a polite sentence to show the person."""


class SurveyNotFound(SurveyError):
    pass


class NotYourSurvey(SurveyError, NotAllowed):
    pass


class SurveyExpired(SurveyError):
    pass


class SurveyService:
    """Schedules, sends, records and expires the one satisfaction poll of each resolved ticket."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.config = core.config

    # -- ticket changes (inside the change transaction) ---------------------------------------------
    async def on_change(self, change: TicketChange) -> None:
        rules = self.config.surveys
        if not rules.enabled:
            return
        session, ticket, now = change.session, change.ticket, change.now
        if change.event.kind == "reopened":
            # A poll not yet sent is held back; the next resolution schedules it again.
            await cancel_timers(session, ticket_id=ticket.id, kinds=(SEND, REMIND), now=now)
            return
        if change.event.kind != "resolved":
            return
        if change.event.payload.get("self_served") and not change.config.knowledge.survey_self_served:
            return  # an article answered it: nobody from IT to rate
        survey = await _survey_for(session, ticket.id, lock=True)
        if survey is not None and survey.status != PENDING:
            if not rules.resurvey_on_reopen:
                return
            survey.status, survey.sent_at, survey.expires_at = PENDING, None, None
            survey.answer = survey.answered_at = survey.reason = survey.comment = None
            survey.reminded_at = survey.reopened_at = None
            survey.created_at = now
            survey.revision += 1
        elif survey is None:
            if await self._fatigued(session, change.requester.id, now) or await nps_blocks_csat(
                    session, change.requester.id, now, rules.cooldown):
                return
            survey = Survey(ticket_id=ticket.id, requester_id=change.requester.id, status=PENDING, created_at=now,
                            revision=0)
            session.add(survey)
            await session.flush()
        await schedule_timer(session, kind=SEND, due_at=now + rules.delay, now=now, ticket_id=ticket.id,
                             payload={"survey_id": survey.id}, dedup_key=f"{SEND}:{ticket.id}:{change.event.id}")

    async def _fatigued(self, session: AsyncSession, requester_id: int, now: datetime) -> bool:
        days = self.config.surveys.fatigue_days
        if not days:
            return False
        recent = await session.scalar(select(func.count()).select_from(Survey).where(
            Survey.requester_id == requester_id, Survey.created_at > now - timedelta(days=days)))
        return bool(recent)

    # -- timers -------------------------------------------------------------------------------------
    async def on_send(self, run: TimerRun) -> None:
        session, now = run.session, run.now
        if run.timer.ticket_id is None:
            return
        survey = await _survey_for(session, run.timer.ticket_id, lock=True)
        ticket = await session.get(Ticket, run.timer.ticket_id)
        if survey is None or ticket is None or survey.status != PENDING or ticket.status not in (RESOLVED, CLOSED):
            run.timer.outcome = "skipped"
            run.timer.done_at = now
            return
        rules = self.config.surveys
        survey.status, survey.sent_at, survey.expires_at = SENT, now, now + rules.expire_after
        survey.revision += 1
        session.add(TicketEvent(ticket_id=ticket.id, at=now, actor_id=None, kind="survey_sent",
                                payload={"survey_id": survey.id}))
        await report_facts.note(session, ticket.id, now, {"survey_sent_at": now})
        await self._enqueue_card(session, survey, ticket, now)
        await schedule_timer(session, kind=EXPIRE, due_at=survey.expires_at, now=now, ticket_id=ticket.id,
                             payload={"survey_id": survey.id}, dedup_key=f"{EXPIRE}:{survey.id}:{survey.revision}")
        if rules.remind_after is not None and rules.remind_after < rules.expire_after:
            await schedule_timer(session, kind=REMIND, due_at=now + rules.remind_after, now=now, ticket_id=ticket.id,
                                 payload={"survey_id": survey.id},
                                 dedup_key=f"{REMIND}:{survey.id}:{survey.revision}")

    async def on_remind(self, run: TimerRun) -> None:
        session, now = run.session, run.now
        if run.timer.ticket_id is None:
            return
        survey = await _survey_for(session, run.timer.ticket_id, lock=True)
        ticket = await session.get(Ticket, run.timer.ticket_id)
        if survey is None or ticket is None or survey.status != SENT or survey.reminded_at is not None:
            return
        if survey.expires_at is not None and now >= survey.expires_at:
            return
        survey.reminded_at = now
        requester = await session.get(Person, survey.requester_id)
        assert requester is not None
        reminder = Notice(ticket.id, ticket.number, "A quick reminder: how did we do?",
                          "The 👍 / 👎 buttons are on the message above; one click is all it takes.")
        await enqueue_message(session, target=person_target(requester), kind=NOTICE,
                              payload=notice_payload(reminder), ticket_id=ticket.id, now=now,
                              idempotency_key=f"survey-remind:{survey.id}:{survey.revision}")

    async def on_expire(self, run: TimerRun) -> None:
        session, now = run.session, run.now
        if run.timer.ticket_id is None:
            return
        survey = await _survey_for(session, run.timer.ticket_id, lock=True)
        ticket = await session.get(Ticket, run.timer.ticket_id)
        if survey is None or ticket is None or survey.expires_at is None or survey.expires_at > now:
            return
        if survey.status == SENT:
            survey.status = EXPIRED
            session.add(TicketEvent(ticket_id=ticket.id, at=now, actor_id=None, kind="survey_expired",
                                    payload={"survey_id": survey.id}))
        survey.revision += 1
        await self._enqueue_card(session, survey, ticket, now)  # the buttons go; the card says it expired

    # -- clicks -------------------------------------------------------------------------------------
    async def answer(self, ticket_id: int, person: PersonRef, answer: str) -> SurveyState:
        """Record (or change) the requester's 👍 (``"up"``) or 👎 (``"down"``); a repeat changes nothing."""
        if answer not in ANSWERS:
            raise InvalidInput(f"{answer!r} is not an answer; use up or down.", field="answer")
        async with self.core.db.transaction() as session:
            now = self.core.clock.now()
            survey, ticket, actor = await self._open_survey(session, ticket_id, person, now)
            if survey.answer == answer:
                return await self._view(session, survey, ticket, now)
            previous = survey.answer
            survey.answer, survey.answered_at, survey.status = answer, now, ANSWERED
            survey.revision += 1
            event = TicketEvent(ticket_id=ticket.id, at=now, actor_id=actor.id, kind="survey_answered",
                                payload={"answer": answer, "previous": previous})
            session.add(event)
            await session.flush()
            await report_facts.note(session, ticket.id, now, {"survey_answer": answer})
            await self._enqueue_card(session, survey, ticket, now)
            if answer == DOWN:
                await self._notify_down(session, ticket, actor, event, now,
                                        f"{actor.display_name} rated it {EMOJI[DOWN]}.", None)
            return await self._view(session, survey, ticket, now)

    async def add_reason(self, ticket_id: int, person: PersonRef, reason: str, comment: str = "") -> SurveyState:
        """Store what went wrong with a 👎 (a reason from ``cards.REASONS`` and an optional comment)."""
        if reason not in REASON_LABELS:
            raise InvalidInput("Please choose what went wrong from the list.", field="reason")
        comment = escape_typed((comment or "").replace("\x00", "").strip())
        if len(comment) > MAX_COMMENT:
            raise InvalidInput(f"The comment is {len(comment):,} characters; the limit is {MAX_COMMENT:,}.",
                               field="comment")
        async with self.core.db.transaction() as session:
            now = self.core.clock.now()
            survey, ticket, actor = await self._open_survey(session, ticket_id, person, now)
            if survey.answer != DOWN:
                raise SurveyError(f"Reasons go with a {EMOJI[DOWN]} rating; rate {ticket.number} {EMOJI[DOWN]} first.")
            if survey.reason == reason and (survey.comment or "") == comment:
                return await self._view(session, survey, ticket, now)
            survey.reason, survey.comment = reason, comment or None
            survey.revision += 1
            event = TicketEvent(ticket_id=ticket.id, at=now, actor_id=actor.id, kind="survey_reason",
                                payload={"reason": reason, "comment": comment})
            session.add(event)
            await session.flush()
            await self._enqueue_card(session, survey, ticket, now)
            await self._notify_down(session, ticket, actor, event, now,
                                    f"{actor.display_name} said what went wrong: "
                                    f"{REASON_LABELS[reason]}.", comment or None)
            return await self._view(session, survey, ticket, now)

    async def reopen_from_survey(self, ticket_id: int, person: PersonRef) -> SurveyState:
        """The 👎 card's "Reopen ticket": reopens through ``TicketService.reopen`` (which tells triage)."""
        async with self.core.db.transaction() as session:
            now = self.core.clock.now()
            opened, _, _ = await self._open_survey(session, ticket_id, person, now)
            comment = opened.comment
        reason = "Reopened from the satisfaction survey" + (f": {comment}" if comment else ".")
        await self.core.tickets.reopen(ticket_id, person, reason)
        async with self.core.db.transaction() as session:
            now = self.core.clock.now()
            found = await _survey_for(session, ticket_id, lock=True)
            reopened = await session.get(Ticket, ticket_id)
            assert found is not None and reopened is not None
            survey, ticket = found, reopened
            survey.reopened_at = now
            survey.revision += 1
            await self._enqueue_card(session, survey, ticket, now)
            return await self._view(session, survey, ticket, now)

    async def view(self, ticket_id: int) -> SurveyState:
        """The card as it stands (for the reason form and for re-rendering)."""
        async with self.core.db.reading() as session:
            survey = await _survey_for(session, ticket_id, lock=False)
            ticket = await session.get(Ticket, ticket_id)
            if survey is None or ticket is None:
                raise SurveyNotFound(f"There's no survey for IT-{ticket_id}.")
            return await self._view(session, survey, ticket, self.core.clock.now())

    # -- internals ----------------------------------------------------------------------------------
    async def _open_survey(
        self, session: AsyncSession, ticket_id: int, person: PersonRef, now: datetime
    ) -> tuple[Survey, Ticket, Person]:
        ticket = await session.get(Ticket, ticket_id)
        if ticket is None:
            raise TicketNotFound(f"There is no ticket IT-{ticket_id}.")
        survey = await _survey_for(session, ticket_id, lock=True)
        if survey is None or survey.status == PENDING:
            raise SurveyNotFound(f"There's no survey open for {ticket.number}.")
        actor = await self.core.tickets.record_person(session, person)
        if actor.id != survey.requester_id:
            raise NotYourSurvey(f"Thanks for the thought, but only the person who raised {ticket.number} "
                                "can rate how it went.")
        if survey.status == EXPIRED or (survey.expires_at is not None and now >= survey.expires_at):
            when = survey.expires_at.strftime("%d %b %Y") if survey.expires_at else "already"
            raise SurveyExpired(f"The survey for {ticket.number} expired on {when}, so it can't be changed now. "
                                "Thanks all the same!")
        return survey, ticket, actor

    async def _view(self, session: AsyncSession, survey: Survey, ticket: Ticket, now: datetime) -> SurveyState:
        expired = survey.status == EXPIRED or (survey.expires_at is not None and now >= survey.expires_at)
        state = cards.EXPIRED if expired else (cards.ANSWERED if survey.answer else cards.OPEN)
        requester = await session.get(Person, survey.requester_id)
        zone = (requester.timezone if requester else None) or self.config.calendars[
            self.config.default_calendar].timezone
        return SurveyState(ticket_id=ticket.id, number=ticket.number, summary=ticket.summary, state=state,
                           answer=survey.answer, expires_at=survey.expires_at, reason=survey.reason,
                           comment=survey.comment, reopened=survey.reopened_at is not None,
                           ticket_open=ticket.is_open, zone=zone)

    async def _enqueue_card(self, session: AsyncSession, survey: Survey, ticket: Ticket, now: datetime) -> None:
        requester = await session.get(Person, survey.requester_id)
        assert requester is not None
        state = await self._view(session, survey, ticket, now)
        await enqueue_message(session, target=person_target(requester), kind=SURVEY,
                              payload=survey_payload(state.view(), ref_role=REF_ROLE), ticket_id=ticket.id, now=now,
                              idempotency_key=f"survey:{survey.id}:{survey.revision}")

    async def _notify_down(
        self, session: AsyncSession, ticket: Ticket, actor: Person, event: TicketEvent, now: datetime,
        headline: str, body: str | None,
    ) -> None:
        mode = self.config.surveys.thumbs_down_notify
        if mode == "none":
            return
        targets: list[str] = []
        if mode == "lead":
            agent = await _agent_of(session, ticket)
            lead = self.config.agents.leads.get(agent.address) if agent is not None else None
            if lead:
                targets = [lead]
        if not targets:
            targets = triage_targets(self.config)
        view = Notice(ticket.id, ticket.number, headline, to_spans(body) if body else None, actor.display_name)
        payload = notice_payload(view, thread="triage", event_id=event.id)
        for target in targets:
            await enqueue_message(session, target=target, kind=NOTICE, payload=payload, ticket_id=ticket.id, now=now,
                                  idempotency_key=f"survey-notice:{event.id}:{target}")


async def _survey_for(session: AsyncSession, ticket_id: int, *, lock: bool) -> Survey | None:
    query = select(Survey).where(Survey.ticket_id == ticket_id)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def _agent_of(session: AsyncSession, ticket: Ticket) -> Person | None:
    """Who worked the ticket: its assignee, or whoever last resolved it (a reopen clears the assignee)."""
    if ticket.assignee_id is not None:
        return await session.get(Person, ticket.assignee_id)
    actor_id = await session.scalar(select(TicketEvent.actor_id).where(
        TicketEvent.ticket_id == ticket.id, TicketEvent.kind == "resolved").order_by(desc(TicketEvent.at),
                                                                                     desc(TicketEvent.id)).limit(1))
    return await session.get(Person, actor_id) if actor_id is not None else None
