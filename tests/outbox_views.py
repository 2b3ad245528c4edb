"""Reading outbox rows in tests: the neutral view a row carries, and what Slack or Teams would be sent for it."""

from __future__ import annotations

from typing import Any, Protocol

from bot import messages
from bot.renderers import slack_notice_blocks, teams_notice_cards
from bot.text import plain


class OutboxMessage(Protocol):
    """An outbox row or the worker's copy of one."""

    kind: str
    payload: dict[str, Any]


def headline(row: OutboxMessage) -> str:
    """A notice's or page's headline as plain text."""
    return plain(messages.read_notice(row.payload).view.headline)


def body(row: OutboxMessage) -> str | None:
    """A notice's or page's body as plain text (None when it has none)."""
    view = messages.read_notice(row.payload).view
    return plain(view.body) if view.body else None


def slack(row: OutboxMessage) -> tuple[list[dict[str, Any]], str]:
    """(blocks, fallback text) the Slack channel would post for this row."""
    if row.kind in (messages.NOTICE, messages.PAGE):
        view = messages.read_notice(row.payload).view
        return slack_notice_blocks.notice_blocks(view), slack_notice_blocks.notice_text(view)
    if row.kind == messages.SURVEY:
        survey = messages.read_survey(row.payload)
        return slack_notice_blocks.survey_blocks(survey), slack_notice_blocks.survey_text(survey)
    if row.kind == messages.PULSE:
        pulse, _ = messages.read_pulse(row.payload)
        return slack_notice_blocks.pulse_blocks(pulse), slack_notice_blocks.pulse_text(pulse)
    if row.kind == messages.DIGEST:
        digest = messages.read_digest(row.payload)
        return slack_notice_blocks.digest_blocks(digest), slack_notice_blocks.digest_text(digest)
    if row.kind == messages.SUMMARY:
        summary = messages.read_summary(row.payload)
        return slack_notice_blocks.summary_blocks(summary), slack_notice_blocks.summary_text(summary)
    raise AssertionError(f"no Slack rendering for outbox kind {row.kind!r}")


def teams(row: OutboxMessage) -> dict[str, Any]:
    """The Adaptive Card the Teams channel would send for this row."""
    if row.kind in (messages.NOTICE, messages.PAGE):
        return teams_notice_cards.notice_card(messages.read_notice(row.payload).view)
    if row.kind == messages.SURVEY:
        return teams_notice_cards.survey_card(messages.read_survey(row.payload))
    if row.kind == messages.PULSE:
        return teams_notice_cards.pulse_card(messages.read_pulse(row.payload)[0])
    if row.kind == messages.DIGEST:
        return teams_notice_cards.digest_card(messages.read_digest(row.payload))
    if row.kind == messages.SUMMARY:
        return teams_notice_cards.summary_card(messages.read_summary(row.payload))
    raise AssertionError(f"no Teams rendering for outbox kind {row.kind!r}")
