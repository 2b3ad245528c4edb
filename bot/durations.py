"""Human durations in config (``15m``, ``2h``, ``1d``, ``1h30m``).

Two readings:

* :func:`parse_duration` — wall-clock lengths (engine intervals, survey expiry, escalation waits):
  ``1d`` is 24 hours.
* :func:`parse_sla_duration` — SLA targets in ``sla.policies``, counted on the policy's calendar by
  :class:`SlaDuration`: on a business calendar ``d`` is one of the calendar's working days and ``w`` a
  working week (as many working days as the calendar opens in a week), while ``h``/``m``/``s`` are
  business time; on a 24x7 calendar every unit is wall time (``1d`` = 24 h).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.business_time import BusinessCalendar

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)")
_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_BAD = '"{value}" is not a duration; write 15m, 2h or 1d'


def _parts(value: object) -> list[tuple[float, str]]:
    text = str(value).strip().lower().replace(" ", "")
    pos = 0
    parts: list[tuple[float, str]] = []
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        parts.append((float(match.group(1)), match.group(2)))
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(_BAD.format(value=value))
    return parts


def parse_duration(value: object) -> timedelta:
    """Parse ``15m``/``2h``/``1d``/``1h30m``/``90s`` (or a number of seconds) into a wall-clock timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write 15m, 2h or 1d")
    if isinstance(value, int | float):
        return timedelta(seconds=float(value))
    return timedelta(seconds=sum(amount * _UNITS[unit] for amount, unit in _parts(value)))


def format_duration(delta: timedelta) -> str:
    """Format a duration the way people say it: ``1h 30m``, ``2d 4h``, ``45s``."""
    seconds = int(abs(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    if not parts:
        parts = [f"{secs}s"]
    return ("-" if delta.total_seconds() < 0 else "") + " ".join(parts[:2])


@dataclass(frozen=True)
class SlaDuration:
    """An SLA target as written (``4h``, ``2d``, ``1w``, ``1d4h``), counted on a calendar when it is used.

    ``days`` and ``weeks`` are whole working days/weeks, ``time`` the business time (h/m/s) on top.
    """

    text: str
    days: int = 0
    weeks: int = 0
    time: timedelta = timedelta(0)

    @property
    def counts_days(self) -> bool:
        """True when the target uses ``d`` or ``w`` (whose meaning depends on the calendar)."""
        return bool(self.days or self.weeks)

    def wall(self) -> timedelta:
        """The length on a 24x7 calendar (``1d`` = 24 h, ``1w`` = 7 days); also what ``d``/``w`` meant in
        business time before working days were counted."""
        return self.time + timedelta(days=self.days + 7 * self.weeks)

    def working_days(self, cal: BusinessCalendar) -> int:
        """Whole working days on ``cal``: ``days`` plus ``weeks`` times the days the calendar opens in a week."""
        return self.days + self.weeks * cal.working_days_per_week

    def after(self, cal: BusinessCalendar, start: datetime) -> datetime:
        """The instant this target runs out when counted from ``start`` on ``cal`` without a pause."""
        if cal.always_open:
            return cal.add(start, self.wall())
        days = self.working_days(cal)
        if not days:
            return cal.add(start, self.time)
        end_of_days = cal.add_working_days(start, days)
        # A target of whole days may run out at a closing time; adding no hours must not move it to the next opening.
        return cal.add(end_of_days, self.time) if self.time else end_of_days

    def budget(self, cal: BusinessCalendar, start: datetime) -> timedelta:
        """The business time this target allows a ticket that started at ``start`` (what pauses eat into)."""
        if cal.always_open or not self.counts_days:
            return self.wall()
        return cal.between(start, self.after(cal, start))

    def describe(self, *, business: bool) -> str:
        """As a person says it: "2 working days", "1 working hour and 30 minutes"; "4 hours" on a 24x7 calendar."""
        words: list[str] = []
        prefix = "working " if business else ""
        total_days = self.days + (0 if business else 7 * self.weeks)
        if business and self.weeks:
            words.append(_count(self.weeks, f"{prefix}week"))
        if total_days:
            words.append(_count(total_days, f"{prefix}day"))
        hours, rest = divmod(int(self.time.total_seconds()), 3600)
        minutes, seconds = divmod(rest, 60)
        time_prefix = prefix if not words else ""
        for amount, unit in ((hours, "hour"), (minutes, "minute"), (seconds, "second")):
            if amount:
                words.append(_count(amount, f"{time_prefix}{unit}"))
                time_prefix = ""
        return " and ".join(words) or "no time"

    def __str__(self) -> str:
        return self.text


def parse_sla_duration(value: object) -> SlaDuration:
    """Parse an SLA target: ``d``/``w`` in whole numbers (working days/weeks), ``h``/``m``/``s`` business time."""
    if isinstance(value, SlaDuration):
        return value
    if isinstance(value, timedelta):
        return SlaDuration(text=format_duration(value), time=value)
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write 15m, 2h or 1d")
    if isinstance(value, int | float):
        return SlaDuration(text=f"{value}s", time=timedelta(seconds=float(value)))
    days = weeks = 0
    seconds = 0.0
    for amount, unit in _parts(value):
        if unit in ("d", "w"):
            if amount != int(amount):
                raise ValueError(f'"{value}": days and weeks are whole working days; write e.g. 1d4h, not 1.5d')
            if unit == "d":
                days += int(amount)
            else:
                weeks += int(amount)
        else:
            seconds += amount * _UNITS[unit]
    return SlaDuration(text=str(value).strip(), days=days, weeks=weeks, time=timedelta(seconds=seconds))


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
