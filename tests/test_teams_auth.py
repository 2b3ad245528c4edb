"""Teams authentication under attack (issue #16): no half-configured credentials, forged tokens that cannot
freeze the bot, and unauthenticated requests that are refused before their body is read.

Tokens are real RS256 JWTs: the fake OpenID provider (``tests/fakes/openid.py``) publishes a key the way
Microsoft publishes the Bot Framework's, and forged tokens are signed by keys it never published. Requests go
over real HTTP into the real ``Server`` (in-process on an ephemeral port) or an ``ithelp serve`` subprocess.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from bot.cli import main
from bot.clock import ManualClock
from bot.config import AppConfig, SlackConfig, TeamsConfig, parse_config
from bot.simulators import slack_requests as rq
from bot.simulators import teams_activities as ta
from bot.simulators.bot_connector import FakeBotConnector
from bot.simulators.http import post
from bot.simulators.slack_api import FakeSlackApi
from store.db import Database
from tests.conftest import TEST_CONFIG
from tests.fakes.openid import FakeOpenIdProvider, forged_token
from tests.fakes.process import ServeProcess, start_servers, stop_servers, write_config
from tests.harness import running_server

ROOT = Path(__file__).resolve().parent.parent
APP_ID = "0b7f5a9e-3c1d-4e2f-9a8b-7c6d5e4f3a2b"
SECRET = "test-signing-secret"


@pytest.fixture
async def connector() -> AsyncIterator[FakeBotConnector]:
    async with FakeBotConnector() as fake:
        yield fake


def teams_config(make_config: Callable[..., AppConfig], connector: FakeBotConnector, **teams: Any) -> AppConfig:
    """Teams only (Slack off), pointed at the fake connector."""
    return make_config().model_copy(update={"slack": SlackConfig(), "teams": TeamsConfig(
        enabled=True, triage_conversation="19:triage@thread.tacv2", service_url=connector.service_url, **teams)})


def authenticated(make_config: Callable[..., AppConfig], connector: FakeBotConnector, keys: FakeOpenIdProvider,
                  **teams: Any) -> AppConfig:
    return teams_config(make_config, connector, app_id=APP_ID, app_password="client-secret",
                        openid_metadata_url=keys.metadata_url, **teams)


async def send_activity(url: str, activity: dict[str, Any], token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return await post(url + "/api/messages", json.dumps(activity).encode(), headers)


# -- 1. credentials are all there, or Teams is explicitly local -----------------------------------------------

HALF_CONFIGURED = {
    "app id without its password": ("teams:\n  app_id: ${ITHELP_TEST_TEAMS_ID}\n", "teams.app_password:"),
    "password without an app id": ("teams:\n  app_password: ${ITHELP_TEST_TEAMS_PASSWORD}\n", "teams.app_id:"),
    "single tenant without its tenant": ("teams:\n  app_id: ${ITHELP_TEST_TEAMS_ID}\n  app_password: "
                                         "${ITHELP_TEST_TEAMS_PASSWORD}\n  app_type: SingleTenant\n",
                                         "teams.tenant_id:"),
}


@pytest.mark.parametrize("case", sorted(HALF_CONFIGURED))
def test_half_configured_teams_credentials_fail_check_config_and_serve_refuses_to_start(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    text, key = HALF_CONFIGURED[case]
    env = {"ITHELP_TEST_TEAMS_ID": APP_ID, "ITHELP_TEST_TEAMS_PASSWORD": "client-secret-value"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "app.yaml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 1
    out = capsys.readouterr().out
    assert any(line.startswith(key) for line in out.splitlines()), out
    assert "client-secret-value" not in out
    # serve refuses the same file before it listens (given 30 s to exit, not to run).
    refused = subprocess.run([sys.executable, "-m", "bot", "serve", "--config", str(path), "--port", "0"],
                             cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=30,
                             check=False)
    assert refused.returncode == 2 and key in refused.stderr, refused.stdout + refused.stderr


def test_the_shipped_app_yaml_with_empty_teams_variables_keeps_teams_off(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `${TEAMS_APP_ID:-}` and friends exported empty (a blank line in an .env file) mean "Teams off".
    for name in ("TEAMS_APP_ID", "TEAMS_APP_PASSWORD", "TEAMS_TENANT_ID"):
        monkeypatch.setenv(name, "")
    assert main(["check-config", str(ROOT / "app.yaml")]) == 0
    assert capsys.readouterr().out.strip() == "ok"
    config = parse_config((ROOT / "app.yaml").read_text())
    assert not config.teams.active and not config.teams.authenticated


def test_local_teams_mode_on_a_public_address_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "app.yaml"
    path.write_text("server:\n  host: 0.0.0.0\nteams:\n  enabled: true\n")
    assert main(["check-config", str(path)]) == 1
    assert any(line.startswith("teams.enabled:") and "127.0.0.1" in line
               for line in capsys.readouterr().out.splitlines())


async def test_local_teams_mode_says_once_at_start_that_requests_are_not_authenticated(
    make_config: Callable[..., AppConfig], connector: FakeBotConnector, db: Database, clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with running_server(teams_config(make_config, connector), db, clock) as server:
        status, _ = await send_activity(server.url, ta.conversation_update_installed(
            service_url=connector.service_url))
        assert status == 201  # local mode: no token needed
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "unauthenticated" in w]) == 1, warnings
    assert len(warnings) == 1, warnings


async def test_with_credentials_no_warning_and_an_unsigned_activity_is_refused(
    make_config: Callable[..., AppConfig], connector: FakeBotConnector, db: Database, clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with FakeOpenIdProvider() as keys:
        async with running_server(authenticated(make_config, connector, keys), db, clock) as server:
            status, body = await send_activity(server.url, ta.message("hello", service_url=connector.service_url))
    assert (status, body) == (401, {"error": "unauthorized"})
    assert [r.getMessage() for r in caplog.records if "unauthenticated" in r.getMessage()] == []
    assert connector.activities == []


# -- 2. forged tokens cannot freeze the bot -----------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def test_forged_teams_tokens_against_a_hanging_key_endpoint_leave_healthz_and_slack_fast(
    tmp_path: Path,
) -> None:
    with FakeOpenIdProvider(mode="hang") as keys:
        async with FakeSlackApi() as slack, FakeBotConnector() as connector:
            users = [f"UREQ{i:02d}" for i in range(20)]
            for user in users:
                slack.add_user(user, real_name=f"Requester {user}", tz="Europe/London")
            data = yaml.safe_load(TEST_CONFIG)
            data["database"] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'forged.db'}"}
            data["slack"] = {**data["slack"], "api_url": slack.url}
            data["teams"] = {"app_id": APP_ID, "app_password": "client-secret", "service_url": connector.service_url,
                             "openid_metadata_url": keys.metadata_url, "openid_timeout": "2s"}
            server = ServeProcess(write_config(tmp_path / "app.yaml", "", data), replica="forged")
            await start_servers([server])
            try:
                timings: dict[str, list[float]] = {"healthz": [], "slack": []}
                failures: list[str] = []
                storm_over = asyncio.Event()
                timeout = aiohttp.ClientTimeout(total=8)
                async with aiohttp.ClientSession(timeout=timeout) as http:

                    # Built before the clock starts: signing is the attacker's CPU, not the bot's.
                    forgeries = [(json.dumps(ta.message(f"forged {index}", service_url=connector.service_url)).encode(),
                                  forged_token(APP_ID, connector.service_url)) for index in range(50)]

                    async def forged(index: int) -> int:
                        body, token = forgeries[index]
                        async with http.post(server.url + "/api/messages", data=body,
                                             headers={"Content-Type": "application/json",
                                                      "Authorization": f"Bearer {token}"}) as response:
                            return response.status

                    async def probe(what: str) -> None:
                        serial = 0
                        while not storm_over.is_set() or serial < 10:
                            serial += 1
                            started = time.monotonic()
                            try:
                                if what == "healthz":
                                    async with http.get(server.url + "/healthz") as response:
                                        ok = response.status == 200
                                else:
                                    request = rq.slash_command(f"Printer jam {serial}", users[serial % 20], SECRET)
                                    async with http.post(server.url + "/slack/events", data=request.body,
                                                         headers=request.headers) as response:
                                        ok = response.status == 200 and "opened" in await response.text()
                            except (aiohttp.ClientError, TimeoutError) as exc:
                                ok = False
                                failures.append(f"{what}: {exc!r}")
                            timings[what].append(time.monotonic() - started)
                            if not ok:
                                failures.append(f"{what} #{serial} failed")
                            await asyncio.sleep(0.05)  # a steady trickle of probes, not a flood

                    probes = [asyncio.create_task(probe("healthz")), asyncio.create_task(probe("slack"))]

                    async def storm() -> list[int | BaseException]:
                        try:
                            return await asyncio.gather(*(forged(i) for i in range(50)), return_exceptions=True)
                        finally:
                            storm_over.set()

                    statuses = await storm()
                    await asyncio.gather(*probes)
            finally:
                await stop_servers([server])
            log = server.log()
    slow = {what: round(percentile(values, 0.99), 3) for what, values in timings.items()}
    print(f"\n50 forged tokens against a hanging key endpoint: p99 healthz {slow['healthz']} s, "
          f"signed /ithelp {slow['slack']} s ({len(timings['slack'])} of them); key endpoint hit {keys.count()} times")
    assert statuses == [401] * 50, statuses
    assert failures == [], failures[:5]
    assert slow["healthz"] < 1 and slow["slack"] < 1, slow
    assert keys.count() == 1, "one fetch (bounded) for the whole storm: failures are remembered"
    assert "Traceback" not in log, log[-3000:]


async def test_a_failed_key_fetch_is_remembered_for_30_seconds_of_the_clock(
    make_config: Callable[..., AppConfig], connector: FakeBotConnector, db: Database, clock: ManualClock,
) -> None:
    with FakeOpenIdProvider(mode="error") as keys:
        async with running_server(authenticated(make_config, connector, keys), db, clock) as server:
            activity = ta.message("hello", service_url=connector.service_url)
            assert (await send_activity(server.url, activity, forged_token(APP_ID, connector.service_url)))[0] == 401
            assert keys.count() == 1
            clock.advance(timedelta(seconds=29))
            assert (await send_activity(server.url, activity, keys.token(APP_ID, connector.service_url)))[0] == 401
            assert keys.count() == 1, "a failed fetch is not repeated within 30 s"
            clock.advance(timedelta(seconds=2))
            keys.mode = "ok"
            status, _ = await send_activity(server.url, ta.conversation_update_installed(
                service_url=connector.service_url), keys.token(APP_ID, connector.service_url))
            assert status == 201, "after 30 s the keys are fetched again, and a real token passes"
            assert keys.count() == 3  # the metadata document, then the keys


async def test_genuine_tokens_pass_and_the_keys_are_fetched_once_a_day(
    make_config: Callable[..., AppConfig], connector: FakeBotConnector, db: Database, clock: ManualClock,
) -> None:
    with FakeOpenIdProvider() as keys:
        async with running_server(authenticated(make_config, connector, keys), db, clock) as server:
            installed = ta.conversation_update_installed(service_url=connector.service_url)
            for _ in range(3):
                status, _ = await send_activity(server.url, installed, keys.token(APP_ID, connector.service_url))
                assert status == 201
            assert keys.count() == 2
            # A token for another bot, or for another service URL, is refused with the keys in hand.
            assert (await send_activity(server.url, installed, keys.token("another-app", connector.service_url))
                    )[0] == 401
            assert (await send_activity(server.url, installed, keys.token(APP_ID, "https://evil.example/")))[0] == 401
            # An unknown key id refreshes the keys at most once an hour (as botbuilder does)...
            unknown = forged_token(APP_ID, connector.service_url)
            assert (await send_activity(server.url, installed, unknown))[0] == 401
            assert keys.count() == 2
            clock.advance(timedelta(hours=1, minutes=1))
            assert (await send_activity(server.url, installed, unknown))[0] == 401
            assert keys.count() == 4
            # ...and the key set itself is refreshed after a day.
            clock.advance(timedelta(days=1))
            assert (await send_activity(server.url, installed, keys.token(APP_ID, connector.service_url)))[0] == 201
            assert keys.count() == 6


# -- 3. refused before the body is read --------------------------------------------------------------------------


async def raw_post_head(url: str, path: str, headers: dict[str, str], *, length: int, first: bytes,
                        ) -> tuple[int, float]:
    """Send the headers of a ``length``-byte POST and only ``first`` of its body; returns the status of an answer
    that came anyway and how long it took. Raises TimeoutError when the server waits for the rest."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {length}",
                 *(f"{name}: {value}" for name, value in headers.items())]
        started = time.monotonic()
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + first)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=5)
        return int(status_line.split()[1]), time.monotonic() - started
    finally:
        writer.close()


async def test_an_unauthenticated_teams_request_is_refused_before_its_body_is_uploaded(
    make_config: Callable[..., AppConfig], connector: FakeBotConnector, db: Database, clock: ManualClock,
) -> None:
    with FakeOpenIdProvider() as keys:
        async with running_server(authenticated(make_config, connector, keys), db, clock) as server:
            first = json.dumps(ta.message("x" * 500, service_url=connector.service_url)).encode()[:400]
            for what, authorization in {
                "no Authorization header": None,
                "not a bearer token": "Basic dXNlcjpwYXNz",
                "a bearer that is not a JWT": "Bearer not-a-token",
                "a forged token": f"Bearer {forged_token(APP_ID, connector.service_url, kid=keys.kid)}",
                "a genuine token for another bot": f"Bearer {keys.token('another-app', connector.service_url)}",
            }.items():
                headers = {"Content-Type": "application/json"}
                if authorization:
                    headers["Authorization"] = authorization
                try:
                    status, _ = await raw_post_head(server.url, "/api/messages", headers, length=1_400_000,
                                                       first=first)
                except TimeoutError:
                    raise AssertionError(f"{what}: the server waited for the 1.4 MB body") from None
                assert status == 401, what
    assert connector.activities == []


def cpu_seconds(pid: int) -> float:
    """CPU time all threads of ``pid`` have run, in seconds (nanosecond counters, not 10 ms ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
    return total / 1e9


def big_activity(service_url: str, size: int = 1_400_000) -> bytes:
    """A 1.4 MB activity built to be expensive to read: thousands of small objects to parse and deserialize."""
    activity = ta.message("hello", service_url=service_url)
    mention = {"type": "mention", "text": "<at>x</at>", "mentioned": {"id": "29:x", "name": "x"}}
    activity["entities"] = [mention] * (size // len(json.dumps(mention)))
    return json.dumps(activity).encode()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads per-thread CPU time from /proc")
async def test_a_refused_teams_request_costs_no_more_than_a_refused_slack_one(tmp_path: Path) -> None:
    with FakeOpenIdProvider() as keys:
        async with FakeSlackApi() as slack, FakeBotConnector() as connector:
            data = yaml.safe_load(TEST_CONFIG)
            data["database"] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'cpu.db'}"}
            data["slack"] = {**data["slack"], "api_url": slack.url}
            data["teams"] = {"app_id": APP_ID, "app_password": "client-secret", "service_url": connector.service_url,
                             "openid_metadata_url": keys.metadata_url}
            server = ServeProcess(write_config(tmp_path / "app.yaml", "", data), replica="cpu")
            await start_servers([server])
            assert server.process is not None
            body = big_activity(connector.service_url)
            slack_body = b"payload=" + b"x" * (len(body) - 8)
            forged = {"Content-Type": "application/json",
                      "Authorization": f"Bearer {forged_token(APP_ID, connector.service_url, kid=keys.kid)}"}
            unsigned = rq.signed(slack_body, rq.FORM, "not-the-secret").headers
            cost: dict[str, float] = {}
            try:
                async with aiohttp.ClientSession() as http:
                    # Warm up both paths (the key set is fetched on the first token), then measure in turns.
                    for path, headers, payload in (("/api/messages", forged, body), ("/slack/events", unsigned,
                                                                                      slack_body)):
                        async with http.post(server.url + path, data=payload, headers=headers) as response:
                            assert response.status == 401
                    for _ in range(3):
                        for what, path, headers, payload in (("teams", "/api/messages", forged, body),
                                                             ("slack", "/slack/events", unsigned, slack_body)):
                            before = cpu_seconds(server.process.pid)
                            for _ in range(10):
                                async with http.post(server.url + path, data=payload, headers=headers) as response:
                                    assert response.status == 401, what
                            cost[what] = cost.get(what, 0.0) + (cpu_seconds(server.process.pid) - before) / 30
            finally:
                await stop_servers([server])
    print(f"\nCPU per refused 1.4 MB request: Teams {cost['teams'] * 1000:.2f} ms, Slack {cost['slack'] * 1000:.2f} ms")
    assert cost["teams"] < 2 * cost["slack"] + 0.001, cost
