"""Building blocks of ``app.yaml``'s sections: durations, percentages, times of day, strict sections."""

from __future__ import annotations

import re
from datetime import time, timedelta
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainValidator,
)

from bot.durations import SlaDuration, parse_duration, parse_sla_duration

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
SlaTarget = Annotated[SlaDuration, PlainValidator(parse_sla_duration)]
"""An SLA target: ``d``/``w`` count the policy calendar's working days, ``h``/``m`` its business time."""
PRIORITIES = ("P1", "P2", "P3", "P4")


def _parse_percent(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        fraction = float(value) / 100 if value > 1 else float(value)
    else:
        text = str(value).strip()
        try:
            fraction = float(text.rstrip("%")) / 100
        except ValueError:
            raise ValueError(f'"{value}" is not a percentage; write 75%') from None
    if not 0 < fraction < 1:
        raise ValueError(f'"{value}" must be between 0% and 100%; write e.g. 75%')
    return fraction


def _parse_clock_time(value: object) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, int):  # YAML 1.1 reads 10:00 as sexagesimal 600
        return time(value // 60 % 24, value % 60)
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", str(value).strip())
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueError(f'"{value}" is not a time of day; write HH:MM like 15:00')
    return time(int(match.group(1)), int(match.group(2)))


def _parse_window(value: object) -> tuple[time, time]:
    match = re.fullmatch(r"\s*(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})\s*", str(value))
    if not match:
        raise ValueError(f'"{value}" is not a time window; write HH:MM-HH:MM like 08:00-20:00')
    return _parse_clock_time(match.group(1)), _parse_clock_time(match.group(2))


Percent = Annotated[float, BeforeValidator(_parse_percent)]
ClockTime = Annotated[time, BeforeValidator(_parse_clock_time)]
Window = Annotated[tuple[time, time], BeforeValidator(_parse_window)]


class Section(BaseModel):
    """Every section rejects keys it does not know, so typos are caught at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """Every problem in a config file, each with its YAML path and a plain-words fix."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{path}: {message}" for path, message in problems))


__all__ = ["PRIORITIES", "ClockTime", "ConfigError", "Duration", "Percent", "Section", "SlaTarget", "Window"]
