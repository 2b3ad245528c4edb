"""The weekly summary for managers: last week's report card, posted to the managers channel(s).

A cron job (Monday 09:00 in the default calendar's zone) enqueues one ``report.weekly`` timer row per
ISO week — every replica runs the cron, the dedup key makes it one row — and the timer posts the
summary through the outbox, so it is delivered (and retried) like any other message.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.core import Core, CronJob
from bot.engine import TimerRun
from bot.messages import SUMMARY, summary_payload
from bot.views import Summary
from store.queries import enqueue_message, schedule_timer
from surveys.report import GRADE_RULE, GroupFigures, compute_report

WEEKLY_TIMER = "report.weekly"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}%"


def summary_lines(total: GroupFigures, since: datetime, until: datetime, zone: ZoneInfo) -> tuple[str, list[str]]:
    """(title, lines) of the weekly summary, in plain text."""
    first = since.astimezone(zone).strftime("%a %d %b")
    last = (until - timedelta(seconds=1)).astimezone(zone).strftime("%a %d %b")
    numbers = total.summary()
    title = f"IT desk, week of {first} – {last}: grade {total.grade}"
    lines = [
        f"CSAT {_pct(total.csat)} ({total.thumbs_up} 👍 / {total.thumbs_down} 👎), "
        f"survey response rate {_pct(total.response_rate)}",
        f"Tickets: {total.opened} opened, {total.resolved} resolved, reopen rate {_pct(total.reopen_rate)}",
        f"First response: median {numbers['first_response_median_h'] or 0:.2f} h, "
        f"p90 {numbers['first_response_p90_h'] or 0:.2f} h (business hours), "
        f"SLA {_pct(total.first_response_attainment)}",
        f"Resolution: median {numbers['resolution_median_h'] or 0:.2f} h, "
        f"p90 {numbers['resolution_p90_h'] or 0:.2f} h (business hours), SLA {_pct(total.resolution_attainment)}",
        GRADE_RULE,
    ]
    if total.nps_sent:  # a week with an NPS round: its score next to CSAT
        score = "n/a" if total.nps is None else f"{total.nps:+.0f}"
        lines.insert(1, f"NPS {score} ({total.promoters} promoters, {total.passives} passives, {total.detractors} "
                        f"detractors; {total.nps_answered} of {total.nps_sent} answered)")
    return title, lines


class WeeklySummary:
    """Posts last week's numbers to ``slack.managers_channel`` and/or ``teams.managers_conversation``."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.config = core.config
        self.zone = ZoneInfo(core.config.calendars[core.config.default_calendar].timezone)

    def targets(self) -> list[str]:
        targets = []
        if self.config.slack.enabled and self.config.slack.managers_channel:
            targets.append(f"slack:channel:{self.config.slack.managers_channel}")
        if self.config.teams.active and self.config.teams.managers_conversation:
            targets.append(f"teams:channel:{self.config.teams.managers_conversation}")
        return targets

    def cron_jobs(self) -> list[CronJob]:
        """Monday 09:00 in the desk's zone, when there is a managers' channel to post to."""
        if not self.config.surveys.weekly_summary or not self.targets():
            return []
        return [CronJob("report.weekly", time(9, 0), str(self.zone), self.enqueue, day="mon")]

    async def enqueue(self) -> bool:
        """Add this week's summary timer (once per ISO week, however many replicas ask)."""
        now = self.core.clock.now()
        year, week, _ = now.astimezone(self.zone).isocalendar()
        async with self.core.db.transaction() as session:
            added = await schedule_timer(session, kind=WEEKLY_TIMER, due_at=now, now=now,
                                         dedup_key=f"report-weekly:{year}-W{week:02d}")
        return added

    async def post(self, run: TimerRun) -> None:
        local = run.now.astimezone(self.zone)
        monday = datetime.combine(local.date() - timedelta(days=local.weekday()), time(0), tzinfo=self.zone)
        since, until = monday - timedelta(days=7), monday
        report = await compute_report(self.core.db, self.config, since=since, until=until, by=None)
        title, lines = summary_lines(report.total, since, until, self.zone)
        key = run.timer.dedup_key or f"weekly:{run.timer.id}"
        view = Summary(title=title, lines=tuple(lines[:-1]), footnote=lines[-1])
        for target in self.targets():
            await enqueue_message(run.session, target=target, kind=SUMMARY, payload=summary_payload(view),
                                  now=run.now, idempotency_key=f"{key}:{target}")
