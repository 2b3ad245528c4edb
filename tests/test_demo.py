"""`ithelp demo` plays a whole day against the local stand-ins and ends with the report card."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as a regular (non-editable) install lays it out: the built wheel, unpacked, without the repo."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, timeout=180)
    site = out / "site"
    with zipfile.ZipFile(next(out.glob("ithelp-*.whl"))) as wheel:
        wheel.extractall(site)
    assert not (site / "tests").exists()
    return site


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bot <args>`` from a folder outside the repository, importing only the installed package."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-P", "-m", "bot", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=240, env=env, check=False)


def test_teams_package_builds_from_a_regular_install_without_app_yaml(installed: Path, tmp_path: Path) -> None:
    result = run_installed(installed, tmp_path, "teams-package", "--app-id", "11111111-2222-3333-4444-555555555555",
                           "--domain", "ithelp.example.com", "--output", "app.zip")
    assert result.returncode == 0, result.stderr[-3000:]
    with zipfile.ZipFile(tmp_path / "app.zip") as package:
        assert sorted(package.namelist()) == ["color.png", "manifest.json", "outline.png"]
        assert "ithelp.example.com" in package.read("manifest.json").decode()


def test_demo_plays_a_day_across_slack_teams_and_pagerduty_and_prints_the_report_card(
    installed: Path, tmp_path: Path,
) -> None:
    result = run_installed(installed, tmp_path, "demo")
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
