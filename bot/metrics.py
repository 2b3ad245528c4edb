"""Prometheus metrics. One registry per running app so tests can run several apps in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Every metric the bot exports, all named ``ithelp_…``; each is updated somewhere (a test checks)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tickets_opened = Counter("ithelp_tickets_opened", "Tickets opened", ["origin"], registry=r)
        self.tickets_closed = Counter("ithelp_tickets_closed", "Tickets resolved or closed", ["status"], registry=r)
        self.timers_run = Counter("ithelp_timers_run", "Timers run", ["kind", "outcome"], registry=r)
        self.timer_lateness = Histogram(
            "ithelp_timer_lateness_seconds", "How long after its due time a timer ran", registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
        )
        self.timers_due = Gauge("ithelp_timers_due", "Timers due and not yet run", registry=r)
        self.outbox_delivered = Counter("ithelp_outbox_delivered", "Outbox messages delivered", ["channel"], registry=r)
        self.outbox_errors = Counter(
            "ithelp_outbox_delivery_errors", "Failed delivery attempts", ["channel", "kind"], registry=r)
        self.outbox_dead = Counter("ithelp_outbox_dead", "Outbox messages dead-lettered", ["channel"], registry=r)
        self.outbox_pending = Gauge("ithelp_outbox_pending", "Outbox messages waiting for delivery", registry=r)
        self.outbox_dead_current = Gauge("ithelp_outbox_dead_messages", "Dead-lettered messages in the store",
                                         registry=r)
        self.escalations_stuck = Counter(
            "ithelp_escalations_stuck", "Active escalations found without a future step and re-queued", registry=r)
        self.pages_sent = Counter("ithelp_pages_sent", "Escalation pages sent", ["channel"], registry=r)
