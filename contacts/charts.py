"""Geometry of the server-rendered SVG charts: the dashboard's daily active contacts,
a contact's one-year activity heatmap and closeness sparkline.

Pure functions from dates and counts to shapes; the templates only draw what these
return, so no chart needs JavaScript.
"""

import datetime as dt
from dataclasses import dataclass

from contacts import closeness

DAY = dt.timedelta(days=1)
# English names, as the pages are: cheaper than strftime for a year of cells.
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _day_label(day: dt.date) -> str:
    """"Mon 23 Nov"."""
    return f"{WEEKDAYS[day.weekday()]} {day.day} {MONTHS[day.month - 1]}"


@dataclass(frozen=True)
class Bar:
    day: dt.date
    count: int
    x: float
    y: float
    width: float
    height: float

    @property
    def title(self) -> str:
        return f"{_day_label(self.day)}: {self.count} active"


def daily_active_chart(counts: dict, today: dt.date, days: int = 90, width: int = 720, height: int = 160) -> dict:
    """One bar per day for the `days` days ending today, scaled to the busiest day."""
    start = today - (days - 1) * DAY
    peak = max(counts.values(), default=0)
    slot = width / days
    bars = []
    for offset in range(days):
        day = start + offset * DAY
        count = counts.get(day, 0)
        bar_height = 0 if peak == 0 else round(count / peak * (height - 4), 2)
        bars.append(Bar(day, count, round(offset * slot, 2), round(height - bar_height, 2), round(slot * 0.8, 2), bar_height))
    return {"bars": bars, "peak": peak, "start": start, "end": today, "width": width, "height": height}


@dataclass(frozen=True)
class Cell:
    day: dt.date
    count: int
    x: int
    y: int
    shade: int  # 0 (no interaction) to 4 (a busy day)

    @property
    def title(self) -> str:
        events = "no interaction" if not self.count else f"{self.count} event{'s' if self.count > 1 else ''}"
        return f"{_day_label(self.day)} {self.day.year}: {events}"


def _shade(event_count: int) -> int:
    if event_count <= 0:
        return 0
    if event_count == 1:
        return 1
    if event_count <= 3:
        return 2
    if event_count <= 9:
        return 3
    return 4


def activity_heatmap(event_counts: dict, today: dt.date, cell: int = 11, gap: int = 2) -> dict:
    """A year of days as week columns (Monday on top), shaded by that day's events."""
    first = today - 364 * DAY
    first -= first.weekday() * DAY  # start the first column on a Monday
    step = cell + gap
    cells, months = [], []
    day = first
    while day <= today:
        column, row = (day - first).days // 7, day.weekday()
        count = event_counts.get(day, 0)
        cells.append(Cell(day, count, column * step, 14 + row * step, _shade(count)))
        if day.day == 1 or (day == first and day.day < 22):
            months.append({"x": column * step, "label": MONTHS[day.month - 1]})
        day += DAY
    columns = (today - first).days // 7 + 1
    return {
        "cells": cells,
        "months": months,
        "cell": cell,
        "width": columns * step,
        "height": 14 + 7 * step,
        "active_days": sum(1 for c in cells if c.count),
    }


def closeness_sparkline(days, today: dt.date, span: int = 365, width: int = 730, height: int = 100) -> dict:
    """The score (0–100) each day of the last `span` days, as a polyline, with the level
    thresholds as guide lines so the founder sees when a contact crossed one."""
    start = today - (span - 1) * DAY
    scores = [closeness.score_for(s) for s in closeness.strength_series(days, start, today)]
    x_step = width / max(span - 1, 1)

    def y_of(score):
        return round(height - score / 100 * height, 2)

    points = " ".join(f"{round(i * x_step, 2)},{y_of(score)}" for i, score in enumerate(scores))
    thresholds = [
        {"level": level, "score": closeness.score_for(low), "y": y_of(closeness.score_for(low))}
        for level, (low, _) in closeness.LEVEL_BOUNDS.items()
        if low is not None
    ]
    return {
        "points": points,
        "thresholds": thresholds,
        "width": width,
        "height": height,
        "start": start,
        "end": today,
        "peak": max(scores, default=0),
    }
