"""`ithelp demo` plays a whole day against the local stand-ins and ends with the report card."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_plays_a_day_across_slack_teams_and_pagerduty_and_prints_the_report_card(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bot", "demo"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    out = result.stdout
    assert result.returncode == 0, result.stderr[-3000:]
    # Both platforms file tickets, an agent claims, the P1 breach pages the chain, someone acknowledges.
    assert "Rita       /ithelp VPN keeps dropping" in out and "(Teams chat) Outlook won't open" in out
    assert "Alice Agent is on it." in out
    assert "breached its first response target" in out and "level 1 of 2" in out
    assert "PagerDuty trigger IT-3" in out and "PagerDuty acknowledge IT-3" in out and "PagerDuty resolve IT-3" in out
    # Surveys go out and are answered; the day ends with the report card and its rule.
    assert out.count("How did we do on") == 3 and "You rated 👎" in out
    assert "Grade" in out and "CSAT %" in out and "Grade: A if CSAT" in out
    assert "Traceback" not in result.stderr
