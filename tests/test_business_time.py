from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
from itertools import pairwise
from zoneinfo import ZoneInfo

import holidays as holidays_lib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.business_time import BusinessCalendar

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")

LONDON_DESK = BusinessCalendar.from_spec(
    "london", "Europe/London", {"mon-fri": ["09:00-17:30"]}, country="GB", subdivision="ENG"
)
NEW_YORK_DESK = BusinessCalendar.from_spec(
    "new-york", "America/New_York", {"mon-fri": ["09:00-17:00"]}, country="US", subdivision="NY"
)
# A lunch break and a Saturday half-day exercise several intervals per day.
KOLKATA_DESK = BusinessCalendar.from_spec(
    "kolkata",
    "Asia/Kolkata",
    {"mon-fri": ["09:30-13:00", "14:00-18:30"], "sat": ["10:00-14:00"]},
    country="IN",
)
ROUND_THE_CLOCK = BusinessCalendar.twenty_four_seven(timezone="Europe/London")

# Wall-clock hours per weekday, written out independently of the parser so the oracle below
# does not trust the code under test.
WALL_HOURS: dict[str, dict[int, list[tuple[time, time]]]] = {
    "london": {day: [(time(9), time(17, 30))] for day in range(5)},
    "new-york": {day: [(time(9), time(17))] for day in range(5)},
    "kolkata": {day: [(time(9, 30), time(13)), (time(14), time(18, 30))] for day in range(5)}
    | {5: [(time(10), time(14))]},
}
PUBLIC_HOLIDAYS = {
    "london": holidays_lib.country_holidays("GB", subdiv="ENG", years=range(2024, 2030)),
    "new-york": holidays_lib.country_holidays("US", subdiv="NY", years=range(2024, 2030)),
    "kolkata": holidays_lib.country_holidays("IN", years=range(2024, 2030)),
}
OFFICE_CALENDARS = [LONDON_DESK, NEW_YORK_DESK, KOLKATA_DESK]

ZONES = st.sampled_from([UTC, LONDON, NEW_YORK, KOLKATA, ZoneInfo("Australia/Lord_Howe")])
INSTANTS = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31), timezones=ZONES)
# Up to ten business days of the longest desk day (8.5 hours).
DURATIONS = st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=85))
ALL_CALENDARS = st.sampled_from([*OFFICE_CALENDARS, ROUND_THE_CLOCK])
FAST = settings(deadline=None, max_examples=200)
US_MICROSECOND = timedelta(microseconds=1)


def at(zone: tzinfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone)


def in_wall_hours(calendar: BusinessCalendar, instant: datetime) -> bool:
    local = instant.astimezone(calendar.tz)
    if local.date() in PUBLIC_HOLIDAYS[calendar.name]:
        return False
    return any(a <= local.time() < b for a, b in WALL_HOURS[calendar.name].get(local.weekday(), []))


# --- Stories -------------------------------------------------------------------------------------


def test_a_ticket_raised_friday_afternoon_in_new_york_breaches_monday_morning_across_dst() -> None:
    # Clocks spring forward on Sunday 2026-03-08; Friday has one hour left, Monday supplies the other.
    deadline = NEW_YORK_DESK.add(at(NEW_YORK, 2026, 3, 6, 16), timedelta(hours=2))
    assert NEW_YORK_DESK.local(deadline) == at(NEW_YORK, 2026, 3, 9, 10)
    assert deadline == datetime(2026, 3, 9, 14, tzinfo=UTC)


def test_the_same_story_on_the_fall_back_weekend() -> None:
    deadline = NEW_YORK_DESK.add(at(NEW_YORK, 2026, 10, 30, 16), timedelta(hours=2))
    assert deadline == datetime(2026, 11, 2, 15, tzinfo=UTC)  # 10:00 EST


def test_a_deadline_that_runs_out_at_closing_time_is_closing_time() -> None:
    deadline = NEW_YORK_DESK.add(at(NEW_YORK, 2026, 3, 6, 16), timedelta(hours=1))
    assert NEW_YORK_DESK.local(deadline) == at(NEW_YORK, 2026, 3, 6, 17)
    assert not NEW_YORK_DESK.is_open(deadline)


def test_a_ticket_raised_overnight_starts_its_clock_at_opening() -> None:
    saturday_night = at(LONDON, 2026, 6, 13, 23, 15)
    assert LONDON_DESK.next_open(saturday_night) == at(LONDON, 2026, 6, 15, 9)
    assert LONDON_DESK.add(saturday_night, timedelta(0)) == at(LONDON, 2026, 6, 15, 9)
    assert LONDON_DESK.add(saturday_night, timedelta(minutes=30)) == at(LONDON, 2026, 6, 15, 9, 30)
    assert LONDON_DESK.between(saturday_night, at(LONDON, 2026, 6, 15, 9, 30)) == timedelta(minutes=30)


def test_next_open_of_an_open_instant_is_that_instant_in_utc() -> None:
    tuesday = at(KOLKATA, 2026, 6, 16, 11, 0)
    assert KOLKATA_DESK.next_open(tuesday) == tuesday
    assert KOLKATA_DESK.next_open(tuesday).tzinfo is UTC


def test_the_kolkata_lunch_break_is_not_business_time() -> None:
    tuesday_noon = at(KOLKATA, 2026, 6, 16, 12, 30)
    assert KOLKATA_DESK.add(tuesday_noon, timedelta(hours=1)) == at(KOLKATA, 2026, 6, 16, 14, 30)
    assert not KOLKATA_DESK.is_open(at(KOLKATA, 2026, 6, 16, 13, 30))
    assert KOLKATA_DESK.between(tuesday_noon, at(KOLKATA, 2026, 6, 16, 15)) == timedelta(hours=1, minutes=30)


def test_between_is_zero_when_the_end_is_not_after_the_start() -> None:
    start = at(LONDON, 2026, 6, 16, 10)
    assert LONDON_DESK.between(start, start) == timedelta(0)
    assert LONDON_DESK.between(start, start - timedelta(hours=1)) == timedelta(0)
    assert list(LONDON_DESK.open_intervals(start, start)) == []


def test_open_intervals_lists_each_working_stretch_in_utc() -> None:
    week = list(LONDON_DESK.open_intervals(at(LONDON, 2026, 6, 12, 12), at(LONDON, 2026, 6, 15, 10)))
    assert week == [
        (datetime(2026, 6, 12, 11, tzinfo=UTC), datetime(2026, 6, 12, 16, 30, tzinfo=UTC)),
        (datetime(2026, 6, 15, 8, tzinfo=UTC), datetime(2026, 6, 15, 9, tzinfo=UTC)),
    ]


def test_back_to_back_days_of_open_hours_come_out_as_one_interval() -> None:
    weekend = BusinessCalendar.from_spec("weekend", "Europe/London", {"sat-sun": "00:00-24:00"})
    stretch = list(weekend.open_intervals(at(LONDON, 2026, 6, 12, 12), at(LONDON, 2026, 6, 16)))
    assert stretch == [(at(LONDON, 2026, 6, 13), at(LONDON, 2026, 6, 15))]


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        LONDON_DESK.is_open(datetime(2026, 6, 16, 10))
    with pytest.raises(ValueError, match="no time zone"):
        LONDON_DESK.between(at(LONDON, 2026, 6, 16), datetime(2026, 6, 17))
    with pytest.raises(ValueError, match="no time zone"):
        LONDON_DESK.open_intervals(datetime(2026, 6, 16), at(LONDON, 2026, 6, 17))


def test_negative_durations_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        LONDON_DESK.add(at(LONDON, 2026, 6, 16, 10), timedelta(minutes=-1))


def test_a_calendar_with_no_hours_fails_loudly_instead_of_looping() -> None:
    closed = BusinessCalendar.from_spec("closed", "UTC", {})
    with pytest.raises(ValueError, match="no working time in the 366 days"):
        closed.add(at(UTC, 2026, 1, 1), timedelta(hours=1))
    with pytest.raises(ValueError, match="'closed'"):
        closed.next_open(at(UTC, 2026, 1, 1))
    assert not closed.is_open(at(UTC, 2026, 1, 1))
    assert closed.between(at(UTC, 2026, 1, 1), at(UTC, 2027, 1, 1)) == timedelta(0)


# --- Daylight saving -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("Europe/London", date(2026, 3, 29), 23),
        ("Europe/London", date(2026, 10, 25), 25),
        ("America/New_York", date(2026, 3, 8), 23),
        ("America/New_York", date(2026, 11, 1), 25),
    ],
)
def test_a_whole_working_day_on_a_dst_sunday_lasts_as_long_as_the_day_really_does(
    zone: str, day: date, hours: int
) -> None:
    tz = ZoneInfo(zone)
    midnight = datetime.combine(day, time(0), tzinfo=tz)
    next_midnight = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)

    always = BusinessCalendar.twenty_four_seven(timezone=zone)
    assert always.between(midnight, next_midnight) == timedelta(hours=hours)
    assert always.working_hours_on(day) == [(midnight.astimezone(UTC), next_midnight.astimezone(UTC))]

    sundays = BusinessCalendar.from_spec("sundays", zone, {"sun": ["00:00-24:00"]})
    assert sundays.between(midnight - timedelta(days=2), next_midnight + timedelta(days=2)) == timedelta(hours=hours)
    assert sundays.add(midnight - timedelta(days=3), timedelta(hours=hours)) == next_midnight


def test_an_interval_starting_in_the_spring_forward_gap_is_shifted_later_by_the_gap() -> None:
    # London skips 01:00-02:00 on 2026-03-29. Bounds use fold=0, so a 01:30 start becomes 02:30 BST.
    calendar = BusinessCalendar.from_spec("night", "Europe/London", {"sun": ["01:30-03:00"]})
    assert calendar.working_hours_on(date(2026, 3, 29)) == [
        (at(LONDON, 2026, 3, 29, 2, 30), at(LONDON, 2026, 3, 29, 3))
    ]


def test_an_interval_that_lies_wholly_in_the_spring_forward_gap_has_no_working_time() -> None:
    calendar = BusinessCalendar.from_spec("night", "Europe/London", {"sun": ["01:30-02:30", "04:00-05:00"]})
    assert calendar.working_hours_on(date(2026, 3, 29)) == [(at(LONDON, 2026, 3, 29, 4), at(LONDON, 2026, 3, 29, 5))]
    assert calendar.working_hours_on(date(2026, 4, 5)) == [
        (at(LONDON, 2026, 4, 5, 1, 30), at(LONDON, 2026, 4, 5, 2, 30)),
        (at(LONDON, 2026, 4, 5, 4), at(LONDON, 2026, 4, 5, 5)),
    ]


def test_an_interval_ending_in_the_gap_never_overlaps_the_next_one() -> None:
    # 01:30 (fold=0) is 01:30 UTC, later than 02:00 BST (01:00 UTC): the second interval is clamped.
    calendar = BusinessCalendar.from_spec("night", "Europe/London", {"sun": ["00:00-01:30", "02:00-03:00"]})
    assert calendar.working_hours_on(date(2026, 3, 29)) == [
        (datetime(2026, 3, 29, 0, tzinfo=UTC), datetime(2026, 3, 29, 1, 30, tzinfo=UTC)),
        (datetime(2026, 3, 29, 1, 30, tzinfo=UTC), datetime(2026, 3, 29, 2, tzinfo=UTC)),
    ]
    assert calendar.between(at(LONDON, 2026, 3, 28), at(LONDON, 2026, 3, 30)) == timedelta(hours=2)


def test_ambiguous_fall_back_bounds_mean_the_first_time_the_clock_shows_them() -> None:
    # London repeats 01:00-02:00 on 2026-10-25.
    calendar = BusinessCalendar.from_spec("night", "Europe/London", {"sun": ["00:00-01:30", "01:45-03:00"]})
    assert calendar.working_hours_on(date(2026, 10, 25)) == [
        (datetime(2026, 10, 24, 23, tzinfo=UTC), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        (datetime(2026, 10, 25, 0, 45, tzinfo=UTC), datetime(2026, 10, 25, 3, tzinfo=UTC)),
    ]
    assert calendar.between(at(LONDON, 2026, 10, 24), at(LONDON, 2026, 10, 26)) == timedelta(hours=3, minutes=45)


# --- Holidays ------------------------------------------------------------------------------------


def test_christmas_and_the_substitute_boxing_day_are_skipped_in_england() -> None:
    assert not LONDON_DESK.is_business_day(date(2026, 12, 25))
    assert not LONDON_DESK.is_business_day(date(2026, 12, 28))  # Boxing Day falls on a Saturday
    assert LONDON_DESK.working_hours_on(date(2026, 12, 28)) == []
    deadline = LONDON_DESK.add(at(LONDON, 2026, 12, 24, 17), timedelta(hours=1))
    assert LONDON_DESK.local(deadline) == at(LONDON, 2026, 12, 29, 9, 30)


def test_explicit_extra_holidays_are_skipped() -> None:
    shutdown = BusinessCalendar.from_spec(
        "shutdown",
        "Europe/London",
        {"mon-fri": ["09:00-17:30"]},
        country="GB",
        subdivision="ENG",
        holidays=[date(2026, 12, 29), date(2026, 12, 30), date(2026, 12, 31)],
    )
    deadline = shutdown.add(at(LONDON, 2026, 12, 24, 17), timedelta(hours=1))
    assert shutdown.local(deadline) == at(LONDON, 2027, 1, 4, 9, 30)  # 1 Jan is a holiday too


def test_thanksgiving_is_skipped_in_new_york() -> None:
    assert not NEW_YORK_DESK.is_business_day(date(2026, 11, 26))
    assert NEW_YORK_DESK.is_business_day(date(2026, 11, 27))
    deadline = NEW_YORK_DESK.add(at(NEW_YORK, 2026, 11, 25, 16), timedelta(hours=2))
    assert NEW_YORK_DESK.local(deadline) == at(NEW_YORK, 2026, 11, 27, 10)


def test_weekends_and_days_without_hours_are_not_business_days() -> None:
    assert not LONDON_DESK.is_business_day(date(2026, 6, 13))
    assert LONDON_DESK.is_business_day(date(2026, 6, 15))
    assert ROUND_THE_CLOCK.is_business_day(date(2026, 12, 25))


# --- Parsing config ------------------------------------------------------------------------------


def test_from_spec_reads_day_ranges_and_bare_strings() -> None:
    calendar = BusinessCalendar.from_spec(
        "spec", "UTC", {"Tue-Thu": ["13:00-17:00", "08:00-12:00"], "sat": "10:00-24:00", "sun-mon": []}
    )
    assert calendar.weekly == (
        (),
        ((time(8), time(12)), (time(13), time(17))),
        ((time(8), time(12)), (time(13), time(17))),
        ((time(8), time(12)), (time(13), time(17))),
        (),
        ((time(10), time(0)),),
        (),
    )


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        ({"mon-fri": ["25:00-26:00"]}, '"25:00-26:00" is not a time range; write HH:MM-HH:MM like 09:00-17:30'),
        ({"mon": ["9-5"]}, '"9-5" is not a time range'),
        ({"mon": ["09:00-24:30"]}, '"09:00-24:30" is not a time range'),
        ({"funday": ["09:00-17:00"]}, '"funday" is not a day or day range'),
        ({"mon-": ["09:00-17:00"]}, '"mon-" is not a day or day range'),
        ({"mon": ["17:00-09:00"]}, '"17:00-09:00" ends before it starts; split an overnight shift'),
        ({"mon": ["09:00-12:00", "11:00-13:00"]}, '"09:00-12:00" and "11:00-13:00" overlap on monday'),
        ({"mon-fri": ["09:00-17:00"], "fri": ["18:00-19:00"]}, 'friday is listed more than once (again in "fri")'),
    ],
)
def test_from_spec_errors_name_the_bad_piece(hours: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        BusinessCalendar.from_spec("bad", "UTC", hours)
    assert message in str(raised.value)


def test_from_spec_rejects_unknown_zones_countries_and_subdivisions() -> None:
    with pytest.raises(ValueError, match='"Mars/Olympus" is not a known time zone'):
        BusinessCalendar.from_spec("bad", "Mars/Olympus", {})
    with pytest.raises(ValueError, match='"XX" is not a country'):
        BusinessCalendar.from_spec("bad", "UTC", {}, country="XX")
    with pytest.raises(ValueError, match='"GB-NOPE" is not a country/subdivision'):
        BusinessCalendar.from_spec("bad", "UTC", {}, country="GB", subdivision="NOPE")
    with pytest.raises(ValueError, match="no country"):
        BusinessCalendar.from_spec("bad", "UTC", {}, subdivision="ENG")


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ValueError, match="7 days"):
        BusinessCalendar("bad", LONDON, ((),) * 6, frozenset(), None, None)
    with pytest.raises(ValueError, match="sorted"):
        BusinessCalendar(
            "bad", LONDON, (((time(13), time(14)), (time(9), time(10))),) + ((),) * 6, frozenset(), None, None
        )
    with pytest.raises(ValueError, match="always open"):
        BusinessCalendar("bad", LONDON, LONDON_DESK.weekly, frozenset(), None, None, always_open=True)


# --- Properties ----------------------------------------------------------------------------------


@FAST
@given(calendar=ALL_CALENDARS, start=INSTANTS, duration=DURATIONS)
def test_add_then_between_round_trips(calendar: BusinessCalendar, start: datetime, duration: timedelta) -> None:
    assert calendar.between(start, calendar.add(start, duration)) == duration


@FAST
@given(calendar=ALL_CALENDARS, start=INSTANTS, span=st.timedeltas(timedelta(0), timedelta(days=20)))
def test_adding_the_measured_time_never_overshoots_the_end(
    calendar: BusinessCalendar, start: datetime, span: timedelta
) -> None:
    end = start.astimezone(UTC) + span  # UTC, because wall-clock arithmetic would skip DST changes
    reached = calendar.add(start, calendar.between(start, end))
    assert calendar.between(reached, end) == timedelta(0)
    # Time accrues right up to an end that falls in working hours, so the walk gets there exactly.
    if span and calendar.is_open(end - US_MICROSECOND):
        assert reached == end


@FAST
@given(calendar=st.sampled_from(OFFICE_CALENDARS), start=INSTANTS, duration=DURATIONS)
def test_add_lands_inside_or_at_the_end_of_a_working_interval(
    calendar: BusinessCalendar, start: datetime, duration: timedelta
) -> None:
    # Precisely: for a positive duration the microsecond just before the result is working time
    # (so the result is in (opening, closing]); for zero the result itself is working time.
    result = calendar.add(start, duration)
    assert result.tzinfo is UTC
    assert result >= start
    last_working_instant = result - US_MICROSECOND if duration else result
    assert in_wall_hours(calendar, last_working_instant)
    assert calendar.is_open(last_working_instant)


@settings(deadline=None, max_examples=40)
@given(
    calendar=st.sampled_from(OFFICE_CALENDARS),
    start=st.datetimes(datetime(2025, 1, 1), datetime(2027, 12, 28)).map(lambda d: d.replace(second=0, microsecond=0)),
)
def test_between_agrees_with_counting_minutes_on_the_wall_clock(calendar: BusinessCalendar, start: datetime) -> None:
    start = start.replace(tzinfo=UTC)
    minutes = 3 * 24 * 60
    counted = sum(in_wall_hours(calendar, start + timedelta(minutes=m)) for m in range(minutes))
    assert calendar.between(start, start + timedelta(minutes=minutes)) == timedelta(minutes=counted)


def test_minute_counting_agrees_across_every_dst_change_in_2026() -> None:
    for calendar, days in [
        (LONDON_DESK, [date(2026, 3, 27), date(2026, 10, 23)]),
        (NEW_YORK_DESK, [date(2026, 3, 6), date(2026, 10, 30)]),
    ]:
        for day in days:
            start = datetime.combine(day, time(0), tzinfo=UTC)
            minutes = 4 * 24 * 60
            counted = sum(in_wall_hours(calendar, start + timedelta(minutes=m)) for m in range(minutes))
            assert calendar.between(start, start + timedelta(minutes=minutes)) == timedelta(minutes=counted)


ODD_HOURS = st.lists(st.sampled_from(["00:00-01:30", "01:00-02:30", "01:30-03:00", "02:00-24:00", "05:00-06:00"]))


@settings(deadline=None, max_examples=100)
@given(
    ranges=ODD_HOURS,
    zone=st.sampled_from(["Europe/London", "America/New_York", "Australia/Lord_Howe", "America/Havana"]),
    day=st.dates(date(2025, 1, 1), date(2027, 12, 31)),
)
def test_working_intervals_are_ordered_disjoint_and_inside_their_day(ranges: list[str], zone: str, day: date) -> None:
    # Keep only a non-overlapping, sorted selection so from_spec accepts it.
    chosen: list[str] = []
    for text in sorted(set(ranges)):
        if not chosen or (text[:5] >= chosen[-1][6:] and chosen[-1][6:] != "24:00"):
            chosen.append(text)
    calendar = BusinessCalendar.from_spec("odd", zone, {"mon-sun": chosen})
    tz = ZoneInfo(zone)
    day_start = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    day_end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    intervals = calendar.working_hours_on(day)
    floor = day_start
    for a, b in intervals:
        assert floor <= a < b <= day_end
        floor = b
    window = list(calendar.open_intervals(day_start - timedelta(days=1), day_end + timedelta(days=1)))
    assert all(b1 < a2 for (_, b1), (a2, _) in pairwise(window))
