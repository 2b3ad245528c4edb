"""Commands and small talk in a direct message: answered, never filed as tickets.

"hi", "thanks", "help", "status", "status 13" and "list" (and the same after ``/ithelp`` or ``ithelp``) are
read here, platform-neutrally; the answer is a neutral view model (``bot.views``) that each adapter renders
with its own renderer. Help wording stays with the adapters, which know their platform's commands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from bot.core import Core
from bot.incidents import IncidentService
from bot.people import PersonRef
from bot.text import to_plain, to_spans
from bot.tickets import TicketNotFound, TicketSnapshot
from bot.views import Fact, Notice, TicketList, TicketListItem

__all__ = ["ChatCommands", "Command", "Said", "read_command"]


class Said(Enum):
    """What kind of thing a person said, when it is not a problem to file."""

    GREETING = "greeting"
    THANKS = "thanks"
    HELP = "help"
    STATUS = "status"
    LIST = "list"


@dataclass(frozen=True)
class Command:
    """A command or small talk read from a message; ``number`` is the ticket of ``status 13``."""

    said: Said
    number: int | None = None


_GREETINGS = frozenset({"hi", "hello", "hey", "hiya", "yo", "good morning", "good afternoon", "good evening",
                        "morning", "hallo", "hi there", "hello there"})
_THANKS = frozenset({"thanks", "thank you", "thx", "ty", "cheers", "thanks a lot", "thank you very much",
                     "many thanks", "great thanks", "ok thanks", "ok thank you", "perfect thanks"})
# "status 13", "status IT-13", "status #13": one ticket; ASCII digits only, so "status ¹³" names nothing.
_STATUS_OF = re.compile(r"status\s+(?:#|it-)?([0-9]{1,18})", re.IGNORECASE | re.ASCII)
_TRAILING = re.compile(r"[\s!.?,:;)(]+$")
MAX_LISTED = 20


def read_command(text: str) -> Command | None:
    """The command or small talk ``text`` is, or None when it is something to file (or answer a ticket with)."""
    words = " ".join(text.split()).lower()
    words = _TRAILING.sub("", words)
    if words.startswith("ithelp "):
        words = words[len("ithelp "):]
    if words in _GREETINGS:
        return Command(Said.GREETING)
    if words in _THANKS:
        return Command(Said.THANKS)
    if words in ("help", "?"):
        return Command(Said.HELP)
    if words == "status":
        return Command(Said.STATUS)
    if words in ("list", "my tickets"):
        return Command(Said.LIST)
    found = _STATUS_OF.fullmatch(words)
    if found:
        return Command(Said.STATUS, int(found.group(1)))
    return None


GREETING = "Hi! Tell me what's wrong and I'll open a ticket for IT. Type help to see what else I can do."
THANKS = "You're welcome! If anything else comes up, just tell me here."


class ChatCommands:
    """Answers the commands that read or list tickets; who may see what is decided here, not in the adapters."""

    def __init__(self, core: Core, incidents: IncidentService) -> None:
        self.core = core
        self.incidents = incidents

    async def open_tickets(self, person: PersonRef) -> TicketList:
        """``list`` and ``status``: the person's own open tickets and where each stands, after the known issues
        (open incidents), so people check those before filing."""
        tickets = await self.core.tickets.tickets_of(person, open_only=True, limit=MAX_LISTED)
        items = tuple(TicketListItem(number=t.number, summary=to_plain(t.summary),
                                     status_label=t.requester_status_label, assignee=t.assignee_name,
                                     next_update=None) for t in tickets)
        title = "Your open tickets"
        return TicketList(title=title, sections=((title, items),) if items else (),
                          empty_text="You have no open tickets.",
                          intro=await self.incidents.known_issues(person.timezone))

    async def ticket_status(self, person: PersonRef, number: int) -> Notice | str:
        """``status 13``: that ticket for its requester or an agent; anyone else gets a friendly refusal (the
        same one whether or not the ticket exists, so numbers can't be probed)."""
        refusal = (f"I can only show you IT-{number} if it's one of your tickets. "
                   "Type list to see yours.")
        try:
            ticket = await self.core.tickets.get(number)
        except TicketNotFound:
            return refusal
        is_agent = self.core.tickets.is_agent(person)
        if ticket.requester_address != person.address and not is_agent:
            return refusal
        return _status_notice(ticket, for_agent=is_agent and ticket.requester_address != person.address)


def _status_notice(ticket: TicketSnapshot, *, for_agent: bool) -> Notice:
    label = ticket.status_label if for_agent else ticket.requester_status_label
    facts = [Fact("Status", label), Fact("Priority", ticket.priority)]
    if ticket.assignee_name:
        facts.append(Fact("With", ticket.assignee_name))
    if for_agent:
        facts.append(Fact("Requester", ticket.requester_name))
    return Notice(ticket_id=ticket.id, number=ticket.number, headline=to_spans(ticket.summary),
                  facts=tuple(facts))
