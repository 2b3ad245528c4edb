"""The text an agent writes on an incident card: an update for everyone affected ("Post update"), or the
resolution note ("Resolve incident"). A Slack modal and a Teams card form, one shape for both uses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.renderers.teams_card_markdown import escape_markdown
from bot.renderers.teams_card_parts import SCHEMA_URL, VERSION
from bot.routing import Action, Form

NOTE_BLOCK = "incident_note"
INPUT_ACTION = "input"
_SLACK_TITLE_MAX = 24
_SLACK_NOTE_MAX = 3000

_WORDING = {
    Form.INCIDENT_UPDATE: ("Update on", "Post", "Update for everyone affected", "What is known, and what happens next",
                           "Please write the update everyone affected will read."),
    Form.INCIDENT_RESOLVE: ("Resolve", "Resolve", "Resolution note", "What was wrong and what fixed it",
                            "Please say what fixed it, so everyone affected knows."),
}
FORM_OF = {Action.INCIDENT_POST_UPDATE: Form.INCIDENT_UPDATE, Action.INCIDENT_RESOLVE: Form.INCIDENT_RESOLVE}
"""The form each incident card button opens."""


def incident_of(value: str) -> int | None:
    """The incident id in a card button's ``<anchor ticket id>:<incident id>``."""
    tail = value.rsplit(":", 1)[-1]
    return int(tail) if ":" in value and tail.isascii() and tail.isdigit() and len(tail) <= 18 else None


def required(form: Form) -> str:
    return _WORDING[form][4]


def slack_modal(form: Form, incident_id: int, number: str) -> dict[str, Any]:
    """The modal; the incident id rides in ``private_metadata``."""
    verb, submit, label, placeholder, _ = _WORDING[form]
    return {
        "type": "modal",
        "callback_id": form.value,
        "private_metadata": str(incident_id),
        "title": {"type": "plain_text", "text": f"{verb} {number}"[:_SLACK_TITLE_MAX]},
        "submit": {"type": "plain_text", "text": submit},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [{
            "type": "input", "block_id": NOTE_BLOCK, "label": {"type": "plain_text", "text": label},
            "element": {"type": "plain_text_input", "action_id": INPUT_ACTION, "multiline": True,
                        "max_length": _SLACK_NOTE_MAX, "placeholder": {"type": "plain_text", "text": placeholder}},
        }],
    }


def parse_slack(values: Mapping[str, Any]) -> str:
    state: Mapping[str, Any] = values.get(NOTE_BLOCK, {}).get(INPUT_ACTION) or {}
    return str(state.get("value") or "").strip()


def teams_form(form: Form, incident_id: int, number: str, *, error: str | None = None) -> dict[str, Any]:
    verb, submit, label, placeholder, _ = _WORDING[form]
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": escape_markdown(f"{verb} {number}"), "weight": "Bolder", "wrap": True}]
    if error:
        body.append({"type": "TextBlock", "text": escape_markdown(error), "color": "Attention", "wrap": True})
    body.append({"type": "Input.Text", "id": NOTE_BLOCK, "label": label, "isMultiline": True, "isRequired": True,
                 "errorMessage": required(form), "placeholder": placeholder})
    return {"type": "AdaptiveCard", "$schema": SCHEMA_URL, "version": VERSION, "body": body,
            "actions": [{"type": "Action.Submit", "title": submit,
                         "data": {"form": form.value, "incident_id": incident_id}}]}


def parse_teams(value: Mapping[str, Any]) -> tuple[int, str]:
    """``(incident id, text)`` from a submitted Teams form."""
    return int(value["incident_id"]), str(value.get(NOTE_BLOCK) or "").strip()
