"""What the survey card says, by state: the question, the thanks, the reason given, the buttons offered.

``SurveyState`` is the poll as the service sees it; :meth:`SurveyState.view` words it as a neutral
:class:`bot.views.Survey`, which ``bot.renderers`` draw for Slack and Teams.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.dialogs.survey_reason import REASON_LABELS
from bot.routing import Action
from bot.text import to_plain
from bot.views import CardAction, Moment, Survey, Text

UP, DOWN = "up", "down"
ANSWERS = (UP, DOWN)
EMOJI = {UP: "👍", DOWN: "👎"}
MAX_SUMMARY = 200

# States.
OPEN, ANSWERED, EXPIRED = "open", "answered", "expired"


@dataclass(frozen=True)
class SurveyState:
    """Everything the survey card depends on."""

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
    zone: str = "UTC"
    """The requester's zone, for the written-out expiry time."""

    @property
    def can_change(self) -> bool:
        return self.state != EXPIRED

    @property
    def headline(self) -> str:
        if self.answer is None:
            if self.state == EXPIRED:
                return f"This survey for {self.number} has expired — thanks anyway."
            summary = to_plain(self.summary)
            summary = summary if len(summary) <= MAX_SUMMARY else summary[: MAX_SUMMARY - 1] + "…"
            return f"How did we do on {self.number} — {summary}?"
        rated = f"You rated {EMOJI[self.answer]}"
        if self.state == EXPIRED:
            return f"{rated} for {self.number}. This survey has expired, so the answer can't be changed."
        return f"Thanks! {rated} — change it below any time before the survey expires."

    def details(self) -> tuple[Text, ...]:
        lines: list[Text] = []
        if self.reason:
            lines.append(f"You told us: {REASON_LABELS.get(self.reason, self.reason)}"
                         + (f" — “{self.comment}”" if self.comment else ""))
        if self.reopened:
            lines.append(f"You reopened {self.number}; the IT desk has been told.")
        return tuple(lines)

    def buttons(self) -> tuple[CardAction, ...]:
        value = str(self.ticket_id)
        if self.state == EXPIRED:
            return ()
        if self.answer is None:
            return (CardAction(Action.SURVEY_UP, "👍", value, "primary"), CardAction(Action.SURVEY_DOWN, "👎", value))
        if self.answer == UP:
            return (CardAction(Action.SURVEY_DOWN, "Change to 👎", value),)
        buttons: list[CardAction] = []
        if not self.reason:
            buttons.append(CardAction(Action.SURVEY_REASON, "Tell us what went wrong", value, "primary"))
        if not self.reopened and not self.ticket_open:
            buttons.append(CardAction(Action.SURVEY_REOPEN, "Reopen ticket", value, "danger"))
        buttons.append(CardAction(Action.SURVEY_UP, "Change to 👍", value))
        return tuple(buttons)

    def view(self) -> Survey:
        """The card as a neutral view model."""
        return Survey(ticket_id=self.ticket_id, number=self.number, headline=self.headline, details=self.details(),
                      actions=self.buttons(),
                      expires_at=Moment(self.expires_at, self.zone) if self.expires_at is not None else None)
