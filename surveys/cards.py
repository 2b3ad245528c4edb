"""The survey card as neutral data, rendered for Slack (Block Kit) and Teams (Adaptive Card 1.5).

Also the "Tell us what went wrong" forms: the Slack modal (``callback_id`` ``Form.SURVEY_REASON``) and the
Teams reason card, and the readers for their submissions. User text (summary, comment) is escaped here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.renderers.adaptive_cards import SCHEMA_URL, VERSION, escape_markdown
from bot.renderers.slack_blocks import escape_mrkdwn
from bot.routing import Action, Form

Block = dict[str, Any]
Card = dict[str, Any]

UP, DOWN = "up", "down"
ANSWERS = (UP, DOWN)
EMOJI = {UP: "👍", DOWN: "👎"}
REASONS: tuple[tuple[str, str], ...] = (
    ("not_fixed", "The problem isn't fixed"),
    ("too_slow", "It took too long"),
    ("not_informed", "I wasn't kept informed"),
    ("hard_to_follow", "The fix was hard to follow"),
    ("other", "Something else"),
)
REASON_LABELS = dict(REASONS)
MAX_COMMENT = 2000
MAX_SUMMARY = 200
REASON_BLOCK, REASON_INPUT = "reason", "reason"
COMMENT_BLOCK, COMMENT_INPUT = "comment", "comment"

# View states.
OPEN, ANSWERED, EXPIRED = "open", "answered", "expired"


@dataclass(frozen=True)
class SurveyView:
    """Everything a survey card shows, platform-neutral."""

    ticket_id: int
    number: str
    summary: str
    state: str  # open | answered | expired
    answer: str | None
    expires_at: datetime | None
    reason: str | None = None
    comment: str | None = None
    reopened: bool = False
    ticket_open: bool = False

    @property
    def can_change(self) -> bool:
        return self.state != EXPIRED

    @property
    def question(self) -> str:
        return f"How did we do on {self.number} — {_clip(self.summary, MAX_SUMMARY)}?"

    @property
    def headline(self) -> str:
        """The card's main line, in plain text (renderers escape it)."""
        if self.answer is None:
            return self.question if self.state != EXPIRED else (
                f"This survey for {self.number} has expired — thanks anyway.")
        rated = f"You rated {EMOJI[self.answer]}"
        if self.state == EXPIRED:
            return f"{rated} for {self.number}. This survey has expired, so the answer can't be changed."
        return f"Thanks! {rated} — change it below any time before the survey expires."

    def details(self) -> list[str]:
        """Extra lines: the reason given, reopen state, expiry."""
        lines: list[str] = []
        if self.reason:
            lines.append(f"You told us: {REASON_LABELS.get(self.reason, self.reason)}"
                         + (f" — “{self.comment}”" if self.comment else ""))
        if self.reopened:
            lines.append(f"You reopened {self.number}; the IT desk has been told.")
        return lines

    def buttons(self) -> list[tuple[Action, str, str | None]]:
        """(action, label, style) for each button the card offers now."""
        if self.state == EXPIRED:
            return []
        if self.answer is None:
            return [(Action.SURVEY_UP, "👍", "primary"), (Action.SURVEY_DOWN, "👎", None)]
        if self.answer == UP:
            return [(Action.SURVEY_DOWN, "Change to 👎", None)]
        buttons: list[tuple[Action, str, str | None]] = []
        if not self.reason:
            buttons.append((Action.SURVEY_REASON, "Tell us what went wrong", "primary"))
        if not self.reopened and not self.ticket_open:
            buttons.append((Action.SURVEY_REOPEN, "Reopen ticket", "danger"))
        buttons.append((Action.SURVEY_UP, "Change to 👍", None))
        return buttons

    @property
    def fallback(self) -> str:
        return self.headline


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _expiry_text(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%a %d %b %Y, %H:%M UTC")


# -- Slack ------------------------------------------------------------------------------------------
def slack_blocks(view: SurveyView) -> list[Block]:
    """The survey card in Block Kit; block ids are ``ticket:{id}:survey…`` so a click routes to its ticket."""
    blocks: list[Block] = [{"type": "section", "block_id": f"ticket:{view.ticket_id}:survey",
                            "text": {"type": "mrkdwn", "text": escape_mrkdwn(view.headline)}}]
    details = view.details()
    if details:
        blocks.append({"type": "section", "block_id": f"ticket:{view.ticket_id}:survey:details",
                       "text": {"type": "mrkdwn", "text": escape_mrkdwn("\n".join(details))[:3000]}})
    buttons = view.buttons()
    if buttons:
        elements = []
        for action, label, style in buttons:
            button: dict[str, Any] = {"type": "button", "action_id": action.value, "value": str(view.ticket_id),
                                      "text": {"type": "plain_text", "text": label, "emoji": True}}
            if style:
                button["style"] = style
            elements.append(button)
        blocks.append({"type": "actions", "block_id": f"ticket:{view.ticket_id}:survey:actions",
                       "elements": elements})
        if view.expires_at is not None:
            blocks.append({"type": "context", "block_id": f"ticket:{view.ticket_id}:survey:expiry", "elements": [
                {"type": "mrkdwn", "text": f"You can change your answer until {_expiry_text(view.expires_at)}."}]})
    return blocks


def slack_message(view: SurveyView, *, ref_role: str | None = "survey") -> dict[str, Any]:
    """The outbox payload for the Slack ``blocks`` kind; with ``ref_role`` later ones update the card in place."""
    payload: dict[str, Any] = {"blocks": slack_blocks(view), "text": view.fallback}
    if ref_role:
        payload["ref_role"] = ref_role
    return payload


def slack_text_message(text: str) -> dict[str, Any]:
    """A plain new DM (no ref role, so it never replaces the survey card)."""
    return {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": escape_mrkdwn(text)}}], "text": text}


def slack_reason_modal(view: SurveyView) -> dict[str, Any]:
    """The "Tell us what went wrong" modal; ``private_metadata`` carries the ticket id."""
    return {
        "type": "modal",
        "callback_id": Form.SURVEY_REASON.value,
        "private_metadata": str(view.ticket_id),
        "title": {"type": "plain_text", "text": "What went wrong?"},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": escape_mrkdwn(
                f"Sorry {view.number} didn't go well. Tell us what went wrong and we'll look into it.")}},
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


def read_slack_reason(view_payload: dict[str, Any]) -> tuple[int, str, str]:
    """(ticket id, reason, comment) from a ``view_submission`` of the reason modal."""
    values = view_payload.get("state", {}).get("values", {})
    selected = values.get(REASON_BLOCK, {}).get(REASON_INPUT, {}).get("selected_option") or {}
    comment = values.get(COMMENT_BLOCK, {}).get(COMMENT_INPUT, {}).get("value") or ""
    return int(view_payload.get("private_metadata") or 0), str(selected.get("value") or ""), str(comment)


# -- Teams ------------------------------------------------------------------------------------------
def _card(body: list[dict[str, Any]], actions: list[dict[str, Any]]) -> Card:
    card: Card = {"type": "AdaptiveCard", "$schema": SCHEMA_URL, "version": VERSION, "body": body}
    if actions:
        card["actions"] = actions
    return card


def teams_card(view: SurveyView) -> Card:
    """The survey card as an Adaptive Card 1.5; each button submits ``{action, value, ticket_id}``."""
    body: list[dict[str, Any]] = [{"type": "TextBlock", "text": escape_markdown(view.headline), "wrap": True,
                                   "weight": "Bolder"}]
    for line in view.details():
        body.append({"type": "TextBlock", "text": escape_markdown(line), "wrap": True})
    actions = []
    for action, label, style in view.buttons():
        submit: dict[str, Any] = {"type": "Action.Submit", "title": label,
                                  "data": {"action": action.value, "value": str(view.ticket_id),
                                           "ticket_id": view.ticket_id}}
        if style:
            submit["style"] = {"primary": "positive", "danger": "destructive"}[style]
        actions.append(submit)
    if actions and view.expires_at is not None:
        body.append({"type": "TextBlock", "isSubtle": True, "size": "Small", "wrap": True,
                     "text": f"You can change your answer until {_expiry_text(view.expires_at)}."})
    return _card(body, actions)


def teams_message(view: SurveyView, *, ref_role: str | None = "survey") -> dict[str, Any]:
    """The outbox payload for the Teams ``card`` kind (see ``surveys.polls`` for what the channel must do)."""
    payload: dict[str, Any] = {"card": teams_card(view), "text": view.fallback}
    if ref_role:
        payload["ref_role"] = ref_role
    return payload


def teams_text_message(text: str) -> dict[str, Any]:
    return {"card": _card([{"type": "TextBlock", "wrap": True, "text": escape_markdown(text)}], []), "text": text}


def teams_reason_card(view: SurveyView) -> Card:
    """The Teams form for a 👎 reason: a choice, a comment, and a submit tagged ``form: survey_reason``."""
    return _card(
        [
            {"type": "TextBlock", "wrap": True, "text": escape_markdown(
                f"Sorry {view.number} didn't go well. Tell us what went wrong and we'll look into it.")},
            {"type": "Input.ChoiceSet", "id": REASON_INPUT, "label": "What went wrong", "isRequired": True,
             "errorMessage": "Choose one", "style": "compact",
             "choices": [{"title": label, "value": value} for value, label in REASONS]},
            {"type": "Input.Text", "id": COMMENT_INPUT, "label": "Anything else? (optional)", "isMultiline": True,
             "maxLength": MAX_COMMENT},
        ],
        [{"type": "Action.Submit", "title": "Send",
          "data": {"form": Form.SURVEY_REASON.value, "ticket_id": view.ticket_id}}],
    )


def read_teams_reason(data: dict[str, Any]) -> tuple[int, str, str]:
    """(ticket id, reason, comment) from the Teams reason card's submitted ``value``."""
    return int(data.get("ticket_id") or 0), str(data.get(REASON_INPUT) or ""), str(data.get(COMMENT_INPUT) or "")
