"""Pager clients against the in-process fakes, over real HTTP."""

from __future__ import annotations

import asyncio
import importlib.abc
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.channels import PermanentDeliveryError, TransientDeliveryError
from bot.channels.pagers import (
    OpsgenieClient,
    PagerDutyClient,
    WebhookClient,
    make_http_client,
    sign_webhook,
    verify_webhook_signature,
)
from bot.simulators.pagers import FakeOpsgenie, FakePagerDuty, FakeWebhookReceiver

ROUTING_KEY = "R0UT1NGKEY0123456789abcdef01234"
GENIE_KEY = "genie-key-0000-1111"
WEBHOOK_SECRET = "whsec-test"
NOW = 1_700_000_000.0


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client(timeout=5.0) as client:
        yield client


@pytest.fixture
async def pagerduty() -> AsyncIterator[FakePagerDuty]:
    async with FakePagerDuty(routing_key=ROUTING_KEY) as fake:
        yield fake


@pytest.fixture
async def opsgenie() -> AsyncIterator[FakeOpsgenie]:
    async with FakeOpsgenie(GENIE_KEY) as fake:
        yield fake


@pytest.fixture
async def receiver() -> AsyncIterator[FakeWebhookReceiver]:
    async with FakeWebhookReceiver(WEBHOOK_SECRET, now=lambda: NOW) as fake:
        yield fake


def pd_client(http: httpx.AsyncClient, fake: FakePagerDuty, routing_key: str = ROUTING_KEY) -> PagerDutyClient:
    return PagerDutyClient(http, routing_key, fake.events_url, now=lambda: NOW)


class ImportLookups(importlib.abc.MetaPathFinder):
    """Sees every import that is not already loaded; finds nothing itself."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        self.names.append(fullname)
        return None


async def test_sending_a_page_never_searches_for_a_module_again(
    http: httpx.AsyncClient, pagerduty: FakePagerDuty, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A failed import searches sys.path every time it is retried: httpx's own transport (httpcore)
    # did that for sniffio inside every lock it set up, ~1 ms of CPU per page in a breach storm
    # (encode/httpcore#1103). Whatever transport pages go through must not.
    client = pd_client(http, pagerduty)
    await client.trigger("ithelp-ticket-1", "warm-up", severity="error")
    lookups = ImportLookups()
    monkeypatch.setattr(sys, "meta_path", [lookups, *sys.meta_path])
    for n in range(3):
        await client.trigger(f"ithelp-ticket-{n + 2}", "P1 breach", severity="critical")
    assert lookups.names == []
    assert len(pagerduty.events) == 4


# --- PagerDuty ---------------------------------------------------------------------------------------


async def test_trigger_acknowledge_resolve_send_documented_bodies_with_one_dedup_key(
    http: httpx.AsyncClient, pagerduty: FakePagerDuty
) -> None:
    client = pd_client(http, pagerduty)

    echoed = await client.trigger(
        "ithelp-ticket-42",
        "P1 breach: VPN down for finance",
        severity="critical",
        custom_details={"ticket": 42, "requester": "ana"},
        links=[{"href": "https://help.example.com/t/42", "text": "Ticket 42"}],
    )
    await client.acknowledge("ithelp-ticket-42")
    await client.resolve("ithelp-ticket-42")

    assert echoed == "ithelp-ticket-42"
    assert pagerduty.actions_for("ithelp-ticket-42") == ["trigger", "acknowledge", "resolve"]
    trigger, ack, resolve = pagerduty.events
    assert trigger == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "ithelp-ticket-42",
        "payload": {
            "summary": "P1 breach: VPN down for finance",
            "source": "ithelp",
            "severity": "critical",
            "custom_details": {"ticket": 42, "requester": "ana"},
        },
        "client": "ithelp",
        "links": [{"href": "https://help.example.com/t/42", "text": "Ticket 42"}],
    }
    assert ack == {"routing_key": ROUTING_KEY, "event_action": "acknowledge", "dedup_key": "ithelp-ticket-42"}
    assert resolve == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "ithelp-ticket-42"}


async def test_trigger_truncates_summary_to_pagerduty_limit(http: httpx.AsyncClient, pagerduty: FakePagerDuty) -> None:
    await pd_client(http, pagerduty).trigger("k", "x" * 5000)

    summary = pagerduty.events[0]["payload"]["summary"]
    assert len(summary) == 1024
    assert summary.endswith("…")


async def test_rejected_routing_key_is_permanent_with_pagerduty_message_and_no_key(
    http: httpx.AsyncClient, pagerduty: FakePagerDuty
) -> None:
    wrong_key = "WR0NGKEY0123456789abcdef0123456"

    with pytest.raises(PermanentDeliveryError) as caught:
        await pd_client(http, pagerduty, routing_key=wrong_key).trigger("k", "disk full")

    message = str(caught.value)
    assert "400" in message
    assert "Invalid routing key" in message
    assert "Event object is invalid" in message
    assert wrong_key not in message
    assert pagerduty.events == []


async def test_blank_summary_is_refused_by_pagerduty_as_permanent(
    http: httpx.AsyncClient, pagerduty: FakePagerDuty
) -> None:
    with pytest.raises(PermanentDeliveryError, match=r"'payload\.summary' is missing or blank"):
        await pd_client(http, pagerduty).trigger("k", "   ")


async def test_rate_limit_is_transient_with_retry_after_seconds(
    http: httpx.AsyncClient, pagerduty: FakePagerDuty
) -> None:
    client = pd_client(http, pagerduty)
    pagerduty.fail_next(429, retry_after=30)

    with pytest.raises(TransientDeliveryError) as caught:
        await client.trigger("k", "disk full")
    await client.trigger("k", "disk full")  # the outbox's retry; the client itself never retries

    assert caught.value.retry_after == 30.0
    assert "429" in str(caught.value)
    assert pagerduty.actions_for("k") == ["trigger"]


async def test_rate_limit_retry_after_http_date_becomes_seconds_from_now(
    http: httpx.AsyncClient, pagerduty: FakePagerDuty
) -> None:
    pagerduty.fail_next(429, retry_after="Tue, 14 Nov 2023 22:15:20 GMT")  # NOW + 2 minutes

    with pytest.raises(TransientDeliveryError) as caught:
        await pd_client(http, pagerduty).trigger("k", "disk full")

    assert caught.value.retry_after == pytest.approx(120.0)


async def test_rate_limit_without_retry_after_leaves_it_to_backoff(
    http: httpx.AsyncClient, pagerduty: FakePagerDuty
) -> None:
    pagerduty.fail_next(429)

    with pytest.raises(TransientDeliveryError) as caught:
        await pd_client(http, pagerduty).acknowledge("k")

    assert caught.value.retry_after is None


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_transient(http: httpx.AsyncClient, pagerduty: FakePagerDuty, status: int) -> None:
    pagerduty.fail_next(status)

    with pytest.raises(TransientDeliveryError, match=str(status)):
        await pd_client(http, pagerduty).resolve("k")


async def test_timeout_is_transient(pagerduty: FakePagerDuty) -> None:
    pagerduty.delay_next(2.0)

    async with make_http_client(timeout=0.05) as impatient:
        with pytest.raises(TransientDeliveryError, match="timed out"):
            await pd_client(impatient, pagerduty).trigger("k", "disk full")


async def test_unreachable_server_is_transient(http: httpx.AsyncClient) -> None:
    async with FakePagerDuty() as gone:
        client = pd_client(http, gone)
    # The fake has stopped, so its port refuses connections.

    with pytest.raises(TransientDeliveryError, match="transport error"):
        await client.trigger("k", "disk full")


async def test_secret_echoed_in_error_body_is_redacted(http: httpx.AsyncClient) -> None:
    def echo_key(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, text=f"key {json.loads(request.content)['routing_key']} is disabled")

    async with httpx.AsyncClient(transport=httpx.MockTransport(echo_key)) as mocked:
        with pytest.raises(PermanentDeliveryError) as caught:
            await PagerDutyClient(mocked, ROUTING_KEY).trigger("k", "disk full")

    assert ROUTING_KEY not in str(caught.value)
    assert "key [redacted] is disabled" in str(caught.value)


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (
            {"event_action": "trigger", "payload": {"summary": "s", "source": "x", "severity": "info"}},
            "'routing_key' is missing or blank",
        ),
        ({"routing_key": ROUTING_KEY, "event_action": "snooze", "dedup_key": "k"}, "'event_action' is invalid"),
        (
            {"routing_key": ROUTING_KEY, "event_action": "trigger", "payload": {"source": "x", "severity": "info"}},
            "'payload.summary' is missing or blank",
        ),
    ],
)
async def test_fake_pagerduty_rejects_malformed_events_like_the_real_api(
    http: httpx.AsyncClient, pagerduty: FakePagerDuty, event: dict[str, object], error: str
) -> None:
    response = await http.post(pagerduty.events_url, json=event)

    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "invalid event"
    assert body["message"] == "Event object is invalid"
    assert any(error in e for e in body["errors"])


async def test_fake_wait_for_reports_what_it_saw_on_timeout(pagerduty: FakePagerDuty) -> None:
    with pytest.raises(AssertionError, match=r"FakePagerDuty: waited 0.05s for 1 accepted request\(s\), saw 0"):
        await pagerduty.wait_for(1, timeout=0.05)


# --- Opsgenie ----------------------------------------------------------------------------------------


async def test_opsgenie_create_acknowledge_close_by_url_encoded_alias(
    http: httpx.AsyncClient, opsgenie: FakeOpsgenie
) -> None:
    client = OpsgenieClient(http, GENIE_KEY, opsgenie.url)
    alias = "ticket 42/vpn?finance#100% down"

    request_id = await client.create_alert(
        alias,
        "VPN down for finance",
        description="Since 09:12",
        priority="P1",
        details={"ticket": "42"},
        tags=["vpn", "p1"],
    )
    assert opsgenie.alerts[alias].status == "open"
    await client.acknowledge(alias, note="on it")
    assert opsgenie.alerts[alias].status == "acked"
    await client.close(alias)

    assert request_id
    alert = opsgenie.alerts[alias]
    assert alert.status == "closed"
    assert alert.notes == ["on it"]
    assert [(call.action, call.alias) for call in opsgenie.calls] == [
        ("create", alias),
        ("acknowledge", alias),
        ("close", alias),
    ]
    assert opsgenie.calls[0].body == {
        "alias": alias,
        "message": "VPN down for finance",
        "description": "Since 09:12",
        "priority": "P1",
        "details": {"ticket": "42"},
        "tags": ["vpn", "p1"],
        "source": "ithelp",
    }


async def test_opsgenie_message_is_truncated_to_130(http: httpx.AsyncClient, opsgenie: FakeOpsgenie) -> None:
    await OpsgenieClient(http, GENIE_KEY, opsgenie.url).create_alert("a", "m" * 300)

    message = opsgenie.alerts["a"].message
    assert len(message) == 130
    assert message.endswith("…")


async def test_opsgenie_overlong_alias_is_refused_without_a_request(
    http: httpx.AsyncClient, opsgenie: FakeOpsgenie
) -> None:
    with pytest.raises(PermanentDeliveryError, match="513"):
        await OpsgenieClient(http, GENIE_KEY, opsgenie.url).create_alert("a" * 513, "m")

    assert opsgenie.calls == []


async def test_opsgenie_wrong_key_is_permanent_and_not_leaked(http: httpx.AsyncClient, opsgenie: FakeOpsgenie) -> None:
    with pytest.raises(PermanentDeliveryError, match="401") as caught:
        await OpsgenieClient(http, "stolen-key", opsgenie.url).close("a")

    assert "stolen-key" not in str(caught.value)
    assert opsgenie.calls == []


async def test_opsgenie_rate_limit_is_transient(http: httpx.AsyncClient, opsgenie: FakeOpsgenie) -> None:
    opsgenie.fail_next(429, retry_after=5)

    with pytest.raises(TransientDeliveryError) as caught:
        await OpsgenieClient(http, GENIE_KEY, opsgenie.url).create_alert("a", "m")

    assert caught.value.retry_after == 5.0


# --- Webhook -----------------------------------------------------------------------------------------


async def test_webhook_is_signed_and_accepted(http: httpx.AsyncClient, receiver: FakeWebhookReceiver) -> None:
    client = WebhookClient(http, f"{receiver.url}/hooks/ithelp", WEBHOOK_SECRET, now=lambda: NOW)
    event = {"type": "ticket.breached", "ticket": 42, "title": "VPN — down"}

    delivery = asyncio.create_task(client.post(event))
    received = await receiver.wait_for(1)
    await delivery

    assert received == [event]
    assert receiver.rejected == []


async def test_webhook_tampered_body_is_rejected(http: httpx.AsyncClient, receiver: FakeWebhookReceiver) -> None:
    timestamp = str(int(NOW))
    signature = sign_webhook(WEBHOOK_SECRET, timestamp, b'{"ticket":42}')
    tampered = b'{"ticket":43}'

    response = await http.post(
        receiver.url,
        content=tampered,
        headers={"X-Ithelp-Timestamp": timestamp, "X-Ithelp-Signature": signature},
    )

    assert response.status_code == 401
    assert receiver.rejected == [tampered]
    assert receiver.received == []


async def test_webhook_with_wrong_secret_is_permanent(http: httpx.AsyncClient, receiver: FakeWebhookReceiver) -> None:
    client = WebhookClient(http, receiver.url, "not-the-secret", now=lambda: NOW)

    with pytest.raises(PermanentDeliveryError, match="401") as caught:
        await client.post({"ticket": 42})

    assert "not-the-secret" not in str(caught.value)
    assert len(receiver.rejected) == 1


async def test_unsigned_webhook_has_timestamp_and_no_signature(http: httpx.AsyncClient) -> None:
    seen: list[httpx.Request] = []

    def capture(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(capture)) as mocked:
        await WebhookClient(mocked, "https://hooks.example.com/x", None, now=lambda: NOW).post({"a": 1})

    assert seen[0].headers["X-Ithelp-Timestamp"] == "1700000000"
    assert "X-Ithelp-Signature" not in seen[0].headers
    assert json.loads(seen[0].content) == {"a": 1}


@pytest.mark.parametrize(
    ("timestamp", "signature", "now", "expected"),
    [
        ("1700000000", "good", NOW + 299, True),
        ("1700000000", "good", NOW + 301, False),  # too old: a replay
        ("1700000000", "good", NOW - 301, False),  # from the future
        ("1700000000", None, NOW, False),
        (None, "good", NOW, False),
        ("17e8", "good", NOW, False),
        ("1700000000", "sha256=00", NOW, False),
        ("1700000000", "sha256=é", NOW, False),
    ],
)
def test_verify_webhook_signature(timestamp: str | None, signature: str | None, now: float, expected: bool) -> None:
    body = b'{"ticket":42}'
    if signature == "good":
        signature = sign_webhook(WEBHOOK_SECRET, "1700000000", body)

    assert verify_webhook_signature(WEBHOOK_SECRET, timestamp, body, signature, now=now) is expected
