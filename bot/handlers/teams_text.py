"""Teams message text decoded into neutral text (``bot.text``), once, at the edge.

Teams sends plain text for plain messages and HTML for formatted ones (``<p>``, ``<a href>``, ``<at>Name</at>``
mentions, entities such as ``&amp;``). The desk stores the characters the person saw: links stay links,
mentions become ``@Name``, everything else is literal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html.parser import HTMLParser
from typing import Any

from bot.attachments import SharedFile
from bot.text import escape_typed, link_markup, without_controls

_LOOKS_LIKE_HTML = re.compile(r"<(?:p|div|span|a|at|br|b|i|em|strong|ul|ol|li|img|blockquote|pre|code)\b[^>]*>"
                              r"|&(?:[a-zA-Z]{2,8}|#\d{1,7}|#x[0-9a-fA-F]{1,6});", re.IGNORECASE)
_BLOCKS = frozenset({"p", "div", "br", "li", "blockquote", "pre", "tr"})
_LINKABLE = ("http://", "https://", "mailto:")


def decode(text: str | None) -> str:
    """A Teams message's ``text`` as neutral text."""
    if not text:
        return ""
    text = without_controls(text)
    if not _LOOKS_LIKE_HTML.search(text):
        return escape_typed(text)
    parser = _Neutral()
    parser.feed(text)
    parser.close()
    return parser.result()


class _Neutral(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._out: list[str] = []
        self._link: tuple[str, list[str]] | None = None
        self._mention: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href") or ""
            self._link = (href, [])
        elif tag == "at":
            self._mention = []
        elif tag in _BLOCKS:
            self._newline()

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._link is not None:
            href, label = self._link
            self._link = None
            text = "".join(label)
            if href.startswith(_LINKABLE) and not any(c.isspace() for c in href):
                self._out.append(link_markup(text, href))
            else:
                self._out.append(escape_typed(text))
        elif tag == "at" and self._mention is not None:
            name = "".join(self._mention).strip()
            self._mention = None
            self._out.append(escape_typed("@" + name) if name else "")
        elif tag in _BLOCKS:
            self._newline()

    def handle_data(self, data: str) -> None:
        if self._link is not None:
            self._link[1].append(data)
        elif self._mention is not None:
            self._mention.append(data)
        else:
            self._out.append(escape_typed(data))

    def _newline(self) -> None:
        if self._out and not "".join(self._out).endswith("\n"):
            self._out.append("\n")

    def result(self) -> str:
        return "".join(self._out).strip()


_FILE_DOWNLOAD = "application/vnd.microsoft.teams.file.download.info"


def shared_files(attachments: Sequence[Any]) -> list[SharedFile]:
    """The files and inline images of a message (botbuilder ``Attachment``s), as links: an inline image by its
    ``contentUrl``, a file by its ``downloadUrl``. The HTML copy of the message and cards are not files."""
    found: list[SharedFile] = []
    for attachment in attachments:
        kind = str(getattr(attachment, "content_type", "") or "")
        name = str(getattr(attachment, "name", "") or "")
        content = getattr(attachment, "content", None)
        if kind == _FILE_DOWNLOAD and isinstance(content, dict):
            url = content.get("downloadUrl")
            name = name or "file"
        elif kind.startswith("image/"):
            url = getattr(attachment, "content_url", None)
            name = name or "image"
        else:
            continue
        if isinstance(url, str) and url.startswith("https://"):
            found.append(SharedFile(name, url))
    return found
