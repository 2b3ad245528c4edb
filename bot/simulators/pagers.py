"""Fakes of PagerDuty, Opsgenie and a webhook receiver: real aiohttp servers on 127.0.0.1, ephemeral ports.

Use them as async context managers; each records what it accepted, supports fault injection
(``fail_next``, ``delay_next``) and condition-based waiting (``wait_for``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from bot.channels.pagers import verify_webhook_signature
from bot.simulators.pager_server import FakeServer, json_body, present

__all__ = ["FakeAlert", "FakeOpsgenie", "FakePagerDuty", "FakeWebhookReceiver", "OpsgenieCall"]

_PD_ACTIONS = ("trigger", "acknowledge", "resolve")
_PD_SEVERITIES = ("critical", "error", "warning", "info")


class FakePagerDuty(FakeServer[dict[str, Any]]):
    """PagerDuty Events API v2 (``POST /v2/enqueue``), validating events the way the real API does.

    With ``routing_key`` set, events for any other key are refused with "Invalid routing key".
    """

    def __init__(self, routing_key: str | None = None) -> None:
        super().__init__()
        self._routing_key = routing_key

    @property
    def events_url(self) -> str:
        """The enqueue endpoint, for ``PagerDutyClient(events_url=...)``."""
        return f"{self.url}/v2/enqueue"

    @property
    def events(self) -> list[dict[str, Any]]:
        """Accepted events, verbatim, in arrival order."""
        return self._records

    def events_for(self, dedup_key: str) -> list[dict[str, Any]]:
        """Accepted events with this dedup key."""
        return [event for event in self._records if event.get("dedup_key") == dedup_key]

    def actions_for(self, dedup_key: str) -> list[str]:
        """The ``event_action`` of each accepted event with this dedup key, in order."""
        return [str(event["event_action"]) for event in self.events_for(dedup_key)]

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/enqueue", self._enqueue)

    async def _enqueue(self, request: web.Request) -> web.Response:
        event = await json_body(request)
        errors = self._validate(event)
        if errors:
            return web.json_response(
                {"status": "invalid event", "message": "Event object is invalid", "errors": errors},
                status=400,
            )
        await self._record(event)
        # Like PagerDuty, a trigger without a dedup key gets a generated one.
        dedup_key = event.get("dedup_key") or uuid.uuid4().hex
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": dedup_key}, status=202
        )

    def _validate(self, event: Any) -> list[str]:
        if not isinstance(event, dict):
            return ["Event object must be a JSON object"]
        errors: list[str] = []
        routing_key = event.get("routing_key")
        if not present(routing_key):
            errors.append("'routing_key' is missing or blank")
        elif self._routing_key is not None and routing_key != self._routing_key:
            errors.append("Invalid routing key")
        action = event.get("event_action")
        if action not in _PD_ACTIONS:
            errors.append("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
        dedup_key = event.get("dedup_key")
        if action in ("acknowledge", "resolve") and not present(dedup_key):
            errors.append("'dedup_key' is missing or blank")
        if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
            errors.append("'dedup_key' must be a string of at most 255 characters")
        if action == "trigger":
            errors.extend(self._validate_trigger(event))
        return errors

    @staticmethod
    def _validate_trigger(event: dict[str, Any]) -> list[str]:
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return ["'payload' is missing or not an object"]
        errors: list[str] = []
        summary = payload.get("summary")
        if not present(summary):
            errors.append("'payload.summary' is missing or blank")
        elif len(summary) > 1024:
            errors.append("'payload.summary' is longer than 1024 characters")
        if not present(payload.get("source")):
            errors.append("'payload.source' is missing or blank")
        if payload.get("severity") not in _PD_SEVERITIES:
            errors.append("'payload.severity' is invalid (must be one of: critical, error, warning, info)")
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            errors.append("'payload.custom_details' must be an object")
        links = event.get("links", [])
        if not isinstance(links, list) or not all(
            isinstance(link, dict) and present(link.get("href")) for link in links
        ):
            errors.append("'links' must be a list of objects with an 'href'")
        return errors


@dataclass
class FakeAlert:
    """One alert held by :class:`FakeOpsgenie`."""

    alias: str
    message: str
    priority: str
    description: str | None
    details: dict[str, str]
    tags: list[str]
    status: Literal["open", "acked", "closed"] = "open"
    count: int = 1  # Opsgenie de-duplicates a create for an alias that is still open by counting it
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class OpsgenieCall:
    """One accepted Opsgenie request."""

    action: Literal["create", "acknowledge", "close"]
    alias: str
    body: dict[str, Any]


class FakeOpsgenie(FakeServer[OpsgenieCall]):
    """Opsgenie Alert API v2: create, and acknowledge/close by alias; requires ``GenieKey <api_key>``.

    Like Opsgenie, which processes requests asynchronously, acknowledging or closing an unknown alias
    still answers 202 and changes nothing.
    """

    def __init__(self, api_key: str) -> None:
        super().__init__()
        self._api_key = api_key
        self.alerts: dict[str, FakeAlert] = {}

    @property
    def calls(self) -> list[OpsgenieCall]:
        """Accepted requests in arrival order."""
        return self._records

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/alerts", self._create)
        app.router.add_post("/v2/alerts/{identifier}/{action:acknowledge|close}", self._alert_action)

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        body = await json_body(request)
        if not isinstance(body, dict):
            return self._unprocessable({"body": "Request body must be a JSON object."})
        errors = {}
        message, alias, priority = body.get("message"), body.get("alias"), body.get("priority", "P3")
        if not present(message) or len(message) > 130:
            errors["message"] = "Message must be 1 to 130 characters."
        if alias is not None and (not present(alias) or len(alias) > 512):
            errors["alias"] = "Alias must be 1 to 512 characters."
        if priority not in ("P1", "P2", "P3", "P4", "P5"):
            errors["priority"] = "Priority must be one of P1..P5."
        if errors:
            return self._unprocessable(errors)
        alias = alias or uuid.uuid4().hex
        existing = self.alerts.get(alias)
        if existing is not None and existing.status != "closed":
            existing.count += 1
        else:
            self.alerts[alias] = FakeAlert(
                alias=alias,
                message=str(message),
                priority=priority,
                description=body.get("description"),
                details=dict(body.get("details") or {}),
                tags=list(body.get("tags") or []),
            )
        await self._record(OpsgenieCall("create", alias, body))
        return self._accepted()

    async def _alert_action(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        if request.query.get("identifierType") != "alias":
            return self._unprocessable({"identifierType": "This fake supports identifierType=alias only."})
        body = await json_body(request) or {}
        alias = request.match_info["identifier"]
        action: Literal["acknowledge", "close"] = (
            "acknowledge" if request.match_info["action"] == "acknowledge" else "close"
        )
        alert = self.alerts.get(alias)
        if alert is not None and alert.status != "closed":
            alert.status = "acked" if action == "acknowledge" else "closed"
            if body.get("note"):
                alert.notes.append(body["note"])
        await self._record(OpsgenieCall(action, alias, body))
        return self._accepted()

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"GenieKey {self._api_key}"

    @staticmethod
    def _unauthorized() -> web.Response:
        return web.json_response(
            {"message": "Could not authenticate", "took": 0.0, "requestId": str(uuid.uuid4())}, status=401
        )

    @staticmethod
    def _unprocessable(errors: dict[str, str]) -> web.Response:
        return web.json_response(
            {
                "message": "Request body is not processable. Please check the errors.",
                "errors": errors,
                "took": 0.0,
                "requestId": str(uuid.uuid4()),
            },
            status=422,
        )

    @staticmethod
    def _accepted() -> web.Response:
        return web.json_response(
            {"result": "Request will be processed", "took": 0.0, "requestId": str(uuid.uuid4())}, status=202
        )


class FakeWebhookReceiver(FakeServer[dict[str, Any]]):
    """Accepts ``POST`` on any path; checks ``X-Ithelp-Signature`` with ``verify_webhook_signature``.

    With ``secret=None`` every JSON body is accepted. Bad signatures get 401, non-JSON bodies 400;
    both are kept in ``rejected``.
    """

    def __init__(self, secret: str | None, *, now: Callable[[], float] = time.time, tolerance: float = 300) -> None:
        super().__init__()
        self._secret = secret
        self._now = now
        self._tolerance = tolerance
        self.rejected: list[bytes] = []

    @property
    def received(self) -> list[dict[str, Any]]:
        """Accepted event bodies, parsed, in arrival order."""
        return self._records

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/{path:.*}", self._receive)

    def _describe(self) -> str:
        return f"received={self._records!r}, rejected={self.rejected!r}"

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self._secret is not None and not verify_webhook_signature(
            self._secret,
            request.headers.get("X-Ithelp-Timestamp"),
            body,
            request.headers.get("X-Ithelp-Signature"),
            now=self._now(),
            tolerance=self._tolerance,
        ):
            self.rejected.append(body)
            return web.json_response({"error": "invalid signature"}, status=401)
        event = await json_body(request)
        if not isinstance(event, dict):
            self.rejected.append(body)
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        await self._record(event)
        return web.json_response({"ok": True})
