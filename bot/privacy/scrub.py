"""Pure rewriting rules for redaction and anonymisation: which values are free text, and how copies are cleaned.

Free text lives in known places (a ticket's summary and description, the text keys of its events, a survey
comment). Copies of it live in places with no fixed shape (outbox payloads are view models; some idempotency
keys embed a target), so copies are found by content: every string in a JSON value is searched for the text
being removed (and for the forms a view model shows it in) or for a person's identity.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bot.text import to_plain, to_spans
from bot.views import Link

REDACTED = "[redacted]"
"""What redacted free text reads as, everywhere."""

TEXT_KEYS = frozenset({"summary", "description", "text", "note", "comment"})
"""Event payload keys that hold what a person typed, whatever the event."""
TEXT_KEYS_BY_KIND: dict[str, frozenset[str]] = {"reopened": frozenset({"reason"})}
"""Keys that are free text only in some events (a survey's ``reason`` is a choice from a list: an answer, kept)."""

_MIN_FRAGMENT = 4
"""Pieces shorter than this are only removed where they are a whole value: "ok" must not eat "booked"."""
_MIN_TRUNCATED = 8
_ELLIPSIS = "…"
_LOOKBACK = 2000


def redact_event_payload(kind: str, payload: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The payload with its free text replaced by :data:`REDACTED`, and the texts removed (for finding copies)."""
    keys = TEXT_KEYS | TEXT_KEYS_BY_KIND.get(kind, frozenset())
    removed = [value for key, value in payload.items() if key in keys and isinstance(value, str) and value
               and value != REDACTED]
    if not removed:
        return payload, []
    return {key: REDACTED if key in keys and isinstance(value, str) and value else value
            for key, value in payload.items()}, removed


@dataclass(frozen=True)
class Needles:
    """Texts being removed, in every form a copy may hold them: as stored (neutral text), as plain text, and
    as the spans a view model splits them into (literal pieces, link labels and addresses)."""

    fragments: tuple[str, ...]
    whole: frozenset[str]

    @classmethod
    def of(cls, texts: Iterable[str]) -> Needles:
        pieces: set[str] = set()
        for text in texts:
            if not text or text == REDACTED:
                continue
            pieces.update((text, to_plain(text)))
            for span in to_spans(text):
                if isinstance(span, Link):
                    pieces.update(p for p in (span.url, span.label) if p)
                elif isinstance(span, str):
                    pieces.add(span)
        fragments = tuple(sorted((p for p in pieces if len(p) >= _MIN_FRAGMENT), key=len, reverse=True))
        return cls(fragments, frozenset(p for p in pieces if p))

    def __bool__(self) -> bool:
        return bool(self.whole)

    def clean(self, value: str) -> str:
        """``value`` with every needle (and every "…"-truncated start of one) replaced by :data:`REDACTED`."""
        if value in self.whole:
            return REDACTED
        if _ELLIPSIS in value:
            value = self._truncated(value)
        for fragment in self.fragments:
            if fragment in value:
                value = value.replace(fragment, REDACTED)
        return value

    def _truncated(self, value: str) -> str:
        # A card may shorten a summary to "first words…": the start of a needle right before an ellipsis.
        out, pos = [], 0
        for match in re.finditer(_ELLIPSIS, value):
            end = match.start()
            best = max((_shortened(value, pos, end, fragment) for fragment in self.fragments), default=0)
            if best:
                out.append(value[pos:end - best] + REDACTED)
                pos = match.end()
        out.append(value[pos:])
        return "".join(out)


def _shortened(value: str, start: int, end: int, fragment: str) -> int:
    """The length of the longest start of ``fragment`` that ``value[start:end]`` ends with (0: none long enough)."""
    # Cards shorten to a few hundred characters at most, so look back no further than that.
    first = max(start, end - min(len(fragment), _LOOKBACK))
    at = value.find(fragment[0], first, end - _MIN_TRUNCATED + 1)
    while at >= 0:
        if fragment.startswith(value[at:end]):
            return end - at
        at = value.find(fragment[0], at + 1, end - _MIN_TRUNCATED + 1)
    return 0


@dataclass(frozen=True)
class Identity:
    """One person's identifying strings and the pseudonyms that replace them."""

    ids: tuple[str, ...]
    """Platform user ids (and platform-specific ones like a Teams ``29:`` id); replaced wherever they occur."""
    names: tuple[str, ...]
    """Display names; replaced as whole words, in any case."""
    emails: tuple[str, ...]
    pseudonym_id: str
    pseudonym_name: str


class IdentityRewriter:
    """Replaces several people's identities in strings (one compiled pattern for all of them)."""

    def __init__(self, people: Iterable[Identity]) -> None:
        self._replacement: dict[str, str] = {}
        alternatives: list[str] = []
        for person in people:
            for email in person.emails:
                self._replacement[email.casefold()] = person.pseudonym_name
                alternatives.append(re.escape(email))
            for ident in person.ids:
                self._replacement[ident.casefold()] = person.pseudonym_id
                alternatives.append(re.escape(ident))
            for name in person.names:
                self._replacement.setdefault(name.casefold(), person.pseudonym_name)
                alternatives.append(r"(?<!\w)" + re.escape(name) + r"(?!\w)")
        # Longest first, so an email wins over the name inside it and "Ann Lee" over "Ann".
        alternatives.sort(key=len, reverse=True)
        self._pattern = re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None

    def clean(self, value: str) -> str:
        if self._pattern is None:
            return value
        return self._pattern.sub(lambda m: self._replacement.get(m.group(0).casefold(), REDACTED), value)

    def mentions(self, value: str) -> bool:
        return self._pattern is not None and self._pattern.search(value) is not None


def rewrite_json(value: Any, clean: Callable[[str], str]) -> Any:
    """``value`` (decoded JSON) with ``clean`` applied to every string in it, dictionary keys included."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(k) if isinstance(k, str) else k: rewrite_json(v, clean) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite_json(v, clean) for v in value]
    return value
