"""``ithelp demo``: a compressed day at the desk, on this machine, with no Slack or Teams account.

The real server runs on a temporary SQLite file and talks over real HTTP to local stand-ins for the
Slack Web API, the Bot Framework connector and PagerDuty (the same fakes the test suite uses). Time is
a manual clock moved from 09:00 to 17:30, so SLA breaches and escalations happen in seconds.
"""

from __future__ import annotations

import json
import re
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

SECRET = "demo-signing-secret"  # noqa: S105 - signs requests to the local demo server only
TRIAGE = "C0TRIAGE"
TEAMS_TRIAGE = "19:it-triage@thread.tacv2"
PEOPLE = {
    "URITA": ("Rita Requester", "Europe/London"),
    "UPRIYA": ("Priya Patel", "Asia/Kolkata"),
    "UALICE": ("Alice Agent", "Europe/London"),
    "UBOB": ("Bob Oncall", "Europe/London"),
}
TOM = {"user_id": "29:1tom", "aad_object_id": "aad-tom", "user_name": "Tom Teams",
       "conversation_id": "a:1tom-personal", "local_timezone": "America/New_York"}
TARA = {"user_id": "29:1tara", "aad_object_id": "aad-tara", "user_name": "Tara Teamsagent",
        "conversation_id": "a:1tara-personal", "local_timezone": "Europe/London"}


def _config(slack_url: str, connector_url: str, pagerduty_url: str, db_path: Path) -> str:
    return f"""
database: {{url: "sqlite+aiosqlite:///{db_path}"}}
slack: {{bot_token: xoxb-demo, signing_secret: {SECRET}, api_url: "{slack_url}", triage_channel: {TRIAGE}}}
teams: {{enabled: true, triage_conversation: "{TEAMS_TRIAGE}", service_url: "{connector_url}"}}
agents:
  slack_users: [UALICE, UBOB]
  teams_users: [aad-tara]
default_calendar: london
calendars:
  london: {{timezone: Europe/London, hours: {{mon-fri: ["09:00-17:30"]}}, country: GB, subdivision: ENG}}
  always: {{timezone: UTC, always_open: true}}
sla:
  policies:
    P1: {{calendar: always, first_response: 15m, update_every: 1h, resolution: 4h, warn_at: 75%}}
    P2: {{first_response: 1h, update_every: 2h, resolution: 8h}}
    P3: {{first_response: 4h, update_every: 4h, resolution: 2d}}
    P4: {{first_response: 1d, resolution: 5d}}
escalation:
  chains:
    urgent:
      levels:
        - {{notify: ["slack:user:UBOB"], wait: 10m}}
        - {{notify: ["pagerduty:oncall"], wait: 15m}}
  policies:
    P1: {{breach: urgent}}
pagers:
  pagerduty:
    oncall: {{routing_key: demo-routing-key, events_url: "{pagerduty_url}"}}
surveys: {{delay: 0m}}
engine: {{min_interval_per_channel: 0s}}
"""


class Transcript:
    """Prints what happened, from what the fakes received, as a reader would want it."""

    def __init__(self, clock: Any, slack: Any, connector: Any, pagerduty: Any) -> None:
        self.clock, self.slack, self.connector, self.pagerduty = clock, slack, connector, pagerduty
        self._seen = {"slack": 0, "teams": 0, "pd": 0}

    def at(self) -> str:
        return str(self.clock.now().astimezone(_london()).strftime("%H:%M"))

    def say(self, who: str, text: str) -> None:
        print(f"{self.at()}  {who:<10} {text}")

    def flush(self) -> None:
        for call in self.slack.calls[self._seen["slack"]:]:
            if call.ok and call.method in ("chat.postMessage", "chat.update", "chat.postEphemeral"):
                where = self._slack_where(call.args)
                verb = {"chat.update": "updated", "chat.postEphemeral": "whispered"}.get(call.method, "posted")
                self.say("  Slack", f"{verb} in {where}: {_first_line(call.args.get('text', ''))}")
        self._seen["slack"] = len(self.slack.calls)
        for call in self.connector.activities[self._seen["teams"]:]:
            if call.ok and call.method in ("POST", "PUT"):
                verb = "updated" if call.method == "PUT" else "posted"
                where = "the triage channel" if call.conversation_id.startswith(TEAMS_TRIAGE) else "Tom's chat"
                self.say("  Teams", f"{verb} in {where}: {_first_line(_card_text(call.body))}")
        self._seen["teams"] = len(self.connector.activities)
        for event in self.pagerduty.events[self._seen["pd"]:]:
            self.say("  PagerDuty", f"{event['event_action']} {event.get('dedup_key')}")
        self._seen["pd"] = len(self.pagerduty.events)

    @staticmethod
    def _slack_where(args: dict[str, Any]) -> str:
        channel = str(args.get("channel", ""))
        user = channel[1:] if channel.startswith("D") else channel
        if channel == TRIAGE:
            return "#it-triage" + (" (thread)" if args.get("thread_ts") else "")
        if user in PEOPLE:
            return f"DM to {PEOPLE[user][0].split()[0]}" + (" (thread)" if args.get("thread_ts") else "")
        return channel


def _london() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo("Europe/London")


_SLACK_DATE = re.compile(r"<!date\^\d+\^[^|>]*\|([^>]*)>")
_TEAMS_DATE = re.compile(r"\{\{DATE\(([^,)]+)(?:, \w+)?\)\}\}(?: \{\{TIME\([^)]*\)\}\})?")


def _first_line(text: str) -> str:
    """One line as a reader sees it: dates as each client would show them on London's clock."""
    text = _SLACK_DATE.sub(r"\1", str(text))
    text = _TEAMS_DATE.sub(lambda m: datetime.fromisoformat(m.group(1)).astimezone(_london()).strftime("%a %H:%M"),
                           text)
    line = " ".join(text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").split())
    return line if len(line) <= 110 else line[:109] + "…"


def _card_text(body: dict[str, Any]) -> str:
    if body.get("text"):
        return str(body["text"])
    for attachment in body.get("attachments") or []:
        for block in (attachment.get("content") or {}).get("body") or []:
            if block.get("type") == "TextBlock":
                return str(block.get("text", "")).replace("\\", "")
    return "(card)"


async def run_demo() -> int:
    """Play the day; returns a process exit code."""
    from bot.clock import ManualClock
    from bot.config import parse_config
    from bot.routing import Action, Form
    from bot.server import Server
    from bot.simulators import slack_requests as rq
    from bot.simulators import teams_activities as ta
    from bot.simulators.bot_connector import FakeBotConnector
    from bot.simulators.pagers import FakePagerDuty
    from bot.simulators.slack_api import FakeSlackApi
    from surveys.report import compute_report, render_table

    # Monday 23 Nov 2026, 09:00 London.
    clock = ManualClock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    with tempfile.TemporaryDirectory(prefix="ithelp-demo-") as tmp:
        async with FakeSlackApi() as slack, FakeBotConnector() as connector, \
                FakePagerDuty(routing_key="demo-routing-key") as pagerduty:
            for user, (name, tz) in PEOPLE.items():
                slack.add_user(user, real_name=name, tz=tz)
            config = parse_config(_config(slack.url, connector.service_url, pagerduty.events_url,
                                          Path(tmp) / "demo.db"), env={})
            server = Server(config, clock=clock, host="127.0.0.1", port=0, run_engine=False)
            await server.start()
            assert server.engine is not None and server.desk is not None
            log = Transcript(clock, slack, connector, pagerduty)
            http = aiohttp.ClientSession()

            async def slack_in(request: Any) -> dict[str, Any]:
                async with http.post(server.url + "/slack/events", data=request.body,
                                     headers=request.headers) as response:
                    text = await response.text()
                    return json.loads(text) if text.startswith("{") else {}

            async def teams_in(activity: dict[str, Any]) -> None:
                async with http.post(server.url + "/api/messages", json=activity) as response:
                    await response.read()

            async def settle(minutes: int = 0) -> None:
                """Let the bot deliver what it owes now, then let ``minutes`` pass (and deliver again)."""
                await server.engine.tick()  # type: ignore[union-attr]
                log.flush()
                if minutes:
                    clock.advance(timedelta(minutes=minutes))
                    await server.engine.tick()  # type: ignore[union-attr]
                    log.flush()

            async def ticket_id(summary: str) -> int:
                from sqlalchemy import select

                from store.models import Ticket

                async with server.desk.db.reading() as session:  # type: ignore[union-attr]
                    return int((await session.execute(
                        select(Ticket.id).where(Ticket.summary == summary))).scalar_one())

            try:
                print("ITHelp demo — Monday at a small IT desk (Slack + Teams + PagerDuty, all local)\n")
                await teams_in(ta.conversation_update_installed(
                    service_url=connector.service_url, conversation_id=TEAMS_TRIAGE, conversation_type="channel"))
                log.say("Rita", "/ithelp VPN keeps dropping every few minutes")
                answer = await slack_in(rq.slash_command("VPN keeps dropping every few minutes", "URITA", SECRET))
                log.say("  ITHelp", f"(only Rita sees) {_first_line(answer.get('text', ''))}")
                await settle()

                log.say("Tom", "(Teams chat) Outlook won't open since this morning's update")
                await teams_in(ta.message("Outlook won't open since this morning's update",
                                          service_url=connector.service_url, **TOM))  # type: ignore[arg-type]
                await settle(2)

                rita = await ticket_id("VPN keeps dropping every few minutes")
                log.say("Alice", f"clicks Claim on IT-{rita} in #it-triage")
                await slack_in(rq.block_action(Action.CLAIM.value, str(rita), "UALICE", SECRET,
                                               channel_id=TRIAGE, message_ts="1.0"))
                await settle(3)

                log.say("Priya", "/ithelp (form) Email is down for the whole Pune office — urgency P1")
                await slack_in(rq.view_submission(Form.NEW_TICKET.value, {
                    "summary": {"input": "Email is down for the whole Pune office"},
                    "urgency": {"input": {"type": "static_select", "selected_option": {"value": "P1"}}}},
                    "UPRIYA", SECRET))
                await settle(5)

                log.say("(clock)", "…nobody picks up the P1 for 16 minutes…")
                await settle(16)
                priya = await ticket_id("Email is down for the whole Pune office")
                log.say("(clock)", "…Bob doesn't answer his page within 10 minutes…")
                await settle(11)
                log.say("Bob", f"clicks Claim on the page for IT-{priya}")
                await slack_in(rq.block_action(Action.ESCALATION_CLAIM.value, str(priya), "UBOB", SECRET,
                                               channel_id="DUBOB", message_ts="1.0"))
                await settle(1)

                tom = await ticket_id("Outlook won't open since this morning's update")
                log.say("Tara", f"(Teams) clicks Claim on IT-{tom} in the triage channel")
                await teams_in(ta.message(None, service_url=connector.service_url, value={
                    "action": Action.CLAIM.value, "ticket_id": tom, "value": str(tom)},
                    conversation_id=TEAMS_TRIAGE, conversation_type="channel",
                    **{k: v for k, v in TARA.items() if k != "conversation_id"}))  # type: ignore[arg-type]
                await settle(20)

                for who, tid, note, agent in (("Alice", rita, "Updated the VPN client to 5.2", "UALICE"),
                                              ("Bob", priya, "Mail relay restarted; queue drained", "UBOB")):
                    log.say(who, f"resolves IT-{tid}: {note}")
                    await slack_in(rq.view_submission(Form.RESOLVE_NOTE.value, {"note": {"input": note}}, agent,
                                                      SECRET, private_metadata=str(tid)))
                    await settle(30)
                log.say("Tara", f"(Teams) resolves IT-{tom}: Repaired the Office install")
                await teams_in(ta.message(None, service_url=connector.service_url, value={
                    "form": Form.RESOLVE_NOTE.value, "ticket_id": tom, "note": "Repaired the Office install"},
                    conversation_id=TEAMS_TRIAGE, conversation_type="channel",
                    **{k: v for k, v in TARA.items() if k != "conversation_id"}))  # type: ignore[arg-type]
                await settle(5)

                log.say("Rita", f"clicks 👍 on the survey for IT-{rita}")
                await slack_in(rq.block_action(Action.SURVEY_UP.value, str(rita), "URITA", SECRET,
                                               channel_id="DURITA", message_ts="1.0"))
                log.say("Priya", f"clicks 👍 on the survey for IT-{priya}")
                await slack_in(rq.block_action(Action.SURVEY_UP.value, str(priya), "UPRIYA", SECRET,
                                               channel_id="DUPRIYA", message_ts="1.0"))
                log.say("Tom", f"(Teams) clicks 👎 on the survey for IT-{tom}")
                await teams_in(ta.message(None, service_url=connector.service_url, value={
                    "action": Action.SURVEY_DOWN.value, "ticket_id": tom, "value": str(tom)},
                    **TOM))  # type: ignore[arg-type]
                await settle(60)

                clock.set(datetime(2026, 11, 23, 17, 30, tzinfo=UTC))
                await settle()
                report = await compute_report(server.desk.db, config, since=clock.now() - timedelta(days=1),
                                              until=clock.now(), by=None)
                print("\n17:30  End of the day. The report card (`ithelp report --since 1d`):\n")
                print(render_table(report))
                return 0
            finally:
                await http.close()
                await server.stop()
