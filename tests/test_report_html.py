"""The weekly trends page as a manager sees it: rendered by headless Chromium, measured from its DOM.

A quarter of weekly numbers (2 Sep - 2 Dec 2026) with one bad week (W43: CSAT and SLA drop, volume spikes) is
drawn by ``render_html``; Chromium lays the page out at 1280 px and a measuring script (added to a copy of the
page only: the report itself has no scripts) records where each chart and each week's points landed.
The screenshot is kept as a CI artifact (``.ci/artifacts/report.png``).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import struct
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from surveys.report_aggregate import week_of
from surveys.report_html import format_period, render_html
from surveys.report_metrics import GroupFigures, Report

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / ".ci" / "artifacts"
CHROMIUM = next((path for path in (shutil.which("chromium"), shutil.which("chromium-browser"),
                                   shutil.which("google-chrome")) if path), None)
SINCE = datetime(2026, 9, 2, tzinfo=UTC)
UNTIL = datetime(2026, 12, 3, tzinfo=UTC)
BAD_WEEK = "2026-W43"
UTC_ORDINAL_END = UNTIL.toordinal()
WIDTH = 1280
TRENDS = ("chart-csat", "chart-sla", "chart-times", "chart-volume")

MEASURE = """<script>
const box = e => { const r = e.getBoundingClientRect(); return {left: r.left, top: r.top, width: r.width,
  bottom: r.bottom, cx: r.left + r.width / 2, cy: r.top + r.height / 2}; };
const layout = {viewport: window.innerWidth, charts: {}};
for (const chart of document.querySelectorAll("svg.chart")) {
  const points = {};
  for (const p of chart.querySelectorAll(".point")) {
    (points[p.dataset.series] = points[p.dataset.series] || {})[p.dataset.week] = box(p);
  }
  layout.charts[chart.id] = {box: box(chart), points};
}
const out = document.createElement("pre"); out.id = "layout"; out.textContent = JSON.stringify(layout);
document.body.appendChild(out);
</script>"""


def quarter() -> Report:
    groups: dict[str, GroupFigures] = {}
    for index, week in enumerate(sorted({week_of(datetime.fromordinal(day).replace(tzinfo=UTC))
                                         for day in range(SINCE.toordinal(), UTC_ORDINAL_END)})):
        bad = week == BAD_WEEK
        m = GroupFigures(opened=60 + index + (80 if bad else 0), resolved=55 + index, surveys_sent=40,
                         surveys_answered=30, thumbs_up=12 if bad else 27, thumbs_down=18 if bad else 3,
                         first_response_met=20 if bad else 57, first_response_missed=40 if bad else 3,
                         resolution_met=30 if bad else 52, resolution_missed=25 if bad else 3)
        m.first_response_hours.extend([0.5 + index / 20, 3.0 if bad else 1.0])
        m.resolution_hours.extend([6.0 + index / 10, 20.0 if bad else 8.0])
        groups[week] = m
    total = GroupFigures()
    for m in groups.values():
        for name, value in vars(m).items():
            if isinstance(value, int):
                setattr(total, name, getattr(total, name) + value)
            else:
                getattr(total, name).extend(value)
    return Report(since=SINCE, until=UNTIL, by="week", total=total, groups=groups)


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return int(width), int(height)


def chromium(page: Path, profile: Path, *extra: str) -> str:
    assert CHROMIUM is not None
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={WIDTH},2200", *extra,
               page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def test_the_period_reads_as_people_write_it() -> None:
    assert format_period(SINCE, UNTIL) == "2 Sep – 2 Dec 2026"
    assert format_period(datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC)) == "23–27 Nov 2026"
    assert format_period(datetime(2025, 12, 2, 9, tzinfo=UTC), datetime(2026, 12, 2, 9, tzinfo=UTC)) == (
        "2 Dec 2025 – 2 Dec 2026")


def test_the_page_is_self_contained() -> None:
    page = render_html(quarter())
    assert "<script" not in page and not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)
    assert "IT desk report, 2 Sep – 2 Dec 2026, by week" in page and "T00:00:00" not in page


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to render with (apt-get install -y chromium); "
                                             ".ci/run installs it where it can")
def test_weekly_trends_are_full_width_stacked_and_aligned_in_chromium(tmp_path: Path) -> None:
    page = render_html(quarter())
    report = tmp_path / "report.html"
    report.write_text(page, encoding="utf-8")
    measured = tmp_path / "measured.html"
    measured.write_text(page.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    dom = chromium(measured, tmp_path / "profile", "--dump-dom")
    found = re.search(r'<pre id="layout">(.*?)</pre>', dom, re.S)
    assert found is not None, "the measuring script did not run"
    layout: dict[str, Any] = json.loads(found.group(1).replace("&quot;", '"'))
    charts = layout["charts"]
    assert list(charts) == list(TRENDS)
    boxes = [charts[name]["box"] for name in TRENDS]
    # The page's width, one chart under the other, all on the same left edge and width.
    for box in boxes:
        assert box["width"] >= 0.9 * layout["viewport"] - 70
        assert abs(box["left"] - boxes[0]["left"]) < 1 and abs(box["width"] - boxes[0]["width"]) < 1
    assert all(lower["top"] >= upper["bottom"] for upper, lower in itertools.pairwise(boxes))
    # Time runs left to right, and a week sits at the same x in every chart: a drop lines up with the others.
    csat = charts["chart-csat"]["points"]["CSAT %"]
    weeks = sorted(csat)
    assert len(weeks) == 14 and [csat[w]["cx"] for w in weeks] == sorted(csat[w]["cx"] for w in weeks)
    span = csat[weeks[-1]]["cx"] - csat[weeks[0]]["cx"]
    assert span >= 0.8 * boxes[0]["width"]
    for week in weeks:
        xs = [charts["chart-sla"]["points"]["First response"][week]["cx"],
              charts["chart-times"]["points"]["Resolution"][week]["cx"],
              (charts["chart-volume"]["points"]["Opened"][week]["cx"]
               + charts["chart-volume"]["points"]["Resolved"][week]["cx"]) / 2]
        assert all(abs(x - csat[week]["cx"]) < 1.5 for x in xs), week
    # The bad week is a visible dip in CSAT and SLA and a peak in volume (screen y grows downwards).
    before, bad, after = (weeks[weeks.index(BAD_WEEK) + step] for step in (-1, 0, 1))
    assert csat[bad]["cy"] > csat[before]["cy"] + 40 and csat[bad]["cy"] > csat[after]["cy"] + 40
    sla = charts["chart-sla"]["points"]["First response"]
    assert sla[bad]["cy"] > sla[before]["cy"] + 40
    opened = charts["chart-volume"]["points"]["Opened"]
    assert opened[bad]["top"] < opened[before]["top"] - 40
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    chromium(report, tmp_path / "profile", f"--screenshot={shot}")
    assert png_size(shot)[0] == WIDTH and shot.stat().st_size > 30_000
