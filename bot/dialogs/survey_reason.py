"""The "Tell us what went wrong" form after a 👎: a Slack modal and a Teams card form, each beside its reader."""

from __future__ import annotations

from typing import Any

from bot.renderers.slack_mrkdwn import escape_mrkdwn
from bot.renderers.teams_card_markdown import escape_markdown
from bot.renderers.teams_card_parts import SCHEMA_URL, VERSION
from bot.routing import Form

REASONS: tuple[tuple[str, str], ...] = (
    ("not_fixed", "The problem isn't fixed"),
    ("too_slow", "It took too long"),
    ("not_informed", "I wasn't kept informed"),
    ("hard_to_follow", "The fix was hard to follow"),
    ("other", "Something else"),
)
REASON_LABELS = dict(REASONS)
MAX_COMMENT = 2000
REASON_BLOCK, REASON_INPUT = "reason", "reason"
COMMENT_BLOCK, COMMENT_INPUT = "comment", "comment"


def _intro(number: str) -> str:
    return f"Sorry {number} didn't go well. Tell us what went wrong and we'll look into it."


def _ticket_id(raw: object) -> int:
    text = str(raw or "")
    # Only ASCII digits name a ticket ("١٢" and "²" are digits to str.isdigit, not to us).
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise ValueError(f"{text[:20]!r} is not a ticket number")
    return int(text)


def slack_modal(ticket_id: int, number: str) -> dict[str, Any]:
    """The modal; ``private_metadata`` carries the ticket id."""
    return {
        "type": "modal",
        "callback_id": Form.SURVEY_REASON.value,
        "private_metadata": str(ticket_id),
        "title": {"type": "plain_text", "text": "What went wrong?"},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": escape_mrkdwn(_intro(number))}},
            {"type": "input", "block_id": REASON_BLOCK, "label": {"type": "plain_text", "text": "What went wrong"},
             "element": {"type": "static_select", "action_id": REASON_INPUT,
                         "placeholder": {"type": "plain_text", "text": "Choose one"},
                         "options": [{"text": {"type": "plain_text", "text": label}, "value": value}
                                     for value, label in REASONS]}},
            {"type": "input", "block_id": COMMENT_BLOCK, "optional": True,
             "label": {"type": "plain_text", "text": "Anything else? (optional)"},
             "element": {"type": "plain_text_input", "action_id": COMMENT_INPUT, "multiline": True,
                         "max_length": MAX_COMMENT}},
        ],
    }


def read_slack(view_payload: dict[str, Any]) -> tuple[int, str, str]:
    """(ticket id, reason, comment as typed) from a ``view_submission`` of the modal."""
    values = view_payload.get("state", {}).get("values", {})
    selected = values.get(REASON_BLOCK, {}).get(REASON_INPUT, {}).get("selected_option") or {}
    comment = values.get(COMMENT_BLOCK, {}).get(COMMENT_INPUT, {}).get("value") or ""
    return _ticket_id(view_payload.get("private_metadata")), str(selected.get("value") or ""), str(comment)


def teams_card(ticket_id: int, number: str) -> dict[str, Any]:
    """The Teams form: a choice, a comment, and a submit tagged ``form: survey_reason``."""
    return {
        "type": "AdaptiveCard", "$schema": SCHEMA_URL, "version": VERSION,
        "body": [
            {"type": "TextBlock", "wrap": True, "text": escape_markdown(_intro(number))},
            {"type": "Input.ChoiceSet", "id": REASON_INPUT, "label": "What went wrong", "isRequired": True,
             "errorMessage": "Choose one", "style": "compact",
             "choices": [{"title": label, "value": value} for value, label in REASONS]},
            {"type": "Input.Text", "id": COMMENT_INPUT, "label": "Anything else? (optional)", "isMultiline": True,
             "maxLength": MAX_COMMENT},
        ],
        "actions": [{"type": "Action.Submit", "title": "Send",
                     "data": {"form": Form.SURVEY_REASON.value, "ticket_id": ticket_id}}],
    }


def read_teams(data: dict[str, Any]) -> tuple[int, str, str]:
    """(ticket id, reason, comment as typed) from the Teams card's submitted ``value``."""
    return _ticket_id(data.get("ticket_id")), str(data.get(REASON_INPUT) or ""), str(data.get(COMMENT_INPUT) or "")
