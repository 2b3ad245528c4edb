"""The optional NPS pulse: every ``nps.every``, one 0-10 question to each person who filed a ticket in the period.

Rounds are timer rows. Periods are counted from ``nps.start`` at ``nps.send_at`` (default calendar's zone):
period *k* is [start + k·every, start + (k+1)·every), and its round runs when it ends. The first ticket opened
in a period schedules that period's ``nps.round`` timer (a dedup key per period, so replicas add it once); the
round writes one :class:`~store.nps_models.NpsPulse` per active requester and a ``nps.send`` timer each, due
at once or, for someone who just had a CSAT poll, when ``surveys.cooldown`` ends (shared with
``surveys.polls``). ``nps.send`` DMs the pulse (outbox kind ``pulse``) and schedules ``nps.expire``.

Answers come back through :meth:`NpsService.answer`: only the person asked may answer, as often as they like
until the pulse expires; every change edits the one message in place (``messages.PULSE`` ``edits``).

The service is installed whether or not ``nps.enabled``: turned off, it plans and sends nothing, while pulses
already out can still be answered and close when they expire.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import Core
from bot.engine import TimerRun
from bot.messages import PULSE, pulse_payload
from bot.notifications import person_target
from bot.people import PersonRef
from bot.routing import Action
from bot.tickets import InvalidInput, NotAllowed, TicketChange, TicketError
from bot.views import CardAction, Moment, Pulse
from store.models import Person, Ticket
from store.nps_models import PULSE_ANSWERED, PULSE_EXPIRED, PULSE_PENDING, PULSE_SENT, PULSE_SKIPPED, NpsPulse
from store.queries import enqueue_message, enqueue_messages, outbox_row, schedule_timer, schedule_timers, timer_row
from surveys.cooldown import cooling_until, last_csat

ROUND, SEND, EXPIRE = "nps.round", "nps.send", "nps.expire"
SCORES = range(11)
SCALE = ("0 = not at all likely", "10 = extremely likely")
REPLAN = timedelta(minutes=1)


class PulseError(TicketError):
    """A pulse click that can't be taken; ``str()`` is a polite sentence to show the person."""


class PulseNotFound(PulseError):
    pass


class NotYourPulse(PulseError, NotAllowed):
    pass


class PulseExpired(PulseError):
    pass


def nps_of(promoters: int, detractors: int, answered: int) -> float | None:
    """Net Promoter Score: % promoters (9-10) minus % detractors (0-6); None without answers."""
    return 100.0 * (promoters - detractors) / answered if answered else None


class NpsService:
    """Plans rounds, sends, records and expires the NPS pulses."""

    def __init__(self, core: Core) -> None:
        self.core = core
        config = core.config
        self.config = config
        self.rules = config.nps
        zone = ZoneInfo(config.calendars[config.default_calendar].timezone)
        self.anchor = datetime.combine(self.rules.start, self.rules.send_at, tzinfo=zone).astimezone(UTC)
        self._planned: tuple[int, datetime] | None = None

    # -- periods ------------------------------------------------------------------------------------
    def round_of(self, at: datetime) -> int:
        """The period ``at`` falls in."""
        return (at - self.anchor) // self.rules.every

    def period(self, round_: int) -> tuple[datetime, datetime]:
        """[start, end) of period ``round_``; its round runs at ``end``."""
        start = self.anchor + round_ * self.rules.every
        return start, start + self.rules.every

    async def on_change(self, change: TicketChange) -> None:
        if change.event.kind != "opened" or not self.rules.enabled:
            return
        round_ = self.round_of(change.ticket.created_at or change.now)
        if self._planned is not None and self._planned[0] == round_ and change.now - self._planned[1] < REPLAN:
            return  # this replica added the period's timer a moment ago
        await schedule_timer(change.session, kind=ROUND, due_at=self.period(round_)[1], now=change.now,
                             payload={"round": round_}, dedup_key=f"{ROUND}:{round_}")
        # Asked again after REPLAN: the insert above is undone if this ticket's transaction is.
        self._planned = (round_, change.now)

    # -- timers -------------------------------------------------------------------------------------
    async def on_round(self, run: TimerRun) -> None:
        session, now = run.session, run.now
        if not self.rules.enabled:  # turned off since the round was planned
            run.timer.outcome, run.timer.done_at = "skipped", now
            return
        round_ = int(run.timer.payload["round"])
        start, end = self.period(round_)
        active = select(Ticket.requester_id).where(Ticket.created_at >= start, Ticket.created_at < end).distinct()
        people = {person.id: person for person in (await session.scalars(select(Person).where(
            Person.id.in_(active), Person.anonymised_at.is_(None)).order_by(Person.id))).all()}
        asked = set((await session.scalars(select(NpsPulse.person_id).where(
            NpsPulse.round == round_, NpsPulse.person_id.in_(people)))).all()) if people else set()
        fresh = [NpsPulse(person_id=person, round=round_, status=PULSE_PENDING, created_at=now, revision=0)
                 for person in people if person not in asked]
        session.add_all(fresh)
        await session.flush()
        polled = await last_csat(session, [pulse.person_id for pulse in fresh])
        # A round asks thousands of people at once: their messages and timers go in as a few multi-row inserts.
        messages, timers = [], []
        for pulse in fresh:
            until = cooling_until(polled.get(pulse.person_id), self.config.surveys.cooldown)
            if until is None or until <= now:
                message, expiry = self._sent(pulse, people[pulse.person_id], now)
                messages.append(outbox_row(**message))
                timers.append(expiry)
                continue
            timers.append(timer_row(kind=SEND, due_at=until, now=now, payload={"pulse_id": pulse.id},
                                    dedup_key=f"{SEND}:{pulse.id}:{until.isoformat()}"))
        await enqueue_messages(session, messages)
        await schedule_timers(session, timers)

    async def on_send(self, run: TimerRun) -> None:
        session, now = run.session, run.now
        pulse = await _pulse(session, int(run.timer.payload["pulse_id"]), lock=True)
        if pulse is None or pulse.status != PULSE_PENDING:
            run.timer.outcome, run.timer.done_at = "skipped", now
            return
        if not self.rules.enabled:
            pulse.status = PULSE_SKIPPED
            return
        person = await session.get(Person, pulse.person_id)
        if person is None or person.anonymised_at is not None:  # erased while the pulse waited: ask no one
            pulse.status = PULSE_SKIPPED
            return
        # A CSAT poll may have gone out since the round was planned: wait for the cooldown again, within reason.
        until = cooling_until((await last_csat(session, [pulse.person_id])).get(pulse.person_id),
                              self.config.surveys.cooldown)
        if until is not None and until > now:
            if until < self.period(pulse.round)[1] + self.rules.every:
                await schedule_timer(session, kind=SEND, due_at=until, now=now, payload={"pulse_id": pulse.id},
                                     dedup_key=f"{SEND}:{pulse.id}:{until.isoformat()}")
            else:  # the next round is near: this one is not worth a second question so close to it
                pulse.status = PULSE_SKIPPED
            return
        message, expiry = self._sent(pulse, person, now)
        await enqueue_message(session, **message)
        await schedule_timers(session, [expiry])

    def _sent(self, pulse: NpsPulse, person: Person, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        """Mark ``pulse`` sent; returns its message (``enqueue_message`` keywords) and its expiry timer row."""
        assert pulse.status == PULSE_PENDING
        pulse.status, pulse.sent_at, pulse.expires_at = PULSE_SENT, now, now + self.rules.expire_after
        pulse.revision += 1
        return self._message(pulse, person, now), timer_row(kind=EXPIRE, due_at=pulse.expires_at, now=now,
                                                             payload={"pulse_id": pulse.id},
                                                             dedup_key=f"{EXPIRE}:{pulse.id}")

    async def on_expire(self, run: TimerRun) -> None:
        session, now = run.session, run.now
        pulse = await _pulse(session, int(run.timer.payload["pulse_id"]), lock=True)
        if pulse is None or pulse.expires_at is None or pulse.expires_at > now or pulse.status == PULSE_EXPIRED:
            return
        pulse.status = PULSE_EXPIRED
        pulse.revision += 1
        await self._enqueue(session, pulse, now)  # the buttons go; the message says it closed

    # -- clicks -------------------------------------------------------------------------------------
    async def answer(self, pulse_id: int, person: PersonRef, score: int) -> Pulse:
        """Record (or change) ``person``'s score on their pulse; the same score again changes nothing."""
        if score not in SCORES:
            raise InvalidInput(f"{score!r} is not a score; choose 0 to 10.", field="score")
        async with self.core.db.transaction() as session:
            now = self.core.clock.now()
            pulse = await _pulse(session, pulse_id, lock=True)
            if pulse is None or pulse.status in (PULSE_PENDING, PULSE_SKIPPED):
                raise PulseNotFound("That question isn't open any more.")
            actor = await self.core.tickets.record_person(session, person)
            if actor.id != pulse.person_id:
                raise NotYourPulse("Thanks for the thought, but this question was sent to someone else, so only "
                                   "they can answer it.")
            if pulse.status == PULSE_EXPIRED or (pulse.expires_at is not None and now >= pulse.expires_at):
                when = pulse.expires_at.strftime("%d %b %Y") if pulse.expires_at else "already"
                raise PulseExpired(f"This question closed on {when}, so the answer can't be changed now. "
                                   "Thanks all the same!")
            if pulse.score != score:
                pulse.score, pulse.answered_at, pulse.status = score, now, PULSE_ANSWERED
                pulse.revision += 1
                await self._enqueue(session, pulse, now)
            return self._view(pulse, actor, now)

    # -- internals ----------------------------------------------------------------------------------
    def _view(self, pulse: NpsPulse, person: Person, now: datetime) -> Pulse:
        zone = person.timezone or self.config.calendars[self.config.default_calendar].timezone
        closed = pulse.status == PULSE_EXPIRED or (pulse.expires_at is not None and now >= pulse.expires_at)
        if pulse.score is None:
            headline = "This question has closed — thanks anyway." if closed else self.rules.question
        elif closed:
            headline = f"You answered {pulse.score} of 10. This question has closed; thank you!"
        else:
            headline = f"Thanks! You answered {pulse.score} of 10 — change it below any time before it closes."
        details = () if closed else (
            "One question about the IT desk as a whole; your answer only counts towards the desk's score.",)
        value = str(pulse.id)
        actions = () if closed else tuple(
            CardAction(Action.NPS_SCORE, str(score), f"{value}:{score}", "primary" if score == pulse.score else None)
            for score in SCORES)
        expires = Moment(pulse.expires_at, zone) if pulse.expires_at is not None and not closed else None
        return Pulse(pulse_id=pulse.id, headline=headline, details=details, actions=actions, expires_at=expires,
                     scale=SCALE if actions else None)

    async def _enqueue(self, session: AsyncSession, pulse: NpsPulse, now: datetime) -> None:
        person = await session.get(Person, pulse.person_id)
        assert person is not None
        await enqueue_message(session, **self._message(pulse, person, now))

    def _message(self, pulse: NpsPulse, person: Person, now: datetime) -> dict[str, Any]:
        """The outbox row (``enqueue_message`` keywords) for the pulse as it now stands: the first revision posts,
        later ones edit that post."""
        target = person_target(person)
        first = f"nps:{pulse.id}:sent"
        view = self._view(pulse, person, now)
        # One ordering key per pulse: an edit never overtakes the post it edits.
        return {"target": target, "kind": PULSE, "now": now, "ordering_key": f"{target}#nps:{pulse.id}",
                "payload": pulse_payload(view, edits=None if pulse.revision <= 1 else first),
                "idempotency_key": first if pulse.revision <= 1 else f"nps:{pulse.id}:{pulse.revision}"}


async def _pulse(session: AsyncSession, pulse_id: int, *, lock: bool) -> NpsPulse | None:
    query = select(NpsPulse).where(NpsPulse.id == pulse_id)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


def score_of(value: str) -> int | None:
    """The score in a button value ``<pulse id>:<score>``: ASCII digits 0-10 only."""
    _, _, raw = value.partition(":")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 2 and int(raw) in SCORES else None


__all__ = ["EXPIRE", "ROUND", "SEND", "NotYourPulse", "NpsService", "PulseExpired", "PulseNotFound", "nps_of",
           "score_of"]
