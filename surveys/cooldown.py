"""The per-person cooldown shared by the CSAT poll and the NPS pulse (``surveys.cooldown``).

One rule, read by both: a person asked one kind of question is not asked the other kind within the cooldown.
A CSAT poll counts from when it was sent (or, not yet sent, from when it was planned: it is on its way); an NPS
pulse from when it was sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.nps_models import NpsPulse
from store.survey_models import Survey


async def last_csat(session: AsyncSession, person_ids: Iterable[int]) -> dict[int, datetime]:
    """When each person was last sent (or is about to be sent) a CSAT poll; people never polled are absent."""
    ids = list(person_ids)
    if not ids:
        return {}
    rows = await session.execute(select(Survey.requester_id, func.max(func.coalesce(Survey.sent_at, Survey.created_at)))
                                 .where(Survey.requester_id.in_(ids)).group_by(Survey.requester_id))
    return {person: at for person, at in rows.tuples() if at is not None}


async def last_nps(session: AsyncSession, person_id: int) -> datetime | None:
    """When the person was last sent an NPS pulse."""
    return await session.scalar(select(func.max(NpsPulse.sent_at)).where(NpsPulse.person_id == person_id))


def cooling_until(last: datetime | None, cooldown: timedelta | None) -> datetime | None:
    """The end of the cooldown that ``last`` started (None: no cooldown, or nothing to cool down from)."""
    if cooldown is None or last is None:
        return None
    return last + cooldown


async def nps_blocks_csat(session: AsyncSession, person_id: int, now: datetime, cooldown: timedelta | None) -> bool:
    """True when an NPS pulse went to the person within the cooldown, so a CSAT poll now would be one too many."""
    until = cooling_until(await last_nps(session, person_id) if cooldown else None, cooldown)
    return until is not None and now < until
