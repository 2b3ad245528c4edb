"""The greeting a person gets once: when they install the Teams app or first open the Slack App Home.

What the desk does, how to ask for help, the open incidents as known issues (the lines ``list`` shows, so people
check those before filing), and a New ticket button; a neutral view model the adapters render.
``Welcomes`` records who was greeted, so a platform's retried event (or a second install) greets nobody twice.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from bot.core import Core
from bot.incidents import IncidentService
from bot.people import PersonRef
from bot.routing import Action
from bot.views import CardAction, Text, TicketList
from store.conversation_models import Welcome

__all__ = ["NEW_TICKET_BUTTON", "Welcomes", "welcome_view"]

NEW_TICKET_BUTTON = CardAction(Action.NEW_TICKET, "New ticket", "new", style="primary")


def welcome_view(how_to_file: str, known_issues: tuple[Text, ...] = ()) -> TicketList:
    """The greeting; ``how_to_file`` is the platform's own way of asking (``/ithelp …`` or a plain message),
    ``known_issues`` the open incidents' lines (``IncidentService.known_issues``), shown after it."""
    return TicketList(
        title="Welcome to ITHelp",
        intro=("I'm the IT help desk. Tell me what's wrong in your own words and I open a ticket for IT, keep you "
               "posted on it, and pass your replies to whoever is working on it.",
               how_to_file, *known_issues),
        actions=(NEW_TICKET_BUTTON,),
        empty_text="Type help any time to see what else I can do: status, list, or status 13 for one ticket.",
    )


class Welcomes:
    """Greets each person once, with what is known to be broken right now."""

    def __init__(self, core: Core, incidents: IncidentService) -> None:
        self.core = core
        self.incidents = incidents

    async def view(self, person: PersonRef, how_to_file: str) -> TicketList:
        """The greeting for ``person``: the open incidents' times in their own zone, as ``list`` gives them."""
        return welcome_view(how_to_file, await self.incidents.known_issues(person.timezone))

    async def first_time(self, person: PersonRef) -> bool:
        """True (and recorded) the first time ``person`` is to be greeted; False ever after."""
        try:
            async with self.core.db.transaction() as session:
                owner = await self.core.tickets.record_person(session, person)
                if await session.get(Welcome, owner.id) is not None:
                    return False
                session.add(Welcome(person_id=owner.id, welcomed_at=self.core.clock.now()))
        except IntegrityError:  # the same event, handled at once by another replica: that one greets
            return False
        return True

    async def forget(self, person: PersonRef) -> None:
        """The greeting could not be delivered: greet them again next time."""
        async with self.core.db.transaction() as session:
            owner = await self.core.tickets.record_person(session, person)
            welcome = await session.get(Welcome, owner.id)
            if welcome is not None:
                await session.delete(welcome)
