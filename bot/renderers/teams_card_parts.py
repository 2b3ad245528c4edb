"""The Adaptive Card 1.5 pieces every Teams card is built from: the card itself, TextBlocks, FactSets and
actions, and the size budget that keeps a card under ``MAX_CARD_BYTES`` (``shrink_to_fit``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from bot.renderers.teams_card_markdown import MAX_SUMMARY, clip, md
from bot.text import plain, without_controls_in
from bot.views import CardAction, Fact, Moment, Text, spans

Card = dict[str, Any]

CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
SCHEMA_URL = "http://adaptivecards.io/schemas/adaptive-card.json"
VERSION = "1.5"
MAX_CARD_BYTES = 40_000
CHOICE_INPUT_ID = "priority"
MAX_FACT_LABEL = 100
MAX_FACT_VALUE = 1000
MAX_BUTTON_TITLE = 75

_BUTTON_STYLES = {"primary": "positive", "danger": "destructive"}


def card_size(card: Card) -> int:
    """Serialized size in bytes, measured as the Bot Framework SDK sends it (ASCII-escaped JSON)."""
    return len(json.dumps(card))


def clean(card: Card) -> Card:
    """``card`` as it may leave for Teams: no NUL or other control character in any string, whichever code built it
    (forms echo back what a person typed), by the rule inbound text follows (``bot.text.without_controls``)."""
    cleaned: Card = without_controls_in(card)
    return cleaned


def attachment(card: Card) -> dict[str, Any]:
    """Wrap a card as a Bot Framework activity attachment."""
    return {"contentType": CONTENT_TYPE, "content": card}


def shrink_to_fit(render: Callable[..., Card], full: Sequence[int]) -> Card:
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


def adaptive_card(body: list[dict[str, Any]], *actions: dict[str, Any]) -> Card:
    """An Adaptive Card 1.5 of ``body`` elements and card-level ``actions``."""
    card: Card = {"type": "AdaptiveCard", "$schema": SCHEMA_URL, "version": VERSION, "body": body}
    if actions:
        card["actions"] = list(actions)
    return card


def text_block(text: str, **style: Any) -> dict[str, Any]:
    """A wrapping TextBlock of markdown ``text`` with the given style properties."""
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def fact_set(facts: Sequence[Fact]) -> dict[str, Any]:
    """Facts as a FactSet, labels and values clipped apart."""
    return {
        "type": "FactSet",
        "facts": [
            {"title": md(fact.label, MAX_FACT_LABEL), "value": md(_no_moments(fact.value), MAX_FACT_VALUE)}
            for fact in facts
        ],
    }


def _no_moments(text: Text) -> Text:
    # Teams localises DATE()/TIME() in TextBlocks only; a fact shows the written-out time instead.
    return tuple(plain((span,)) if isinstance(span, Moment) else span for span in spans(text))


def card_actions(
    ticket_id: int, actions: Sequence[CardAction], *, link: str | None = None, number: str = ""
) -> list[dict[str, Any]]:
    """Card-level actions; a menu becomes a ShowCard holding the ChoiceSet and its own submit.

    The ShowCard keeps the menu's input out of the other buttons' submissions.
    """
    rendered = [_menu(ticket_id, action) if action.choices else submit_action(ticket_id, action) for action in actions]
    if link:
        rendered.append({"type": "Action.OpenUrl", "title": f"Open {number}", "url": link})
    return rendered


def submit_action(ticket_id: int, action: CardAction, title: str | None = None) -> dict[str, Any]:
    """A button submitting ``{action, value, ticket_id}``."""
    submit: dict[str, Any] = {
        "type": "Action.Submit",
        "title": clip(title or action.label, MAX_BUTTON_TITLE),
        "data": {"action": action.action.value, "value": action.value, "ticket_id": ticket_id},
    }
    if action.style in _BUTTON_STYLES:
        submit["style"] = _BUTTON_STYLES[action.style]
    return submit


def pulse_submit_action(action: CardAction) -> dict[str, Any]:
    """A pulse score button submitting ``{action, value}`` (a pulse belongs to no ticket)."""
    submit: dict[str, Any] = {"type": "Action.Submit", "title": clip(action.label, MAX_BUTTON_TITLE),
                              "data": {"action": action.action.value, "value": action.value}}
    if action.style in _BUTTON_STYLES:
        submit["style"] = _BUTTON_STYLES[action.style]
    return submit


def _menu(ticket_id: int, action: CardAction) -> dict[str, Any]:
    choice_set: dict[str, Any] = {
        "type": "Input.ChoiceSet",
        "id": CHOICE_INPUT_ID,
        "style": "compact",
        "label": clip(action.label, MAX_SUMMARY),
        "choices": [{"title": clip(choice.label, MAX_SUMMARY), "value": choice.value} for choice in action.choices],
    }
    if action.selected:
        choice_set["value"] = action.selected
    return {
        "type": "Action.ShowCard",
        "title": clip(action.label, MAX_BUTTON_TITLE),
        "card": {
            "type": "AdaptiveCard",
            "body": [choice_set],
            "actions": [submit_action(ticket_id, action, title="Save")],
        },
    }
