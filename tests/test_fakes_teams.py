"""The fake Bot Connector speaks what botbuilder's real CloudAdapter sends; the Teams package builds."""

from __future__ import annotations

import json
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from botbuilder.core import TurnContext
from botbuilder.core.teams import TeamsActivityHandler, TeamsInfo
from botbuilder.integration.aiohttp import CloudAdapter, ConfigurationBotFrameworkAuthentication
from botbuilder.schema import (
    Activity,
    AdaptiveCardInvokeResponse,
    ChannelAccount,
    ConversationParameters,
    ConversationReference,
    ErrorResponseException,
)

from bot.simulators import teams_activities as ta
from bot.simulators.bot_connector import FakeBotConnector
from bot.teams_package import build_teams_package

APP_ID = "0b7f5a9e-3c1d-4e2f-9a8b-7c6d5e4f3a2b"


class _NoAuth:
    """An app.yaml-less configuration: no APP_ID/APP_PASSWORD, so botbuilder runs with auth disabled."""


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotConnector]:
    async with FakeBotConnector() as connector:
        yield connector


@pytest.fixture
def adapter() -> CloudAdapter:
    return CloudAdapter(ConfigurationBotFrameworkAuthentication(_NoAuth()))


async def _turn(
    adapter: CloudAdapter, activity: dict[str, Any], logic: Callable[[TurnContext], Awaitable[None]]
) -> Any:
    return await adapter.process_activity("", Activity().deserialize(activity), logic)


async def test_reply_and_update_in_a_turn_reach_the_fake_with_decoded_ids(
    fake: FakeBotConnector, adapter: CloudAdapter
) -> None:
    inbound = ta.message("help", service_url=fake.service_url, conversation_type="channel", mention_bot=True)
    conversation_id = inbound["conversation"]["id"]
    assert conversation_id.startswith("19:helpdesk@thread.tacv2;messageid=")

    async def logic(turn: TurnContext) -> None:
        sent = await turn.send_activity("hi")
        await turn.update_activity(Activity(id=sent.id, type="message", text="hi, edited"))

    await _turn(adapter, inbound, logic)

    reply, update = fake.activities
    assert (reply.method, reply.conversation_id, reply.activity_id) == ("POST", conversation_id, inbound["id"])
    assert reply.reply_to_id == inbound["id"]
    assert reply.path == f"/v3/conversations/{conversation_id}/activities/{inbound['id']}"
    assert reply.authorization is None  # no app id: no token is fetched and no Authorization is sent
    assert fake.sent_to(conversation_id) == [reply.body]
    assert reply.response is not None and not isinstance(reply.response, list)
    assert (update.method, update.activity_id) == ("PUT", reply.response["id"])
    assert fake.updates_to(conversation_id) == [update]
    assert fake.activity(conversation_id, reply.response["id"])["text"] == "hi, edited"  # type: ignore[index]
    assert (fake.accepted, fake.rejected) == (2, 0)


async def test_update_of_an_unknown_activity_is_404_like_the_real_service(
    fake: FakeBotConnector, adapter: CloudAdapter
) -> None:
    async def logic(turn: TurnContext) -> None:
        with pytest.raises(ErrorResponseException) as caught:
            await turn.update_activity(Activity(id="1:nope", type="message", text="x"))
        assert caught.value.response.status_code == 404
        assert caught.value.error.error.code == "NotFound"

    await _turn(adapter, ta.message("hi", service_url=fake.service_url), logic)
    assert fake.rejected == 1


class _EchoBot(TeamsActivityHandler):  # type: ignore[misc]
    """Answers Action.Execute with a card and typed text / Action.Submit with a reply."""

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        await turn_context.send_activity(f"text={activity.text!r} value={activity.value!r}")

    async def on_adaptive_card_invoke(self, turn_context: TurnContext, invoke_value: Any) -> AdaptiveCardInvokeResponse:
        card = {"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "TextBlock", "text": "done"}]}
        assert invoke_value.action["verb"] == "ack"
        return AdaptiveCardInvokeResponse(status_code=200, type="application/vnd.microsoft.card.adaptive", value=card)


@pytest.fixture
async def messages_endpoint(adapter: CloudAdapter) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    bot = _EchoBot()

    async def messages(request: web.Request) -> web.Response:
        # Not adapter.process(): in 4.17.1 it re-serializes the already-serialized invoke body and answers
        # 500 for every Action.Execute. Run the turn and write the InvokeResponse ourselves.
        activity = Activity().deserialize(await request.json())
        invoke = await adapter.process_activity(request.headers.get("Authorization", ""), activity, bot.on_turn)
        if invoke is None:
            return web.Response(status=201)
        return web.json_response(invoke.body, status=invoke.status)

    app = web.Application()
    app.router.add_post("/api/messages", messages)
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_teams_shaped_activities_through_the_http_endpoint(
    fake: FakeBotConnector, messages_endpoint: TestClient[web.Request, web.Application]
) -> None:
    invoke = ta.invoke_adaptive_card_action("ack", {"ticket": 42}, service_url=fake.service_url, reply_to_id="1:c")
    response = await messages_endpoint.post("/api/messages", json=invoke)
    assert response.status == 200
    assert (await response.json())["value"]["body"][0]["text"] == "done"

    submit = ta.message(None, value={"ticket": 42, "comment": "ok"}, reply_to_id="1:c", service_url=fake.service_url)
    response = await messages_endpoint.post("/api/messages", json=submit)
    assert response.status == 201
    (call,) = await fake.wait_for(lambda c: c.method == "POST")
    assert call.body is not None and call.body["text"] == "text=None value={'ticket': 42, 'comment': 'ok'}"


async def test_continue_conversation_from_a_stored_reference_reaches_the_fake() -> None:
    adapter = CloudAdapter(ConfigurationBotFrameworkAuthentication(_NoAuth()))
    async with FakeBotConnector(path_prefix="amer") as fake:
        assert fake.service_url.endswith("/amer/")
        inbound = Activity().deserialize(ta.message("hi", service_url=fake.service_url))
        stored = json.dumps(TurnContext.get_conversation_reference(inbound).serialize())

        async def logic(turn: TurnContext) -> None:
            await turn.send_activity("Your ticket was updated")

        reference = ConversationReference().deserialize(json.loads(stored))
        await adapter.continue_conversation(reference, logic, bot_app_id="")

        (call,) = fake.activities
        assert call.conversation_id == "a:1personal-chat"
        assert call.body is not None and call.body["text"] == "Your ticket was updated"
        # The continuation activity gets a random id, so proactive sends are "replies" to it.
        assert call.activity_id is not None and call.activity_id == call.reply_to_id


async def test_create_conversation_and_roster(fake: FakeBotConnector, adapter: CloudAdapter) -> None:
    fake.add_member("29:1user", "Alex Requester", "aad-alex", email="alex@contoso.com")
    parameters = ConversationParameters(
        is_group=False,
        bot=ChannelAccount(id=ta.BOT_ID),
        members=[ChannelAccount(id="29:1user")],
        tenant_id="tenant-1",
        channel_data={"tenant": {"id": "tenant-1"}},
    )
    seen: list[tuple[str, str, str | None]] = []

    async def logic(turn: TurnContext) -> None:
        member = await TeamsInfo.get_member(turn, "29:1user")
        seen.append((turn.activity.conversation.id, member.aad_object_id, member.email))
        await turn.send_activity("Hello from IT")

    await adapter.create_conversation("", logic, parameters, "msteams", fake.service_url)
    await adapter.create_conversation("", logic, parameters, "msteams", fake.service_url)

    assert seen[0] == seen[1]  # one personal chat per user, like Teams
    conversation_id, aad, email = seen[0]
    assert (aad, email) == ("aad-alex", "alex@contoso.com")
    assert [b["text"] for b in fake.sent_to(conversation_id)] == ["Hello from IT", "Hello from IT"]


async def test_429_then_success_and_put_retried_by_the_client(fake: FakeBotConnector, adapter: CloudAdapter) -> None:
    async def logic(turn: TurnContext) -> None:
        fake.fail_next(429, retry_after=7)
        with pytest.raises(ErrorResponseException) as caught:
            await turn.send_activity("first try")
        assert caught.value.response.status_code == 429
        assert caught.value.response.headers["Retry-After"] == "7"
        sent = await turn.send_activity("second try")
        # PUT (unlike POST) is retried inside the connector client (urllib3) on 429 + Retry-After and 5xx.
        fake.fail_next(429, retry_after=0)
        await turn.update_activity(Activity(id=sent.id, type="message", text="edited"))

    await _turn(adapter, ta.message("hi", service_url=fake.service_url), logic)
    assert [(c.method, c.status) for c in fake.activities] == [
        ("POST", 429),
        ("POST", 201),
        ("PUT", 429),
        ("PUT", 200),
    ]
    assert [b["text"] for b in fake.sent_to("a:1personal-chat")] == ["second try"]
    assert (fake.accepted, fake.rejected) == (2, 2)


async def test_403_injection_and_blocked_conversation(fake: FakeBotConnector, adapter: CloudAdapter) -> None:
    codes: list[tuple[int, str]] = []

    async def logic(turn: TurnContext) -> None:
        for _ in range(3):
            try:
                await turn.send_activity("hello?")
            except ErrorResponseException as error:
                codes.append((error.response.status_code, error.error.error.code))

    fake.fail_next(403)
    await _turn(adapter, ta.message("hi", service_url=fake.service_url), logic)
    assert codes == [(403, "MessageWritesBlocked")]

    codes.clear()
    fake.block_conversation("a:1personal-chat")
    await _turn(adapter, ta.message("hi", service_url=fake.service_url), logic)
    assert codes == [(403, "ConversationBlockedByUser")] * 3


async def test_wait_for_reports_what_it_saw_on_timeout(fake: FakeBotConnector, adapter: CloudAdapter) -> None:
    async def logic(turn: TurnContext) -> None:
        await turn.send_activity("only this")

    await _turn(adapter, ta.message("hi", service_url=fake.service_url), logic)
    with pytest.raises(AssertionError, match="only this"):
        await fake.wait_for(lambda c: c.method == "PUT", timeout=0.05)
    fake.reset()
    assert (fake.activities, fake.accepted) == ([], 0)


def test_builders_shape_like_teams() -> None:
    url = "http://connector/"
    channel = ta.message("status 42", service_url=url, conversation_type="channel", mention_bot=True)
    assert channel["text"] == "<at>ITHelp</at> status 42"
    assert channel["entities"][0]["mentioned"] == {"id": ta.BOT_ID, "name": "ITHelp"}
    assert channel["channelData"]["team"] == {"id": "19:team-it@thread.tacv2"}
    assert channel["conversation"]["isGroup"] is True
    assert channel["localTimestamp"] == "2024-05-01T10:00:00.000+01:00"
    assert ta.message("a", service_url=url)["id"] != ta.message("a", service_url=url)["id"]
    installed = ta.conversation_update_installed(service_url=url, conversation_type="channel")
    assert installed["conversation"]["id"] == "19:helpdesk@thread.tacv2"
    assert installed["membersAdded"] == [{"id": ta.BOT_ID}]
    assert ta.installation_update("remove", service_url=url)["action"] == "remove"


def test_build_teams_package(tmp_path: Path) -> None:
    output = build_teams_package(APP_ID, tmp_path / "out" / "ithelp.zip", bot_domain="ithelp.example.org")
    with zipfile.ZipFile(output) as package:
        assert sorted(package.namelist()) == ["color.png", "manifest.json", "outline.png"]
        manifest = json.loads(package.read("manifest.json"))
        assert package.read("color.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert manifest["id"] == manifest["bots"][0]["botId"] == APP_ID
    assert manifest["validDomains"] == ["ithelp.example.org"]
    assert manifest["developer"]["privacyUrl"] == "https://ithelp.example.org/privacy"
    assert "{{" not in json.dumps(manifest)

    without_domain = build_teams_package(APP_ID, tmp_path / "plain.zip")
    with zipfile.ZipFile(without_domain) as package:
        assert json.loads(package.read("manifest.json"))["validDomains"] == []


@pytest.mark.parametrize("app_id", ["", "not-a-guid", "{" + APP_ID + "}", APP_ID.replace("-", "")])
def test_build_teams_package_refuses_a_bad_app_id(tmp_path: Path, app_id: str) -> None:
    with pytest.raises(ValueError, match="GUID"):
        build_teams_package(app_id, tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


def test_build_teams_package_refuses_a_url_as_domain(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="host name"):
        build_teams_package(APP_ID, tmp_path / "x.zip", bot_domain="https://ithelp.example.org/")
