"""The command line: check-config on the shipped file and on broken ones; serve as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bot.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_app_yaml_is_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(ROOT / "app.yaml")]) == 0
    assert capsys.readouterr().out.strip() == "ok"


BROKEN = {
    "duration": ("sla:\n  policies:\n    P1: {first_response: \"15 minutes\", resolution: 4h}\n",
                 'sla.policies.P1.first_response: "15 minutes" is not a duration; write 15m, 2h or 1d'),
    "typo": ("slack:\n  signing_secert: abc\n", 'slack.signing_secert: unknown key; did you mean "signing_secret"?'),
    "zone": ("calendars:\n  default: {timezone: Europe/Londn}\n",
             'calendars.default.timezone: "Europe/Londn" is not an IANA time zone; write e.g. Europe/London'),
    "env": ("slack:\n  bot_token: ${ITHELP_TEST_UNSET_TOKEN}\n",
            "slack.bot_token: environment variable ITHELP_TEST_UNSET_TOKEN is not set; export it or write "
            "${ITHELP_TEST_UNSET_TOKEN:-default}"),
    "chain": ("escalation:\n  chains:\n    urgent:\n      levels: [{notify: [pagerduty:oncall], wait: 5m}]\n",
              'escalation.chains.urgent.levels.0.notify: "pagerduty:oncall" names no pager; '
              "define pagers.pagerduty.oncall"),
    "percent": ("sla:\n  policies:\n    P2: {first_response: 1h, resolution: 8h, warn_at: 175%}\n",
                'sla.policies.P2.warn_at: "175%" must be between 0% and 100%; write e.g. 75%'),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_config_names_the_key_and_the_fix(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, expected = BROKEN[case]
    path = tmp_path / "app.yaml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 1
    assert expected in capsys.readouterr().out.splitlines()


def test_env_interpolation_with_default_and_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.config import parse_config

    config = parse_config("slack:\n  bot_token: ${TOKEN:-xoxb-default}\n  signing_secret: ${SECRET}\n",
                          env={"SECRET": "s3cret"})
    assert config.slack.bot_token == "xoxb-default" and config.slack.signing_secret == "s3cret"


def test_serve_starts_on_a_fresh_sqlite_file_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "app.yaml"
    config.write_text((ROOT / "app.yaml").read_text())
    env = {**os.environ, "ITHELP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"}
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "TEAMS_APP_ID", "TEAMS_APP_PASSWORD"):
        env.pop(name, None)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve", "--config", str(config), "--port", str(port), "--log-format", "json"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        health = _wait_for(f"http://127.0.0.1:{port}/healthz", process)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert metrics.status_code == 200 and "text/plain" in metrics.headers["content-type"]
        assert "ithelp_outbox_pending" in metrics.text and "ithelp_tickets_opened" in metrics.text
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert (tmp_path / "fresh.db").exists()
    # One line says which platforms are off and why.
    assert "platforms off: Slack (slack.bot_token and slack.signing_secret not set)" in output
    assert '"level": "info"' in output
    assert "event loop: uvloop" in output  # installed with ithelp: serve picks it by default


def test_serve_runs_on_uvloop_unless_asked_for_asyncios_own_loop() -> None:
    import uvloop

    from bot.cli import event_loop_factory

    assert event_loop_factory("auto") is uvloop.new_event_loop
    assert event_loop_factory("uvloop") is uvloop.new_event_loop
    assert event_loop_factory("asyncio") is None


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(url: str, process: subprocess.Popen[str], timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited early: {process.stdout.read() if process.stdout else ''}")
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.1)  # polling a starting process, not waiting out a rule
    raise AssertionError(f"{url} did not answer within {timeout}s")


async def test_metrics_count_opened_and_resolved_tickets(desk: object, make_ticket: object) -> None:
    from bot.people import PersonRef

    ticket = await make_ticket()  # type: ignore[operator]
    await desk.tickets.resolve(ticket.id, PersonRef("slack", "UAGENT1", "Alice"), "done")  # type: ignore[attr-defined]
    metrics = desk.metrics  # type: ignore[attr-defined]
    assert metrics.tickets_opened.labels("slack")._value.get() == 1
    assert metrics.tickets_closed.labels("resolved")._value.get() == 1


def test_check_config_lists_field_errors_and_cross_reference_errors_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(BROKEN["duration"][0] + BROKEN["chain"][0])
    assert main(["check-config", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert BROKEN["duration"][1] in lines  # a key with a bad value…
    assert BROKEN["chain"][1] in lines  # …and a chain naming a pager that doesn't exist, together



def test_teams_package_takes_the_bot_domain_from_server_public_url(tmp_path: Path) -> None:
    import json
    import zipfile

    config = tmp_path / "app.yaml"
    config.write_text("server:\n  public_url: https://desk.example.org/ithelp\n")
    assert main(["teams-package", "--config", str(config), "--app-id", "11111111-2222-3333-4444-555555555555",
                 "--output", str(tmp_path / "app.zip")]) == 0
    with zipfile.ZipFile(tmp_path / "app.zip") as package:
        manifest = json.loads(package.read("manifest.json"))
    assert "desk.example.org" in manifest["validDomains"]


def test_a_public_url_that_is_not_a_url_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "app.yaml"
    path.write_text("server:\n  public_url: desk dot example\n")
    assert main(["check-config", str(path)]) == 1
    assert any(line.startswith("server.public_url:") for line in capsys.readouterr().out.splitlines())
