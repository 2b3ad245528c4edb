"""Business-time arithmetic for SLA clocks.

A :class:`BusinessCalendar` knows a time zone, weekly working hours and holidays, and answers
"when does N hours of business time run out?" and "how much business time passed?". It is pure:
no clock, no I/O beyond the ``holidays`` package's built-in tables.

Conventions:

* Every method takes timezone-aware datetimes in any zone and returns UTC datetimes; naive input
  raises ``ValueError``.
* Working intervals are half-open, ``[start, end)``, in local wall-clock time. An interval end of
  ``time(0, 0)`` means the end of the day (24:00), so ``(time(0), time(0))`` is the whole day.
* Wall-clock bounds become instants with ``fold=0`` (the PEP 495 default). On a fall-back day an
  ambiguous bound is its first occurrence; on a spring-forward day a bound inside the gap is
  shifted later by the length of the gap. An interval that ends up empty after conversion (for
  example 01:30-02:30 in London on the spring-forward Sunday) has no working time, and intervals
  are clamped so that they never overlap one another or spill outside their own local day.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_lib

__all__ = ["BusinessCalendar"]

Interval = tuple[time, time]
UtcInterval = tuple[datetime, datetime]

_MIDNIGHT = time(0, 0)
_ONE_DAY = timedelta(days=1)
# A calendar whose next working minute is more than a year away is misconfigured; without a cap
# add() and next_open() would loop forever on a calendar with no hours.
_MAX_IDLE_DAYS = 366

_WHOLE_WEEK: tuple[tuple[Interval, ...], ...] = (((_MIDNIGHT, _MIDNIGHT),),) * 7

_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_INDEX = {name[:3]: i for i, name in enumerate(_DAY_NAMES)} | {name: i for i, name in enumerate(_DAY_NAMES)}
_RANGE_RE = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")


@cache
def _public_holidays(country: str, subdivision: str | None, year: int) -> frozenset[date]:
    return frozenset(holidays_lib.country_holidays(country, subdiv=subdivision, years=year).keys())


def _is_end_of_day(t: time) -> bool:
    return t == _MIDNIGHT


def _check_day(day: str, intervals: tuple[Interval, ...]) -> None:
    previous_end: time | None = None
    for start, end in intervals:
        if start.tzinfo is not None or end.tzinfo is not None:
            raise ValueError(f"{day} hours must be plain wall-clock times without a time zone")
        if not _is_end_of_day(end) and end <= start:
            raise ValueError(f"{day} interval {start:%H:%M}-{end:%H:%M} ends before it starts")
        if previous_end is not None and (_is_end_of_day(previous_end) or start < previous_end):
            raise ValueError(f"{day} intervals must be sorted and must not overlap")
        previous_end = end


def _parse_days(key: str) -> list[int]:
    parts = [p.strip().lower() for p in key.split("-")]
    if len(parts) in (1, 2) and all(p in _DAY_INDEX for p in parts):
        first, last = _DAY_INDEX[parts[0]], _DAY_INDEX[parts[-1]]
        # A range may wrap the week ("fri-mon" is Friday to Monday).
        return [(first + i) % 7 for i in range((last - first) % 7 + 1)]
    raise ValueError(f'"{key}" is not a day or day range; write mon, tue, ... sun or a range like mon-fri')


def _parse_range(text: str) -> Interval:
    match = _RANGE_RE.fullmatch(text)
    bad = f'"{text}" is not a time range; write HH:MM-HH:MM like 09:00-17:30'
    if match is None:
        raise ValueError(bad)
    sh, sm, eh, em = (int(g) for g in match.groups())
    if sh > 23 or sm > 59 or em > 59 or eh > 24 or (eh == 24 and em != 0):
        raise ValueError(bad)
    start, end = time(sh, sm), time(eh % 24, em)
    if not _is_end_of_day(end) and end <= start:
        raise ValueError(
            f'"{text}" ends before it starts; split an overnight shift across two days, '
            "e.g. mon: 22:00-24:00 and tue: 00:00-06:00"
        )
    return start, end


def _parse_hours(hours: Mapping[str, Sequence[str]]) -> tuple[tuple[Interval, ...], ...]:
    week: list[list[tuple[Interval, str]] | None] = [None] * 7
    for key, ranges in hours.items():
        # YAML users naturally write `mon-fri: 09:00-17:30`, a bare string rather than a list.
        texts = [ranges] if isinstance(ranges, str) else list(ranges)
        parsed = [(_parse_range(text), text) for text in texts]
        for day in _parse_days(key):
            if week[day] is not None:
                raise ValueError(f'{_DAY_NAMES[day]} is listed more than once (again in "{key}")')
            week[day] = sorted(parsed)
    result: list[tuple[Interval, ...]] = []
    for day, entries in enumerate(week):
        entries = entries or []
        for ((_, previous_end), previous_text), ((start, _), text) in pairwise(entries):
            if _is_end_of_day(previous_end) or start < previous_end:
                raise ValueError(f'"{previous_text}" and "{text}" overlap on {_DAY_NAMES[day]}')
        result.append(tuple(interval for interval, _ in entries))
    return tuple(result)


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f'"{timezone}" is not a known time zone; use an IANA name like Europe/London') from None


@dataclass(frozen=True)
class BusinessCalendar:
    """Weekly working hours plus holidays in one time zone.

    ``weekly`` has seven entries, Monday first; each is a sorted tuple of non-overlapping local
    ``(start, end)`` intervals, where an end of ``time(0, 0)`` means end of day. A day is a
    holiday if it is in ``holiday_dates`` or is a public holiday of ``country``/``subdivision``
    according to the ``holidays`` package. ``always_open`` makes business time equal wall time
    (weekly hours must then cover every day and there may be no holidays).
    """

    name: str
    tz: ZoneInfo
    weekly: tuple[tuple[Interval, ...], ...]
    holiday_dates: frozenset[date]
    country: str | None
    subdivision: str | None
    always_open: bool = False

    def __post_init__(self) -> None:
        if len(self.weekly) != 7:
            raise ValueError(f"calendar {self.name!r} needs 7 days of hours (Monday first), got {len(self.weekly)}")
        for day, intervals in zip(_DAY_NAMES, self.weekly, strict=True):
            _check_day(day, intervals)
        if self.subdivision is not None and self.country is None:
            raise ValueError(f"calendar {self.name!r} names subdivision {self.subdivision!r} but no country")
        if self.country is not None:
            try:
                holidays_lib.country_holidays(self.country, subdiv=self.subdivision)
            except NotImplementedError:
                where = self.country if self.subdivision is None else f"{self.country}-{self.subdivision}"
                raise ValueError(f'"{where}" is not a country/subdivision the holidays package knows') from None
        if self.always_open and (self.holiday_dates or self.country is not None or self.weekly != _WHOLE_WEEK):
            raise ValueError(f"calendar {self.name!r} is always open, so it cannot have holidays or custom hours")

    @classmethod
    def from_spec(
        cls,
        name: str,
        timezone: str,
        hours: Mapping[str, Sequence[str]],
        *,
        country: str | None = None,
        subdivision: str | None = None,
        holidays: Iterable[date] = (),
    ) -> BusinessCalendar:
        """Build a calendar from config-style text.

        ``hours`` maps day names or ranges (``"mon-fri"``, ``"sat"``) to interval strings
        (``"09:00-17:30"``, ``"00:00-24:00"``); days not mentioned are closed. Raises
        ``ValueError`` naming the offending piece.
        """
        return cls(
            name=name,
            tz=_zone(timezone),
            weekly=_parse_hours(hours),
            holiday_dates=frozenset(holidays),
            country=country,
            subdivision=subdivision,
        )

    @classmethod
    def twenty_four_seven(cls, name: str = "24x7", timezone: str = "UTC") -> BusinessCalendar:
        """A calendar that is always open: business time equals wall time."""
        return cls(
            name=name,
            tz=_zone(timezone),
            weekly=_WHOLE_WEEK,
            holiday_dates=frozenset(),
            country=None,
            subdivision=None,
            always_open=True,
        )

    def local(self, at: datetime) -> datetime:
        """``at`` converted to the calendar's time zone."""
        return _utc(at).astimezone(self.tz)

    def is_business_day(self, d: date) -> bool:
        """True if local date ``d`` has working hours and is not a holiday."""
        if self.always_open:
            return True
        if not self.weekly[d.weekday()] or d in self.holiday_dates:
            return False
        return self.country is None or d not in _public_holidays(self.country, self.subdivision, d.year)

    def working_hours_on(self, d: date) -> list[tuple[datetime, datetime]]:
        """UTC instants of local date ``d``'s working intervals; empty on holidays and closed days."""
        return list(self._day_intervals(d))

    def is_open(self, at: datetime) -> bool:
        """True if ``at`` falls inside a working interval."""
        at = _utc(at)
        if self.always_open:
            return True
        day = at.astimezone(self.tz).date()
        # Near a midnight DST transition an instant can belong to a neighbouring local day's span.
        return any(a <= at < b for offset in (-1, 0, 1) for a, b in self._day_intervals(day + offset * _ONE_DAY))

    def next_open(self, at: datetime) -> datetime:
        """The first working instant at or after ``at`` (``at`` itself if open), in UTC."""
        at = _utc(at)
        if self.always_open:
            return at
        return next(self._intervals_from(at))[0]

    def add(self, start: datetime, duration: timedelta) -> datetime:
        """The UTC instant when ``duration`` of business time has elapsed after ``start``.

        Counting begins at ``next_open(start)``. For a positive duration the result is the end of
        the elapsed time: it lies inside a working interval or exactly at its end (a deadline that
        runs out at closing time is closing time, not the next morning). A zero duration returns
        ``next_open(start)``.
        """
        start = _utc(start)
        if duration < timedelta(0):
            raise ValueError(f"cannot add a negative business duration ({duration})")
        if self.always_open:
            return start + duration
        remaining = duration
        # _intervals_from never ends: it raises once the calendar has gone a year without hours.
        intervals = self._intervals_from(start)
        while True:
            a, b = next(intervals)
            if remaining <= b - a:
                return a + remaining
            remaining -= b - a

    @property
    def working_days_per_week(self) -> int:
        """How many days of the week have working hours (7 when always open): the length of a working week."""
        return 7 if self.always_open else sum(1 for day in self.weekly if day)

    def add_working_days(self, start: datetime, days: int) -> datetime:
        """The UTC instant ``days`` working days after ``start``.

        Counting begins at ``next_open(start)``; the result is the same wall-clock time on the ``days``-th
        working day after that one (holidays and closed days skipped), or that day's closing time when its
        hours end earlier (the end of the last interval before that time when it falls in a break, its
        opening when it opens later). ``1`` from Tue 15:00 on a Mon-Fri calendar is Wed 15:00.
        """
        if days < 0:
            raise ValueError(f"cannot add a negative number of working days ({days})")
        begin = self.next_open(start)
        if self.always_open or days == 0:
            return begin + _ONE_DAY * days if self.always_open else begin
        local = begin.astimezone(self.tz)
        day, idle = local.date(), 0
        while days:
            day += _ONE_DAY
            idle += 1
            if self._day_intervals(day):
                days, idle = days - 1, 0
            elif idle > _MAX_IDLE_DAYS:
                raise ValueError(f"calendar {self.name!r} has no working day in the {_MAX_IDLE_DAYS} days after "
                                 f"{day.isoformat()}; check its hours and holidays")
        intervals = self._day_intervals(day)
        wanted = self._instant(day, local.time().replace(tzinfo=None))
        result = intervals[0][0]
        for a, b in intervals:
            if wanted < a:
                break
            result = min(wanted, b)
        return result

    def between(self, start: datetime, end: datetime) -> timedelta:
        """Business time elapsed from ``start`` to ``end``; zero if ``end <= start``."""
        return sum((b - a for a, b in self.open_intervals(start, end)), timedelta(0))

    def open_intervals(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
        """UTC business-time intervals within ``[start, end)``, in order; touching ones are merged."""
        # Validate now rather than on first iteration, so naive input fails at the call site.
        return self._clipped_intervals(_utc(start), _utc(end))

    def _clipped_intervals(self, start: datetime, end: datetime) -> Iterator[UtcInterval]:
        if end <= start:
            return
        if self.always_open:
            yield start, end
            return
        pending: UtcInterval | None = None
        day, last_day = start.astimezone(self.tz).date() - _ONE_DAY, end.astimezone(self.tz).date() + _ONE_DAY
        while day <= last_day:
            for a, b in self._day_intervals(day):
                a, b = max(a, start), min(b, end)
                if b <= a:
                    continue
                if pending is not None and pending[1] == a:
                    pending = (pending[0], b)
                    continue
                if pending is not None:
                    yield pending
                pending = (a, b)
            day += _ONE_DAY
        if pending is not None:
            yield pending

    def _instant(self, d: date, t: time) -> datetime:
        return datetime.combine(d, t, tzinfo=self.tz).astimezone(UTC)

    def _day_intervals(self, d: date) -> tuple[UtcInterval, ...]:
        if not self.is_business_day(d):
            return ()
        day_start, day_end = self._instant(d, _MIDNIGHT), self._instant(d + _ONE_DAY, _MIDNIGHT)
        if self.always_open:
            return ((day_start, day_end),)
        out: list[UtcInterval] = []
        # Clamping to the previous interval's end and to the day's own bounds keeps intervals
        # disjoint and ordered even when fold=0 pushes a bound inside a DST gap later.
        floor = day_start
        for start_t, end_t in self.weekly[d.weekday()]:
            a = max(self._instant(d, start_t), floor)
            b = day_end if _is_end_of_day(end_t) else min(self._instant(d, end_t), day_end)
            if b > a:
                out.append((a, b))
                floor = b
        return tuple(out)

    def _intervals_from(self, at: datetime) -> Iterator[UtcInterval]:
        # Working intervals from UTC `at` onwards, the first clipped to start at `at`.
        day = at.astimezone(self.tz).date() - _ONE_DAY
        idle_days = 0
        while idle_days <= _MAX_IDLE_DAYS:
            idle_days += 1
            for a, b in self._day_intervals(day):
                if b > at:
                    idle_days = 0
                    yield max(a, at), b
            day += _ONE_DAY
        raise ValueError(
            f"calendar {self.name!r} has no working time in the {_MAX_IDLE_DAYS} days after "
            f"{at.isoformat()}; check its hours and holidays"
        )


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at.isoformat()} has no time zone; pass a timezone-aware datetime")
    return at.astimezone(UTC)
