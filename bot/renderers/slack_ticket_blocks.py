"""Block Kit for tickets: the ticket card, ticket lists and the App Home tab, and the reaction that marks an
agent's message in a ticket's triage thread. Every message's fallback ``text`` carries its content, escaped like
the blocks."""

from __future__ import annotations

from typing import Any

from bot.renderers.slack_block_parts import (
    MAX_ACTION_ELEMENTS,
    MAX_CONTEXT_ELEMENTS,
    MAX_HOME_BLOCKS,
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
    mrkdwn_link,
    truncation_note,
)
from bot.views import MAX_INTRO_LINES, Link, Moment, Text, TicketCard, TicketList, TicketListItem, spans


def ticket_card_blocks(card: TicketCard) -> list[Block]:
    """The ticket card: headline, facts, description, SLA/escalation context, then buttons and menus."""
    head = section_block(
        f"*{mrkdwn_link(card.link, card.number)}* · {mrkdwn(card.summary, MAX_SUMMARY)}\n"
        f"{escape_mrkdwn(card.status_label)} · {escape_mrkdwn(card.priority_label)}",
        ticket_block_id(card.ticket_id, "head"),
    )
    description = _description_section(card)
    context = _ticket_context(card)
    notes = [context_block(mrkdwn(note), ticket_block_id(card.ticket_id, f"note:{n}"))
             for n, note in enumerate(card.notes[:3])]
    rest = [*([description] if description else []), *([context] if context else []), *notes]
    rest.extend(action_blocks(card.ticket_id, card.actions))
    facts = fact_sections(card.ticket_id, card.facts, max_sections=MAX_MESSAGE_BLOCKS - 1 - len(rest))
    return [head, *facts, *rest]


def ticket_card_text(card: TicketCard) -> str:
    """Fallback ``text``: number, summary and where it stands."""
    return mrkdwn((f"{card.number} · {card.summary} ({card.status_label}, {card.priority_label})",), MAX_FALLBACK)


def _description_section(card: TicketCard) -> Block | None:
    if not card.description.strip():
        return None
    text = mrkdwn(card.description, MAX_SECTION_TEXT, note=truncation_note(card.number))
    return section_block(text, ticket_block_id(card.ticket_id, "description"))


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
    return {"type": "context", "block_id": ticket_block_id(card.ticket_id, "context"),
            "elements": elements[:MAX_CONTEXT_ELEMENTS]}


def ticket_list_blocks(listing: TicketList, *, max_blocks: int = MAX_MESSAGE_BLOCKS) -> list[Block]:
    """Titled groups of tickets, one section per ticket; what does not fit in ``max_blocks`` is counted, not shown."""
    blocks: list[Block] = [header(listing.title)]
    blocks.extend(section_block(mrkdwn(line)) for line in listing.intro[:MAX_INTRO_LINES])
    if listing.actions:
        blocks.append({"type": "actions", "block_id": "home:actions",
                       "elements": [button_element(action) for action in listing.actions[:MAX_ACTION_ELEMENTS]]})
    groups = [(title, items) for title, items in listing.sections if items]
    if not groups:
        return [*blocks, section_block(mrkdwn(listing.empty_text))]
    # One block stays free for the "and N more" line.
    room = max_blocks - len(blocks) - 1
    hidden = 0
    for title, items in groups:
        if room < 2:
            hidden += len(items)
            continue
        blocks.append(section_block(f"*{mrkdwn(title, MAX_SUMMARY)}*"))
        room -= 1
        shown = items[:room]
        blocks.extend(section_block(_list_item_text(item)) for item in shown)
        room -= len(shown)
        hidden += len(items) - len(shown)
    if hidden:
        blocks.append(context_block(f"…and {hidden} more not shown here."))
    return blocks


def ticket_list_text(listing: TicketList) -> str:
    """Fallback ``text`` of a ticket list."""
    count = sum(len(items) for _, items in listing.sections)
    # The intro (known issues, a welcome) comes first: it is what a notification should show.
    intro = "".join(f"{mrkdwn(line)}\n" for line in listing.intro[:MAX_INTRO_LINES])
    tail = escape_mrkdwn(f"{listing.title} ({count})" if count else f"{listing.title}: {listing.empty_text}")
    return (intro + tail)[:MAX_FALLBACK]


def _list_item_text(item: TicketListItem) -> str:
    details: list[Link | Moment | str] = [item.status_label]
    if item.assignee:
        details.append(f" · with {item.assignee}")
    if item.next_update:
        details.extend((" · next update ", *spans(item.next_update)))
    head = f"*{mrkdwn_link(item.link, item.number)}* · {mrkdwn(item.summary, MAX_SUMMARY)}"
    return f"{head}\n{mrkdwn(tuple(details), 500)}"


def home_view(listing: TicketList) -> dict[str, Any]:
    """The App Home tab for ``views.publish``."""
    return {"type": "home", "blocks": ticket_list_blocks(listing, max_blocks=MAX_HOME_BLOCKS)}


def marker_reaction(internal: bool) -> str:
    """The reaction that marks an agent's triage-thread message: kept internal, or sent to the requester."""
    return "lock" if internal else "incoming_envelope"
