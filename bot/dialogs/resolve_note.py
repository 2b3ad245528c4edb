"""The resolution note asked for when an agent resolves a ticket: a Slack modal and a Teams card form."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.renderers.teams_card_markdown import escape_markdown
from bot.renderers.teams_card_parts import SCHEMA_URL, VERSION
from bot.routing import Form

NOTE_BLOCK = "note"
INPUT_ACTION = "input"
NOTE_REQUIRED = "Please say what fixed it, so the requester knows."

# Slack's ceilings for a modal title and a plain_text_input.
_SLACK_TITLE_MAX = 24
_SLACK_NOTE_MAX = 3000


def slack_modal(ticket_id: int, number: str, *, note: str = "") -> dict[str, Any]:
    """The modal view; the ticket id rides in ``private_metadata`` and comes back on submission."""
    element: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": INPUT_ACTION,
        "multiline": True,
        "max_length": _SLACK_NOTE_MAX,
        "placeholder": {"type": "plain_text", "text": "What was wrong and what fixed it"},
    }
    if note:
        element["initial_value"] = note[:_SLACK_NOTE_MAX]
    return {
        "type": "modal",
        "callback_id": Form.RESOLVE_NOTE.value,
        "private_metadata": str(ticket_id),
        "title": {"type": "plain_text", "text": f"Resolve {number}"[:_SLACK_TITLE_MAX]},
        "submit": {"type": "plain_text", "text": "Resolve"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": NOTE_BLOCK,
                "label": {"type": "plain_text", "text": "Resolution note"},
                "element": element,
            }
        ],
    }


def parse_slack_submission(values: Mapping[str, Any]) -> str:
    """The note from ``view.state.values``; the ticket id is ``int(view["private_metadata"])``."""
    state: Mapping[str, Any] = values.get(NOTE_BLOCK, {}).get(INPUT_ACTION) or {}
    return str(state.get("value") or "").strip()


def slack_errors(note: str) -> dict[str, str]:
    """Errors by block id for ``response_action: errors``: Slack lets a note of only spaces through."""
    return {} if note.strip() else {NOTE_BLOCK: NOTE_REQUIRED}


def teams_form(ticket_id: int, number: str, *, error: str | None = None, note: str = "") -> dict[str, Any]:
    """The Adaptive Card form; ``note`` prefills the input when a submission is shown again."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": f"Resolve {escape_markdown(number)}", "weight": "Bolder", "wrap": True},
    ]
    if error:
        body.append({"type": "TextBlock", "text": escape_markdown(error), "color": "Attention", "wrap": True})
    note_input: dict[str, Any] = {
        "type": "Input.Text",
        "id": NOTE_BLOCK,
        "label": "Resolution note",
        "isMultiline": True,
        "isRequired": True,
        "errorMessage": NOTE_REQUIRED,
        "placeholder": "What was wrong and what fixed it",
    }
    if note:
        note_input["value"] = note
    body.append(note_input)
    return {
        "type": "AdaptiveCard",
        "$schema": SCHEMA_URL,
        "version": VERSION,
        "body": body,
        "actions": [
            {
                "type": "Action.Submit",
                "title": "Resolve",
                "data": {"form": Form.RESOLVE_NOTE.value, "ticket_id": ticket_id},
            }
        ],
    }


def parse_teams_submission(value: Mapping[str, Any]) -> tuple[int, str]:
    """``(ticket_id, note)`` from the activity ``value`` of a submitted form."""
    return int(value["ticket_id"]), str(value.get(NOTE_BLOCK) or "").strip()


def teams_error(note: str) -> str | None:
    """The message to show above the form, or ``None`` when the note is fine."""
    return None if note.strip() else NOTE_REQUIRED
