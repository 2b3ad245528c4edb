"""Adaptive Card 1.5 rendering of the neutral view models for Teams.

TextBlock text is markdown and may carry ``{{DATE(…)}}``/``{{TIME(…)}}`` functions, so user text goes through
``escape_markdown`` first. Cards are kept under ``MAX_CARD_BYTES``: the description (or notice body) is cut first,
then facts, then actions; a list card shows fewer tickets and says how many more there are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC
from typing import Any

from bot.text import plain, text_length, without_controls_in
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


def clean(card: Card) -> Card:
    """``card`` as it may leave for Teams: no NUL or other control character in any string, whichever code built it
    (forms echo back what a person typed), by the rule inbound text follows (``bot.text.without_controls``)."""
    cleaned: Card = without_controls_in(card)
    return cleaned


def attachment(card: Card) -> dict[str, Any]:
    """Wrap a card as a Bot Framework activity attachment."""
    return {"contentType": CONTENT_TYPE, "content": card}


def md(text: Text, limit: int = MAX_LINE) -> str:
    """``text`` as TextBlock markdown, clipped to ``limit`` visible characters: literal text escaped, links as
    ``[label](url)``, moments as ``{{DATE()}} {{TIME()}}`` so Teams shows them in each reader's own zone."""
    out: list[str] = []
    budget = limit
    for span in spans(text):
        if isinstance(span, str):
            if len(span) > budget:
                out.append(escape_markdown(span[: max(budget - len(ELLIPSIS), 0)] + ELLIPSIS))
                return "".join(out)
            out.append(escape_markdown(span))
            budget -= len(span)
            continue
        rendered, visible = _render_span(span)
        if visible > budget:
            out.append(ELLIPSIS)
            return "".join(out)
        out.append(rendered)
        budget -= visible
    return "".join(out)


def _render_span(span: Link | Moment) -> tuple[str, int]:
    if isinstance(span, Link):
        url = span.url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
        label = span.label or span.url
        return f"[{escape_markdown(label)}]({url})", len(label)
    stamp = span.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if span.form == "date":
        return f"{{{{DATE({stamp}, SHORT)}}}}", 12
    return f"{{{{DATE({stamp}, SHORT)}}}} {{{{TIME({stamp})}}}}", 18


def plain_text(text: Text, limit: int = MAX_LINE) -> str:
    """``text`` for places that take no markdown (an activity's ``summary``/``text`` fallback)."""
    flat = plain(text)
    return _CONTROL.sub("", flat if len(flat) <= limit else flat[: limit - len(ELLIPSIS)] + ELLIPSIS)


def ticket_card(card: TicketCard) -> Card:
    """The ticket as an Adaptive Card: headline, facts, description, SLA lines, escalation, actions."""

    def render(description: int, facts: int, actions: int) -> Card:
        body: list[dict[str, Any]] = [
            _text(f"{escape_markdown(card.number)} · {md(card.summary, MAX_SUMMARY)}", weight="Bolder",
                  size="Medium"),
            _text(f"{escape_markdown(card.status_label)} · {escape_markdown(card.priority_label)}", isSubtle=True),
        ]
        if card.facts[:facts]:
            body.append(_fact_set(card.facts[:facts]))
        if card.description.strip():
            body.append(_text(_cut(card.description, description, card.number)))
        if card.escalation:
            body.append(_text(md(card.escalation), color="Attention", weight="Bolder"))
        body.extend(_text(md(line), isSubtle=True, spacing="Small") for line in card.sla)
        body.extend(_text(md((label, Moment(at, card.zone))), isSubtle=True, spacing="Small")
                    for label, at in (("Opened ", card.opened_at), ("Updated ", card.updated_at)) if at is not None)
        body.extend(_text(md(note), isSubtle=True, spacing="Small") for note in card.notes[:3])
        rendered = _card(body, *_actions(card.ticket_id, card.actions[:actions], link=card.link, number=card.number))
        # Full width: facts and a long description read badly in Teams' narrow default bubble.
        rendered["msteams"] = {"width": "Full"}
        return rendered

    return _shrink_to_fit(render, (len(card.description), len(card.facts), len(card.actions)))


def notice_card(notice: Notice) -> Card:
    """A short notice about a ticket: headline, optional body and author, facts, actions."""
    body_text = spans(notice.body) if notice.body else ()

    def render(body_chars: int, facts: int, actions: int) -> Card:
        head = md(notice.headline, MAX_SUMMARY)
        body: list[dict[str, Any]] = [
            _text(f"{escape_markdown(notice.number)} · {head}" if notice.numbered else head, weight="Bolder"),
        ]
        if body_text:
            body.append(_text(_cut_rich(body_text, body_chars, notice.number)))
        if notice.author:
            body.append(_text(f"— {md(notice.author, MAX_SUMMARY)}", isSubtle=True, spacing="Small"))
        if notice.facts[:facts]:
            body.append(_fact_set(notice.facts[:facts]))
        return _card(body, *_actions(notice.ticket_id, notice.actions[:actions]))

    return _shrink_to_fit(render, (text_length(body_text), len(notice.facts), len(notice.actions)))


def notice_summary(notice: Notice) -> str:
    """The activity ``summary``/``text`` Teams shows in notifications: number, headline and body."""
    text = f"{notice.number} · {plain(notice.headline)}" if notice.numbered else plain(notice.headline)
    if notice.body:
        text += (" " if text.rstrip().endswith(":") else " — ") + plain(notice.body)
    return plain_text(text, 400)


def survey_card(survey: Survey) -> Card:
    """The satisfaction poll; each button submits ``{action, value, ticket_id}``."""
    body: list[dict[str, Any]] = [_text(md(survey.headline), weight="Bolder")]
    body.extend(_text(md(line)) for line in survey.details)
    if survey.actions and survey.expires_at is not None:
        body.append(_text(md(("You can change your answer until ", survey.expires_at, ".")), isSubtle=True,
                          size="Small"))
    return _card(body, *_actions(survey.ticket_id, survey.actions))


def pulse_card(pulse: Pulse) -> Card:
    """A one-question pulse (NPS); the score buttons sit in the body in rows of six (Teams shows at most six
    actions in a row), each submitting ``{action, value}`` with value ``<pulse id>:<score>``."""
    body: list[dict[str, Any]] = [_text(md(pulse.headline), weight="Bolder")]
    body.extend(_text(md(line), isSubtle=True) for line in pulse.details)
    if pulse.actions:
        if pulse.scale:
            body.append(_text(md(f"{pulse.scale[0]} · {pulse.scale[1]}"), isSubtle=True, size="Small"))
        for start in range(0, len(pulse.actions), 6):
            body.append({"type": "ActionSet", "actions": [_pulse_submit(action)
                                                          for action in pulse.actions[start:start + 6]]})
        if pulse.expires_at is not None:
            body.append(_text(md(("You can change your answer until ", pulse.expires_at, ".")), isSubtle=True,
                              size="Small"))
    return _card(body)


def _pulse_submit(action: CardAction) -> dict[str, Any]:
    submit: dict[str, Any] = {"type": "Action.Submit", "title": _clip(action.label, MAX_BUTTON_TITLE),
                              "data": {"action": action.action.value, "value": action.value}}
    if action.style in _BUTTON_STYLES:
        submit["style"] = _BUTTON_STYLES[action.style]
    return submit


def digest_card(digest: Digest) -> Card:
    """A container per ticket, its button an ActionSet submitting ``{action, value, ticket_id}``."""
    body: list[dict[str, Any]] = [_text(md(digest.title, MAX_SUMMARY), weight="Bolder", size="Medium")]
    if digest.intro:
        body.append(_text(md(digest.intro), isSubtle=True))
    for section in digest.sections:
        if section.heading:
            body.append(_text(md(section.heading, MAX_SUMMARY), weight="Bolder", separator=True))
        for line in section.lines:
            items: list[dict[str, Any]] = [
                _text(f"**{escape_markdown(line.number)}** · {md(line.summary, 150)}"),
                _text(md(line.detail), isSubtle=True)]
            if line.action is not None:
                items.append({"type": "ActionSet", "actions": [_submit(line.ticket_id, line.action)]})
            body.append({"type": "Container", "separator": True, "items": items})
        if section.more:
            body.append(_text(f"…and {section.more} more.", isSubtle=True))
    if digest.footer:
        body.append(_text(md(digest.footer), isSubtle=True, size="Small"))
    return _card(body)


def summary_card(summary: Summary) -> Card:
    body = [_text(md(summary.title, MAX_SUMMARY), weight="Bolder", size="Medium"),
            *(_text(md(line)) for line in summary.lines)]
    if summary.footnote:
        body.append(_text(md(summary.footnote), isSubtle=True, size="Small"))
    return _card(body)


def text_card(text: Text) -> Card:
    """A card that is only text (answers, reminders)."""
    return _card([_text(md(text, 20_000))])


def ticket_list_card(listing: TicketList) -> Card:
    """Titled groups of tickets; each ticket opens its link when tapped."""
    groups = [(title, items) for title, items in listing.sections if items]
    total = sum(len(items) for _, items in groups)

    def render(shown: int) -> Card:
        body: list[dict[str, Any]] = [_text(md(listing.title, MAX_SUMMARY), weight="Bolder", size="Medium")]
        body.extend(_text(md(line)) for line in listing.intro[:MAX_INTRO_LINES])
        if not groups:
            body.append(_text(md(listing.empty_text)))
        room = shown
        for title, items in groups:
            if room <= 0:
                break
            body.append(_text(md(title, MAX_SUMMARY), weight="Bolder", separator=True))
            body.extend(_list_item(item) for item in items[:room])
            room -= len(items)
        if shown < total:
            body.append(_text(f"…and {total - shown} more not shown here.", isSubtle=True))
        return _card(body, *(_submit(0, action) for action in listing.actions))

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


def _cut(text: str, keep: int, number: str) -> str:
    return _cut_rich((text,), keep, number)


def _cut_rich(text: tuple[Link | Moment | str, ...], keep: int, number: str) -> str:
    if keep >= text_length(text):
        return md(text, keep)
    return md(text, keep) + f"\n\n_(truncated — full text kept in {escape_markdown(number)})_"


def _fact_set(facts: Sequence[Fact]) -> dict[str, Any]:
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
    details: list[Link | Moment | str] = [item.status_label]
    if item.assignee:
        details.append(f" · with {item.assignee}")
    if item.next_update:
        details.extend((" · next update ", *spans(item.next_update)))
    container: dict[str, Any] = {
        "type": "Container",
        "items": [
            _text(f"{escape_markdown(item.number)} · {md(item.summary, MAX_SUMMARY)}", weight="Bolder"),
            _text(md(tuple(details)), isSubtle=True, spacing="None"),
        ],
    }
    if item.link:
        container["selectAction"] = {"type": "Action.OpenUrl", "url": item.link}
    return container
