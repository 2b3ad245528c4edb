"""Adaptive Cards for what is not a ticket card: notices (about a ticket, or an answer on their own),
satisfaction surveys, one-question pulses, digests and summaries, and cards that are only text."""

from __future__ import annotations

from typing import Any

from bot.renderers.teams_card_markdown import MAX_SUMMARY, escape_markdown, md, plain_text, truncated_md
from bot.renderers.teams_card_parts import (
    Card,
    adaptive_card,
    card_actions,
    fact_set,
    pulse_submit_action,
    shrink_to_fit,
    submit_action,
    text_block,
)
from bot.text import plain, text_length
from bot.views import Digest, Notice, Pulse, Summary, Survey, Text, spans


def notice_card(notice: Notice) -> Card:
    """A short notice about a ticket: headline, optional body and author, facts, actions."""
    body_text = spans(notice.body) if notice.body else ()

    def render(body_chars: int, facts: int, actions: int) -> Card:
        head = md(notice.headline, MAX_SUMMARY)
        body: list[dict[str, Any]] = [
            text_block(f"{escape_markdown(notice.number)} · {head}" if notice.numbered else head, weight="Bolder"),
        ]
        if body_text:
            body.append(text_block(truncated_md(body_text, body_chars, notice.number)))
        if notice.author:
            body.append(text_block(f"— {md(notice.author, MAX_SUMMARY)}", isSubtle=True, spacing="Small"))
        if notice.facts[:facts]:
            body.append(fact_set(notice.facts[:facts]))
        return adaptive_card(body, *card_actions(notice.ticket_id, notice.actions[:actions]))

    return shrink_to_fit(render, (text_length(body_text), len(notice.facts), len(notice.actions)))


def notice_summary(notice: Notice) -> str:
    """The activity ``summary``/``text`` Teams shows in notifications: number, headline and body."""
    text = f"{notice.number} · {plain(notice.headline)}" if notice.numbered else plain(notice.headline)
    if notice.body:
        text += (" " if text.rstrip().endswith(":") else " — ") + plain(notice.body)
    return plain_text(text, 400)


def survey_card(survey: Survey) -> Card:
    """The satisfaction poll; each button submits ``{action, value, ticket_id}``."""
    body: list[dict[str, Any]] = [text_block(md(survey.headline), weight="Bolder")]
    body.extend(text_block(md(line)) for line in survey.details)
    if survey.actions and survey.expires_at is not None:
        body.append(text_block(md(("You can change your answer until ", survey.expires_at, ".")), isSubtle=True,
                               size="Small"))
    return adaptive_card(body, *card_actions(survey.ticket_id, survey.actions))


def pulse_card(pulse: Pulse) -> Card:
    """A one-question pulse (NPS); the score buttons sit in the body in rows of six (Teams shows at most six
    actions in a row), each submitting ``{action, value}`` with value ``<pulse id>:<score>``."""
    body: list[dict[str, Any]] = [text_block(md(pulse.headline), weight="Bolder")]
    body.extend(text_block(md(line), isSubtle=True) for line in pulse.details)
    if pulse.actions:
        if pulse.scale:
            body.append(text_block(md(f"{pulse.scale[0]} · {pulse.scale[1]}"), isSubtle=True, size="Small"))
        for start in range(0, len(pulse.actions), 6):
            body.append({"type": "ActionSet", "actions": [pulse_submit_action(action)
                                                          for action in pulse.actions[start:start + 6]]})
        if pulse.expires_at is not None:
            body.append(text_block(md(("You can change your answer until ", pulse.expires_at, ".")), isSubtle=True,
                                   size="Small"))
    return adaptive_card(body)


def digest_card(digest: Digest) -> Card:
    """A container per ticket, its button an ActionSet submitting ``{action, value, ticket_id}``."""
    body: list[dict[str, Any]] = [text_block(md(digest.title, MAX_SUMMARY), weight="Bolder", size="Medium")]
    if digest.intro:
        body.append(text_block(md(digest.intro), isSubtle=True))
    for section in digest.sections:
        if section.heading:
            body.append(text_block(md(section.heading, MAX_SUMMARY), weight="Bolder", separator=True))
        for line in section.lines:
            items: list[dict[str, Any]] = [
                text_block(f"**{escape_markdown(line.number)}** · {md(line.summary, 150)}"),
                text_block(md(line.detail), isSubtle=True)]
            if line.action is not None:
                items.append({"type": "ActionSet", "actions": [submit_action(line.ticket_id, line.action)]})
            body.append({"type": "Container", "separator": True, "items": items})
        if section.more:
            body.append(text_block(f"…and {section.more} more.", isSubtle=True))
    if digest.footer:
        body.append(text_block(md(digest.footer), isSubtle=True, size="Small"))
    return adaptive_card(body)


def summary_card(summary: Summary) -> Card:
    body = [text_block(md(summary.title, MAX_SUMMARY), weight="Bolder", size="Medium"),
            *(text_block(md(line)) for line in summary.lines)]
    if summary.footnote:
        body.append(text_block(md(summary.footnote), isSubtle=True, size="Small"))
    return adaptive_card(body)


def text_card(text: Text) -> Card:
    """A card that is only text (answers, reminders)."""
    return adaptive_card([text_block(md(text, 20_000))])
