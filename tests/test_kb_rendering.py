"""Article titles and bodies come from files anyone with write access to the folder edits: rendered escaped,
once per platform, with no mass mention surviving."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from bot.knowledge.service import suggestion_notice
from bot.renderers import slack_notice_blocks, teams_notice_cards
from store.knowledge import KbArticle

NOW = datetime(2026, 12, 3, 7, 0, tzinfo=UTC)


def _article(article_id: int, title: str, body: str, url: str | None = None) -> KbArticle:
    return KbArticle(id=article_id, source=f"{article_id}.md", title=title, tags="", url=url, body=body,
                     checksum="x", updated_at=NOW)


def test_a_suggestion_escapes_titles_and_bodies_once_and_neutralises_mass_mentions() -> None:
    notice = suggestion_notice(7, "IT-7", [
        _article(1, "<!channel> VPN & *you*", "Ping <!here> then @everyone [x](https://evil.example)"),
        _article(2, "Reset <password>", "", url="https://wiki.example.com/pw?a=1&b=2"),
    ])
    slack = json.dumps(slack_notice_blocks.notice_blocks(notice))
    assert "<!channel>" not in slack and "<!here>" not in slack
    assert "&lt;!channel&gt; VPN &amp;" in slack and "&amp;amp;" not in slack
    assert "<https://wiki.example.com/pw?a=1&amp;b=2|Reset &lt;password&gt;>" in slack
    teams = json.dumps(teams_notice_cards.notice_card(notice))
    assert "[x](https://evil.example)" not in teams  # a body's Markdown link is shown, not followed
    assert "\\\\[x\\\\]" in teams or "\\\\[x]" in teams
    buttons = [a["data"]["value"] for a in teams_notice_cards.notice_card(notice)["actions"]]
    assert buttons == ["7:1", "7:2"]
