"""Human durations in config (``15m``, ``2h``, ``1d``, ``1h30m``)."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)")
_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(value: object) -> timedelta:
    """Parse ``15m``/``2h``/``1d``/``1h30m``/``90s`` (or a number of seconds) into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write 15m, 2h or 1d")
    if isinstance(value, int | float):
        return timedelta(seconds=float(value))
    text = str(value).strip().lower().replace(" ", "")
    pos = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f'"{value}" is not a duration; write 15m, 2h or 1d')
    return timedelta(seconds=total)


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
