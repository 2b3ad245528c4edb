"""What counts as an internal note, and how ``escalate`` is read, without a running bot."""

from __future__ import annotations

import pytest

from bot.config import TriageThreadConfig
from bot.requester_escalation import parse_escalate
from bot.tickets import InvalidInput
from bot.triage_notes import Split, split_note


@pytest.mark.parametrize(("text", "expected"), [
    ("note: dock firmware", Split(True, "dock firmware")),
    ("  NOTE:dock firmware", Split(True, "dock firmware")),
    ("// ask Bob", Split(True, "ask Bob")),
    ("reply: try another dock", Split(False, "try another dock")),
    ("notebook won't boot", Split(False, "notebook won't boot")),  # a word, not the prefix
    ("https://wiki/x // see this", Split(False, "https://wiki/x // see this")),
])
def test_by_default_messages_are_replies_and_a_note_prefix_keeps_one_internal(text: str, expected: Split) -> None:
    assert split_note(text, TriageThreadConfig()) == expected


def test_when_notes_are_the_default_only_the_reply_prefix_sends() -> None:
    rules = TriageThreadConfig(default="note")
    assert split_note("checking the logs", rules) == Split(True, "checking the logs")
    assert split_note("Reply: fixed, please retry", rules) == Split(False, "fixed, please retry")


def test_an_empty_prefix_is_refused_in_app_yaml() -> None:
    with pytest.raises(ValueError, match="empty prefix"):
        TriageThreadConfig(note_prefixes=[" "])


@pytest.mark.parametrize(("text", "expected"), [
    ("escalate IT-3 nobody answered", (3, "nobody answered")),
    ("Escalate 12", (12, "")),
    ("escalate it-7   still down ", (7, "still down")),
    ("escalation policy question", None),
    ("my laptop won't start", None),
])
def test_escalate_reads_the_ticket_number_and_the_reason(text: str, expected: tuple[int, str] | None) -> None:
    assert parse_escalate(text) == expected


@pytest.mark.parametrize("text", ["escalate", "escalate please", "escalate IT-٣ why", "escalate 99999999999999999999"])
def test_escalate_without_a_ticket_number_asks_which(text: str) -> None:
    with pytest.raises(InvalidInput, match="Which ticket"):
        parse_escalate(text)
