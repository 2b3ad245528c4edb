"""Pager delivery over HTTP: PagerDuty Events API v2, Opsgenie Alert API and signed generic webhooks.

Each call makes exactly one attempt and classifies the outcome as success,
:class:`~bot.channels.TransientDeliveryError` or :class:`~bot.channels.PermanentDeliveryError`;
the outbox worker owns retries and backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx
from httpx_aiohttp import HttpxAiohttpClient

from bot.channels import PermanentDeliveryError, TransientDeliveryError

__all__ = [
    "OpsgenieClient",
    "OpsgeniePriority",
    "PagerDutyClient",
    "PagerDutySeverity",
    "WebhookClient",
    "make_http_client",
    "sign_webhook",
    "verify_webhook_signature",
]

PagerDutySeverity = Literal["critical", "error", "warning", "info"]
OpsgeniePriority = Literal["P1", "P2", "P3", "P4", "P5"]

_CLIENT_NAME = "ithelp"
_PD_SUMMARY_MAX = 1024
_OPSGENIE_MESSAGE_MAX = 130
_OPSGENIE_ALIAS_MAX = 512
_OPSGENIE_DESCRIPTION_MAX = 15000
_ERROR_BODY_MAX = 500


def make_http_client(timeout: float = 10.0) -> httpx.AsyncClient:
    """Return the shared HTTP client for pager delivery, with ``timeout`` seconds for every phase."""
    # httpx's API on aiohttp's wire (the transport is by an httpx maintainer; openai-python ships the
    # same): it costs less CPU per request than httpx's own transport, and a breach storm sends a page
    # per breach from the process that runs the timers (bench/breach_to_page.py measures it).
    return HttpxAiohttpClient(timeout=httpx.Timeout(timeout))


def _truncate(text: str, limit: int) -> str:
    # The ellipsis tells the on-call person the text was cut, rather than silently ending mid-word.
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def _parse_retry_after(value: str | None, now: float) -> float | None:
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000" parses as naive; HTTP-dates are always UTC
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


async def _deliver(
    http: httpx.AsyncClient,
    request: httpx.Request,
    *,
    what: str,
    now: Callable[[], float],
    secrets: Sequence[str] = (),
) -> httpx.Response:
    """Send ``request`` once and return the 2xx response, or raise the matching DeliveryError."""
    try:
        response = await http.send(request)
    except httpx.TransportError as exc:
        # The aiohttp transport files a refused connection under ConnectTimeout too; the socket error
        # it wraps tells the operator what really happened.
        cause = exc.__cause__
        refused = isinstance(cause, OSError) and not isinstance(cause, TimeoutError)
        if isinstance(exc, httpx.TimeoutException) and not refused:
            raise TransientDeliveryError(f"{what}: timed out ({type(exc).__name__})") from exc
        detail = _redact(str(exc), secrets)
        name = type(cause if refused else exc).__name__
        raise TransientDeliveryError(f"{what}: transport error ({name}: {detail})") from exc
    status = response.status_code
    if 200 <= status < 300:
        return response
    # Redact before trimming: trimming first could leave a secret's prefix behind.
    body = " ".join(_redact(response.text, secrets).split())
    message = f"{what}: HTTP {status}: {_truncate(body, _ERROR_BODY_MAX)}"
    if status == 429 or status >= 500:
        # 503s often carry Retry-After too; honouring it costs nothing.
        retry_after = _parse_retry_after(response.headers.get("Retry-After"), now())
        raise TransientDeliveryError(message, retry_after=retry_after)
    # Redirects are not followed on purpose: a redirected POST may lose its body or auth header.
    raise PermanentDeliveryError(message)


def _json_str_field(response: httpx.Response, key: str) -> str | None:
    try:
        payload = response.json()
    except ValueError:
        return None
    value = payload.get(key) if isinstance(payload, dict) else None
    return value if isinstance(value, str) else None


class PagerDutyClient:
    """PagerDuty Events API v2 client for one integration (routing key)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        routing_key: str,
        events_url: str = "https://events.pagerduty.com/v2/enqueue",
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        """``now`` returns the current Unix time; it is only read to turn a dated Retry-After into seconds."""
        self._http = http
        self._routing_key = routing_key
        self._events_url = events_url
        self._now = now

    async def trigger(
        self,
        dedup_key: str,
        summary: str,
        *,
        source: str = "ithelp",
        severity: PagerDutySeverity = "error",
        custom_details: Mapping[str, Any] | None = None,
        links: Sequence[Mapping[str, str]] = (),
    ) -> str:
        """Open (or re-trigger) the alert ``dedup_key`` and return the dedup key PagerDuty echoes.

        ``summary`` is cut to PagerDuty's 1,024-character limit; ``links`` items are ``{"href", "text"}``.
        """
        payload: dict[str, Any] = {
            "summary": _truncate(summary, _PD_SUMMARY_MAX),
            "source": source,
            "severity": severity,
        }
        if custom_details is not None:
            payload["custom_details"] = dict(custom_details)
        response = await self._send(
            "trigger",
            dedup_key,
            {"payload": payload, "client": _CLIENT_NAME, "links": [dict(link) for link in links]},
        )
        # PagerDuty accepted the event; a body without the key should not turn into a retry.
        return _json_str_field(response, "dedup_key") or dedup_key

    async def acknowledge(self, dedup_key: str) -> None:
        """Acknowledge the alert ``dedup_key``."""
        await self._send("acknowledge", dedup_key, {})

    async def resolve(self, dedup_key: str) -> None:
        """Resolve the alert ``dedup_key``."""
        await self._send("resolve", dedup_key, {})

    async def _send(self, action: str, dedup_key: str, extra: Mapping[str, Any]) -> httpx.Response:
        body = {"routing_key": self._routing_key, "event_action": action, "dedup_key": dedup_key, **extra}
        request = self._http.build_request("POST", self._events_url, json=body)
        return await _deliver(
            self._http,
            request,
            what=f"PagerDuty {action} {dedup_key!r}",
            now=self._now,
            secrets=(self._routing_key,),
        )


class OpsgenieClient:
    """Opsgenie Alert API v2 client; alerts are addressed by alias (our dedup key)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        api_key: str,
        api_url: str = "https://api.opsgenie.com",
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        """``api_url`` is ``https://api.eu.opsgenie.com`` for EU accounts; ``now`` returns Unix time."""
        self._http = http
        self._api_key = api_key
        self._api_url = api_url.rstrip("/")
        self._now = now

    async def create_alert(
        self,
        alias: str,
        message: str,
        *,
        description: str | None = None,
        priority: OpsgeniePriority = "P3",
        details: Mapping[str, str] | None = None,
        tags: Sequence[str] = (),
    ) -> str:
        """Create the alert ``alias`` and return Opsgenie's ``requestId`` ("" if the answer had none).

        ``message`` is cut to 130 characters. An alias over 512 characters is refused with
        :class:`PermanentDeliveryError` rather than cut, since cutting could merge distinct alerts.
        """
        body: dict[str, Any] = {
            "alias": self._checked_alias(alias),
            "message": _truncate(message, _OPSGENIE_MESSAGE_MAX),
            "priority": priority,
            "source": _CLIENT_NAME,
            "tags": list(tags),
        }
        if description is not None:
            body["description"] = _truncate(description, _OPSGENIE_DESCRIPTION_MAX)
        if details is not None:
            body["details"] = dict(details)
        response = await self._send(f"Opsgenie create {alias!r}", "/v2/alerts", body, params=None)
        # Opsgenie processes alerts asynchronously; the requestId is only useful for status look-ups.
        return _json_str_field(response, "requestId") or ""

    async def acknowledge(self, alias: str, note: str | None = None) -> None:
        """Acknowledge the alert ``alias``, optionally with a note."""
        await self._alert_action("acknowledge", alias, note)

    async def close(self, alias: str, note: str | None = None) -> None:
        """Close the alert ``alias``, optionally with a note."""
        await self._alert_action("close", alias, note)

    async def _alert_action(self, action: str, alias: str, note: str | None) -> None:
        body: dict[str, Any] = {"source": _CLIENT_NAME}
        if note is not None:
            body["note"] = note
        path = f"/v2/alerts/{quote(self._checked_alias(alias), safe='')}/{action}"
        await self._send(f"Opsgenie {action} {alias!r}", path, body, params={"identifierType": "alias"})

    @staticmethod
    def _checked_alias(alias: str) -> str:
        if len(alias) > _OPSGENIE_ALIAS_MAX:
            raise PermanentDeliveryError(
                f"Opsgenie alias is {len(alias)} characters; the limit is {_OPSGENIE_ALIAS_MAX}"
            )
        return alias

    async def _send(
        self, what: str, path: str, body: Mapping[str, Any], *, params: Mapping[str, str] | None
    ) -> httpx.Response:
        request = self._http.build_request(
            "POST",
            self._api_url + path,
            json=body,
            params=params,
            headers={"Authorization": f"GenieKey {self._api_key}"},
        )
        return await _deliver(self._http, request, what=what, now=self._now, secrets=(self._api_key,))


def sign_webhook(secret: str, timestamp: str, body: bytes) -> str:
    """Return the ``X-Ithelp-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``"{timestamp}.{body}"``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_webhook_signature(
    secret: str,
    timestamp: str | None,
    body: bytes,
    signature_header: str | None,
    *,
    now: float,
    tolerance: float = 300,
) -> bool:
    """Check a received webhook: the signature matches and the timestamp is within ``tolerance`` of ``now``.

    ``timestamp`` and ``signature_header`` are the raw ``X-Ithelp-Timestamp`` and ``X-Ithelp-Signature``
    header values (``None`` when absent). The tolerance window bounds how long a captured request can
    be replayed.
    """
    if timestamp is None or signature_header is None or not timestamp.isdigit():
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False
    expected = sign_webhook(secret, timestamp, body)
    # Compare bytes: compare_digest rejects non-ASCII str, and a header can carry anything.
    return hmac.compare_digest(expected.encode(), signature_header.encode())


class WebhookClient:
    """Posts events as JSON to a generic webhook, signed with HMAC-SHA256 when a secret is set."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        secret: str | None,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        """``now`` returns the current Unix time, used for ``X-Ithelp-Timestamp``."""
        self._http = http
        self._url = url
        self._secret = secret
        self._now = now

    async def post(self, event: Mapping[str, Any]) -> None:
        """Deliver ``event``; receivers check it with :func:`verify_webhook_signature`."""
        # Serialise once and send exactly these bytes, because the signature covers the raw body.
        body = json.dumps(dict(event), separators=(",", ":")).encode()
        timestamp = str(int(self._now()))
        headers = {"Content-Type": "application/json", "X-Ithelp-Timestamp": timestamp}
        if self._secret:
            headers["X-Ithelp-Signature"] = sign_webhook(self._secret, timestamp, body)
        request = self._http.build_request("POST", self._url, content=body, headers=headers)
        # The URL is left out of messages: webhook URLs often embed a token.
        await _deliver(self._http, request, what="webhook post", now=self._now, secrets=(self._secret or "",))
