"""Block Kit rendering of the neutral view models, with Slack's limits and mrkdwn escaping enforced here.

User text is escaped (``&``, ``<``, ``>``) so a typed ``<!channel>`` or ``<@U123>`` shows literally and pings nobody,
and clipped with "…" to the Block Kit limits. Machine values (button values, option values) are never clipped:
a clipped value would route a click to the wrong place, so an oversized one raises ``ValueError``.

Every block that belongs to a ticket carries a ``block_id`` of the form ``ticket:{id}:{part}``;
``ticket_id_from_block_id`` reads it back when a click arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bot.views import CardAction, Fact, Notice, TicketCard, TicketList, TicketListItem

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
# Short enough to read in a notification banner; Slack itself allows far more.
MAX_FALLBACK_SUMMARY = 150
MAX_SUMMARY = 300

ELLIPSIS = "…"
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_BUTTON_STYLES = frozenset({"primary", "danger"})


def escape_mrkdwn(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` so user text cannot form mentions, links or broadcasts in mrkdwn."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def ticket_id_from_block_id(block_id: str) -> int | None:
    """The ticket id encoded in a ``ticket:{id}:{part}`` block id, or ``None`` for any other block id."""
    prefix, _, rest = block_id.partition(":")
    ticket, _, _ = rest.partition(":")
    return int(ticket) if prefix == "ticket" and ticket.isdigit() else None


def ticket_card_blocks(card: TicketCard) -> list[Block]:
    """The ticket card: headline, facts, description, SLA/escalation context, then buttons and menus."""
    head = _section(
        f"*{_link(card.link, card.number)}* · {_clip_mrkdwn(card.summary, MAX_SUMMARY)}\n"
        f"{escape_mrkdwn(card.status_label)} · {escape_mrkdwn(card.priority_label)}",
        _block_id(card.ticket_id, "head"),
    )
    description = _description_section(card)
    context = _ticket_context(card)
    rest = [*([description] if description else []), *([context] if context else [])]
    rest.extend(_action_blocks(card.ticket_id, card.actions))
    facts = _fact_sections(card.ticket_id, card.facts, max_sections=MAX_MESSAGE_BLOCKS - 1 - len(rest))
    return [head, *facts, *rest]


def ticket_card_text(card: TicketCard) -> str:
    """Plain fallback ``text`` for notifications and screen readers."""
    return f"{card.number} · {_clip_mrkdwn(card.summary, MAX_FALLBACK_SUMMARY)}"


def notice_blocks(notice: Notice) -> list[Block]:
    """A threaded notice: headline, optional body and author, facts, actions."""
    blocks = [
        _section(
            f"*{notice.number}* · {_clip_mrkdwn(notice.headline, MAX_SUMMARY)}", _block_id(notice.ticket_id, "head")
        )
    ]
    if notice.body:
        body = _clip_mrkdwn(notice.body, MAX_SECTION_TEXT, note=_truncation_note(notice.number))
        blocks.append(_section(body, _block_id(notice.ticket_id, "body")))
    if notice.author:
        blocks.append(_context(f"— {_clip_mrkdwn(notice.author, MAX_SUMMARY)}", _block_id(notice.ticket_id, "author")))
    actions = _action_blocks(notice.ticket_id, notice.actions)
    facts = _fact_sections(notice.ticket_id, notice.facts, max_sections=MAX_MESSAGE_BLOCKS - len(blocks) - len(actions))
    return [*blocks, *facts, *actions]


def notice_text(notice: Notice) -> str:
    """Plain fallback ``text`` for a notice."""
    return f"{notice.number} · {_clip_mrkdwn(notice.headline, MAX_FALLBACK_SUMMARY)}"


def ticket_list_blocks(listing: TicketList, *, max_blocks: int = MAX_MESSAGE_BLOCKS) -> list[Block]:
    """Titled groups of tickets, one section per ticket; what does not fit in ``max_blocks`` is counted, not shown."""
    blocks: list[Block] = [
        {"type": "header", "text": _plain(_clip(listing.title, MAX_HEADER_TEXT))},
    ]
    groups = [(title, items) for title, items in listing.sections if items]
    if not groups:
        return [*blocks, _section(_clip_mrkdwn(listing.empty_text, MAX_SECTION_TEXT))]
    # One block stays free for the "and N more" line.
    room = max_blocks - len(blocks) - 1
    hidden = 0
    for title, items in groups:
        if room < 2:
            hidden += len(items)
            continue
        blocks.append(_section(f"*{_clip_mrkdwn(title, MAX_SUMMARY)}*"))
        room -= 1
        shown = items[:room]
        blocks.extend(_section(_list_item_text(item)) for item in shown)
        room -= len(shown)
        hidden += len(items) - len(shown)
    if hidden:
        blocks.append(_context(f"…and {hidden} more not shown here."))
    return blocks


def home_view(listing: TicketList) -> dict[str, Any]:
    """The App Home tab for ``views.publish``."""
    return {"type": "home", "blocks": ticket_list_blocks(listing, max_blocks=MAX_HOME_BLOCKS)}


def _block_id(ticket_id: int, part: str) -> str:
    return f"ticket:{ticket_id}:{part}"[:MAX_ID]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def _clip_mrkdwn(text: str, limit: int, *, note: str = "") -> str:
    """Escape and clip to ``limit`` characters of output, never cutting through an entity like ``&amp;``."""
    escaped = escape_mrkdwn(text)
    if len(escaped) <= limit:
        return escaped
    budget = limit - len(ELLIPSIS) - len(note)
    pieces: list[str] = []
    for char in text:
        piece = _ESCAPES.get(char, char)
        if len(piece) > budget:
            break
        pieces.append(piece)
        budget -= len(piece)
    return "".join(pieces) + ELLIPSIS + note


def _truncation_note(number: str) -> str:
    return f"\n_(truncated — full text kept in {number})_"


def _link(url: str | None, label: str) -> str:
    if not url:
        return escape_mrkdwn(label)
    # "|" would end the URL part of <url|label> early.
    return f"<{escape_mrkdwn(url).replace('|', '%7C')}|{escape_mrkdwn(label)}>"


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def _section(text: str, block_id: str | None = None) -> Block:
    block: Block = {"type": "section", "text": _mrkdwn(text)}
    if block_id:
        block["block_id"] = block_id
    return block


def _context(text: str, block_id: str | None = None) -> Block:
    block: Block = {"type": "context", "elements": [_mrkdwn(text)]}
    if block_id:
        block["block_id"] = block_id
    return block


def _description_section(card: TicketCard) -> Block | None:
    if not card.description.strip():
        return None
    text = _clip_mrkdwn(card.description, MAX_SECTION_TEXT, note=_truncation_note(card.number))
    return _section(text, _block_id(card.ticket_id, "description"))


def _ticket_context(card: TicketCard) -> Block | None:
    # Escalation first: it is the line an agent must not miss if the element cap cuts the rest.
    lines = [f":rotating_light: {card.escalation}"] if card.escalation else []
    lines.extend(card.sla)
    elements = [_mrkdwn(_clip_mrkdwn(line, MAX_SECTION_TEXT)) for line in lines]
    if card.updated_at:
        elements.append(_mrkdwn(_slack_date("Updated", card.updated_at)))
    if not elements:
        return None
    return {
        "type": "context",
        "block_id": _block_id(card.ticket_id, "context"),
        "elements": elements[:MAX_CONTEXT_ELEMENTS],
    }


def _slack_date(prefix: str, at: datetime) -> str:
    """Slack renders ``<!date^…>`` in each reader's own time zone; the part after ``|`` is the fallback."""
    fallback = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at.timestamp())}^{prefix} {{date_short_pretty}} at {{time}}|{prefix} {fallback}>"


def _fact_sections(ticket_id: int, facts: Sequence[Fact], *, max_sections: int) -> list[Block]:
    # Label and value clipped apart so the label always survives: "*label*\n" adds 3 characters.
    value_limit = MAX_FIELD_TEXT - MAX_SUMMARY - 3
    fields = [_mrkdwn(f"*{_clip_mrkdwn(f.label, MAX_SUMMARY)}*\n{_clip_mrkdwn(f.value, value_limit)}") for f in facts]
    chunks = [fields[i : i + MAX_FIELDS_PER_SECTION] for i in range(0, len(fields), MAX_FIELDS_PER_SECTION)]
    return [
        {"type": "section", "block_id": _block_id(ticket_id, f"facts:{n}"), "fields": chunk}
        for n, chunk in enumerate(chunks[: max(max_sections, 0)])
    ]


def _action_blocks(ticket_id: int, actions: Sequence[CardAction]) -> list[Block]:
    elements = [_select(action) if action.choices else _button(action) for action in actions]
    chunks = [elements[i : i + MAX_ACTION_ELEMENTS] for i in range(0, len(elements), MAX_ACTION_ELEMENTS)]
    return [
        {"type": "actions", "block_id": _block_id(ticket_id, f"actions:{n}" if n else "actions"), "elements": chunk}
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
    details = [item.status_label]
    if item.assignee:
        details.append(f"with {item.assignee}")
    if item.next_update:
        details.append(f"next update {item.next_update}")
    summary = _clip_mrkdwn(item.summary, MAX_SUMMARY)
    return f"*{_link(item.link, item.number)}* · {summary}\n{_clip_mrkdwn(' · '.join(details), MAX_SUMMARY)}"
