"""What a person is told when their request can't be carried out, on either platform."""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bot.tickets import TicketError

log = logging.getLogger("ithelp.handlers")

OUTAGE = "Sorry, the IT desk can't reach its database right now. Please try again in a minute; nothing was saved."
SOMETHING_WRONG = "Sorry, something went wrong on our side. Please try again."


def is_database_outage(exc: BaseException) -> bool:
    """True when the store was unreachable (as opposed to a bug or a refused request)."""
    return isinstance(exc, OperationalError | PoolTimeout | OSError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated)


def friendly(exc: Exception, where: str) -> str:
    """The sentence to show: the desk's own refusal as is; otherwise an apology (the error is logged)."""
    if isinstance(exc, TicketError):
        return str(exc)
    log.error("unexpected error handling a %s request", where, exc_info=exc)
    return OUTAGE if is_database_outage(exc) else SOMETHING_WRONG
