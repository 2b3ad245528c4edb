"""Slack mrkdwn: literal text escaped, links and moments rendered, text clipped to a limit.

Literal text is escaped once (``&``, ``<``, ``>``) so a typed ``<!channel>`` or ``<@U123>`` shows literally and
pings nobody; links become ``<url|label>`` and moments ``<!date^…|fallback>`` (each reader's own zone). Text is
clipped with "…" without cutting an entity, a link or a date in half.
"""

from __future__ import annotations

from bot.text import moment_text
from bot.views import Link, Moment, Text, spans

MAX_SECTION_TEXT = 3000
# Long enough to carry the message in a notification banner; Slack itself allows far more.
MAX_FALLBACK = 400
MAX_SUMMARY = 300

ELLIPSIS = "…"
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def escape_mrkdwn(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` so literal text cannot form mentions, links or broadcasts in mrkdwn."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn(text: Text, limit: int = MAX_SECTION_TEXT, *, note: str = "") -> str:
    """``text`` as mrkdwn of at most ``limit`` characters; ``note`` (already mrkdwn) is added when it is cut."""
    pieces = [(span, _render_span(span)) for span in spans(text)]
    full = "".join(rendered for _, rendered in pieces)
    if len(full) <= limit:
        return full
    budget = limit - len(ELLIPSIS) - len(note)
    out: list[str] = []
    for span, rendered in pieces:
        if len(rendered) <= budget:
            out.append(rendered)
            budget -= len(rendered)
            continue
        if isinstance(span, str):
            for char in span:
                piece = _ESCAPES.get(char, char)
                if len(piece) > budget:
                    break
                out.append(piece)
                budget -= len(piece)
        break
    return "".join(out) + ELLIPSIS + note


def _render_span(span: Link | Moment | str) -> str:
    if isinstance(span, Link):
        url = escape_mrkdwn(span.url).replace("|", "%7C")
        return f"<{url}|{escape_mrkdwn(span.label)}>" if span.label else f"<{url}>"
    if isinstance(span, Moment):
        pattern = "{date_short_pretty}" if span.form == "date" else "{date_short_pretty} at {time}"
        return f"<!date^{int(span.at.timestamp())}^{pattern}|{escape_mrkdwn(moment_text(span))}>"
    return escape_mrkdwn(span)


def mrkdwn_link(url: str | None, label: str) -> str:
    """``label`` linked to ``url`` (``<url|label>``), or just the escaped label when there is no url."""
    return _render_span(Link(url, label)) if url else escape_mrkdwn(label)


def truncation_note(number: str) -> str:
    """The line added to clipped text saying where the full text is kept (the ticket ``number``)."""
    return f"\n_(truncated — full text kept in {escape_mrkdwn(number)})_"
