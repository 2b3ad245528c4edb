"""Renderers and forms: what Slack and Teams receive is valid, within limits, and safe from what users type."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import adaptive_cards
import pytest
from jsonschema import Draft6Validator
from jsonschema.exceptions import best_match
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bot.dialogs import new_ticket, resolve_note
from bot.dialogs.new_ticket import NewTicketDraft
from bot.renderers.slack_block_parts import MAX_FIELD_TEXT, MAX_HOME_BLOCKS, MAX_MESSAGE_BLOCKS, ticket_id_from_block_id
from bot.renderers.slack_mrkdwn import MAX_FALLBACK, MAX_SECTION_TEXT, escape_mrkdwn
from bot.renderers.slack_notice_blocks import notice_blocks, notice_text
from bot.renderers.slack_ticket_blocks import home_view, ticket_card_blocks, ticket_card_text, ticket_list_blocks
from bot.renderers.teams_card_markdown import escape_markdown
from bot.renderers.teams_card_parts import MAX_CARD_BYTES, attachment, card_size
from bot.renderers.teams_notice_cards import notice_card
from bot.renderers.teams_ticket_cards import ticket_card, ticket_list_card
from bot.routing import Action, Form
from bot.views import CardAction, Choice, Fact, Notice, TicketCard, TicketList, TicketListItem

PRIORITIES = {"P1": "P1 — Critical", "P2": "P2 — High", "P3": "P3 — Normal", "P4": "P4 — Low"}
CATEGORIES = ["Hardware", "Software", "Access", "Network"]
PING = "<!channel> printer down"
INJECTION = "**bold** [click](http://evil) {{DATE(2020-01-01T00:00:00Z)}}"
ROUTING_ACTIONS = {action.value for action in Action}


# --- factories ---------------------------------------------------------------------------------------------


def make_card(**overrides: Any) -> TicketCard:
    card = TicketCard(
        ticket_id=42,
        number="IT-42",
        summary="Printer on floor 3 is jammed",
        description="It shows error E-13.\nI tried turning it off and on again.",
        audience="triage",
        status="new",
        status_label="New",
        priority="P3",
        priority_label="P3 — Normal",
        facts=(Fact("Requester", "Ada Lovelace"), Fact("Category", "Hardware"), Fact("Assignee", "Unassigned")),
        sla=("First response due in 3h 40m", "Resolution due Thu 26 Nov 17:00"),
        escalation="Escalated to level 2: on-call desk lead",
        link="https://helpdesk.example.com/tickets/42?tab=activity&x=1",
        actions=(
            CardAction(Action.CLAIM, "Claim", "42", style="primary"),
            CardAction(Action.RESOLVE, "Resolve", "42", style="danger"),
            CardAction(
                Action.PRIORITY,
                "Priority",
                "42",
                choices=tuple(Choice(label, code) for code, label in PRIORITIES.items()),
                selected="P3",
            ),
        ),
        updated_at=datetime(2026, 11, 23, 9, 30, tzinfo=UTC),
    )
    return dataclasses.replace(card, **overrides)


def make_notice(**overrides: Any) -> Notice:
    notice = Notice(
        ticket_id=42,
        number="IT-42",
        headline="Ada commented",
        body="Still jammed after the reboot.",
        author="Ada Lovelace",
        facts=(Fact("Status", "In progress"),),
        actions=(CardAction(Action.REOPEN, "Reopen", "42"),),
    )
    return dataclasses.replace(notice, **overrides)


def make_listing(items: int = 3, **overrides: Any) -> TicketList:
    tickets = tuple(
        TicketListItem(
            number=f"IT-{n}",
            summary=f"Ticket number {n}",
            status_label="In progress",
            assignee="Grace",
            next_update="in 2h",
            link=f"https://helpdesk.example.com/tickets/{n}",
        )
        for n in range(items)
    )
    listing = TicketList(
        title="Your tickets", sections=(("Open", tickets[: items // 2]), ("Waiting", tickets[items // 2 :]))
    )
    return dataclasses.replace(listing, **overrides)


def make_draft(**overrides: Any) -> NewTicketDraft:
    draft = NewTicketDraft(
        summary="VPN drops every hour", description="Since Monday.", category="Network", urgency="P2"
    )
    return dataclasses.replace(draft, **overrides)


# --- checks ------------------------------------------------------------------------------------------------


def assert_valid_blocks(blocks: list[dict[str, Any]], *, max_blocks: int = MAX_MESSAGE_BLOCKS) -> None:
    assert 0 < len(blocks) <= max_blocks
    for block in blocks:
        parsed = Block.parse(block)
        assert parsed is not None, block
        parsed.validate_json()
        # slack_sdk does not check section fields one by one.
        for field in block.get("fields", []):
            assert len(field["text"]) <= MAX_FIELD_TEXT


@cache
def adaptive_card_validator() -> Draft6Validator:
    schema_path = Path(adaptive_cards.__file__).parent / "schemas" / "schema-1.5.json"
    return Draft6Validator(json.loads(schema_path.read_text()))


def assert_valid_card(card: dict[str, Any]) -> None:
    # "msteams" is a Teams extension the official schema does not know.
    standard = {key: value for key, value in card.items() if key != "msteams"}
    errors = list(adaptive_card_validator().iter_errors(standard))
    assert not errors, best_match(errors).message
    assert card_size(card) <= MAX_CARD_BYTES


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def dicts(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from dicts(value)
    elif isinstance(node, list):
        for item in node:
            yield from dicts(item)


def text_blocks(card: dict[str, Any]) -> list[str]:
    return [node["text"] for node in dicts(card) if node.get("type") == "TextBlock"]


def slack_state(**fields: dict[str, Any]) -> dict[str, Any]:
    """``view.state.values`` as Slack sends it: block id -> action id -> element state."""
    return {block: {new_ticket.INPUT_ACTION: state} for block, state in fields.items()}


# --- Slack -------------------------------------------------------------------------------------------------


def test_a_triage_card_is_valid_block_kit_and_every_block_names_its_ticket() -> None:
    blocks = ticket_card_blocks(make_card())

    assert_valid_blocks(blocks)
    assert all(ticket_id_from_block_id(block["block_id"]) == 42 for block in blocks)
    assert "*<https://helpdesk.example.com/tickets/42?tab=activity&amp;x=1|IT-42>*" in blocks[0]["text"]["text"]
    assert ticket_card_text(make_card()) == "IT-42 · Printer on floor 3 is jammed (New, P3 — Normal)"


def test_buttons_and_menus_route_with_routing_ids_and_carry_the_card_values() -> None:
    blocks = ticket_card_blocks(make_card())
    (actions,) = [block for block in blocks if block["type"] == "actions"]
    claim, resolve, priority = actions["elements"]

    assert actions["block_id"] == "ticket:42:actions"
    assert (claim["action_id"], claim["value"], claim["style"]) == (Action.CLAIM.value, "42", "primary")
    assert (resolve["action_id"], resolve["style"]) == (Action.RESOLVE.value, "danger")
    assert priority["type"] == "static_select"
    assert priority["action_id"] == Action.PRIORITY.value
    assert priority["initial_option"] == {
        "text": {"type": "plain_text", "text": "P3 — Normal", "emoji": True},
        "value": "P3",
    }


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        ("<!channel> printer down", "&lt;!channel&gt; printer down"),
        ("ping <@U1>", "ping &lt;@U1&gt;"),
        ("<https://x|y>", "&lt;https://x|y&gt;"),
        ("R&D", "R&amp;D"),
    ],
)
def test_mrkdwn_escaping_shows_what_was_typed(typed: str, shown: str) -> None:
    assert escape_mrkdwn(typed) == shown


def test_a_channel_ping_typed_anywhere_never_reaches_slack_raw() -> None:
    card = make_card(
        summary=PING,
        description=PING,
        facts=(Fact(PING, PING),),
        escalation=PING,
        sla=(PING,),
        status_label=PING,
    )
    notice = make_notice(headline=PING, body=PING, author=PING, facts=(Fact(PING, PING),))
    item = TicketListItem(number="IT-1", summary=PING, status_label=PING, assignee=PING, next_update=PING)
    outputs = [
        ticket_card_blocks(card),
        ticket_card_text(card),
        notice_blocks(notice),
        notice_text(notice),
        ticket_list_blocks(TicketList(title="Yours", sections=(("Open", (item,)),))),
    ]

    rendered = list(strings(outputs))
    assert not [text for text in rendered if "<!channel>" in text]
    assert "IT-42 · &lt;!channel&gt; printer down — &lt;!channel&gt; printer down" in rendered  # a notice's fallback


def test_a_50k_description_is_cut_to_block_kit_limits_and_says_so() -> None:
    # "&<>" triples in length when escaped: the cut must land between entities, not inside one.
    blocks = ticket_card_blocks(make_card(description="&<>" * 16_667))

    assert_valid_blocks(blocks)
    (description,) = [block for block in blocks if block["block_id"] == "ticket:42:description"]
    text = description["text"]["text"]
    assert len(text) <= MAX_SECTION_TEXT
    assert text.endswith("…\n_(truncated — full text kept in IT-42)_")
    assert not re.search(r"&(?!amp;|lt;|gt;)", text)


def test_a_card_with_hundreds_of_facts_and_actions_stays_within_50_blocks() -> None:
    actions = tuple(CardAction(Action.CLAIM, f"Claim {n}", str(n)) for n in range(30))
    facts = tuple(Fact(f"Fact {n}", "x" * 3000) for n in range(600))
    blocks = ticket_card_blocks(make_card(facts=facts, actions=actions))

    assert_valid_blocks(blocks)
    action_blocks = [block for block in blocks if block["type"] == "actions"]
    assert len(blocks) <= 50 and action_blocks[0]["block_id"] == "ticket:42:actions"
    assert len({block["block_id"] for block in action_blocks}) == len(action_blocks)
    # Slack refuses a block whose elements share an action id, so a repeated button starts a new block.
    for block in action_blocks:
        ids = [element["action_id"] for element in block["elements"]]
        assert len(ids) == len(set(ids))


def test_long_labels_are_clipped_to_slack_limits() -> None:
    long = "Very long label " * 20
    card = make_card(
        summary=long * 5,
        actions=(
            CardAction(Action.WAIT, long, "42"),
            CardAction(Action.PRIORITY, long, "42", choices=(Choice(long, "P1"),)),
        ),
    )
    assert_valid_blocks(ticket_card_blocks(card))


def test_a_button_value_too_long_to_route_is_refused_rather_than_cut() -> None:
    card = make_card(actions=(CardAction(Action.CLAIM, "Claim", "9" * 2001),))

    with pytest.raises(ValueError, match="exceeds 2000"):
        ticket_card_blocks(card)


def test_a_notice_is_valid_block_kit() -> None:
    notice = make_notice(body="x" * 10_000)
    blocks = notice_blocks(notice)

    assert_valid_blocks(blocks)
    # The fallback (what notifications show) carries the content, cut to a banner's length.
    assert notice_text(notice).startswith("IT-42 · Ada commented — xxxx")
    assert len(notice_text(notice)) == MAX_FALLBACK
    assert "truncated" in blocks[1]["text"]["text"]


def test_the_home_tab_shows_up_to_100_blocks_and_counts_the_rest() -> None:
    view = home_view(make_listing(items=300))

    View(**view).validate_json()
    assert len(view["blocks"]) == MAX_HOME_BLOCKS
    assert view["blocks"][-1]["elements"][0]["text"] == "…and 203 more not shown here."


def test_a_list_answer_in_a_message_stays_within_50_blocks() -> None:
    blocks = ticket_list_blocks(make_listing(items=80))

    assert_valid_blocks(blocks)
    assert "more not shown" in blocks[-1]["elements"][0]["text"]


def test_an_empty_list_says_so() -> None:
    blocks = ticket_list_blocks(make_listing(items=0, empty_text="No open tickets 🎉"))

    assert_valid_blocks(blocks)
    assert blocks[-1]["text"]["text"] == "No open tickets 🎉"


def test_the_new_ticket_modal_is_a_valid_view_with_routing_callback() -> None:
    view = new_ticket.slack_modal(CATEGORIES, PRIORITIES, private_metadata="C123")

    View(**view).validate_json()
    assert view["callback_id"] == Form.NEW_TICKET.value
    assert [block["block_id"] for block in view["blocks"]] == [
        new_ticket.SUMMARY_BLOCK,
        new_ticket.DESCRIPTION_BLOCK,
        new_ticket.CATEGORY_BLOCK,
        new_ticket.URGENCY_BLOCK,
    ]


def test_a_rejected_modal_comes_back_prefilled_even_from_a_very_long_message() -> None:
    draft = make_draft(summary="s" * 400, description="d" * 5000)
    view = new_ticket.slack_modal(CATEGORIES, PRIORITIES, draft=draft)

    View(**view).validate_json()
    summary, description, category, urgency = (block["element"] for block in view["blocks"])
    assert len(summary["initial_value"]) == new_ticket.SUMMARY_MAX
    assert len(description["initial_value"]) == new_ticket.SLACK_DESCRIPTION_MAX
    assert category["initial_option"]["value"] == "Network"
    assert urgency["initial_option"] == {"text": {"type": "plain_text", "text": "P2 — High"}, "value": "P2"}


def test_a_modal_submission_reads_back_as_a_draft() -> None:
    values = slack_state(
        summary={"type": "plain_text_input", "value": "  VPN drops every hour "},
        description={"type": "plain_text_input", "value": None},
        category={"type": "static_select", "selected_option": {"text": {"text": "Network"}, "value": "Network"}},
        urgency={"type": "static_select", "selected_option": None},
    )

    draft = new_ticket.parse_slack_submission(values)

    assert draft == NewTicketDraft(summary="VPN drops every hour", description="", category="Network", urgency=None)
    assert new_ticket.slack_errors(draft) == {}


def test_a_blank_summary_is_sent_back_as_a_field_error() -> None:
    draft = new_ticket.parse_slack_submission(slack_state(summary={"type": "plain_text_input", "value": "   "}))

    assert new_ticket.slack_errors(draft) == {"summary": "Please describe the problem in a few words."}


def test_the_resolve_note_modal_carries_the_ticket_and_reads_back_the_note() -> None:
    view = resolve_note.slack_modal(42, "IT-42")

    View(**view).validate_json()
    assert (view["callback_id"], view["private_metadata"]) == (Form.RESOLVE_NOTE.value, "42")
    note = resolve_note.parse_slack_submission(
        {resolve_note.NOTE_BLOCK: {resolve_note.INPUT_ACTION: {"type": "plain_text_input", "value": " Replaced drum "}}}
    )
    assert note == "Replaced drum"
    assert resolve_note.slack_errors("  ") == {resolve_note.NOTE_BLOCK: resolve_note.NOTE_REQUIRED}


# --- Teams -------------------------------------------------------------------------------------------------


def test_every_teams_card_validates_against_the_adaptive_card_1_5_schema() -> None:
    cards = [
        ticket_card(make_card()),
        ticket_card(make_card(facts=(), sla=(), escalation=None, link=None, actions=(), updated_at=None)),
        notice_card(make_notice()),
        notice_card(make_notice(body=None, author=None, facts=(), actions=())),
        ticket_list_card(make_listing()),
        ticket_list_card(make_listing(items=0)),
        new_ticket.teams_form(CATEGORIES, PRIORITIES),
        new_ticket.teams_form(CATEGORIES, PRIORITIES, draft=make_draft(), error="Something went wrong"),
        resolve_note.teams_form(42, "IT-42"),
        resolve_note.teams_form(42, "IT-42", error=resolve_note.NOTE_REQUIRED, note="half written"),
    ]
    for card in cards:
        assert_valid_card(card)


def test_the_attachment_wrapper_names_the_adaptive_card_content_type() -> None:
    card = notice_card(make_notice())

    assert attachment(card) == {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}


def test_buttons_and_the_priority_menu_submit_routing_ids_with_the_ticket() -> None:
    card = ticket_card(make_card())
    claim, resolve, priority, open_link = card["actions"]

    assert claim["data"] == {"action": Action.CLAIM.value, "value": "42", "ticket_id": 42}
    assert (claim["style"], resolve["style"]) == ("positive", "destructive")
    (choice_set,) = priority["card"]["body"]
    assert (choice_set["id"], choice_set["value"]) == ("priority", "P3")
    assert priority["card"]["actions"][0]["data"]["action"] == Action.PRIORITY.value
    assert open_link == {"type": "Action.OpenUrl", "title": "Open IT-42", "url": make_card().link}


def test_every_action_id_on_every_card_comes_from_routing() -> None:
    card = make_card(actions=tuple(CardAction(action, action.name, "42") for action in Action))
    slack_ids = [node["action_id"] for node in dicts(ticket_card_blocks(card)) if "action_id" in node]
    teams_ids = [node["action"] for node in dicts(ticket_card(card)) if "action" in node]

    assert sorted(slack_ids) == sorted(teams_ids) == sorted(ROUTING_ACTIONS)


@pytest.mark.parametrize(
    ("typed", "neutral"),
    [
        ("**bold**", r"\*\*bold\*\*"),
        ("[click](http://evil)", r"\[click\]\(http://evil\)"),
        ("{{DATE(2020-01-01T00:00:00Z)}}", "{\u200b{DATE\\(2020-01-01T00:00:00Z\\)}\u200b}"),
        ("{{{TIME(2020-01-01T00:00:00Z)}}}", "{\u200b{\u200b{TIME\\(2020-01-01T00:00:00Z\\)}\u200b}\u200b}"),
        ("- item\n1. first\n# title\n> quote", "\\- item\n\n1\\. first\n\n\\# title\n\n\\> quote"),
        ("`code` snake_case", r"\`code\` snake\_case"),
        ("bell\x07 and \u202egnirts", "bell and gnirts"),
    ],
)
def test_teams_markdown_escaping_keeps_user_text_literal(typed: str, neutral: str) -> None:
    assert escape_markdown(typed) == neutral


def test_markdown_and_date_functions_typed_by_a_user_are_neutralised_on_the_card() -> None:
    card = ticket_card(
        make_card(summary=INJECTION, description=INJECTION, escalation=INJECTION, facts=(Fact("Note", INJECTION),))
    )
    user_texts = [*text_blocks(card), *(fact["value"] for node in dicts(card) for fact in node.get("facts", []))]

    assert_valid_card(card)
    for text in user_texts:
        if "bold" in text:
            assert "**" not in text and "](" not in text and "{{" not in text
    # The card's own "Updated" line still uses the function, so Teams localises it.
    assert "Updated {{DATE(2026-11-23T09:30:00Z, SHORT)}} {{TIME(2026-11-23T09:30:00Z)}}" in user_texts


def test_a_100kb_description_is_cut_to_fit_40kb_keeping_facts_and_actions() -> None:
    # Non-ASCII and quotes grow when JSON-escaped; the budget must count the bytes actually sent.
    original = make_card()
    card = ticket_card(make_card(description='é"\\' * 34_000))

    assert_valid_card(card)
    assert 35_000 < card_size(card) <= MAX_CARD_BYTES
    assert any("(truncated — full text kept in IT-42)" in text for text in text_blocks(card))
    assert len(card["actions"]) == len(original.actions) + 1
    assert any(node.get("type") == "FactSet" for node in card["body"])


def test_facts_then_actions_give_way_when_the_description_alone_is_not_enough() -> None:
    facts = tuple(Fact(f"Fact {n}", "v" * 1000) for n in range(100))
    card = ticket_card(make_card(description="d" * 100_000, facts=facts))

    assert_valid_card(card)
    (fact_set,) = [node for node in card["body"] if node.get("type") == "FactSet"]
    assert 0 < len(fact_set["facts"]) < 100


def test_a_long_notice_body_is_cut_to_fit() -> None:
    card = notice_card(make_notice(body="b" * 100_000))

    assert_valid_card(card)
    assert any("truncated" in text for text in text_blocks(card))


def test_a_huge_list_card_shows_what_fits_and_counts_the_rest() -> None:
    card = ticket_list_card(make_listing(items=2000))

    assert_valid_card(card)
    assert re.fullmatch(r"…and \d+ more not shown here\.", text_blocks(card)[-1])


def test_the_new_ticket_form_keeps_what_was_typed_when_shown_again() -> None:
    card = new_ticket.teams_form(CATEGORIES, PRIORITIES, draft=make_draft(), error="Please try again")
    inputs = {node["id"]: node for node in card["body"] if "id" in node}

    assert card["body"][1] == {"type": "TextBlock", "text": "Please try again", "color": "Attention", "wrap": True}
    assert inputs["summary"]["value"] == "VPN drops every hour"
    assert inputs["summary"]["isRequired"] is True
    assert inputs["description"]["isMultiline"] is True
    assert (inputs["category"]["value"], inputs["urgency"]["value"]) == ("Network", "P2")
    assert card["actions"][0]["data"] == {"form": Form.NEW_TICKET.value}


def test_a_teams_submission_reads_back_as_a_draft_and_blank_menus_mean_none() -> None:
    value = {"form": Form.NEW_TICKET.value, "summary": " ", "description": "x", "category": "", "urgency": "P1"}

    draft = new_ticket.parse_teams_submission(value)

    assert draft == NewTicketDraft(summary="", description="x", category=None, urgency="P1")
    assert new_ticket.teams_error(draft) == new_ticket.SUMMARY_REQUIRED
    assert new_ticket.teams_error(make_draft()) is None


def test_the_resolve_note_form_submits_the_ticket_and_reads_back_the_note() -> None:
    card = resolve_note.teams_form(42, "IT-42", note="Replaced drum")

    assert card["actions"][0]["data"] == {"form": Form.RESOLVE_NOTE.value, "ticket_id": 42}
    assert resolve_note.parse_teams_submission({**card["actions"][0]["data"], "note": " Replaced drum "}) == (
        42,
        "Replaced drum",
    )
    assert resolve_note.teams_error("") == resolve_note.NOTE_REQUIRED
