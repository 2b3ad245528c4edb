"""The business calendars named in ``app.yaml``, built once at start-up."""

from __future__ import annotations

from bot.business_time import BusinessCalendar
from bot.config import AppConfig, ConfigError

TWENTY_FOUR_SEVEN = "24x7"


def build_calendars(config: AppConfig) -> dict[str, BusinessCalendar]:
    """Every configured calendar by name, plus a built-in UTC ``"24x7"`` one unless the config defines it.

    Raises ``ConfigError`` naming the calendar whose hours or holiday country can't be understood.
    """
    calendars: dict[str, BusinessCalendar] = {}
    problems: list[tuple[str, str]] = []
    for name, spec in config.calendars.items():
        try:
            if spec.always_open:
                calendars[name] = BusinessCalendar.twenty_four_seven(name, spec.timezone)
            else:
                calendars[name] = BusinessCalendar.from_spec(
                    name, spec.timezone, spec.hours, country=spec.country, subdivision=spec.subdivision,
                    holidays=spec.holidays,
                )
        except ValueError as exc:
            problems.append((f"calendars.{name}", str(exc)))
    if problems:
        raise ConfigError(problems)
    calendars.setdefault(TWENTY_FOUR_SEVEN, BusinessCalendar.twenty_four_seven(TWENTY_FOUR_SEVEN))
    return calendars


def calendar_for(config: AppConfig, calendars: dict[str, BusinessCalendar], name: str | None) -> BusinessCalendar:
    """The calendar called ``name``, or the default calendar when there is no such name."""
    return calendars.get(name or "") or calendars[config.default_calendar]
