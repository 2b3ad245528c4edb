"""The knowledge base's part of ``ithelp report``: deflection, the articles that help, and the gaps.

* **Requests**: tickets opened in [since, until), plus requests ``ask_first`` held then that "Solved" kept from
  becoming tickets.
* **Self-served**: tickets the requester closed with "This solved it", plus those solved requests.
* **Deflection rate** = self-served / requests.
* **Most useful articles**: "This solved it" clicks, plus articles agents sent on tickets that were then resolved.
* **Gaps**: the most common words in the summaries of tickets no article answered (none solved it, none was
  sent by an agent): what people ask about that the knowledge base does not cover yet. Articles merely
  suggested do not count as a match: search offers something for almost any request sharing a word with one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, exists, func, select

from store.db import Database
from store.knowledge import SELF_SOLVED, SENT, SOLVED, KbArticle, KbHeldRequest, KbUse, query_terms
from store.models import Ticket

TOP = 10
RESOLVED_STATUSES = ("resolved", "closed")


@dataclass
class KnowledgeReport:
    requests: int = 0
    self_served: int = 0
    useful: list[tuple[str, int, int]] = field(default_factory=list)
    """(article title, solved-it clicks, sent by agents and then resolved), most useful first."""
    gaps: list[tuple[str, int]] = field(default_factory=list)
    """(word, tickets using it) among tickets no article answered, most common first."""

    @property
    def deflection_rate(self) -> float | None:
        return None if not self.requests else 100.0 * self.self_served / self.requests

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "self_served": self.self_served,
                "deflection_rate": self.deflection_rate,
                "useful_articles": [{"title": t, "solved": s, "sent_and_resolved": r} for t, s, r in self.useful],
                "gaps": [{"word": w, "tickets": n} for w, n in self.gaps]}


async def knowledge_report(db: Database, *, since: datetime, until: datetime) -> KnowledgeReport:
    """The knowledge-base figures for tickets opened in [since, until)."""
    in_period = and_(Ticket.created_at >= since, Ticket.created_at < until)
    report = KnowledgeReport()
    async with db.reading() as session:
        report.requests = int(await session.scalar(select(func.count()).select_from(Ticket).where(in_period)) or 0)
        report.self_served = int(await session.scalar(
            select(func.count(func.distinct(KbUse.ticket_id))).join(Ticket, Ticket.id == KbUse.ticket_id)
            .where(in_period, KbUse.kind == SOLVED)) or 0)
        held_solved = int(await session.scalar(select(func.count()).select_from(KbHeldRequest).where(
            KbHeldRequest.status == SELF_SOLVED, KbHeldRequest.created_at >= since,
            KbHeldRequest.created_at < until)) or 0)
        report.requests += held_solved
        report.self_served += held_solved
        solved = func.sum(case((KbUse.kind == SOLVED, 1), else_=0))
        sent_resolved = func.sum(case((and_(KbUse.kind == SENT, Ticket.status.in_(RESOLVED_STATUSES)), 1), else_=0))
        rows = await session.execute(
            select(KbArticle.title, solved, sent_resolved)
            .join(KbUse, KbUse.article_id == KbArticle.id).join(Ticket, Ticket.id == KbUse.ticket_id)
            .where(in_period, KbUse.kind.in_((SOLVED, SENT)))
            .group_by(KbArticle.id, KbArticle.title).order_by((solved + sent_resolved).desc(), KbArticle.title)
            .limit(TOP))
        report.useful = [(str(t), int(s or 0), int(r or 0)) for t, s, r in rows.all() if (s or 0) + (r or 0) > 0]
        unmatched = await session.stream_scalars(
            select(Ticket.summary).where(in_period, ~exists().where(KbUse.ticket_id == Ticket.id,
                                                                    KbUse.kind.in_((SOLVED, SENT)))))
        words: Counter[str] = Counter()
        async for summary in unmatched:
            words.update(set(query_terms(summary)))
        report.gaps = sorted(words.items(), key=lambda item: (-item[1], item[0]))[:TOP]
    return report


def render_knowledge_table(report: KnowledgeReport) -> str:
    """The plain-text section under the report's table."""
    rate = "–" if report.deflection_rate is None else f"{report.deflection_rate:.1f}%"
    lines = ["Knowledge base", "--------------",
             f"Deflection rate {rate} ({report.self_served} self-served of {report.requests} requests)"]
    if report.useful:
        lines.append("Most useful articles (solved it / sent by an agent, then resolved):")
        lines += [f"  {title}: {solved} / {sent}" for title, solved, sent in report.useful]
    if report.gaps:
        lines.append("Gaps (common words in tickets no article answered): "
                     + ", ".join(f"{word} ({count})" for word, count in report.gaps))
    return "\n".join(lines) + "\n"
