"""The engine: timer rows run by registered handlers, and the outbox delivered with retries.

Both are driven by a short APScheduler interval tick (see ``bot.scheduler``); both claim their rows
with a lease in one statement (``store.queries``), so any number of replicas can run them at once.
Timer tasks (``timer_tasks.py``) are timers whose work waits on a platform's Web API: they run outside any
transaction, beside the tick. Urgent work (pages, SLA breach timers, timer tasks) holds a short lease that a
heartbeat renews while it is in hand (``LeaseKeeper``), so a replica that dies holds up no page for long.
"""


from bot.engine.group_commit import GroupCommit
from bot.engine.leases import LeaseKeeper
from bot.engine.outbox import CARD, OutboxWorker
from bot.engine.outbox_ledger import OutboxLedger
from bot.engine.outbox_types import Channel, Delivered, OutboxItem
from bot.engine.requests_first import RequestsFirst
from bot.engine.timer_tasks import TimerJob, TimerTask
from bot.engine.timers import GROUP_SIZE, TimerEngine, TimerHandler, TimerPrepare, TimerRun

__all__ = ["CARD", "GROUP_SIZE", "Channel", "Delivered", "GroupCommit", "LeaseKeeper", "OutboxItem", "OutboxLedger",
           "OutboxWorker", "RequestsFirst", "TimerEngine", "TimerHandler", "TimerJob", "TimerPrepare", "TimerRun",
           "TimerTask"]
