"""How instants are said to people: on their own clock, in words they read at a glance."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.business_time import BusinessCalendar


def zone_or_none(name: str | None) -> ZoneInfo | None:
    """The IANA zone of that name, or None when it is empty or unknown (callers fall back to a calendar's)."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def zone_label(zone: ZoneInfo) -> str:
    """``London time``, ``New York time``, ``UTC``."""
    if zone.key in ("UTC", "Etc/UTC"):
        return "UTC"
    return f"{zone.key.rsplit('/', 1)[-1].replace('_', ' ')} time"


def when(at: datetime, zone: ZoneInfo, now: datetime) -> str:
    """``10:15`` today, ``Tue 16:00`` within six days, ``Tue 1 Dec 16:00`` further off, on ``zone``'s clock."""
    local = at.astimezone(zone)
    days = abs((local.date() - now.astimezone(zone).date()).days)
    if days == 0:
        return f"{local:%H:%M}"
    if days <= 6:
        return f"{local:%a %H:%M}"
    return f"{local:%a} {local.day} {local:%b %H:%M}"


def within_hours(cal: BusinessCalendar, at: datetime) -> bool:
    """Open at ``at``, or exactly at a closing time: a target that runs out at 17:00 is answered at 17:00."""
    if cal.is_open(at):
        return True
    day = cal.local(at).date()
    return any(end == at for d in (day - timedelta(days=1), day) for _, end in cal.working_hours_on(d))
