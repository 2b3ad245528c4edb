"""Neutral text: how the desk stores what people write, whatever platform they wrote it on.

Platform edges decode what arrives (Slack's entity-encoded mrkdwn, Teams' HTML, form fields) into neutral text:
the characters the person typed, mentions turned into ``@Name``, and links kept as ``[label](url)`` (a bare
address stays bare). Brackets and backslashes the person typed are escaped with a backslash, so only a link
that arrived as a link becomes one: a requester typing ``[Reset password](http://evil)`` stays literal.

Services turn stored neutral text into view-model :data:`~bot.views.Text` with :func:`to_spans` (links become
:class:`~bot.views.Link` spans, the rest literal strings) or :func:`to_plain`; renderers escape each literal
string once for their platform.
"""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo

from bot.views import Link, Moment, Span, Text, spans

# Only schemes a reader can follow safely become links; anything else stays text.
_SCHEMES = r"(?:https?://|mailto:)"
_URL = _SCHEMES + r"[^\s()<>\[\]\\]{1,2000}"
_TOKEN = re.compile(r"\\([\\\[\]])|\[((?:\\.|[^\[\]\\\n]){1,500})\]\((" + _URL + r")\)|(\b" + _URL + ")")
_UNESCAPE = re.compile(r"\\([\\\[\]])")
# C0 and C1 control characters except tab, newline and carriage return (NUL is handled on its own).
_CONTROLS = re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_TRAILING = ".,;:!?)'\""


def without_controls(text: str) -> str:
    """What a person typed, fit to store and send: NUL marked with U+FFFD (as ``bot.handlers.payloads`` marks it in
    every inbound field), other control characters dropped, tabs and line breaks kept.

    PostgreSQL refuses NUL in text; the others can't be typed, would split a summary (``str.splitlines`` breaks at
    ``\\x0b``, ``\\x0c``, ``\\x1c``…) and only ever arrive forged.
    """
    return _CONTROLS.sub("", text.replace("\x00", "\ufffd"))


def without_controls_in(value: Any) -> Any:
    """``value`` (nested dicts and lists) with :func:`without_controls` applied to every string in it."""
    if isinstance(value, str):
        return without_controls(value)
    if isinstance(value, dict):
        return {without_controls_in(k): without_controls_in(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_controls_in(item) for item in value]
    return value


def escape_typed(text: str) -> str:
    """Literal text (a form field, a plain chat message) as neutral text: typed ``\\ [ ]`` are escaped."""
    return text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


def link_markup(label: str, url: str) -> str:
    """A link as an edge writes it into neutral text; a label equal to the address makes a bare link."""
    clean = " ".join(label.split())
    return url if not clean or clean == url else f"[{escape_typed(clean)}]({url})"


def to_spans(neutral: str) -> tuple[Span, ...]:
    """Neutral text as view-model spans: literal strings and :class:`Link` (labelled or bare)."""
    out: list[Span] = []
    literal: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(neutral):
        literal.append(neutral[pos:match.start()])
        pos = match.end()
        escaped, label, url, bare = match.groups()
        if escaped is not None:
            literal.append(escaped)
            continue
        if bare is not None:
            trimmed = bare.rstrip(_TRAILING)
            pos = match.start() + len(trimmed)
            if trimmed.endswith((":", "/")) and trimmed.count("/") <= 2:
                literal.append(trimmed)
                continue
            url, label = trimmed, None
        if literal and (joined := "".join(literal)):
            out.append(joined)
        literal = []
        out.append(Link(url, _UNESCAPE.sub(r"\1", label) if label is not None else None))
    literal.append(neutral[pos:])
    if joined := "".join(literal):
        out.append(joined)
    return tuple(out)


def to_plain(neutral: str) -> str:
    """Neutral text as one plain string: links as ``label (url)``, escapes undone."""
    return plain(to_spans(neutral))


def moment_text(moment: Moment) -> str:
    """A moment written out on its fallback zone's clock: ``Wed 2 Dec 14:30 (London time)``."""
    local = moment.at.astimezone(ZoneInfo(moment.zone))
    if moment.form == "date":
        return f"{local:%a} {local.day} {local:%b %Y}"
    label = moment.label or (
        "UTC" if moment.zone in ("UTC", "Etc/UTC") else f"{moment.zone.rsplit('/', 1)[-1].replace('_', ' ')} time")
    return f"{local:%a} {local.day} {local:%b %H:%M} ({label})"


def plain(text: Text) -> str:
    """View-model text as one plain string (notification fallbacks, logs): links as ``label (url)``."""
    parts: list[str] = []
    for span in spans(text):
        if isinstance(span, Link):
            parts.append(span.url if not span.label or span.label == span.url else f"{span.label} ({span.url})")
        elif isinstance(span, Moment):
            parts.append(moment_text(span))
        else:
            parts.append(span)
    return "".join(parts)


def text_length(text: Text) -> int:
    """How many characters a reader sees (a link counts its label)."""
    return len(plain(tuple(Link(s.url, s.label or s.url) if isinstance(s, Link) else s for s in spans(text))))
