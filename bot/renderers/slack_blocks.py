"""Block Kit rendering of the neutral view models, with Slack's limits and mrkdwn escaping enforced here.

Literal text is escaped once (``&``, ``<``, ``>``) so a typed ``<!channel>`` or ``<@U123>`` shows literally and
pings nobody; links become ``<url|label>`` and moments ``<!date^…|fallback>`` (each reader's own zone). Text is
clipped with "…" to the Block Kit limits without cutting an entity, a link or a date in half. Machine values
(button values, option values) are never clipped: a clipped value would route a click to the wrong place, so an
oversized one raises ``ValueError``. Every message's fallback ``text`` (what notifications show) carries its
content, escaped like the blocks.

Every block that belongs to a ticket carries a ``block_id`` of the form ``ticket:{id}:{part}``;
``ticket_id_from_block_id`` reads it back when a click arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.text import moment_text
from bot.views import (
    MAX_INTRO_LINES,
    CardAction,
    Digest,
    Fact,
    Link,
    Moment,
    Notice,
    Pulse,
    Summary,
    Survey,
    Text,
    TicketCard,
    TicketList,
    TicketListItem,
    spans,
)

Block = dict[str, Any]

MAX_MESSAGE_BLOCKS = 50
MAX_HOME_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_FIELDS_PER_SECTION = 10
MAX_HEADER_TEXT = 150
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
MAX_OPTIONS = 100
MAX_PLACEHOLDER = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTION_ELEMENTS = 25
MAX_ID = 255
# Long enough to carry the message in a notification banner; Slack itself allows far more.
MAX_FALLBACK = 400
MAX_SUMMARY = 300

ELLIPSIS = "…"
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_BUTTON_STYLES = frozenset({"primary", "danger"})


def escape_mrkdwn(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` so literal text cannot form mentions, links or broadcasts in mrkdwn."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn(text: Text, limit: int = MAX_SECTION_TEXT, *, note: str = "") -> str:
    """``text`` as mrkdwn of at most ``limit`` characters; ``note`` (already mrkdwn) is added when it is cut."""
    pieces = [(span, _render_span(span)) for span in spans(text)]
    full = "".join(rendered for _, rendered in pieces)
    if len(full) <= limit:
        return full
    budget = limit - len(ELLIPSIS) - len(note)
    out: list[str] = []
    for span, rendered in pieces:
        if len(rendered) <= budget:
            out.append(rendered)
            budget -= len(rendered)
            continue
        if isinstance(span, str):
            for char in span:
                piece = _ESCAPES.get(char, char)
                if len(piece) > budget:
                    break
                out.append(piece)
                budget -= len(piece)
        break
    return "".join(out) + ELLIPSIS + note


def _render_span(span: Link | Moment | str) -> str:
    if isinstance(span, Link):
        url = escape_mrkdwn(span.url).replace("|", "%7C")
        return f"<{url}|{escape_mrkdwn(span.label)}>" if span.label else f"<{url}>"
    if isinstance(span, Moment):
        pattern = "{date_short_pretty}" if span.form == "date" else "{date_short_pretty} at {time}"
        return f"<!date^{int(span.at.timestamp())}^{pattern}|{escape_mrkdwn(moment_text(span))}>"
    return escape_mrkdwn(span)


def ticket_id_from_block_id(block_id: str) -> int | None:
    """The ticket id encoded in a ``ticket:{id}:{part}`` block id, or ``None`` for any other block id."""
    prefix, _, rest = block_id.partition(":")
    ticket, _, _ = rest.partition(":")
    return int(ticket) if prefix == "ticket" and ticket.isascii() and ticket.isdigit() else None


# -- tickets ----------------------------------------------------------------------------------------
def ticket_card_blocks(card: TicketCard) -> list[Block]:
    """The ticket card: headline, facts, description, SLA/escalation context, then buttons and menus."""
    head = _section(
        f"*{_link(card.link, card.number)}* · {mrkdwn(card.summary, MAX_SUMMARY)}\n"
        f"{escape_mrkdwn(card.status_label)} · {escape_mrkdwn(card.priority_label)}",
        _block_id(card.ticket_id, "head"),
    )
    description = _description_section(card)
    context = _ticket_context(card)
    notes = [_context(mrkdwn(note), _block_id(card.ticket_id, f"note:{n}")) for n, note in enumerate(card.notes[:3])]
    rest = [*([description] if description else []), *([context] if context else []), *notes]
    rest.extend(_action_blocks(card.ticket_id, card.actions))
    facts = _fact_sections(card.ticket_id, card.facts, max_sections=MAX_MESSAGE_BLOCKS - 1 - len(rest))
    return [head, *facts, *rest]


def ticket_card_text(card: TicketCard) -> str:
    """Fallback ``text``: number, summary and where it stands."""
    return mrkdwn((f"{card.number} · {card.summary} ({card.status_label}, {card.priority_label})",), MAX_FALLBACK)


def notice_blocks(notice: Notice) -> list[Block]:
    """A threaded notice: headline, optional body and author, facts, actions."""
    head = mrkdwn(notice.headline, MAX_SUMMARY)
    blocks = [_section(f"*{escape_mrkdwn(notice.number)}* · {head}" if notice.numbered else head,
                       _block_id(notice.ticket_id, "head"))]
    if notice.body:
        body = mrkdwn(notice.body, MAX_SECTION_TEXT, note=_truncation_note(notice.number))
        blocks.append(_section(body, _block_id(notice.ticket_id, "body")))
    if notice.author:
        blocks.append(_context(f"— {mrkdwn(notice.author, MAX_SUMMARY)}", _block_id(notice.ticket_id, "author")))
    actions = _action_blocks(notice.ticket_id, notice.actions)
    facts = _fact_sections(notice.ticket_id, notice.facts, max_sections=MAX_MESSAGE_BLOCKS - len(blocks) - len(actions))
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


def ticket_list_blocks(listing: TicketList, *, max_blocks: int = MAX_MESSAGE_BLOCKS) -> list[Block]:
    """Titled groups of tickets, one section per ticket; what does not fit in ``max_blocks`` is counted, not shown."""
    blocks: list[Block] = [{"type": "header", "text": _plain(_clip(listing.title, MAX_HEADER_TEXT))}]
    blocks.extend(_section(mrkdwn(line)) for line in listing.intro[:MAX_INTRO_LINES])
    if listing.actions:
        blocks.append({"type": "actions", "block_id": "home:actions",
                       "elements": [_button(action) for action in listing.actions[:MAX_ACTION_ELEMENTS]]})
    groups = [(title, items) for title, items in listing.sections if items]
    if not groups:
        return [*blocks, _section(mrkdwn(listing.empty_text))]
    # One block stays free for the "and N more" line.
    room = max_blocks - len(blocks) - 1
    hidden = 0
    for title, items in groups:
        if room < 2:
            hidden += len(items)
            continue
        blocks.append(_section(f"*{mrkdwn(title, MAX_SUMMARY)}*"))
        room -= 1
        shown = items[:room]
        blocks.extend(_section(_list_item_text(item)) for item in shown)
        room -= len(shown)
        hidden += len(items) - len(shown)
    if hidden:
        blocks.append(_context(f"…and {hidden} more not shown here."))
    return blocks


def ticket_list_text(listing: TicketList) -> str:
    """Fallback ``text`` of a ticket list."""
    count = sum(len(items) for _, items in listing.sections)
    # The intro (known issues, a welcome) comes first: it is what a notification should show.
    intro = "".join(f"{mrkdwn(line)}\n" for line in listing.intro[:MAX_INTRO_LINES])
    tail = escape_mrkdwn(f"{listing.title} ({count})" if count else f"{listing.title}: {listing.empty_text}")
    return (intro + tail)[:MAX_FALLBACK]


def home_view(listing: TicketList) -> dict[str, Any]:
    """The App Home tab for ``views.publish``."""
    return {"type": "home", "blocks": ticket_list_blocks(listing, max_blocks=MAX_HOME_BLOCKS)}


# -- surveys, digests, summaries --------------------------------------------------------------------
def survey_blocks(survey: Survey) -> list[Block]:
    """The satisfaction poll; block ids are ``ticket:{id}:survey…`` so a click routes to its ticket."""
    blocks: list[Block] = [_section(mrkdwn(survey.headline), _block_id(survey.ticket_id, "survey"))]
    if survey.details:
        details = mrkdwn(_joined(survey.details, "\n"))
        blocks.append(_section(details, _block_id(survey.ticket_id, "survey:details")))
    actions = _action_blocks(survey.ticket_id, survey.actions, part="survey:actions")
    blocks.extend(actions)
    if actions and survey.expires_at is not None:
        blocks.append(_context(mrkdwn(("You can change your answer until ", survey.expires_at, ".")),
                               _block_id(survey.ticket_id, "survey:expiry")))
    return blocks


def survey_text(survey: Survey) -> str:
    """Fallback ``text``: the question (or the thanks), which names the ticket itself."""
    return mrkdwn(survey.headline, MAX_FALLBACK)


def pulse_blocks(pulse: Pulse) -> list[Block]:
    """A one-question pulse (NPS): the question, the scale, one row of score buttons; block ids ``pulse:{id}:…``."""
    prefix = f"pulse:{pulse.pulse_id}"
    blocks: list[Block] = [_section(mrkdwn(pulse.headline), prefix)]
    if pulse.details:
        blocks.append(_context(mrkdwn(_joined(pulse.details, "\n")), f"{prefix}:details"))
    if pulse.actions:
        if pulse.scale:
            blocks.append(_context(mrkdwn(f"{pulse.scale[0]} · {pulse.scale[1]}"), f"{prefix}:scale"))
        blocks.append({"type": "actions", "block_id": f"{prefix}:actions",
                       "elements": [_button(action) for action in pulse.actions[:MAX_ACTION_ELEMENTS]]})
        if pulse.expires_at is not None:
            blocks.append(_context(mrkdwn(("You can change your answer until ", pulse.expires_at, ".")),
                                   f"{prefix}:expiry"))
    return blocks


def pulse_text(pulse: Pulse) -> str:
    """Fallback ``text``: the question (or the thanks)."""
    return mrkdwn(pulse.headline, MAX_FALLBACK)


def digest_blocks(digest: Digest) -> list[Block]:
    """Title, intro, then one section per ticket with its button as the accessory (≤ 50 blocks)."""
    blocks: list[Block] = [_section(f"*{mrkdwn(digest.title, MAX_SUMMARY)}*")]
    if digest.intro:
        blocks.append(_context(mrkdwn(digest.intro)))
    for section in digest.sections:
        if section.heading:
            blocks.append(_section(f"*{mrkdwn(section.heading, MAX_SUMMARY)}*"))
        for line in section.lines:
            block = _section(f"*{escape_mrkdwn(line.number)}* · {mrkdwn(line.summary, 150)}\n{mrkdwn(line.detail)}",
                             _block_id(line.ticket_id, "digest"))
            if line.action is not None:
                block["accessory"] = _button(line.action)
            blocks.append(block)
        if section.more:
            blocks.append(_context(f"…and {section.more} more."))
    if digest.footer:
        blocks.append(_context(mrkdwn(digest.footer)))
    return blocks[:MAX_MESSAGE_BLOCKS]


def digest_text(digest: Digest) -> str:
    count = digest.count
    return mrkdwn(f"{digest.title} ({count} ticket{'' if count == 1 else 's'})", MAX_FALLBACK)


def summary_blocks(summary: Summary) -> list[Block]:
    blocks: list[Block] = [{"type": "header", "text": _plain(_clip(summary.title, MAX_HEADER_TEXT))},
                           _section(mrkdwn(_joined(summary.lines, "\n", bullet="• ")))]
    if summary.footnote:
        blocks.append(_context(mrkdwn(summary.footnote)))
    return blocks


def summary_text(summary: Summary) -> str:
    return mrkdwn(summary.title, MAX_FALLBACK)


def plain_message_blocks(text: Text) -> list[Block]:
    """A message that is only text (answers, reminders)."""
    return [_section(mrkdwn(text))]


# -- pieces -----------------------------------------------------------------------------------------
def _joined(lines: Sequence[Text], separator: str, *, bullet: str = "") -> tuple[Link | Moment | str, ...]:
    out: list[Link | Moment | str] = []
    for index, line in enumerate(lines):
        if index:
            out.append(separator)
        if bullet:
            out.append(bullet)
        out.extend(spans(line))
    return tuple(out)


def _block_id(ticket_id: int, part: str) -> str:
    return f"ticket:{ticket_id}:{part}"[:MAX_ID]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def _truncation_note(number: str) -> str:
    return f"\n_(truncated — full text kept in {escape_mrkdwn(number)})_"


def _link(url: str | None, label: str) -> str:
    return _render_span(Link(url, label)) if url else escape_mrkdwn(label)


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _section(text: str, block_id: str | None = None) -> Block:
    block: Block = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    if block_id:
        block["block_id"] = block_id
    return block


def _context(text: str, block_id: str | None = None) -> Block:
    block: Block = {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}
    if block_id:
        block["block_id"] = block_id
    return block


def _description_section(card: TicketCard) -> Block | None:
    if not card.description.strip():
        return None
    text = mrkdwn(card.description, MAX_SECTION_TEXT, note=_truncation_note(card.number))
    return _section(text, _block_id(card.ticket_id, "description"))


def _ticket_context(card: TicketCard) -> Block | None:
    # Escalation first: it is the line an agent must not miss if the element cap cuts the rest.
    lines: list[Text] = [(":rotating_light: ", *spans(card.escalation))] if card.escalation else []
    lines.extend(card.sla)
    elements = [{"type": "mrkdwn", "text": mrkdwn(line)} for line in lines]
    moments = [("Opened ", card.opened_at), ("Updated ", card.updated_at)]
    elements.extend({"type": "mrkdwn", "text": mrkdwn((label, Moment(at, card.zone)))}
                    for label, at in moments if at is not None)
    if not elements:
        return None
    return {"type": "context", "block_id": _block_id(card.ticket_id, "context"),
            "elements": elements[:MAX_CONTEXT_ELEMENTS]}


def _fact_sections(ticket_id: int, facts: Sequence[Fact], *, max_sections: int) -> list[Block]:
    # Label and value clipped apart so the label always survives: "*label*\n" adds 3 characters.
    value_limit = MAX_FIELD_TEXT - MAX_SUMMARY - 3
    fields = [{"type": "mrkdwn", "text": f"*{mrkdwn(f.label, MAX_SUMMARY)}*\n{mrkdwn(f.value, value_limit)}"}
              for f in facts]
    chunks = [fields[i : i + MAX_FIELDS_PER_SECTION] for i in range(0, len(fields), MAX_FIELDS_PER_SECTION)]
    return [
        {"type": "section", "block_id": _block_id(ticket_id, f"facts:{n}"), "fields": chunk}
        for n, chunk in enumerate(chunks[: max(max_sections, 0)])
    ]


def _action_blocks(ticket_id: int, actions: Sequence[CardAction], *, part: str = "actions") -> list[Block]:
    # Slack wants action ids unique within a block: a repeated one (a button per ticket) starts a new block.
    chunks: list[list[dict[str, Any]]] = []
    for action in actions:
        element = _select(action) if action.choices else _button(action)
        if not chunks or len(chunks[-1]) >= MAX_ACTION_ELEMENTS or any(
                e["action_id"] == element["action_id"] for e in chunks[-1]):
            chunks.append([])
        chunks[-1].append(element)
    return [
        {"type": "actions", "block_id": _block_id(ticket_id, f"{part}:{n}" if n else part), "elements": chunk}
        for n, chunk in enumerate(chunks)
    ]


def _button(action: CardAction) -> dict[str, Any]:
    if len(action.value) > MAX_BUTTON_VALUE:
        raise ValueError(f"button value for {action.action} exceeds {MAX_BUTTON_VALUE} characters")
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action.action.value,
        "text": _plain(_clip(action.label, MAX_BUTTON_TEXT)),
    }
    if action.value:
        button["value"] = action.value
    if action.style in _BUTTON_STYLES:
        button["style"] = action.style
    return button


def _select(action: CardAction) -> dict[str, Any]:
    options = []
    for choice in action.choices[:MAX_OPTIONS]:
        if len(choice.value) > MAX_OPTION_VALUE:
            raise ValueError(f"option value for {action.action} exceeds {MAX_OPTION_VALUE} characters")
        options.append({"text": _plain(_clip(choice.label, MAX_OPTION_TEXT)), "value": choice.value})
    select: dict[str, Any] = {
        "type": "static_select",
        "action_id": action.action.value,
        "placeholder": _plain(_clip(action.label, MAX_PLACEHOLDER)),
        "options": options,
    }
    initial = next((option for option in options if option["value"] == action.selected), None)
    if initial:
        select["initial_option"] = initial
    return select


def _list_item_text(item: TicketListItem) -> str:
    details: list[Link | Moment | str] = [item.status_label]
    if item.assignee:
        details.append(f" · with {item.assignee}")
    if item.next_update:
        details.extend((" · next update ", *spans(item.next_update)))
    return f"*{_link(item.link, item.number)}* · {mrkdwn(item.summary, MAX_SUMMARY)}\n{mrkdwn(tuple(details), 500)}"


def marker_reaction(internal: bool) -> str:
    """The reaction that marks an agent's triage-thread message: kept internal, or sent to the requester."""
    return "lock" if internal else "incoming_envelope"
