"""The "new ticket" form: a Slack modal and a Teams Adaptive Card, each next to the code that reads it back.

Both ask the same things (summary, description, category, urgency) and both come back as a ``NewTicketDraft``.
A draft can prefill either form, so a rejected submission is shown again with nothing the person typed lost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.renderers.teams_card_markdown import escape_markdown
from bot.renderers.teams_card_parts import SCHEMA_URL, VERSION
from bot.routing import Form

SUMMARY_BLOCK = "summary"
DESCRIPTION_BLOCK = "description"
CATEGORY_BLOCK = "category"
URGENCY_BLOCK = "urgency"
# Slack needs an action_id per input; one per block is enough, so all inputs share it.
INPUT_ACTION = "input"

SUMMARY_MAX = 300
# Slack's ceiling for plain_text_input.
SLACK_DESCRIPTION_MAX = 3000
SUMMARY_REQUIRED = "Please describe the problem in a few words."

_SLACK_OPTION_TEXT_MAX = 75
_SLACK_OPTIONS_MAX = 100
_ELLIPSIS = "…"


@dataclass(frozen=True)
class NewTicketDraft:
    """What the person has typed so far; ``category``/``urgency`` are ``None`` when not chosen."""

    summary: str
    description: str
    category: str | None
    urgency: str | None


def slack_modal(
    categories: Sequence[str],
    priorities: Mapping[str, str],
    *,
    draft: NewTicketDraft | None = None,
    private_metadata: str = "",
) -> dict[str, Any]:
    """The modal view for ``views.open``/``views.update``; ``priorities`` maps code to label."""
    blocks: list[dict[str, Any]] = [
        _slack_text_input(
            SUMMARY_BLOCK,
            "Summary",
            draft.summary if draft else "",
            max_length=SUMMARY_MAX,
            placeholder="e.g. Printer on floor 3 is jammed",
        ),
        _slack_text_input(
            DESCRIPTION_BLOCK,
            "Description",
            draft.description if draft else "",
            max_length=SLACK_DESCRIPTION_MAX,
            placeholder="What happened, what you expected, anything you already tried",
            multiline=True,
            optional=True,
        ),
    ]
    if categories:
        blocks.append(
            _slack_select(CATEGORY_BLOCK, "Category", {c: c for c in categories}, draft.category if draft else None)
        )
    if priorities:
        blocks.append(_slack_select(URGENCY_BLOCK, "Urgency", priorities, draft.urgency if draft else None))
    return {
        "type": "modal",
        "callback_id": Form.NEW_TICKET.value,
        "private_metadata": private_metadata,
        "title": {"type": "plain_text", "text": "New IT ticket"},
        "submit": {"type": "plain_text", "text": "Create ticket"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks,
    }


def parse_slack_submission(values: Mapping[str, Any]) -> NewTicketDraft:
    """Read ``view.state.values`` from a ``view_submission``."""

    def field(block: str) -> Mapping[str, Any]:
        state: Mapping[str, Any] = values.get(block, {}).get(INPUT_ACTION) or {}
        return state

    def selected(block: str) -> str | None:
        option = field(block).get("selected_option")
        return str(option["value"]) if option else None

    return NewTicketDraft(
        summary=(field(SUMMARY_BLOCK).get("value") or "").strip(),
        description=(field(DESCRIPTION_BLOCK).get("value") or "").strip(),
        category=selected(CATEGORY_BLOCK),
        urgency=selected(URGENCY_BLOCK),
    )


def slack_errors(draft: NewTicketDraft) -> dict[str, str]:
    """Errors by block id for ``{"response_action": "errors", "errors": ...}``; empty when the draft is fine."""
    error = _problem(draft)
    return {SUMMARY_BLOCK: error} if error else {}


def teams_form(
    categories: Sequence[str],
    priorities: Mapping[str, str],
    *,
    draft: NewTicketDraft | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The Adaptive Card form; ``error`` is shown above the inputs when a submission was rejected."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": "New IT ticket", "weight": "Bolder", "size": "Medium", "wrap": True},
    ]
    if error:
        body.append({"type": "TextBlock", "text": escape_markdown(error), "color": "Attention", "wrap": True})
    body.append(
        _teams_input(
            SUMMARY_BLOCK,
            "Summary",
            _clip(draft.summary, SUMMARY_MAX) if draft else "",
            isRequired=True,
            errorMessage=SUMMARY_REQUIRED,
            maxLength=SUMMARY_MAX,
            placeholder="e.g. Printer on floor 3 is jammed",
        )
    )
    body.append(
        _teams_input(
            DESCRIPTION_BLOCK,
            "Description",
            draft.description if draft else "",
            isMultiline=True,
            placeholder="What happened, what you expected, anything you already tried",
        )
    )
    if categories:
        body.append(
            _teams_choices(CATEGORY_BLOCK, "Category", {c: c for c in categories}, draft.category if draft else None)
        )
    if priorities:
        body.append(_teams_choices(URGENCY_BLOCK, "Urgency", priorities, draft.urgency if draft else None))
    return {
        "type": "AdaptiveCard",
        "$schema": SCHEMA_URL,
        "version": VERSION,
        "body": body,
        "actions": [{"type": "Action.Submit", "title": "Create ticket", "data": {"form": Form.NEW_TICKET.value}}],
    }


def parse_teams_submission(value: Mapping[str, Any]) -> NewTicketDraft:
    """Read the activity ``value`` of a submitted form (Teams sends "" for an untouched menu)."""
    return NewTicketDraft(
        summary=str(value.get(SUMMARY_BLOCK) or "").strip(),
        description=str(value.get(DESCRIPTION_BLOCK) or "").strip(),
        category=str(value.get(CATEGORY_BLOCK) or "") or None,
        urgency=str(value.get(URGENCY_BLOCK) or "") or None,
    )


def teams_error(draft: NewTicketDraft) -> str | None:
    """The message to show above the form, or ``None`` when the draft can become a ticket."""
    return _problem(draft)


def _problem(draft: NewTicketDraft) -> str | None:
    return None if draft.summary.strip() else SUMMARY_REQUIRED


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(_ELLIPSIS)] + _ELLIPSIS


def _slack_text_input(
    block_id: str,
    label: str,
    initial: str,
    *,
    max_length: int,
    placeholder: str,
    multiline: bool = False,
    optional: bool = False,
) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": INPUT_ACTION,
        "max_length": max_length,
        "multiline": multiline,
        "placeholder": {"type": "plain_text", "text": placeholder},
    }
    if initial:
        # Slack rejects an initial_value longer than max_length, e.g. a long message turned into a ticket.
        element["initial_value"] = _clip(initial, max_length)
    return {
        "type": "input",
        "block_id": block_id,
        "label": {"type": "plain_text", "text": label},
        "optional": optional,
        "element": element,
    }


def _slack_select(block_id: str, label: str, choices: Mapping[str, str], selected: str | None) -> dict[str, Any]:
    options = [
        {"text": {"type": "plain_text", "text": _clip(text, _SLACK_OPTION_TEXT_MAX)}, "value": value}
        for value, text in list(choices.items())[:_SLACK_OPTIONS_MAX]
    ]
    element: dict[str, Any] = {
        "type": "static_select",
        "action_id": INPUT_ACTION,
        "placeholder": {"type": "plain_text", "text": f"Choose {label.lower()}"},
        "options": options,
    }
    initial = next((option for option in options if option["value"] == selected), None)
    if initial:
        element["initial_option"] = initial
    return {
        "type": "input",
        "block_id": block_id,
        "label": {"type": "plain_text", "text": label},
        "optional": True,
        "element": element,
    }


def _teams_input(input_id: str, label: str, value: str, **options: Any) -> dict[str, Any]:
    field: dict[str, Any] = {"type": "Input.Text", "id": input_id, "label": label, **options}
    if value:
        field["value"] = value
    return field


def _teams_choices(input_id: str, label: str, choices: Mapping[str, str], selected: str | None) -> dict[str, Any]:
    field: dict[str, Any] = {
        "type": "Input.ChoiceSet",
        "id": input_id,
        "label": label,
        "style": "compact",
        "placeholder": f"Choose {label.lower()}",
        "choices": [{"title": title, "value": value} for value, title in choices.items()],
    }
    if selected in choices:
        field["value"] = selected
    return field
