"""SLA durations say what admins mean: on a business calendar ``d`` is a working day, ``h``/``m`` business time;
on a 24x7 calendar ``d`` is 24 hours. ``check-config`` warns where a file's meaning changed and explains policies."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.business_time import BusinessCalendar
from bot.cli import main
from bot.clock import ManualClock
from bot.config import AppConfig, ConfigError, parse_config
from bot.durations import SlaDuration, parse_sla_duration
from bot.people import PersonRef
from bot.tickets import Origin

LONDON = BusinessCalendar.from_spec("emea", "Europe/London", {"mon-fri": ["09:00-17:30"]}, country="GB",
                                    subdivision="ENG")
SHORT_FRIDAY = BusinessCalendar.from_spec("short", "UTC", {"mon-thu": ["09:00-17:30"], "fri": ["09:00-13:00"]})
ROUND_THE_CLOCK = BusinessCalendar.twenty_four_seven("always")


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def test_one_day_from_tuesday_afternoon_is_wednesday_afternoon() -> None:
    one_day = parse_sla_duration("1d")
    assert one_day.after(LONDON, utc(11, 24, 15)) == utc(11, 25, 15)  # Tue 15:00 -> Wed 15:00 (London = UTC)
    assert one_day.after(LONDON, utc(11, 27, 15)) == utc(11, 30, 15)  # Fri -> Mon
    assert one_day.budget(LONDON, utc(11, 24, 15)) == timedelta(hours=8, minutes=30)  # one working day


def test_working_days_skip_public_holidays() -> None:
    # Thu 24 Dec 15:00: Christmas (Fri), the weekend and Boxing Day observed (Mon 28) are skipped.
    assert parse_sla_duration("1d").after(LONDON, utc(12, 24, 15)) == utc(12, 29, 15)


def test_a_shorter_next_day_ends_at_its_closing_time() -> None:
    assert parse_sla_duration("1d").after(SHORT_FRIDAY, utc(11, 26, 15)) == utc(11, 27, 13)  # Thu 15:00 -> Fri 13:00


def test_counting_starts_at_the_next_opening_and_hours_add_business_time() -> None:
    # Opened Tue 20:00 (closed): counting starts Wed 09:00; a working day and 2 hours later is Thu 11:00.
    assert parse_sla_duration("1d2h").after(LONDON, utc(11, 24, 20)) == utc(11, 26, 11)
    assert parse_sla_duration("2h").after(LONDON, utc(11, 24, 16)) == utc(11, 25, 9, 30)
    assert parse_sla_duration("1w").after(LONDON, utc(11, 24, 15)) == utc(12, 1, 15)  # five working days


def test_on_a_round_the_clock_calendar_a_day_is_24_hours() -> None:
    assert parse_sla_duration("1d").after(ROUND_THE_CLOCK, utc(11, 28, 2)) == utc(11, 29, 2)
    assert parse_sla_duration("2d").budget(ROUND_THE_CLOCK, utc(11, 28, 2)) == timedelta(hours=48)


def test_fractional_days_are_refused_with_a_fix() -> None:
    with pytest.raises(ValueError, match=r"whole working days; write e\.g\. 1d4h"):
        parse_sla_duration("1.5d")
    with pytest.raises(ConfigError, match=r"sla\.policies\.P2\.resolution"):
        parse_config("sla:\n  policies:\n    P2: {first_response: 1h, resolution: 1.5d}\n", env={})


def test_targets_are_said_as_people_say_them() -> None:
    assert parse_sla_duration("2d").describe(business=True) == "2 working days"
    assert parse_sla_duration("1h").describe(business=True) == "1 working hour"
    assert parse_sla_duration("1d4h").describe(business=True) == "1 working day and 4 hours"
    assert parse_sla_duration("15m").describe(business=False) == "15 minutes"
    assert parse_sla_duration("1d").describe(business=False) == "1 day"
    assert isinstance(parse_sla_duration("90m"), SlaDuration)


async def test_the_clock_gives_a_two_day_resolution_two_working_days(
    make_desk: Callable[..., Any], make_config: Callable[..., AppConfig], clock: ManualClock,
) -> None:
    config = make_config("""
sla:
  policies:
    P3: {first_response: 4h, update_every: 1d, resolution: 2d}
""")
    desk = make_desk(app_config=config)
    clock.set(utc(11, 24, 15))  # Tue 15:00 on the London 09:00-17:00 test calendar
    opened = await desk.tickets.open(PersonRef("slack", "UREQ9", display_name="Requester"), "Dock is dead",
                                     origin=Origin("slack"), priority="P3")
    assert opened.ticket.resolution_due == utc(11, 26, 15)  # Thu 15:00, not six 8-hour days later
    assert opened.ticket.first_response_due == utc(11, 25, 11)  # 2h on Tuesday, 2h on Wednesday
    assert opened.ticket.next_update_due == utc(11, 25, 15)


WITH_DAYS = """
default_calendar: emea
calendars:
  emea:
    timezone: Europe/London
    hours: {mon-fri: ["09:00-17:30"]}
  always: {timezone: UTC, always_open: true}
sla:
  policies:
    P1: {calendar: always, first_response: 15m, resolution: 1d}
    P2: {first_response: 1h, resolution: 2d, warn_at: 75%}
"""


def test_check_config_warns_where_a_files_meaning_changed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(WITH_DAYS)
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "warning: sla.policies.P2.resolution: 2d now means 2 working days on calendar emea; before, it meant 48 "
        "business hours (about 5.6 working days). Write 48h to keep the old meaning.",
        "ok"]


def test_check_config_explains_each_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(WITH_DAYS)
    assert main(["check-config", "--explain", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "P2: first response within 1 working hour, resolution within 2 working days, a warning at 75% of each " \
           "(calendar emea, Mon–Fri 09:00–17:30 Europe/London)" in out
    assert "P1: first response within 15 minutes, resolution within 1 day (calendar always, round the clock, UTC)" \
        in out
