"""TextBlock markdown for Adaptive Cards: user text escaped, links and moments rendered, text clipped.

TextBlock text is markdown and may carry ``{{DATE(…)}}``/``{{TIME(…)}}`` functions, so user text goes through
``escape_markdown`` first.
"""

from __future__ import annotations

import re
from datetime import UTC

from bot.text import plain, text_length
from bot.views import Link, Moment, Text, spans

MAX_SUMMARY = 300
MAX_LINE = 500

ELLIPSIS = "…"
# C0/C1 controls except tab and newline, plus the bidi overrides that can make text read backwards.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_DOUBLE_BRACE = re.compile(r"([{}])(?=\1)")
_MARKDOWN = re.compile(r"([\\`*_\[\]()#>])")
# Line starts that open a list, a rule or a heading underline: "- ", "+ ", "---", "===", "1. ".
_LINE_START = re.compile(r"^(\s*)(?:([-+=])|(\d+)\.)")


def escape_markdown(text: str) -> str:
    """Neutralise TextBlock markdown and ``{{DATE()}}``/``{{TIME()}}`` functions in user text, drop control characters.

    Lines are joined by blank lines because TextBlock markdown folds a single newline into a space.
    """
    cleaned = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    # A zero-width space between braces breaks the function syntax without changing what the reader sees.
    cleaned = _DOUBLE_BRACE.sub("\\1\u200b", cleaned)
    lines = [_LINE_START.sub(_escape_line_start, _MARKDOWN.sub(r"\\\1", line)) for line in cleaned.split("\n")]
    return "\n\n".join(lines)


def _escape_line_start(match: re.Match[str]) -> str:
    indent, marker, digits = match.groups()
    return f"{indent}\\{marker}" if marker else f"{indent}{digits}\\."


def md(text: Text, limit: int = MAX_LINE) -> str:
    """``text`` as TextBlock markdown, clipped to ``limit`` visible characters: literal text escaped, links as
    ``[label](url)``, moments as ``{{DATE()}} {{TIME()}}`` so Teams shows them in each reader's own zone."""
    out: list[str] = []
    budget = limit
    for span in spans(text):
        if isinstance(span, str):
            if len(span) > budget:
                out.append(escape_markdown(span[: max(budget - len(ELLIPSIS), 0)] + ELLIPSIS))
                return "".join(out)
            out.append(escape_markdown(span))
            budget -= len(span)
            continue
        rendered, visible = _render_span(span)
        if visible > budget:
            out.append(ELLIPSIS)
            return "".join(out)
        out.append(rendered)
        budget -= visible
    return "".join(out)


def _render_span(span: Link | Moment) -> tuple[str, int]:
    if isinstance(span, Link):
        url = span.url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
        label = span.label or span.url
        return f"[{escape_markdown(label)}]({url})", len(label)
    stamp = span.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if span.form == "date":
        return f"{{{{DATE({stamp}, SHORT)}}}}", 12
    return f"{{{{DATE({stamp}, SHORT)}}}} {{{{TIME({stamp})}}}}", 18


def plain_text(text: Text, limit: int = MAX_LINE) -> str:
    """``text`` for places that take no markdown (an activity's ``summary``/``text`` fallback)."""
    flat = plain(text)
    return _CONTROL.sub("", flat if len(flat) <= limit else flat[: limit - len(ELLIPSIS)] + ELLIPSIS)


def clip(text: str, limit: int) -> str:
    """Plain ``text`` without control characters, clipped with "…" to ``limit`` characters."""
    plain = _CONTROL.sub("", text)
    return plain if len(plain) <= limit else plain[: limit - len(ELLIPSIS)] + ELLIPSIS


def truncated_md(text: tuple[Link | Moment | str, ...], keep: int, number: str) -> str:
    """The first ``keep`` characters of ``text`` as markdown, with a line saying where the full text is kept
    (the ticket ``number``) when that cuts it."""
    if keep >= text_length(text):
        return md(text, keep)
    return md(text, keep) + f"\n\n_(truncated — full text kept in {escape_markdown(number)})_"
