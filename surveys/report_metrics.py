"""The report's numbers: one ``GroupFigures`` column per group, the statistics and the report-card grade."""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# (grade, minimum CSAT %, minimum SLA attainment %), best first; anything below D is F.
GRADE_BANDS: tuple[tuple[str, float, float], ...] = (("A", 90.0, 95.0), ("B", 80.0, 90.0), ("C", 70.0, 80.0),
                                                     ("D", 60.0, 70.0))
GRADE_RULE = (
    "Grade: A if CSAT ≥ 90% and SLA ≥ 95%; B if ≥ 80% and ≥ 90%; C if ≥ 70% and ≥ 80%; D if ≥ 60% and ≥ 70%; "
    "otherwise F. SLA is the lower of first-response and resolution attainment; a measure with no data is not "
    "held against the desk, and with neither measure the grade is n/a."
)
DEFINITIONS = (
    "SLA verdicts and times are the SLA clock's own, stamped when each target stopped (with the target in force "
    "then): business hours on each ticket's calendar while the ticket was with IT (not waiting on the requester, "
    "not resolved); a first response still running counts as missed once the clock marked it breached. "
    "Median = middle value; p90 = nearest-rank 90th percentile. CSAT = thumbs up / (up + down) of surveys sent "
    "in the period; response rate = answered/sent; reopen rate = reopened/resolved. NPS = % promoters (9-10) minus "
    "% detractors (0-6) of the NPS pulses sent in the period, by each person's final answer (desk-wide and per "
    "week only: it rates the desk, not a ticket)."
)
INCIDENT_DEFINITION = (
    "By agent: tickets linked to an incident (as they are linked now) are left out of each agent's figures and "
    "counted in their own column, (incident-linked), since resolving the incident resolves them all; \"Resolved "
    "via incident\" is how many of them each agent resolved. The desk's column counts every ticket."
)
TOTAL = "Total"
INCIDENT_MEASURE = "resolved_via_incident"
"""Only in ``--by agent`` reports: the other groupings do not tell incident-linked tickets apart."""


def _hours() -> array[float]:
    # Flat doubles: a year of a large desk's response times without a Python float object each.
    return array("d")


@dataclass
class GroupFigures:
    """One column of the report (the whole desk, or one agent/category/priority/week)."""

    opened: int = 0
    resolved: int = 0
    reopened: int = 0
    surveys_sent: int = 0
    surveys_answered: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    first_response_hours: array[float] = field(default_factory=_hours)
    resolution_hours: array[float] = field(default_factory=_hours)
    first_response_met: int = 0
    first_response_missed: int = 0
    resolution_met: int = 0
    resolution_missed: int = 0
    nps_sent: int = 0
    promoters: int = 0
    passives: int = 0
    detractors: int = 0
    resolved_via_incident: int = 0
    """Incident-linked tickets resolved in the period (by this agent, in a ``--by agent`` report); not in
    ``resolved``, except in the desk's and the (incident-linked) columns."""

    @property
    def nps_answered(self) -> int:
        return self.promoters + self.passives + self.detractors

    @property
    def nps(self) -> float | None:
        """Net Promoter Score of the pulses sent in the period: % promoters (9-10) minus % detractors (0-6)."""
        answered = self.nps_answered
        return 100.0 * (self.promoters - self.detractors) / answered if answered else None

    @property
    def csat(self) -> float | None:
        return percent(self.thumbs_up, self.thumbs_up + self.thumbs_down)

    @property
    def response_rate(self) -> float | None:
        return percent(self.surveys_answered, self.surveys_sent)

    @property
    def reopen_rate(self) -> float | None:
        return percent(self.reopened, self.resolved)

    @property
    def first_response_attainment(self) -> float | None:
        return percent(self.first_response_met, self.first_response_met + self.first_response_missed)

    @property
    def resolution_attainment(self) -> float | None:
        return percent(self.resolution_met, self.resolution_met + self.resolution_missed)

    @property
    def sla_attainment(self) -> float | None:
        known = [v for v in (self.first_response_attainment, self.resolution_attainment) if v is not None]
        return min(known) if known else None

    @property
    def grade(self) -> str:
        return grade_for(self.csat, self.sla_attainment)

    def summary(self) -> dict[str, Any]:
        """The numbers, flat, rounded for display (hours to 2 places, percentages to 1)."""
        first, resolution = sorted(self.first_response_hours), sorted(self.resolution_hours)
        return {
            "grade": self.grade,
            "csat_pct": _round(self.csat, 1),
            "thumbs_up": self.thumbs_up,
            "thumbs_down": self.thumbs_down,
            "surveys_sent": self.surveys_sent,
            "surveys_answered": self.surveys_answered,
            "response_rate_pct": _round(self.response_rate, 1),
            "nps": _round(self.nps, 1),
            "nps_promoters": self.promoters,
            "nps_passives": self.passives,
            "nps_detractors": self.detractors,
            "nps_sent": self.nps_sent,
            "nps_answered": self.nps_answered,
            "opened": self.opened,
            "resolved": self.resolved,
            INCIDENT_MEASURE: self.resolved_via_incident,
            "first_response_median_h": _round(median(first, ordered=True), 2),
            "first_response_p90_h": _round(p90(first, ordered=True), 2),
            "resolution_median_h": _round(median(resolution, ordered=True), 2),
            "resolution_p90_h": _round(p90(resolution, ordered=True), 2),
            "first_response_sla_pct": _round(self.first_response_attainment, 1),
            "first_response_met": self.first_response_met,
            "first_response_missed": self.first_response_missed,
            "resolution_sla_pct": _round(self.resolution_attainment, 1),
            "resolution_met": self.resolution_met,
            "resolution_missed": self.resolution_missed,
            "reopened": self.reopened,
            "reopen_rate_pct": _round(self.reopen_rate, 1),
        }


COLUMNS: tuple[tuple[str, str], ...] = (
    ("grade", "Grade"), ("csat_pct", "CSAT %"), ("thumbs_up", "Thumbs up"), ("thumbs_down", "Thumbs down"),
    ("surveys_sent", "Surveys sent"), ("surveys_answered", "Surveys answered"),
    ("response_rate_pct", "Response rate %"), ("nps", "NPS"), ("nps_promoters", "NPS promoters (9-10)"),
    ("nps_passives", "NPS passives (7-8)"), ("nps_detractors", "NPS detractors (0-6)"), ("nps_sent", "NPS pulses sent"),
    ("nps_answered", "NPS answered"), ("opened", "Opened"), ("resolved", "Resolved"),
    (INCIDENT_MEASURE, "Resolved via incident"),
    ("first_response_median_h", "First response median (h)"), ("first_response_p90_h", "First response p90 (h)"),
    ("resolution_median_h", "Resolution median (h)"), ("resolution_p90_h", "Resolution p90 (h)"),
    ("first_response_sla_pct", "First response SLA %"), ("first_response_met", "First response met"),
    ("first_response_missed", "First response missed"), ("resolution_sla_pct", "Resolution SLA %"),
    ("resolution_met", "Resolution met"), ("resolution_missed", "Resolution missed"),
    ("reopened", "Reopened"), ("reopen_rate_pct", "Reopen rate %"),
)


@dataclass
class Report:
    """The desk's numbers for [since, until), as a total and (``by``) one column per group."""

    since: datetime
    until: datetime
    by: str | None
    total: GroupFigures
    groups: dict[str, GroupFigures]
    grade_rule: str = GRADE_RULE
    definitions: str = DEFINITIONS

    def columns(self) -> list[tuple[str, GroupFigures]]:
        """The desk's column first, then each group's."""
        return [(TOTAL, self.total), *self.groups.items()]

    @property
    def separates_incidents(self) -> bool:
        """Whether incident-linked tickets are kept apart (per agent only)."""
        return self.by == "agent"

    def measures(self) -> tuple[tuple[str, str], ...]:
        """The rows this report shows, as (key, label)."""
        return COLUMNS if self.separates_incidents else tuple(c for c in COLUMNS if c[0] != INCIDENT_MEASURE)

    def summary_of(self, metrics: GroupFigures) -> dict[str, Any]:
        """``metrics.summary()`` with only the measures this report shows."""
        summary = metrics.summary()
        if not self.separates_incidents:
            del summary[INCIDENT_MEASURE]
        return summary

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(), "until": self.until.isoformat(), "by": self.by,
            "total": self.summary_of(self.total),
            "groups": {name: self.summary_of(metrics) for name, metrics in self.groups.items()},
            "grade_rule": self.grade_rule, "definitions": self.definitions,
        }


def percent(part: int, whole: int) -> float | None:
    """``part`` as a percentage of ``whole``; None when there is nothing to divide."""
    return 100.0 * part / whole if whole else None


def _round(value: float | None, places: int) -> float | None:
    return None if value is None else round(value, places)


def median(values: Sequence[float], *, ordered: bool = False) -> float | None:
    """The middle value (the mean of the two middle ones); None without values."""
    if not values:
        return None
    ordered_values = values if ordered else sorted(values)
    middle = len(ordered_values) // 2
    if len(ordered_values) % 2:
        return float(ordered_values[middle])
    return (ordered_values[middle - 1] + ordered_values[middle]) / 2


def p90(values: Sequence[float], *, ordered: bool = False) -> float | None:
    """Nearest-rank 90th percentile: the smallest value with at least 90% of values at or below it."""
    if not values:
        return None
    ordered_values = values if ordered else sorted(values)
    return float(ordered_values[max(0, math.ceil(0.9 * len(ordered_values)) - 1)])


def grade_for(csat: float | None, sla: float | None) -> str:
    """The report-card grade (see ``GRADE_RULE``)."""
    if csat is None and sla is None:
        return "n/a"
    for letter, min_csat, min_sla in GRADE_BANDS:
        if (csat is None or csat >= min_csat - 1e-9) and (sla is None or sla >= min_sla - 1e-9):
            return letter
    return "F"
