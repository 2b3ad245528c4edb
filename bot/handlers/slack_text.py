"""Slack's message text decoded into neutral text (``bot.text``), once, at the edge.

Slack sends what a person typed entity-encoded (``&amp; &lt; &gt;``) with its own markup for links
(``<https://…|label>``), mentions (``<@U123>``, ``<#C123|general>``, ``<!subteam^S1|@it>``), broadcasts
(``<!channel>``) and dates (``<!date^…|fallback>``). The desk stores the characters the person saw: links stay
links, mentions become ``@Name`` (names from the desk's directory), broadcasts become plain words that ping
nobody when shown again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bot.attachments import SharedFile
from bot.text import escape_typed, link_markup

_TOKEN = re.compile(r"<([^<>\n]*)>")
_USER = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^<>]*)?>")
_LINKABLE = ("http://", "https://", "mailto:")
_BROADCASTS = {"channel": "@channel", "here": "@here", "everyone": "@everyone"}


def unescape(text: str) -> str:
    """Undo Slack's three entities (and nothing else: ``&quot;`` stays as typed)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def mentioned_users(text: str) -> set[str]:
    """The user ids ``<@U…>`` mentions in ``text`` name (to look their names up before decoding)."""
    return set(_USER.findall(text or ""))


def decode(text: str, names: Mapping[str, str] | None = None) -> str:
    """Slack message text as neutral text; ``names`` maps user ids to display names for mentions."""
    names = names or {}
    out: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(text or ""):
        out.append(escape_typed(unescape(text[pos:match.start()])))
        out.append(_token(match.group(1), names))
        pos = match.end()
    out.append(escape_typed(unescape((text or "")[pos:])))
    return "".join(out)


def _token(inner: str, names: Mapping[str, str]) -> str:
    target, _, label = inner.partition("|")
    label = unescape(label)
    if target.startswith("@"):
        user = target[1:]
        return escape_typed("@" + (names.get(user) or label.lstrip("@") or user))
    if target.startswith("#"):
        return escape_typed("#" + (label or target[1:]))
    if target.startswith("!"):
        command = target[1:].split("^", 1)[0]
        if command in _BROADCASTS:
            return _BROADCASTS[command]
        if command == "subteam":
            return escape_typed(label if label.startswith("@") else "@" + (label or "group"))
        return escape_typed(label)  # <!date^…|fallback> and anything newer: what Slack itself would show
    url = unescape(target)
    if url.startswith(_LINKABLE) and not any(c.isspace() for c in url):
        return link_markup(label, url)
    return escape_typed(label or url)


def shared_files(event: Mapping[str, Any]) -> list[SharedFile]:
    """The files a message event shared (``files``), each by its permalink: a link any member of the workspace
    can open, so the other side sees the screenshot without the bot copying it."""
    found: list[SharedFile] = []
    for item in event.get("files") or []:
        if not isinstance(item, Mapping):
            continue
        url = item.get("permalink") or item.get("url_private")
        if isinstance(url, str) and url.startswith("https://"):
            name = item.get("title") or item.get("name") or "file"
            found.append(SharedFile(str(name), url))
    return found
