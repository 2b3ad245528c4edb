"""Adaptive Cards for tickets: the ticket card and ticket lists. A card too big for Teams gives up its
description first, then facts, then actions; a list card shows fewer tickets and says how many more there are."""

from __future__ import annotations

from typing import Any

from bot.renderers.teams_card_markdown import MAX_SUMMARY, escape_markdown, md, truncated_md
from bot.renderers.teams_card_parts import (
    Card,
    adaptive_card,
    card_actions,
    fact_set,
    shrink_to_fit,
    submit_action,
    text_block,
)
from bot.views import MAX_INTRO_LINES, Link, Moment, TicketCard, TicketList, TicketListItem, spans


def ticket_card(card: TicketCard) -> Card:
    """The ticket as an Adaptive Card: headline, facts, description, SLA lines, escalation, actions."""

    def render(description: int, facts: int, actions: int) -> Card:
        body: list[dict[str, Any]] = [
            text_block(f"{escape_markdown(card.number)} · {md(card.summary, MAX_SUMMARY)}", weight="Bolder",
                       size="Medium"),
            text_block(f"{escape_markdown(card.status_label)} · {escape_markdown(card.priority_label)}", isSubtle=True),
        ]
        if card.facts[:facts]:
            body.append(fact_set(card.facts[:facts]))
        if card.description.strip():
            body.append(text_block(truncated_md((card.description,), description, card.number)))
        if card.escalation:
            body.append(text_block(md(card.escalation), color="Attention", weight="Bolder"))
        body.extend(text_block(md(line), isSubtle=True, spacing="Small") for line in card.sla)
        body.extend(text_block(md((label, Moment(at, card.zone))), isSubtle=True, spacing="Small")
                    for label, at in (("Opened ", card.opened_at), ("Updated ", card.updated_at)) if at is not None)
        body.extend(text_block(md(note), isSubtle=True, spacing="Small") for note in card.notes[:3])
        buttons = card_actions(card.ticket_id, card.actions[:actions], link=card.link, number=card.number)
        rendered = adaptive_card(body, *buttons)
        # Full width: facts and a long description read badly in Teams' narrow default bubble.
        rendered["msteams"] = {"width": "Full"}
        return rendered

    return shrink_to_fit(render, (len(card.description), len(card.facts), len(card.actions)))


def ticket_list_card(listing: TicketList) -> Card:
    """Titled groups of tickets; each ticket opens its link when tapped."""
    groups = [(title, items) for title, items in listing.sections if items]
    total = sum(len(items) for _, items in groups)

    def render(shown: int) -> Card:
        body: list[dict[str, Any]] = [text_block(md(listing.title, MAX_SUMMARY), weight="Bolder", size="Medium")]
        body.extend(text_block(md(line)) for line in listing.intro[:MAX_INTRO_LINES])
        if not groups:
            body.append(text_block(md(listing.empty_text)))
        room = shown
        for title, items in groups:
            if room <= 0:
                break
            body.append(text_block(md(title, MAX_SUMMARY), weight="Bolder", separator=True))
            body.extend(_list_item(item) for item in items[:room])
            room -= len(items)
        if shown < total:
            body.append(text_block(f"…and {total - shown} more not shown here.", isSubtle=True))
        return adaptive_card(body, *(submit_action(0, action) for action in listing.actions))

    return shrink_to_fit(render, (total,))


def _list_item(item: TicketListItem) -> dict[str, Any]:
    details: list[Link | Moment | str] = [item.status_label]
    if item.assignee:
        details.append(f" · with {item.assignee}")
    if item.next_update:
        details.extend((" · next update ", *spans(item.next_update)))
    container: dict[str, Any] = {
        "type": "Container",
        "items": [
            text_block(f"{escape_markdown(item.number)} · {md(item.summary, MAX_SUMMARY)}", weight="Bolder"),
            text_block(md(tuple(details)), isSubtle=True, spacing="None"),
        ],
    }
    if item.link:
        container["selectAction"] = {"type": "Action.OpenUrl", "url": item.link}
    return container
