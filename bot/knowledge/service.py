"""The knowledge base at work: articles offered when a ticket opens, and "This solved it" closing it.

Suggestions follow the ticket's "opened" event (a ticket subscriber), so on the chat platforms they are
written by the engine's setup pass straight after the person is answered, never inside the 3-second ack;
the search is one indexed query. The ticket is filed either way, so help is never held up.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import Core, CronJob
from bot.incidents.service import DECLARED_SOURCE
from bot.knowledge.held import INTAKE_SOURCE, HeldRequests
from bot.knowledge.index import reindex
from bot.knowledge.suggestions import article_lines, excerpt
from bot.messages import NOTICE, notice_payload
from bot.notifications import COLLAPSED, person_target
from bot.people import PersonRef
from bot.routing import Action
from bot.tickets import NotAllowed, TicketChange, TicketSnapshot
from bot.views import CardAction, Fact, Notice
from store.knowledge import SENT, SOLVED, SUGGESTED, Hit, KbArticle, KbUse, search
from store.queries import enqueue_messages, outbox_row

log = logging.getLogger("ithelp.knowledge")
SUGGESTION_HEADLINE = "While you wait, one of these may solve it right away:"
SELF_SERVED = "Self-served"
SENT_EXCERPT = 1500
AGENT_RESULTS = 8
SENT_SOURCE = "kb:"
"""A comment's ``source`` when it is an article an agent sent: ``kb:<article id>``."""


def suggestion_notice(ticket_id: int, number: str, articles: list[KbArticle]) -> Notice:
    """The requester's message listing ``articles``, each with its "This solved it" button."""
    several = len(articles) > 1
    actions = tuple(
        CardAction(Action.KB_SOLVED,
                   f"{position}. This solved it" if several else "This solved it", f"{ticket_id}:{article.id}",
                   style="primary" if not several else None)
        for position, article in enumerate(articles, start=1))
    return Notice(ticket_id=ticket_id, number=number, headline=SUGGESTION_HEADLINE, body=article_lines(articles),
                  actions=actions)


class KnowledgeService:
    """Suggests articles at intake, closes tickets an article solved, and keeps the index fresh."""

    def __init__(self, core: Core, held: HeldRequests) -> None:
        self.core = core
        self.config = core.config.knowledge
        self.held = held
        """Requests held in ``ask_first`` mode until the person answers or the timer files them."""

    def cron_jobs(self) -> list[CronJob]:
        """A check of the folder for changed files at each of ``knowledge.reindex_times``."""
        if not self.config.folder:
            return []
        zone = self.core.config.calendars[self.core.config.default_calendar].timezone
        return [CronJob(f"kb.reindex.{at:%H%M}", at, zone, self.reindex) for at in self.config.reindex_times]

    async def reindex(self) -> bool:
        """Bring the index in step with the folder and links; never queues engine work."""
        result = await reindex(self.core.db, self.core.clock, self.config)
        if result.added or result.changed or result.removed:
            log.info("knowledge base reindexed: %s added, %s changed, %s removed",
                     result.added, result.changed, result.removed)
        return False

    async def index_on_start(self) -> None:
        """The server's first reindex, in the background: a failure is logged and left to the next cron run."""
        try:
            await self.reindex()
        except Exception:
            log.exception("knowledge base not indexed at start; the next scheduled check tries again")

    async def on_change(self, change: TicketChange) -> None:
        """Subscriber: offer articles when a ticket opens; record the article that solved one."""
        if not self.config.enabled:
            return
        event = change.event
        if event.kind == "opened":
            await self._suggest(change)
        elif event.kind == "commented" and str(event.payload.get("source") or "").startswith(SENT_SOURCE):
            article_id = int(str(event.payload["source"]).removeprefix(SENT_SOURCE))
            change.session.add(KbUse(ticket_id=change.ticket.id, article_id=article_id, kind=SENT,
                                     person_id=change.actor.id if change.actor else None, at=change.now))
        elif event.kind == "resolved" and event.payload.get("self_served") and event.payload.get("article_id"):
            change.session.add(KbUse(ticket_id=change.ticket.id, article_id=int(event.payload["article_id"]),
                                     kind=SOLVED, person_id=change.requester.id, at=change.now))

    async def _suggest(self, change: TicketChange) -> None:
        ticket, session = change.ticket, change.session
        source = (ticket.intake_key or "").partition(":")[0]
        if source in (INTAKE_SOURCE, DECLARED_SOURCE):
            # Filed from an ask_first question (the person has seen the articles already), or the ticket an
            # agent's `/ithelp incident` opens to carry the incident: neither is a question to answer.
            return
        if change.extra.get(COLLAPSED):
            # The report joined an open incident: the known issue is its answer, told first and alone
            # ("This solved it" on an outage report would close it as self-served).
            return
        hits = await search(session, f"{ticket.summary} {ticket.description or ''}",
                            limit=self.config.max_suggestions)
        if not hits:
            return
        articles = await _articles(session, hits)
        session.add_all(KbUse(ticket_id=ticket.id, article_id=a.id, kind=SUGGESTED, person_id=None, at=change.now)
                        for a in articles)
        target = person_target(change.requester)
        view = suggestion_notice(ticket.id, ticket.number, articles)
        await enqueue_messages(session, [outbox_row(
            target=target, kind=NOTICE, ticket_id=ticket.id, now=change.now,
            payload=notice_payload(view, thread="requester", event_id=change.event.id),
            idempotency_key=f"kb-suggest:{ticket.id}:{target}")])

    async def solved(self, ticket_id: int, person: PersonRef, choice: str) -> TicketSnapshot:
        """"This solved it": the requester resolves their own ticket with the article they read."""
        article_id = _article_of(choice)
        async with self.core.db.reading() as session:
            offered = await session.scalar(select(KbUse.article_id).where(
                KbUse.ticket_id == ticket_id, KbUse.article_id == article_id).limit(1))
            article = await session.get(KbArticle, article_id) if offered is not None else None
        if article is None:
            raise NotAllowed("That article was not offered for this ticket.")
        return await self.core.tickets.resolve_self_served(
            ticket_id, person, f"Solved with the article “{article.title}”.", {"article_id": article.id})

    async def search_for_agent(self, ticket_id: int, query: str) -> tuple[str, list[tuple[int, str]]]:
        """(ticket number, (article id, title) best first) for the agent's search; no words: the ticket's own."""
        ticket = await self.core.tickets.get(ticket_id)
        async with self.core.db.reading() as session:
            hits = await search(session, query or ticket.summary, limit=AGENT_RESULTS)
        return ticket.number, [(hit.article_id, hit.title) for hit in hits]

    async def send(self, ticket_id: int, agent: PersonRef, article_id: int) -> TicketSnapshot:
        """An agent answers with an article: it goes to the requester's thread as the agent's reply, and the
        ticket records it (the reply is a comment; its source names the article)."""
        if not self.core.tickets.is_agent(agent):
            raise NotAllowed("Only IT agents can send articles.")
        async with self.core.db.reading() as session:
            article = await session.get(KbArticle, article_id)
        if article is None:
            raise NotAllowed("That article is no longer in the knowledge base.")
        text = f"Here is an article that should help: {article.title}"
        if article.url:
            text += f"\n{article.url}"
        elif article.body:
            text += "\n" + excerpt(article, SENT_EXCERPT)
        snapshot = await self.core.tickets.comment(ticket_id, agent, text, source=f"{SENT_SOURCE}{article.id}")
        assert snapshot is not None  # no dedup key: never a repeat
        return snapshot

    async def self_served_fact(self, session: AsyncSession, ticket_id: int) -> Fact | None:
        """The card's "Resolved: Self-served (article)" line, when an article closed the ticket."""
        title = await session.scalar(
            select(KbArticle.title).join(KbUse, KbUse.article_id == KbArticle.id)
            .where(KbUse.ticket_id == ticket_id, KbUse.kind == SOLVED).order_by(KbUse.id.desc()).limit(1))
        return Fact("Resolved", f"{SELF_SERVED} with “{title}”") if title else None


def _article_of(choice: str) -> int:
    try:
        return int(choice.split(":", 1)[1])
    except (IndexError, ValueError):
        raise NotAllowed("That button doesn't point at an article any more.") from None


async def _articles(session: AsyncSession, hits: list[Hit]) -> list[KbArticle]:
    rows = {a.id: a for a in (await session.scalars(
        select(KbArticle).where(KbArticle.id.in_([hit.article_id for hit in hits])))).all()}
    return [rows[hit.article_id] for hit in hits if hit.article_id in rows]
