"""Block Kit for what is not a ticket card: notices (threaded under a ticket, or an answer on their own),
satisfaction surveys, one-question pulses, digests and summaries, and plain text messages. Every message's
fallback ``text`` (what notifications show) carries its content, escaped like the blocks."""

from __future__ import annotations

from collections.abc import Sequence

from bot.renderers.slack_block_parts import (
    MAX_ACTION_ELEMENTS,
    MAX_MESSAGE_BLOCKS,
    Block,
    action_blocks,
    button_element,
    context_block,
    fact_sections,
    header,
    section_block,
    ticket_block_id,
)
from bot.renderers.slack_mrkdwn import (
    MAX_FALLBACK,
    MAX_SECTION_TEXT,
    MAX_SUMMARY,
    escape_mrkdwn,
    mrkdwn,
    truncation_note,
)
from bot.views import Digest, Link, Moment, Notice, Pulse, Summary, Survey, Text, spans


def notice_blocks(notice: Notice) -> list[Block]:
    """A threaded notice: headline, optional body and author, facts, actions."""
    head = mrkdwn(notice.headline, MAX_SUMMARY)
    blocks = [section_block(f"*{escape_mrkdwn(notice.number)}* · {head}" if notice.numbered else head,
                            ticket_block_id(notice.ticket_id, "head"))]
    if notice.body:
        body = mrkdwn(notice.body, MAX_SECTION_TEXT, note=truncation_note(notice.number))
        blocks.append(section_block(body, ticket_block_id(notice.ticket_id, "body")))
    if notice.author:
        blocks.append(context_block(f"— {mrkdwn(notice.author, MAX_SUMMARY)}",
                                    ticket_block_id(notice.ticket_id, "author")))
    actions = action_blocks(notice.ticket_id, notice.actions)
    facts = fact_sections(notice.ticket_id, notice.facts, max_sections=MAX_MESSAGE_BLOCKS - len(blocks) - len(actions))
    return [*blocks, *facts, *actions]


def notice_text(notice: Notice) -> str:
    """Fallback ``text``: the number, the headline and as much of the body as a notification shows."""
    return mrkdwn(_with_body(notice.number if notice.numbered else "", notice.headline, notice.body), MAX_FALLBACK)


def _with_body(number: str, headline: Text, body: Text | None) -> tuple[Link | Moment | str, ...]:
    joined: list[Link | Moment | str] = [f"{number} · " if number else "", *spans(headline)]
    if body:
        last = spans(headline)[-1] if spans(headline) else ""
        joined.append(" " if isinstance(last, str) and last.rstrip().endswith(":") else " — ")
        joined.extend(spans(body))
    return tuple(joined)


def survey_blocks(survey: Survey) -> list[Block]:
    """The satisfaction poll; block ids are ``ticket:{id}:survey…`` so a click routes to its ticket."""
    blocks: list[Block] = [section_block(mrkdwn(survey.headline), ticket_block_id(survey.ticket_id, "survey"))]
    if survey.details:
        details = mrkdwn(_joined(survey.details, "\n"))
        blocks.append(section_block(details, ticket_block_id(survey.ticket_id, "survey:details")))
    actions = action_blocks(survey.ticket_id, survey.actions, part="survey:actions")
    blocks.extend(actions)
    if actions and survey.expires_at is not None:
        blocks.append(context_block(mrkdwn(("You can change your answer until ", survey.expires_at, ".")),
                                    ticket_block_id(survey.ticket_id, "survey:expiry")))
    return blocks


def survey_text(survey: Survey) -> str:
    """Fallback ``text``: the question (or the thanks), which names the ticket itself."""
    return mrkdwn(survey.headline, MAX_FALLBACK)


def pulse_blocks(pulse: Pulse) -> list[Block]:
    """A one-question pulse (NPS): the question, the scale, one row of score buttons; block ids ``pulse:{id}:…``."""
    prefix = f"pulse:{pulse.pulse_id}"
    blocks: list[Block] = [section_block(mrkdwn(pulse.headline), prefix)]
    if pulse.details:
        blocks.append(context_block(mrkdwn(_joined(pulse.details, "\n")), f"{prefix}:details"))
    if pulse.actions:
        if pulse.scale:
            blocks.append(context_block(mrkdwn(f"{pulse.scale[0]} · {pulse.scale[1]}"), f"{prefix}:scale"))
        blocks.append({"type": "actions", "block_id": f"{prefix}:actions",
                       "elements": [button_element(action) for action in pulse.actions[:MAX_ACTION_ELEMENTS]]})
        if pulse.expires_at is not None:
            blocks.append(context_block(mrkdwn(("You can change your answer until ", pulse.expires_at, ".")),
                                        f"{prefix}:expiry"))
    return blocks


def pulse_text(pulse: Pulse) -> str:
    """Fallback ``text``: the question (or the thanks)."""
    return mrkdwn(pulse.headline, MAX_FALLBACK)


def digest_blocks(digest: Digest) -> list[Block]:
    """Title, intro, then one section per ticket with its button as the accessory (≤ 50 blocks)."""
    blocks: list[Block] = [section_block(f"*{mrkdwn(digest.title, MAX_SUMMARY)}*")]
    if digest.intro:
        blocks.append(context_block(mrkdwn(digest.intro)))
    for section in digest.sections:
        if section.heading:
            blocks.append(section_block(f"*{mrkdwn(section.heading, MAX_SUMMARY)}*"))
        for line in section.lines:
            text = f"*{escape_mrkdwn(line.number)}* · {mrkdwn(line.summary, 150)}\n{mrkdwn(line.detail)}"
            block = section_block(text, ticket_block_id(line.ticket_id, "digest"))
            if line.action is not None:
                block["accessory"] = button_element(line.action)
            blocks.append(block)
        if section.more:
            blocks.append(context_block(f"…and {section.more} more."))
    if digest.footer:
        blocks.append(context_block(mrkdwn(digest.footer)))
    return blocks[:MAX_MESSAGE_BLOCKS]


def digest_text(digest: Digest) -> str:
    count = digest.count
    return mrkdwn(f"{digest.title} ({count} ticket{'' if count == 1 else 's'})", MAX_FALLBACK)


def summary_blocks(summary: Summary) -> list[Block]:
    blocks: list[Block] = [header(summary.title),
                           section_block(mrkdwn(_joined(summary.lines, "\n", bullet="• ")))]
    if summary.footnote:
        blocks.append(context_block(mrkdwn(summary.footnote)))
    return blocks


def summary_text(summary: Summary) -> str:
    return mrkdwn(summary.title, MAX_FALLBACK)


def plain_message_blocks(text: Text) -> list[Block]:
    """A message that is only text (answers, reminders)."""
    return [section_block(mrkdwn(text))]


def _joined(lines: Sequence[Text], separator: str, *, bullet: str = "") -> tuple[Link | Moment | str, ...]:
    out: list[Link | Moment | str] = []
    for index, line in enumerate(lines):
        if index:
            out.append(separator)
        if bullet:
            out.append(bullet)
        out.extend(spans(line))
    return tuple(out)
