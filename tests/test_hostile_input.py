"""Hostile input at the edges (issue #16): bodies built to crash the Teams endpoint, and config files whose
mistakes must not print the secrets interpolated into them.

The HTTP tests run the real ``Server`` on an ephemeral port; the config tests run ``ithelp check-config`` and
``ithelp serve`` as the command line does.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.cli import main
from bot.clock import ManualClock
from bot.config import AppConfig, SlackConfig, TeamsConfig
from bot.simulators.bot_connector import FakeBotConnector
from bot.simulators.http import post
from store.db import Database
from tests.fakes.openid import FakeOpenIdProvider
from tests.harness import running_server

ROOT = Path(__file__).resolve().parent.parent
APP_ID = "0b7f5a9e-3c1d-4e2f-9a8b-7c6d5e4f3a2b"


# -- the Teams endpoint and undecodable bodies ------------------------------------------------------------------


@pytest.fixture
async def connector() -> AsyncIterator[FakeBotConnector]:
    async with FakeBotConnector() as fake:
        yield fake


@pytest.fixture
def keys() -> AsyncIterator[FakeOpenIdProvider]:
    with FakeOpenIdProvider() as provider:
        yield provider


def teams_only(make_config: Callable[..., AppConfig], connector: FakeBotConnector, **teams: object) -> AppConfig:
    return make_config().model_copy(update={"slack": SlackConfig(), "teams": TeamsConfig(
        enabled=True, triage_conversation="19:triage@thread.tacv2", service_url=connector.service_url, **teams)})


HOSTILE_BODIES = {
    "nested 100,000 deep": b"[" * 100_000,
    "nested objects 50,000 deep": b'{"a":' * 50_000,
    "an activity with a value nested 5,000 deep": (
        b'{"type": "message", "serviceUrl": "http://x", "conversation": {"id": "a"}, "value": '
        + b"[" * 5_000 + b"]" * 5_000 + b"}"),
    "bad UTF-8": b'{"type": "message", "text": "\xff\xfe\xfa"}',
    "a 5,000-digit number": b'{"type": "message", "id": ' + b"9" * 5_000 + b"}",
    "a number as the activity": b"12345678901234567890",
    "a list as the activity": b'[{"type": "message"}]',
    "a string": b'"message"',
    "UTF-16 with a BOM": '{"type": "message"}'.encode("utf-16"),
    "NaN": b'{"type": "message", "value": NaN}',
}


@pytest.mark.parametrize("token", ["local", "valid token"])
async def test_undecodable_teams_bodies_get_a_400_and_never_a_traceback(
    make_config: Callable[..., AppConfig], connector: FakeBotConnector, keys: FakeOpenIdProvider, db: Database,
    clock: ManualClock, caplog: pytest.LogCaptureFixture, token: str,
) -> None:
    # Local mode parses every body; with credentials only a correctly signed request gets as far as its body.
    if token == "local":
        config, headers = teams_only(make_config, connector), {}
    else:
        config = teams_only(make_config, connector, app_id=APP_ID, app_password="secret",
                            openid_metadata_url=keys.metadata_url)
        headers = {"Authorization": f"Bearer {keys.token(APP_ID, connector.service_url)}"}
    caplog.set_level(logging.INFO)
    async with running_server(config, db, clock) as server:
        for what, body in HOSTILE_BODIES.items():
            status, answer = await post(server.url + "/api/messages", body,
                                        {"Content-Type": "application/json", **headers})
            assert 400 <= status < 500 and status != 401, (what, status, answer)
            assert "Traceback" not in json.dumps(answer), what
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    assert connector.activities == []


# -- config files never echo secrets ------------------------------------------------------------------------


def check_config(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "app.yaml"
    path.write_text(text)
    code = main(["check-config", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def serve(tmp_path: Path, text: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``ithelp serve`` on ``text``; it must refuse to start, so it is given 30 s to exit, not to run."""
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "bot", "serve", "--config", str(path), "--port", "0"],
                          cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=30,
                          check=False)


def test_check_config_never_prints_a_secret_interpolated_into_a_wrongly_typed_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ITHELP_TEST_POOL", "PWs3cret-Do-Not-Print")
    monkeypatch.setenv("ITHELP_TEST_BOOL", "PWs3cret-bool")
    code, out = check_config(tmp_path, "database:\n  pool_size: ${ITHELP_TEST_POOL}\n  echo: ${ITHELP_TEST_BOOL}\n"
                             "sla:\n  policies:\n    P1: {calendar: '${ITHELP_TEST_POOL}', first_response: 1h, "
                             "resolution: 2h}\n", capsys)
    assert code == 1
    assert "PWs3cret" not in out and "PW" not in out, out
    lines = out.splitlines()
    # The key, the variable it came from and what was expected; never the value.
    assert any(line.startswith("database.pool_size: the value from ${ITHELP_TEST_POOL} is invalid")
               and "integer" in line for line in lines), out
    assert any(line.startswith("database.echo: the value from ${ITHELP_TEST_BOOL} is invalid")
               and "boolean" in line for line in lines), out
    assert any(line.startswith("sla.policies.P1.calendar:") for line in lines), out


def test_a_database_url_with_a_non_numeric_port_is_a_config_error_that_hides_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "postgresql+asyncpg://ithelp:hunter2-s3cret@db.internal:abc/ithelp"
    for text in (f"database:\n  url: {url}\n", "database:\n  url: ${ITHELP_TEST_DB_URL}\n"):
        monkeypatch.setenv("ITHELP_TEST_DB_URL", url)
        code, out = check_config(tmp_path, text, capsys)
        assert code == 1 and "hunter2" not in out, out
        assert any(line.startswith("database.url:") and "port" in line for line in out.splitlines()), out
    # serve says the same and stops: no traceback, no password.
    refused = serve(tmp_path, "database:\n  url: ${ITHELP_TEST_DB_URL}\n", {"ITHELP_TEST_DB_URL": url})
    output = refused.stdout + refused.stderr
    assert refused.returncode == 2, output
    assert "database.url:" in output and "Traceback" not in output and "hunter2" not in output, output
