"""``knowledge.mode: ask_first``: offer articles before filing, file on "I still need help" or after silence.

A held request is a row plus a timer row written in one transaction before the person is answered, so a
restart between the question and the answer loses nothing: the timer fires on whichever replica runs
next and files the ticket. "I still need help" and the timer race safely: whichever locks the row first
files it, the other sees it already filed. Only the person who asked can answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import Core
from bot.durations import format_duration
from bot.engine import TimerRun
from bot.knowledge.suggestions import article_lines
from bot.messages import TEXT, text_payload
from bot.people import PersonRef
from bot.routing import Action
from bot.tickets import NotAllowed, Origin, TicketSnapshot, check_intake
from bot.views import CardAction, Message, Notice
from store.knowledge import FILED, HELD, SELF_SOLVED, KbArticle, KbHeldRequest, cancel_timer, search
from store.queries import enqueue_message, insert_if_absent, schedule_timer

ASK_TIMER = "kb.ask_timeout"
INTAKE_SOURCE = "kb-held"
"""A ticket filed from a held request has ``intake_key`` ``kb-held:<id>`` (no second round of suggestions)."""


KnownIncident = Callable[[AsyncSession, str], Awaitable[object | None]]
"""The open incident (if any) a request's summary matches, looked up in the caller's session."""


class HeldRequests:
    """Holds requests in ``ask_first`` mode and files them when the person still needs help."""

    def __init__(self, core: Core, known_incident: KnownIncident | None = None) -> None:
        self.core = core
        self.config = core.config.knowledge
        self.known_incident = known_incident
        """Finds the open incident a request belongs to: such a request is filed at once, to join it."""

    async def hold(self, requester: PersonRef, summary: str, origin: Origin, dedup: tuple[str, str], *,
                   description: str = "", category: str | None = None, priority: str | None = None) -> Notice | None:
        """The question to show instead of filing, or None: not ``ask_first``, no article matches (filed as
        usual, so nobody waits on an empty list), or the request matches an open incident (a known issue
        ranks above any article: filed at once, it joins the incident and hears every update)."""
        if self.config.mode != "ask_first" or not self.config.enabled:
            return None
        # Refused now, as filing would refuse it, rather than when the timer files it.
        summary, description = check_intake(summary, description)
        now = self.core.clock.now()
        async with self.core.db.transaction() as session:
            if self.known_incident is not None and await self.known_incident(session, summary) is not None:
                return None
            hits = await search(session, f"{summary} {description}", limit=self.config.max_suggestions)
            if not hits:
                return None
            row = await insert_if_absent(session, KbHeldRequest, {
                "intake_key": f"{dedup[0]}:{dedup[1]}"[:300], "status": HELD, "person": asdict(requester),
                "summary": summary, "description": description, "category": category, "priority": priority,
                "origin": asdict(origin), "articles": {"ids": [h.article_id for h in hits]},
                "created_at": now, "due_at": now + self.config.ask_timeout, "ticket_id": None,
            }, conflict=("intake_key",))
            if row is None:  # the platform's retry of a request already held: the same question again
                row = (await session.scalars(select(KbHeldRequest).where(
                    KbHeldRequest.intake_key == f"{dedup[0]}:{dedup[1]}"[:300]))).one()
            else:
                await schedule_timer(session, kind=ASK_TIMER, due_at=row.due_at, now=now,
                                     payload={"held_id": row.id}, dedup_key=f"kb-held:{row.id}")
            return await self._question(session, row)

    async def _question(self, session: AsyncSession, row: KbHeldRequest) -> Notice:
        ids = [int(i) for i in row.articles.get("ids", [])]
        found = {a.id: a for a in (await session.scalars(select(KbArticle).where(KbArticle.id.in_(ids)))).all()}
        body = (*article_lines([found[i] for i in ids if i in found]),
                f"\n\nIf I don't hear from you within {format_duration(self.config.ask_timeout)}, "
                "I'll pass it to IT anyway.")
        return Notice(ticket_id=row.id, number="", numbered=False,
                      headline="Before I pass this to IT, one of these may answer it:", body=body,
                      actions=(CardAction(Action.KB_ASK_SOLVED, "Solved", str(row.id), style="primary"),
                               CardAction(Action.KB_ASK_FILE, "I still need help", str(row.id))))

    async def still_need_help(self, held_id: int, person: PersonRef) -> TicketSnapshot | None:
        """File the held request now; None when it was already filed (by its timer) or solved."""
        async with self.core.db.transaction() as session:
            row = await self._claim(session, held_id, person)
            if row is None:
                return None
            await cancel_timer(session, f"kb-held:{row.id}", self.core.clock.now())
            return await self._file(session, row)

    async def solved(self, held_id: int, person: PersonRef) -> None:
        """Nothing to file: the articles answered it."""
        async with self.core.db.transaction() as session:
            row = await self._claim(session, held_id, person)
            if row is None:
                return
            now = self.core.clock.now()
            row.status = SELF_SOLVED
            await cancel_timer(session, f"kb-held:{row.id}", now)
            target = f"{row.person['platform']}:user:{row.person['user_id']}"
            await enqueue_message(session, target=target, kind=TEXT, now=now, ticket_id=None,
                                  payload=text_payload(Message("Glad that sorted it. Nothing was passed to IT; "
                                                               "ask again any time.")),
                                  idempotency_key=f"kb-held-solved:{row.id}")

    async def on_timeout(self, run: TimerRun) -> None:
        """Timer: nobody answered within ``ask_timeout``, so the request is filed as asked."""
        row = await run.session.get(KbHeldRequest, int(run.timer.payload["held_id"]), with_for_update=True)
        if row is not None and row.status == HELD:
            await self._file(run.session, row)

    async def _claim(self, session: AsyncSession, held_id: int, person: PersonRef) -> KbHeldRequest | None:
        row = await session.get(KbHeldRequest, held_id, with_for_update=True)
        if row is None:
            raise NotAllowed("That question is no longer open.")
        if (row.person["platform"], row.person["user_id"]) != (person.platform, person.user_id):
            raise NotAllowed("Only the person who asked can answer this.")
        return row if row.status == HELD else None

    async def _file(self, session: AsyncSession, row: KbHeldRequest) -> TicketSnapshot:
        ticket = await self.core.tickets.open_in(
            session, PersonRef(**row.person), row.summary, origin=Origin(**row.origin),
            dedup=(INTAKE_SOURCE, str(row.id)), description=row.description, category=row.category,
            priority=row.priority)
        row.status, row.ticket_id = FILED, ticket.id
        return ticket
