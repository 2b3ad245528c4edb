"""Adaptive Card 1.5 rendering of the neutral view models for Teams.

TextBlock text is markdown and may carry ``{{DATE(…)}}``/``{{TIME(…)}}`` functions, so user text goes through
``escape_markdown`` first. Cards are kept under ``MAX_CARD_BYTES``: the description (or notice body) is cut first,
then facts, then actions; a list card shows fewer tickets and says how many more there are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from bot.views import CardAction, Fact, Notice, TicketCard, TicketList, TicketListItem

Card = dict[str, Any]

CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
SCHEMA_URL = "http://adaptivecards.io/schemas/adaptive-card.json"
VERSION = "1.5"
MAX_CARD_BYTES = 40_000
CHOICE_INPUT_ID = "priority"
MAX_SUMMARY = 300
MAX_FACT_LABEL = 100
MAX_FACT_VALUE = 1000
MAX_LINE = 500
MAX_BUTTON_TITLE = 75

ELLIPSIS = "…"
# C0/C1 controls except tab and newline, plus the bidi overrides that can make text read backwards.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_DOUBLE_BRACE = re.compile(r"([{}])(?=\1)")
_MARKDOWN = re.compile(r"([\\`*_\[\]()#>])")
# Line starts that open a list, a rule or a heading underline: "- ", "+ ", "---", "===", "1. ".
_LINE_START = re.compile(r"^(\s*)(?:([-+=])|(\d+)\.)")
_BUTTON_STYLES = {"primary": "positive", "danger": "destructive"}


def escape_markdown(text: str) -> str:
    """Neutralise TextBlock markdown and ``{{DATE()}}``/``{{TIME()}}`` functions in user text, drop control characters.

    Lines are joined by blank lines because TextBlock markdown folds a single newline into a space.
    """
    cleaned = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    # A zero-width space between braces breaks the function syntax without changing what the reader sees.
    cleaned = _DOUBLE_BRACE.sub("\\1\u200b", cleaned)
    lines = [_LINE_START.sub(_escape_line_start, _MARKDOWN.sub(r"\\\1", line)) for line in cleaned.split("\n")]
    return "\n\n".join(lines)


def _escape_line_start(match: re.Match[str]) -> str:
    indent, marker, digits = match.groups()
    return f"{indent}\\{marker}" if marker else f"{indent}{digits}\\."


def card_size(card: Card) -> int:
    """Serialized size in bytes, measured as the Bot Framework SDK sends it (ASCII-escaped JSON)."""
    return len(json.dumps(card))


def attachment(card: Card) -> dict[str, Any]:
    """Wrap a card as a Bot Framework activity attachment."""
    return {"contentType": CONTENT_TYPE, "content": card}


def ticket_card(card: TicketCard) -> Card:
    """The ticket as an Adaptive Card: headline, facts, description, SLA lines, escalation, actions."""

    def render(description: int, facts: int, actions: int) -> Card:
        body: list[dict[str, Any]] = [
            _text(f"{card.number} · {_clip_md(card.summary, MAX_SUMMARY)}", weight="Bolder", size="Medium"),
            _text(f"{escape_markdown(card.status_label)} · {escape_markdown(card.priority_label)}", isSubtle=True),
        ]
        if card.facts[:facts]:
            body.append(_fact_set(card.facts[:facts]))
        if card.description.strip():
            body.append(_text(_cut(card.description, description, card.number)))
        if card.escalation:
            body.append(_text(_clip_md(card.escalation, MAX_LINE), color="Attention", weight="Bolder"))
        body.extend(_text(_clip_md(line, MAX_LINE), isSubtle=True, spacing="Small") for line in card.sla)
        if card.updated_at:
            body.append(_text(_teams_date("Updated", card.updated_at), isSubtle=True, spacing="Small"))
        rendered = _card(body, *_actions(card.ticket_id, card.actions[:actions], link=card.link, number=card.number))
        # Full width: facts and a long description read badly in Teams' narrow default bubble.
        rendered["msteams"] = {"width": "Full"}
        return rendered

    return _shrink_to_fit(render, (len(card.description), len(card.facts), len(card.actions)))


def notice_card(notice: Notice) -> Card:
    """A short notice about a ticket: headline, optional body and author, facts, actions."""

    def render(body_chars: int, facts: int, actions: int) -> Card:
        body: list[dict[str, Any]] = [
            _text(f"{notice.number} · {_clip_md(notice.headline, MAX_SUMMARY)}", weight="Bolder"),
        ]
        if notice.body:
            body.append(_text(_cut(notice.body, body_chars, notice.number)))
        if notice.author:
            body.append(_text(f"— {_clip_md(notice.author, MAX_SUMMARY)}", isSubtle=True, spacing="Small"))
        if notice.facts[:facts]:
            body.append(_fact_set(notice.facts[:facts]))
        return _card(body, *_actions(notice.ticket_id, notice.actions[:actions]))

    return _shrink_to_fit(render, (len(notice.body or ""), len(notice.facts), len(notice.actions)))


def ticket_list_card(listing: TicketList) -> Card:
    """Titled groups of tickets; each ticket opens its link when tapped."""
    groups = [(title, items) for title, items in listing.sections if items]
    total = sum(len(items) for _, items in groups)

    def render(shown: int) -> Card:
        body: list[dict[str, Any]] = [_text(_clip_md(listing.title, MAX_SUMMARY), weight="Bolder", size="Medium")]
        if not groups:
            body.append(_text(_clip_md(listing.empty_text, MAX_LINE)))
        room = shown
        for title, items in groups:
            if room <= 0:
                break
            body.append(_text(_clip_md(title, MAX_SUMMARY), weight="Bolder", separator=True))
            body.extend(_list_item(item) for item in items[:room])
            room -= len(items)
        if shown < total:
            body.append(_text(f"…and {total - shown} more not shown here.", isSubtle=True))
        return _card(body)

    return _shrink_to_fit(render, (total,))


def _shrink_to_fit(render: Callable[..., Card], full: Sequence[int]) -> Card:
    """Render with the largest budgets that fit, giving up budgets in order (text, then facts, then actions)."""
    card = render(*full)
    if card_size(card) <= MAX_CARD_BYTES:
        return card
    limits = list(full)
    for dimension in range(len(limits)):
        # Size grows with each budget, so binary-search the largest one that fits with later budgets intact.
        low, high, best = 0, limits[dimension] - 1, None
        while low <= high:
            limits[dimension] = middle = (low + high) // 2
            candidate = render(*limits)
            if card_size(candidate) <= MAX_CARD_BYTES:
                best, low = candidate, middle + 1
            else:
                high = middle - 1
        if best is not None:
            return best
        limits[dimension] = 0
    # Every budget is zero; what is left is clipped per field and small.
    return render(*limits)


def _card(body: list[dict[str, Any]], *actions: dict[str, Any]) -> Card:
    card: Card = {"type": "AdaptiveCard", "$schema": SCHEMA_URL, "version": VERSION, "body": body}
    if actions:
        card["actions"] = list(actions)
    return card


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _clip_md(text: str, limit: int) -> str:
    """Clip raw text before escaping, so an escape sequence is never cut in half."""
    return escape_markdown(text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS)


def _cut(text: str, keep: int, number: str) -> str:
    if keep >= len(text):
        return escape_markdown(text)
    return escape_markdown(text[:keep] + ELLIPSIS) + f"\n\n_(truncated — full text kept in {escape_markdown(number)})_"


def _teams_date(prefix: str, at: datetime) -> str:
    """Teams renders DATE/TIME functions in each reader's own time zone."""
    stamp = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{prefix} {{{{DATE({stamp}, SHORT)}}}} {{{{TIME({stamp})}}}}"


def _fact_set(facts: Sequence[Fact]) -> dict[str, Any]:
    return {
        "type": "FactSet",
        "facts": [
            {"title": _clip_md(fact.label, MAX_FACT_LABEL), "value": _clip_md(fact.value, MAX_FACT_VALUE)}
            for fact in facts
        ],
    }


def _actions(
    ticket_id: int, actions: Sequence[CardAction], *, link: str | None = None, number: str = ""
) -> list[dict[str, Any]]:
    """Card-level actions; a menu becomes a ShowCard holding the ChoiceSet and its own submit.

    The ShowCard keeps the menu's input out of the other buttons' submissions.
    """
    rendered = [_menu(ticket_id, action) if action.choices else _submit(ticket_id, action) for action in actions]
    if link:
        rendered.append({"type": "Action.OpenUrl", "title": f"Open {number}", "url": link})
    return rendered


def _submit(ticket_id: int, action: CardAction, title: str | None = None) -> dict[str, Any]:
    submit: dict[str, Any] = {
        "type": "Action.Submit",
        "title": _clip(title or action.label, MAX_BUTTON_TITLE),
        "data": {"action": action.action.value, "value": action.value, "ticket_id": ticket_id},
    }
    if action.style in _BUTTON_STYLES:
        submit["style"] = _BUTTON_STYLES[action.style]
    return submit


def _menu(ticket_id: int, action: CardAction) -> dict[str, Any]:
    choice_set: dict[str, Any] = {
        "type": "Input.ChoiceSet",
        "id": CHOICE_INPUT_ID,
        "style": "compact",
        "label": _clip(action.label, MAX_SUMMARY),
        "choices": [{"title": _clip(choice.label, MAX_SUMMARY), "value": choice.value} for choice in action.choices],
    }
    if action.selected:
        choice_set["value"] = action.selected
    return {
        "type": "Action.ShowCard",
        "title": _clip(action.label, MAX_BUTTON_TITLE),
        "card": {
            "type": "AdaptiveCard",
            "body": [choice_set],
            "actions": [_submit(ticket_id, action, title="Save")],
        },
    }


def _clip(text: str, limit: int) -> str:
    plain = _CONTROL.sub("", text)
    return plain if len(plain) <= limit else plain[: limit - len(ELLIPSIS)] + ELLIPSIS


def _list_item(item: TicketListItem) -> dict[str, Any]:
    details = [item.status_label]
    if item.assignee:
        details.append(f"with {item.assignee}")
    if item.next_update:
        details.append(f"next update {item.next_update}")
    container: dict[str, Any] = {
        "type": "Container",
        "items": [
            _text(f"{escape_markdown(item.number)} · {_clip_md(item.summary, MAX_SUMMARY)}", weight="Bolder"),
            _text(_clip_md(" · ".join(details), MAX_LINE), isSubtle=True, spacing="None"),
        ],
    }
    if item.link:
        container["selectAction"] = {"type": "Action.OpenUrl", "url": item.link}
    return container
