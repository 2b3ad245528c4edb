"""Outbox delivery to the pagers: PagerDuty, Opsgenie and signed webhooks, each a ``bot.engine.Channel``.

The composition root registers one channel per pager kind, over one shared HTTP client.
"""

from __future__ import annotations

import httpx

from bot.channels import PermanentDeliveryError
from bot.channels.pagers import OpsgenieClient, PagerDutyClient, WebhookClient
from bot.config import PagersConfig
from bot.engine import Channel, Delivered, OutboxItem


class _PagerChannel:
    prefix = ""

    lanes = 4
    min_interval = 0.0  # pagers have no per-conversation limit; 429s are honoured through Retry-After
    urgent = True  # a page never waits behind a burst of chat requests (RequestsFirst)

    def pacing_key(self, item: OutboxItem) -> str:
        # A few lanes per pager so a storm of alerts goes out in parallel without draining the DB pool;
        # one ticket always maps to one lane (and the outbox keeps a ticket's messages in order anyway).
        return f"{item.target}#{(item.ticket_id or 0) % self.lanes}"

    def _name(self, item: OutboxItem) -> str:
        return item.target.split(":", 1)[1]

    def _missing(self, item: OutboxItem) -> PermanentDeliveryError:
        return PermanentDeliveryError(f"{item.target}: no such pager in pagers.{self.prefix}")


class PagerDutyChannel(_PagerChannel):
    """Outbox kinds ``pagerduty.trigger|acknowledge|resolve`` to ``pagerduty:<name>``."""

    prefix = "pagerduty"

    def __init__(self, clients: dict[str, PagerDutyClient]) -> None:
        self.clients = clients

    async def deliver(self, item: OutboxItem) -> Delivered:
        client = self.clients.get(self._name(item))
        if client is None:
            raise self._missing(item)
        payload, action = item.payload, item.kind.split(".", 1)[1]
        if action == "trigger":
            key = await client.trigger(payload["dedup_key"], payload["summary"], severity=payload["severity"],
                                       custom_details=payload.get("custom_details"))
            return Delivered(message_id=key)
        if action == "acknowledge":
            await client.acknowledge(payload["dedup_key"])
        elif action == "resolve":
            await client.resolve(payload["dedup_key"])
        else:
            raise PermanentDeliveryError(f"unknown PagerDuty outbox kind {item.kind!r}")
        return Delivered(message_id=payload["dedup_key"])


class OpsgenieChannel(_PagerChannel):
    """Outbox kinds ``opsgenie.create|acknowledge|close`` to ``opsgenie:<name>``."""

    prefix = "opsgenie"

    def __init__(self, clients: dict[str, OpsgenieClient]) -> None:
        self.clients = clients

    async def deliver(self, item: OutboxItem) -> Delivered:
        client = self.clients.get(self._name(item))
        if client is None:
            raise self._missing(item)
        payload, action = item.payload, item.kind.split(".", 1)[1]
        if action == "create":
            request_id = await client.create_alert(payload["alias"], payload["message"],
                                                   description=payload.get("description"),
                                                   priority="P1" if payload.get("details", {}).get("level") != "1"
                                                   else "P2", details=payload.get("details"), tags=["ithelp"])
            return Delivered(message_id=request_id or payload["alias"])
        if action == "acknowledge":
            await client.acknowledge(payload["alias"], note="Acknowledged in chat")
        elif action == "close":
            await client.close(payload["alias"], note="Ticket resolved")
        else:
            raise PermanentDeliveryError(f"unknown Opsgenie outbox kind {item.kind!r}")
        return Delivered(message_id=payload["alias"])


class WebhookChannel(_PagerChannel):
    """Outbox kind ``webhook.event`` to ``webhook:<name>`` (signed with the webhook's secret)."""

    prefix = "webhook"

    def __init__(self, clients: dict[str, WebhookClient]) -> None:
        self.clients = clients

    async def deliver(self, item: OutboxItem) -> Delivered:
        client = self.clients.get(self._name(item))
        if client is None:
            raise self._missing(item)
        await client.post(item.payload["event"])
        return Delivered(message_id=None)


def pager_channels(pagers: PagersConfig, http: httpx.AsyncClient) -> dict[str, Channel]:
    """One outbox channel per pager kind (by target prefix), every client sharing ``http``."""
    return {
        "pagerduty": PagerDutyChannel({name: PagerDutyClient(http, t.routing_key, t.events_url)
                                       for name, t in pagers.pagerduty.items()}),
        "opsgenie": OpsgenieChannel({name: OpsgenieClient(http, t.api_key, t.api_url)
                                     for name, t in pagers.opsgenie.items()}),
        "webhook": WebhookChannel({name: WebhookClient(http, t.url, t.secret) for name, t in pagers.webhook.items()}),
    }
