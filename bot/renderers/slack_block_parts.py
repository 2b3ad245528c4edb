"""The Block Kit pieces every Slack message is built from, within Block Kit's limits.

Sections, context lines, fact fields, buttons and menus. Machine values (button values, option values) are never
clipped: a clipped value would route a click to the wrong place, so an oversized one raises ``ValueError``.

Every block that belongs to a ticket carries a ``block_id`` of the form ``ticket:{id}:{part}``;
``ticket_id_from_block_id`` reads it back when a click arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.renderers.slack_mrkdwn import ELLIPSIS, MAX_SUMMARY, mrkdwn
from bot.views import CardAction, Fact

Block = dict[str, Any]

MAX_MESSAGE_BLOCKS = 50
MAX_HOME_BLOCKS = 100
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

_BUTTON_STYLES = frozenset({"primary", "danger"})


def ticket_id_from_block_id(block_id: str) -> int | None:
    """The ticket id encoded in a ``ticket:{id}:{part}`` block id, or ``None`` for any other block id."""
    prefix, _, rest = block_id.partition(":")
    ticket, _, _ = rest.partition(":")
    return int(ticket) if prefix == "ticket" and ticket.isascii() and ticket.isdigit() else None


def ticket_block_id(ticket_id: int, part: str) -> str:
    """The ``ticket:{id}:{part}`` block id of a block that belongs to a ticket."""
    return f"ticket:{ticket_id}:{part}"[:MAX_ID]


def header(title: str) -> Block:
    """A header block showing ``title`` (plain text) clipped to the header limit."""
    return {"type": "header", "text": _plain(_clip(title, MAX_HEADER_TEXT))}


def section_block(text: str, block_id: str | None = None) -> Block:
    """A section block of mrkdwn ``text``."""
    block: Block = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    if block_id:
        block["block_id"] = block_id
    return block


def context_block(text: str, block_id: str | None = None) -> Block:
    """A context block (small grey line) of mrkdwn ``text``."""
    block: Block = {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}
    if block_id:
        block["block_id"] = block_id
    return block


def fact_sections(ticket_id: int, facts: Sequence[Fact], *, max_sections: int) -> list[Block]:
    """Facts as label/value fields, ten to a section, in at most ``max_sections`` sections."""
    # Label and value clipped apart so the label always survives: "*label*\n" adds 3 characters.
    value_limit = MAX_FIELD_TEXT - MAX_SUMMARY - 3
    fields = [{"type": "mrkdwn", "text": f"*{mrkdwn(f.label, MAX_SUMMARY)}*\n{mrkdwn(f.value, value_limit)}"}
              for f in facts]
    chunks = [fields[i : i + MAX_FIELDS_PER_SECTION] for i in range(0, len(fields), MAX_FIELDS_PER_SECTION)]
    return [
        {"type": "section", "block_id": ticket_block_id(ticket_id, f"facts:{n}"), "fields": chunk}
        for n, chunk in enumerate(chunks[: max(max_sections, 0)])
    ]


def action_blocks(ticket_id: int, actions: Sequence[CardAction], *, part: str = "actions") -> list[Block]:
    """Buttons and menus in actions blocks with ids ``ticket:{id}:{part}``, ``…:{part}:1``…"""
    # Slack wants action ids unique within a block: a repeated one (a button per ticket) starts a new block.
    chunks: list[list[dict[str, Any]]] = []
    for action in actions:
        element = _select(action) if action.choices else button_element(action)
        if not chunks or len(chunks[-1]) >= MAX_ACTION_ELEMENTS or any(
                e["action_id"] == element["action_id"] for e in chunks[-1]):
            chunks.append([])
        chunks[-1].append(element)
    return [
        {"type": "actions", "block_id": ticket_block_id(ticket_id, f"{part}:{n}" if n else part), "elements": chunk}
        for n, chunk in enumerate(chunks)
    ]


def button_element(action: CardAction) -> dict[str, Any]:
    """A button; raises ``ValueError`` if its value is too long to send unclipped."""
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


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}
