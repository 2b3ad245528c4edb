"""``ithelp check-config``'s words about SLA policies: what each target means, and what changed meaning.

On a business calendar ``d`` now counts the calendar's working days (and ``w`` its working weeks); it used
to mean 24 business hours. Nothing is migrated silently: a file whose policies use ``d``/``w`` on a business
calendar gets a warning saying what each such target meant before and what it means now.
"""

from __future__ import annotations

from datetime import timedelta

from bot.config import AppConfig, CalendarConfig, SlaPolicy
from bot.durations import SlaDuration

_TARGETS = (("first_response", "first response within"), ("resolution", "resolution within"),
            ("update_every", "a progress update every"))
_DAY_NAMES = {"mon": "Mon", "tue": "Tue", "wed": "Wed", "thu": "Thu", "fri": "Fri", "sat": "Sat", "sun": "Sun"}


def _calendar_name(config: AppConfig, policy: SlaPolicy) -> str:
    return policy.calendar or config.default_calendar


def describe_calendar(name: str, spec: CalendarConfig) -> str:
    """How a policy's calendar reads: its name, weekly hours (with en dashes), zone and public holidays."""
    if spec.always_open:
        return f"calendar {name}, round the clock, {spec.timezone}"
    days = []
    for key, ranges in spec.hours.items():
        label = "–".join(_DAY_NAMES.get(part.strip().lower()[:3], part) for part in key.split("-"))
        texts = [ranges] if isinstance(ranges, str) else list(ranges)
        days.append(f"{label} {', '.join(text.replace('-', '–') for text in texts)}")
    holidays = f", {spec.country}{'-' + spec.subdivision if spec.subdivision else ''} public holidays off" if (
        spec.country) else ""
    return f"calendar {name}, {'; '.join(days)} {spec.timezone}{holidays}"


def _weekly_hours(spec: CalendarConfig) -> tuple[timedelta, int]:
    # (business time in a week, working days in a week) from the calendar's hours.
    from bot.business_time import BusinessCalendar

    calendar = BusinessCalendar.from_spec("check", spec.timezone, spec.hours)
    total = timedelta(0)
    for day in calendar.weekly:
        for start, end in day:
            minutes = (end.hour * 60 + end.minute or 24 * 60) - (start.hour * 60 + start.minute)
            total += timedelta(minutes=minutes)
    return total, calendar.working_days_per_week


def explain_policies(config: AppConfig) -> list[str]:
    """One line per policy, its targets as a person says them."""
    lines = []
    for priority, policy in config.sla.policies.items():
        name = _calendar_name(config, policy)
        spec = config.calendars[name]
        parts = []
        for field, words in _TARGETS:
            target: SlaDuration | None = getattr(policy, field)
            if target is not None:
                parts.append(f"{words} {target.describe(business=not spec.always_open)}")
        if policy.warn_at is not None:
            parts.append(f"a warning at {policy.warn_at:.0%} of each")
        lines.append(f"{priority}: {', '.join(parts)} ({describe_calendar(name, spec)})")
    return lines


def meaning_changes(config: AppConfig) -> list[str]:
    """A warning for every target whose meaning changed when ``d``/``w`` became working days/weeks."""
    warnings = []
    for priority, policy in config.sla.policies.items():
        name = _calendar_name(config, policy)
        spec = config.calendars[name]
        if spec.always_open:
            continue
        week, days = _weekly_hours(spec)
        working_day = week / days if days else timedelta(0)
        for field, _ in _TARGETS:
            target: SlaDuration | None = getattr(policy, field)
            if target is None or not target.counts_days:
                continue
            before = target.wall()
            about = f" (about {before / working_day:.1f} working days)" if working_day else ""
            warnings.append(
                f"sla.policies.{priority}.{field}: {target.text} now means {target.describe(business=True)} on "
                f"calendar {name}; before, it meant {before.total_seconds() / 3600:g} business hours{about}. "
                f"Write {before.total_seconds() / 3600:g}h to keep the old meaning.")
    return warnings
