"""``ithelp check-config --explain`` says who may act on tickets (issue #16, point 6): agents work tickets, paged
people and paged channels may only acknowledge the pages they got, everyone else is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main

CONFIG = """
agents:
  slack_users: [UAGENT1]
  slack_usergroups: [S0DESK]
  teams_users: [aad-agent-1]
  leads: {"slack:UAGENT1": "slack:user:ULEAD"}
pagers:
  pagerduty:
    oncall: {routing_key: abc}
escalation:
  chains:
    oncall:
      levels:
        - {notify: ["slack:user:UONCALL", "slack:channel:C0PAGES", "assignee"], wait: 10m}
        - {notify: ["lead", "slack:user:UAGENT1", "teams:user:aad-manager", "pagerduty:oncall"], wait: 10m}
  policies:
    P1: {breach: oncall}
"""


def explained(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> list[str]:
    path = tmp_path / "app.yaml"
    path.write_text(text)
    assert main(["check-config", "--explain", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "ok"
    return out[out.index("Who may act on tickets:"):-1]


def test_check_config_explain_says_agents_work_tickets_and_paged_people_may_only_acknowledge(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = explained(tmp_path, capsys, CONFIG)
    agents = next(line for line in lines if line.startswith("  Agents"))
    assert "claim" in agents and "resolve" in agents and "acknowledge any page" in agents
    assert agents.endswith("slack:user:UAGENT1, members of Slack user group S0DESK (read from Slack every 10 "
                           "minutes), teams:user:aad-agent-1.")
    start = next(i for i, line in enumerate(lines) if line.startswith("  Paged people"))
    assert "may acknowledge the pages of a ticket they were paged about" in lines[start]
    assert "and nothing else" in lines[start]
    # The lead is resolved to whom leads: names; an agent in a chain is listed as an agent, not as paged.
    assert lines[start + 1:start + 4] == ["    slack:user:ULEAD (chain oncall, level 2)",
                                          "    slack:user:UONCALL (chain oncall, level 1)",
                                          "    teams:user:aad-manager (chain oncall, level 2)"]
    assert not any("UAGENT1 (chain" in line for line in lines)
    channel = lines.index("    slack:channel:C0PAGES (chain oncall, level 1)")
    assert lines[channel - 1].startswith("  Paged channels: anyone who presses Acknowledge on the page in that channel")
    assert any("acknowledging happens in chat: pagerduty:oncall" in line for line in lines)
    assert lines[-1].startswith("  Everyone else may open tickets")


def test_check_config_explain_says_when_nobody_can_work_tickets(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = explained(tmp_path, capsys, "default_priority: P3\n")
    assert lines[1].startswith("  Agents: none listed under agents:, so nobody can work tickets")
    assert "  No escalation chain pages anyone, so only agents can act on tickets." in lines


def test_check_config_without_explain_stays_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(CONFIG)
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "ok"
