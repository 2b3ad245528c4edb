"""Block Kit for what is not a ticket card: notices (threaded under a ticket, or an answer on their own),
satisfaction surveys, one-question pulses, digests and summaries, and plain text messages. Every message's
fallback ``text`` (what notifications show) carries its content, escaped like the blocks."""

from __future__ import annotations

from collections.abc import Sequence

from bot.renderers import slack_block_parts as parts
from bot.renderers import slack_mrkdwn as md
from bot.views import Digest, Link, Moment, Notice, Pulse, Summary, Survey, Text, spans


def notice_blocks(notice: Notice) -> list[parts.Block]:
    """A threaded notice: headline, optional body and author, facts, actions."""
    head = md.mrkdwn(notice.headline, md.MAX_SUMMARY)
    blocks = [parts.section_block(f"*{md.escape_mrkdwn(notice.number)}* · {head}" if notice.numbered else head,
                                  parts.ticket_block_id(notice.ticket_id, "head"))]
    if notice.body:
        body = md.mrkdwn(notice.body, md.MAX_SECTION_TEXT, note=md.truncation_note(notice.number))
        blocks.append(parts.section_block(body, parts.ticket_block_id(notice.ticket_id, "body")))
    if notice.author:
        blocks.append(parts.context_block(f"— {md.mrkdwn(notice.author, md.MAX_SUMMARY)}",
                                          parts.ticket_block_id(notice.ticket_id, "author")))
    actions = parts.action_blocks(notice.ticket_id, notice.actions)
    room = parts.MAX_MESSAGE_BLOCKS - len(blocks) - len(actions)
    facts = parts.fact_sections(notice.ticket_id, notice.facts, max_sections=room)
    return [*blocks, *facts, *actions]


def notice_text(notice: Notice) -> str:
    """Fallback ``text``: the number, the headline and as much of the body as a notification shows."""
    text = _with_body(notice.number if notice.numbered else "", notice.headline, notice.body)
    return md.mrkdwn(text, md.MAX_FALLBACK)


def _with_body(number: str, headline: Text, body: Text | None) -> tuple[Link | Moment | str, ...]:
    joined: list[Link | Moment | str] = [f"{number} · " if number else "", *spans(headline)]
    if body:
        last = spans(headline)[-1] if spans(headline) else ""
        joined.append(" " if isinstance(last, str) and last.rstrip().endswith(":") else " — ")
        joined.extend(spans(body))
    return tuple(joined)


def survey_blocks(survey: Survey) -> list[parts.Block]:
    """The satisfaction poll; block ids are ``ticket:{id}:survey…`` so a click routes to its ticket."""
    blocks: list[parts.Block] = [
        parts.section_block(md.mrkdwn(survey.headline), parts.ticket_block_id(survey.ticket_id, "survey"))]
    if survey.details:
        details = md.mrkdwn(_joined(survey.details, "\n"))
        blocks.append(parts.section_block(details, parts.ticket_block_id(survey.ticket_id, "survey:details")))
    actions = parts.action_blocks(survey.ticket_id, survey.actions, part="survey:actions")
    blocks.extend(actions)
    if actions and survey.expires_at is not None:
        blocks.append(parts.context_block(md.mrkdwn(("You can change your answer until ", survey.expires_at, ".")),
                                          parts.ticket_block_id(survey.ticket_id, "survey:expiry")))
    return blocks


def survey_text(survey: Survey) -> str:
    """Fallback ``text``: the question (or the thanks), which names the ticket itself."""
    return md.mrkdwn(survey.headline, md.MAX_FALLBACK)


def pulse_blocks(pulse: Pulse) -> list[parts.Block]:
    """A one-question pulse (NPS): the question, the scale, one row of score buttons; block ids ``pulse:{id}:…``."""
    prefix = f"pulse:{pulse.pulse_id}"
    blocks: list[parts.Block] = [parts.section_block(md.mrkdwn(pulse.headline), prefix)]
    if pulse.details:
        blocks.append(parts.context_block(md.mrkdwn(_joined(pulse.details, "\n")), f"{prefix}:details"))
    if pulse.actions:
        if pulse.scale:
            blocks.append(parts.context_block(md.mrkdwn(f"{pulse.scale[0]} · {pulse.scale[1]}"), f"{prefix}:scale"))
        blocks.append({"type": "actions", "block_id": f"{prefix}:actions",
                       "elements": [parts.button_element(a) for a in pulse.actions[:parts.MAX_ACTION_ELEMENTS]]})
        if pulse.expires_at is not None:
            blocks.append(parts.context_block(md.mrkdwn(("You can change your answer until ", pulse.expires_at, ".")),
                                              f"{prefix}:expiry"))
    return blocks


def pulse_text(pulse: Pulse) -> str:
    """Fallback ``text``: the question (or the thanks)."""
    return md.mrkdwn(pulse.headline, md.MAX_FALLBACK)


def digest_blocks(digest: Digest) -> list[parts.Block]:
    """Title, intro, then one section per ticket with its button as the accessory (≤ 50 blocks)."""
    blocks: list[parts.Block] = [parts.section_block(f"*{md.mrkdwn(digest.title, md.MAX_SUMMARY)}*")]
    if digest.intro:
        blocks.append(parts.context_block(md.mrkdwn(digest.intro)))
    for section in digest.sections:
        if section.heading:
            blocks.append(parts.section_block(f"*{md.mrkdwn(section.heading, md.MAX_SUMMARY)}*"))
        for line in section.lines:
            text = f"*{md.escape_mrkdwn(line.number)}* · {md.mrkdwn(line.summary, 150)}\n{md.mrkdwn(line.detail)}"
            block = parts.section_block(text, parts.ticket_block_id(line.ticket_id, "digest"))
            if line.action is not None:
                block["accessory"] = parts.button_element(line.action)
            blocks.append(block)
        if section.more:
            blocks.append(parts.context_block(f"…and {section.more} more."))
    if digest.footer:
        blocks.append(parts.context_block(md.mrkdwn(digest.footer)))
    return blocks[:parts.MAX_MESSAGE_BLOCKS]


def digest_text(digest: Digest) -> str:
    count = digest.count
    return md.mrkdwn(f"{digest.title} ({count} ticket{'' if count == 1 else 's'})", md.MAX_FALLBACK)


def summary_blocks(summary: Summary) -> list[parts.Block]:
    blocks: list[parts.Block] = [parts.header(summary.title),
                                 parts.section_block(md.mrkdwn(_joined(summary.lines, "\n", bullet="• ")))]
    if summary.footnote:
        blocks.append(parts.context_block(md.mrkdwn(summary.footnote)))
    return blocks


def summary_text(summary: Summary) -> str:
    return md.mrkdwn(summary.title, md.MAX_FALLBACK)


def plain_message_blocks(text: Text) -> list[parts.Block]:
    """A message that is only text (answers, reminders)."""
    return [parts.section_block(md.mrkdwn(text))]


def _joined(lines: Sequence[Text], separator: str, *, bullet: str = "") -> tuple[Link | Moment | str, ...]:
    out: list[Link | Moment | str] = []
    for index, line in enumerate(lines):
        if index:
            out.append(separator)
        if bullet:
            out.append(bullet)
        out.extend(spans(line))
    return tuple(out)
