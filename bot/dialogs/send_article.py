"""The agent's article search behind "Send article": a Slack modal and a Teams card form.

One form does both steps: submitted with an article picked, it sends that article; submitted without
one, it searches for what the search box says and comes back with the results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bot.renderers.teams_card_markdown import escape_markdown
from bot.renderers.teams_card_parts import SCHEMA_URL, VERSION
from bot.routing import Form

QUERY_BLOCK, ARTICLE_BLOCK = "query", "article"
INPUT_ACTION = "input"
PICK_ONE = "Pick an article, or type words to search for."
NOTHING_FOUND = "No article matches those words; try other ones."

# Slack's ceilings: modal title, option text.
_SLACK_TITLE_MAX = 24
_SLACK_OPTION_MAX = 75

Choices = Sequence[tuple[int, str]]
"""(article id, title) of the articles to pick from, best first."""


def slack_modal(ticket_id: int, number: str, query: str, choices: Choices) -> dict[str, Any]:
    """The search modal; the ticket id rides in ``private_metadata``."""
    query_input: dict[str, Any] = {"type": "plain_text_input", "action_id": INPUT_ACTION, "max_length": 200,
                                   "placeholder": {"type": "plain_text", "text": "e.g. vpn drops at home"}}
    if query:
        query_input["initial_value"] = query[:200]
    blocks: list[dict[str, Any]] = [{"type": "input", "block_id": QUERY_BLOCK, "optional": True,
                                     "label": {"type": "plain_text", "text": "Search articles"},
                                     "element": query_input}]
    if choices:
        blocks.append({"type": "input", "block_id": ARTICLE_BLOCK, "optional": True,
                       "label": {"type": "plain_text", "text": "Article to send"},
                       "element": {"type": "radio_buttons", "action_id": INPUT_ACTION, "options": [
                           {"text": {"type": "plain_text", "text": _clip(title, _SLACK_OPTION_MAX)},
                            "value": str(article_id)} for article_id, title in choices]}})
    else:
        blocks.append({"type": "section", "text": {"type": "plain_text", "text": NOTHING_FOUND}})
    return {
        "type": "modal", "callback_id": Form.SEND_ARTICLE.value, "private_metadata": str(ticket_id),
        "title": {"type": "plain_text", "text": f"Article for {number}"[:_SLACK_TITLE_MAX]},
        "submit": {"type": "plain_text", "text": "Send or search"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks,
    }


def parse_slack_submission(values: Mapping[str, Any]) -> tuple[str, int | None]:
    """(search words, picked article id or None) from ``view.state.values``."""
    query = str((values.get(QUERY_BLOCK, {}).get(INPUT_ACTION) or {}).get("value") or "").strip()
    picked = ((values.get(ARTICLE_BLOCK, {}).get(INPUT_ACTION) or {}).get("selected_option") or {}).get("value")
    return query, _article_id(picked)


def teams_form(ticket_id: int, number: str, query: str, choices: Choices, *,
               error: str | None = None) -> dict[str, Any]:
    """The Adaptive Card form: a search box, the articles found, one submit."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": f"Send an article for {escape_markdown(number)}", "weight": "Bolder",
         "wrap": True},
    ]
    if error or not choices:
        body.append({"type": "TextBlock", "text": escape_markdown(error or NOTHING_FOUND), "color": "Attention",
                     "wrap": True})
    body.append({"type": "Input.Text", "id": QUERY_BLOCK, "label": "Search articles", "value": query,
                 "placeholder": "e.g. vpn drops at home"})
    if choices:
        body.append({"type": "Input.ChoiceSet", "id": ARTICLE_BLOCK, "label": "Article to send", "style": "expanded",
                     "choices": [{"title": title, "value": str(article_id)} for article_id, title in choices]})
    return {
        "type": "AdaptiveCard", "$schema": SCHEMA_URL, "version": VERSION, "body": body,
        "actions": [{"type": "Action.Submit", "title": "Send or search",
                     "data": {"form": Form.SEND_ARTICLE.value, "ticket_id": ticket_id}}],
    }


def parse_teams_submission(value: Mapping[str, Any]) -> tuple[int, str, int | None]:
    """(ticket id, search words, picked article id or None) from a submitted form's ``value``."""
    return int(value["ticket_id"]), str(value.get(QUERY_BLOCK) or "").strip(), _article_id(value.get(ARTICLE_BLOCK))


def _article_id(raw: Any) -> int | None:
    try:
        return int(raw) if raw not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"
