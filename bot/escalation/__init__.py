"""Escalation chains: page the levels of a chain on an SLA breach until someone acknowledges.

A chain from ``app.yaml`` is copied onto the escalation row when it starts (so editing the config
never changes a running escalation). Each step runs inside a timer's transaction with the ticket and
the escalation row locked, and only the timer carrying the row's current ``run_token`` may page: a
stale, repeated or raced timer finds a different token and does nothing. Pages are outbox rows with
stable idempotency keys, so even a replayed step cannot page twice.

Chat pages are outbox ``notice`` messages (with Acknowledge / Claim actions in the payload); pager
pages are outbox kinds ``pagerduty.*``, ``opsgenie.*`` and ``webhook.event`` delivered by the channels in
``bot.channels.pager_delivery``.
"""

from bot.escalation.audit import EscalationAudit
from bot.escalation.chain import AUDIT_TIMER, STEP_TIMER, SUMMARY_TIMER, Snapshot, snapshot_chain
from bot.escalation.paging import Paging
from bot.escalation.service import EscalationService

__all__ = ["AUDIT_TIMER", "STEP_TIMER", "SUMMARY_TIMER", "EscalationAudit", "EscalationService", "Paging", "Snapshot",
           "snapshot_chain"]
