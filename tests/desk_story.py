"""A small, realistic history for the privacy tests: a week at the desk, driven through the services.

Rita files two tickets (one reopened), Sam one, Olga one that stays open; Alice and Bob work them, with comments,
notes and a thumbs-down survey with a typed comment. Everything people typed is listed, so a test can show
where it is (and, after redaction or erasure, that it is gone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.clock import ManualClock
from bot.desk import Desk
from bot.people import PersonRef
from bot.tickets import Origin
from surveys.polls import SurveyService

RITA = PersonRef("slack", "UREQ1", display_name="Rita Requester", timezone="Europe/London",
                 email="rita.requester@example.com")
SAM = PersonRef("slack", "UREQ2", display_name="Sam Sender", timezone="Europe/London", email="sam@example.com")
OLGA = PersonRef("teams", "aad-olga-7", display_name="Olga Open", timezone="Europe/Berlin",
                 email="olga@example.com")
ALICE = PersonRef("slack", "UAGENT1", display_name="Alice Agent", timezone="Europe/London",
                  email="alice.agent@example.com")
BOB = PersonRef("slack", "UAGENT2", display_name="Bob Builder", timezone="Europe/London")


@dataclass
class Story:
    """What happened: ticket ids by name, and the text each person typed."""

    started: datetime
    tickets: dict[str, int] = field(default_factory=dict)
    typed: dict[str, list[str]] = field(default_factory=dict)

    def said(self, person: PersonRef, text: str) -> str:
        self.typed.setdefault(person.user_id, []).append(text)
        return text


ESCALATION = """
escalation:
  chains:
    urgent:
      levels:
        - {notify: ["slack:user:UAGENT1"], wait: 10m}
  policies:
    P1: {breach: urgent}
"""
"""Config for :func:`a_week_at_the_desk` with ``escalation``: a P1 breach pages Alice."""


async def a_week_at_the_desk(desk: Desk, clock: ManualClock, surveys: SurveyService,
                             escalation: Any = None) -> Story:
    """Play the week (from the clock's current time) and run every timer due on the way. With ``escalation``
    (the desk's service, configured with :data:`ESCALATION`) Sam's P1 outage also pages Alice, who acknowledges."""
    story = Story(started=clock.now())
    tickets = desk.tickets

    async def open_(who: PersonRef, summary: str, description: str, priority: str, category: str,
                    dedup: tuple[str, str] | None = None) -> int:
        result = await tickets.open(who, story.said(who, summary), description=story.said(who, description),
                                    origin=Origin("slack" if who.platform == "slack" else "teams"),
                                    priority=priority, category=category, dedup=dedup)
        return result.ticket.id

    # A slash command that came without a trigger id is deduplicated on "<user>:<text>" (bot.handlers.slack).
    printer = await open_(RITA, "Printer on 3rd floor is jammed", "Paper stuck in tray 2, serial SN-4471",
                          "P3", "Hardware", dedup=("slack-command", "UREQ1:Printer on 3rd floor is jammed"))
    story.tickets["printer"] = printer
    await _after(desk, clock, minutes=30)
    await tickets.claim(printer, ALICE)
    await tickets.comment(printer, ALICE, story.said(ALICE, "Have you tried opening the side panel, Rita Requester?"))
    await _after(desk, clock, minutes=40)
    await tickets.comment(printer, RITA, story.said(RITA, "Yes, still jammed; my badge number is 88123"))
    await tickets.set_status(printer, ALICE, "waiting_on_requester",
                             story.said(ALICE, "Waiting for the spare fuser from Leeds"))
    await _after(desk, clock, hours=2)
    await tickets.comment(printer, RITA, story.said(RITA, "The fuser arrived at reception"))
    await tickets.resolve(printer, ALICE, story.said(ALICE, "Replaced the fuser unit"))
    await _after(desk, clock, minutes=5)
    await surveys.answer(printer, RITA, "down")
    await surveys.add_reason(printer, RITA, "too_slow", story.said(RITA, "Took all day, my payroll run was late"))
    await tickets.close(printer, RITA)

    office = await open_(SAM, "Word crashes on start", "Since the update on Monday", "P2", "Software")
    story.tickets["office"] = office
    await _after(desk, clock, minutes=20)
    await tickets.claim(office, BOB)
    await tickets.resolve(office, BOB, story.said(BOB, "Reinstalled Office for Sam Sender"))
    await _after(desk, clock, minutes=5)
    await surveys.answer(office, SAM, "up")

    access = await open_(RITA, "Can't open the finance share", "Access denied on \\\\fs01\\finance", "P4", "Access")
    story.tickets["access"] = access
    await _after(desk, clock, hours=3)
    await tickets.resolve(access, ALICE, story.said(ALICE, "Added you to FIN-RO"))
    await _after(desk, clock, hours=1)
    await tickets.reopen(access, RITA, story.said(RITA, "Still denied for the Q3 folder"))
    await tickets.claim(access, ALICE)
    await _after(desk, clock, hours=1)
    await tickets.resolve(access, ALICE, story.said(ALICE, "Added you to FIN-Q3 as well"))

    if escalation is not None:
        outage = await open_(SAM, "Email is down for the whole office", "Outlook says disconnected", "P1", "Software")
        story.tickets["outage"] = outage
        await _after(desk, clock, minutes=16)  # past the 15-minute first response: Alice is paged
        await escalation.acknowledge(outage, ALICE)
        await tickets.resolve(outage, ALICE, story.said(ALICE, "Restarted the Exchange connector"))
        await tickets.close(outage, SAM)

    story.tickets["open"] = await open_(OLGA, "New starter needs a laptop", "Starts on the 1st, Berlin office",
                                        "P4", "Hardware")
    await _after(desk, clock, days=3)
    return story


async def _after(desk: Desk, clock: ManualClock, **delta: float) -> None:
    clock.advance(timedelta(**delta))
    while await desk.timers.tick():
        pass
