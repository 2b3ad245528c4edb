"""The Slack fakes behave like Slack for the real slack_sdk client and slack-bolt app."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import builtin_async_handlers
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.simulators import slack_requests as sr
from bot.simulators.slack_api import FakeSlackApi

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Printer on fire*"}}]


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlackApi]:
    async with FakeSlackApi() as fake:
        yield fake


@pytest.fixture
def client(slack: FakeSlackApi) -> AsyncWebClient:
    return AsyncWebClient(token="xoxb-test", base_url=slack.url)


async def test_post_update_and_views_round_trip(slack: FakeSlackApi, client: AsyncWebClient) -> None:
    assert slack.url.startswith("http://127.0.0.1:") and slack.url.endswith("/api/")
    assert (await client.auth_test())["user_id"] == "UBOT"

    posted = await client.chat_postMessage(channel="U123", text="hi", blocks=BLOCKS)
    assert posted["channel"] == "DU123"
    assert posted["message"]["blocks"] == BLOCKS
    reply = await client.chat_postMessage(channel="DU123", text="reply", thread_ts=posted["ts"])
    assert float(reply["ts"]) > float(posted["ts"])

    await client.chat_update(channel="DU123", ts=posted["ts"], text="updated")
    with pytest.raises(SlackApiError) as missing:
        await client.chat_update(channel="DU123", ts="1.000001", text="nope")
    assert missing.value.response["error"] == "message_not_found"

    history = await client.conversations_history(channel="DU123")
    assert [m["text"] for m in history["messages"]] == ["updated"]
    assert history["messages"][0]["blocks"] == BLOCKS  # chat.update without blocks keeps them
    replies = await client.conversations_replies(channel="DU123", ts=posted["ts"])
    assert [m["text"] for m in replies["messages"]] == ["updated", "reply"]

    opened = await client.views_open(trigger_id="1.2.3", view={"type": "modal", "callback_id": "new"})
    view_id = opened["view"]["id"]
    assert view_id.startswith("V")
    await client.views_update(view_id=view_id, hash=opened["view"]["hash"], view={"type": "modal"})
    with pytest.raises(SlackApiError):
        await client.views_open(trigger_id="", view={"type": "modal"})
    await client.views_publish(user_id="U123", view={"type": "home", "blocks": BLOCKS})
    assert slack.home_views["U123"]["blocks"] == BLOCKS

    assert slack.calls_to("chat.update") == [{"channel": "DU123", "ts": posted["ts"], "text": "updated"}]
    assert len(slack.calls_to("chat.update", include_failed=True)) == 2
    assert slack.calls[1].headers["Content-Type"].startswith("application/json")


async def test_directory_seeded_history_and_form_bodies(slack: FakeSlackApi, client: AsyncWebClient) -> None:
    slack.add_user("U1", name="ada", real_name="Ada Lovelace", tz="Asia/Kolkata", email="ada@example.com")
    slack.add_usergroup("S1", ["U1", "U2"])
    for i in range(1, 4):
        slack.add_message("C1", f"1700000001.00000{i}", "U1", f"m{i}")

    user = (await client.users_info(user="U1"))["user"]
    assert (user["real_name"], user["tz_offset"], user["profile"]["email"]) == (
        "Ada Lovelace",
        19800,
        "ada@example.com",
    )
    with pytest.raises(SlackApiError, match="user_not_found"):
        await client.users_info(user="U404")
    assert (await client.usergroups_users_list(usergroup="S1"))["users"] == ["U1", "U2"]
    assert (await client.conversations_open(users="U1"))["channel"]["id"] == "DU1"

    page = await client.conversations_history(channel="C1", oldest="1700000001.000001", limit=1)
    assert [m["text"] for m in page["messages"]] == ["m3"] and page["has_more"]
    inclusive = await client.conversations_history(channel="C1", latest="1700000001.000002", inclusive=True)
    assert [m["text"] for m in inclusive["messages"]] == ["m2", "m1"]

    # Form-encoded body: JSON-looking values are decoded, plain strings are kept.
    await client.api_call("chat.postMessage", data={"channel": "C1", "text": "[x", "blocks": json.dumps(BLOCKS)})
    assert slack.calls_to("chat.postMessage")[-1] == {"channel": "C1", "text": "[x", "blocks": BLOCKS}
    posted_ts = slack.messages["C1"][-1]["ts"]
    assert float(posted_ts) > 1700000001.000003  # newer than anything seeded

    with pytest.raises(SlackApiError, match="not_authed"):
        await AsyncWebClient(token="bad", base_url=slack.url).auth_test()
    with pytest.raises(SlackApiError, match="unknown_method"):
        await client.api_call("no.such.method")


async def test_wait_for_calls_wakes_on_call_and_explains_timeout(slack: FakeSlackApi, client: AsyncWebClient) -> None:
    waiter = asyncio.create_task(slack.wait_for_calls("reactions.add", 1))
    slack.add_message("C1", "1700000001.000001", "U1", "help")
    await client.reactions_add(channel="C1", timestamp="1700000001.000001", name="eyes")
    assert await waiter == [{"channel": "C1", "timestamp": "1700000001.000001", "name": "eyes"}]

    with pytest.raises(AssertionError, match=r"(?s)chat.postMessage.*reactions.add -> 200 ok"):
        await slack.wait_for_calls("chat.postMessage", 1, timeout=0.01)


async def test_429_retry_after_is_honoured_and_message_delivered_once(
    slack: FakeSlackApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []

    async def no_wait(seconds: float) -> None:
        slept.append(seconds)

    # The handler sleeps Retry-After (+ jitter) via asyncio.sleep; record it instead of waiting.
    monkeypatch.setattr(builtin_async_handlers, "asyncio", SimpleNamespace(sleep=no_wait))
    client = AsyncWebClient(
        token="xoxb-test",
        base_url=slack.url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    slack.fail_next("chat.postMessage", status=429, retry_after=3)

    await client.chat_postMessage(channel="C1", text="hello")

    assert len(slept) == 1 and 3 <= slept[0] < 4
    assert len(slack.calls_to("chat.postMessage", include_failed=True)) == 2
    assert [m["text"] for m in slack.messages["C1"]] == ["hello"]
    assert (slack.rejected_429, slack.accepted) == (1, 1)


async def test_injected_500_and_error(slack: FakeSlackApi, client: AsyncWebClient) -> None:
    slack.fail_next("chat.postMessage", status=500)
    slack.fail_next("chat.postMessage", error="channel_not_found", times=2)
    with pytest.raises(SlackApiError) as server_error:
        await client.chat_postMessage(channel="C1", text="x")
    assert server_error.value.response.status_code == 500
    for _ in range(2):
        with pytest.raises(SlackApiError, match="channel_not_found"):
            await client.chat_postMessage(channel="C1", text="x")
    await client.chat_postMessage(channel="C1", text="x")
    assert len(slack.calls_to("chat.postMessage")) == 1


async def test_rate_limits_per_channel_and_workspace_with_injected_clock() -> None:
    now = [100.0]
    async with FakeSlackApi(clock=lambda: now[0]) as slack:
        client = AsyncWebClient(token="xoxb-test", base_url=slack.url)
        slack.set_rate_limit(per_channel_per_second=1, workspace_per_minute=3)

        await client.chat_postMessage(channel="C1", text="1")
        with pytest.raises(SlackApiError) as limited:
            await client.chat_postMessage(channel="C1", text="2")
        assert limited.value.response.status_code == 429
        assert limited.value.response.headers["Retry-After"] == "1"
        await client.chat_postMessage(channel="C2", text="other channel is fine")

        now[0] += 1.0
        await client.chat_postMessage(channel="C1", text="2")
        with pytest.raises(SlackApiError) as budget:
            await client.chat_postMessage(channel="C3", text="workspace budget spent")
        assert budget.value.response.headers["Retry-After"] == "59"

        now[0] += 59.0
        await client.chat_postMessage(channel="C3", text="window slid")
        assert (slack.accepted, slack.rejected_429) == (4, 2)


def test_signatures_match_slack_sdk_verifier() -> None:
    verifier = SignatureVerifier(SECRET)
    requests = [
        sr.slash_command("my laptop is broken", "U1", SECRET),
        sr.event_callback({"type": "app_home_opened", "user": "U1", "tab": "home"}, SECRET, retry_num=1),
        sr.block_action("ack", "42", "U1", SECRET, message_ts="1700000000.000100"),
        sr.view_submission("new", {"b": {"a": "text"}}, "U1", SECRET),
        sr.message_shortcut("s", "U1", {"type": "message", "ts": "1.2", "text": "x"}, "C1", SECRET),
        sr.url_verification("challenge", SECRET),
    ]
    for req in requests:
        assert verifier.is_valid(req.body, req.headers["X-Slack-Request-Timestamp"], req.headers["X-Slack-Signature"])
        assert not SignatureVerifier("other").is_valid(
            req.body, req.headers["X-Slack-Request-Timestamp"], req.headers["X-Slack-Signature"]
        )
    assert requests[1].headers["X-Slack-Retry-Num"] == "1"


async def dispatch(app: AsyncApp, req: sr.SignedRequest) -> BoltResponse:
    headers: dict[str, str | Sequence[str]] = dict(req.headers)
    return await app.async_dispatch(AsyncBoltRequest(body=req.body.decode(), headers=headers))


async def test_bolt_routes_every_request_shape(slack: FakeSlackApi, client: AsyncWebClient) -> None:
    app = AsyncApp(client=client, signing_secret=SECRET, process_before_response=True)
    seen: dict[str, Any] = {}

    @app.command("/ithelp")
    async def on_command(ack: AsyncAck, command: dict[str, Any]) -> None:
        await ack()
        seen["command"] = command["text"]

    @app.event("app_home_opened")
    async def on_home(event: dict[str, Any]) -> None:
        seen["event"] = event["user"]

    @app.action("pick")
    async def on_pick(ack: AsyncAck, action: dict[str, Any], body: dict[str, Any]) -> None:
        await ack()
        seen["action"] = (action["selected_option"]["value"], body["view"]["id"])

    @app.view("new")
    async def on_submit(ack: AsyncAck, view: dict[str, Any]) -> None:
        await ack()
        seen["view"] = (view["state"]["values"]["b"]["a"]["value"], view["private_metadata"])

    @app.shortcut("ithelp.create_ticket_from_message")
    async def on_shortcut(ack: AsyncAck, shortcut: dict[str, Any]) -> None:
        await ack()
        seen["shortcut"] = shortcut["message"]["text"]

    requests = [
        sr.slash_command("vpn down", "U1", SECRET),
        sr.event_callback({"type": "app_home_opened", "user": "U1", "tab": "home"}, SECRET),
        sr.block_action("pick", "P2", "U1", SECRET, action_type="static_select", view={"id": "V1"}),
        sr.view_submission("new", {"b": {"a": "laptop"}}, "U1", SECRET, private_metadata="m"),
        sr.message_shortcut(
            "ithelp.create_ticket_from_message", "U1", {"type": "message", "ts": "1.2", "text": "x"}, "C1", SECRET
        ),
    ]
    for req in requests:
        response = await dispatch(app, req)
        assert response.status == 200, response.body

    assert seen == {
        "command": "vpn down",
        "event": "U1",
        "action": ("P2", "V1"),
        "view": ("laptop", "m"),
        "shortcut": "x",
    }
    tampered = sr.slash_command("x", "U1", "wrong-secret")
    response = await dispatch(app, tampered)
    assert response.status == 401
    challenge = sr.url_verification("abc", SECRET)
    response = await dispatch(app, challenge)
    assert json.loads(response.body) == {"challenge": "abc"}
