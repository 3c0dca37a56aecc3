"""The closeness indicator as plain functions (PRODUCT.md §3).

S(today) = Σ over interaction days d ≤ today of 2 ** (-(today - d) / H).

Rather than recomputing S every night, a contact stores
closeness_log = log2(Σ 2 ** (ordinal(d) / H)), so S(today) = 2 ** (closeness_log -
ordinal(today) / H). Adding a day is a log-sum-exp update, and ordering or filtering
contacts by closeness on any date is a comparison on closeness_log.
"""

import datetime as dt
import math
from dataclasses import dataclass

HALF_LIFE_DAYS = 14

CLOSE, WARM, COOL, COLD, NONE = "close", "warm", "cool", "cold", "none"
LEVELS = (CLOSE, WARM, COOL, COLD, NONE)
CLOSE_MIN, WARM_MIN, COOL_MIN = 6.0, 2.0, 0.5
LOSING_TOUCH_DAYS = 90

# (lower bound of S, inclusive; upper bound, exclusive) for each level with interactions.
LEVEL_BOUNDS = {
    CLOSE: (CLOSE_MIN, None),
    WARM: (WARM_MIN, CLOSE_MIN),
    COOL: (COOL_MIN, WARM_MIN),
    COLD: (None, COOL_MIN),
}

log2 = math.log2


def day_weight_log(day: dt.date) -> float:
    """log2 of one interaction day's weight: ordinal(day) / H."""
    return day.toordinal() / HALF_LIFE_DAYS


def add_day(closeness_log: float | None, day: dt.date) -> float:
    """closeness_log after adding one interaction day, without overflow (log-sum-exp)."""
    x = day_weight_log(day)
    if closeness_log is None:
        return x
    high, low = max(closeness_log, x), min(closeness_log, x)
    return high + math.log2(1.0 + 2.0 ** (low - high))


def log_for_days(days) -> float | None:
    """closeness_log recomputed from scratch from a set of interaction days."""
    logs = sorted(day_weight_log(d) for d in set(days))
    if not logs:
        return None
    high = logs[-1]
    return high + math.log2(math.fsum(2.0 ** (x - high) for x in logs))


def strength(closeness_log: float | None, today: dt.date) -> float:
    """S(today) from the stored closeness_log; 0 for a contact with no interaction."""
    if closeness_log is None:
        return 0.0
    return 2.0 ** (closeness_log - day_weight_log(today))


def strength_from_days(days, today: dt.date) -> float:
    """S(today) straight from the definition: the reference the stored form must match."""
    return math.fsum(
        2.0 ** (-(today - d).days / HALF_LIFE_DAYS) for d in set(days) if d <= today
    )


def level_for(s: float, has_interactions: bool = True) -> str:
    if not has_interactions or s <= 0:
        return NONE
    if s >= CLOSE_MIN:
        return CLOSE
    if s >= WARM_MIN:
        return WARM
    if s >= COOL_MIN:
        return COOL
    return COLD


def score_for(s: float) -> int:
    """The 0–100 score shown to founders."""
    return round(100 * (1 - 2.0 ** (-s / 4)))


def log_threshold(s: float, today: dt.date) -> float:
    """The closeness_log at which S(today) equals s."""
    return math.log2(s) + day_weight_log(today)


def log_range(level: str, today: dt.date):
    """(low inclusive, high exclusive) bounds on closeness_log for a level on `today`."""
    low, high = LEVEL_BOUNDS[level]
    return (
        None if low is None else log_threshold(low, today),
        None if high is None else log_threshold(high, today),
    )


def level_for_log(closeness_log: float | None, today: dt.date) -> str:
    """The level read from a stored closeness_log with the very comparisons of log_range,
    so a page and a level filter never disagree on a contact at a boundary; a contact
    whose S has underflowed to 0.0 (decades-old days) is still cold, not none."""
    if closeness_log is None:
        return NONE
    for level in (CLOSE, WARM, COOL):
        low, _ = log_range(level, today)
        if closeness_log >= low:
            return level
    return COLD


@dataclass(frozen=True)
class Closeness:
    strength: float
    level: str
    score: int

    @classmethod
    def from_log(cls, closeness_log: float | None, today: dt.date) -> "Closeness":
        s = strength(closeness_log, today)
        return cls(strength=s, level=level_for_log(closeness_log, today), score=score_for(s))


def strength_series(days, start: dt.date, end: dt.date) -> list[float]:
    """S(d) for every date d from start to end inclusive, in one pass over the days.

    S(d) = S(d - 1) * 2 ** (-1 / H) + (1 if d is an interaction day): the same sum as
    strength_from_days, evaluated for a whole range without re-summing each date."""
    day_set = set(days)
    decay = 2.0 ** (-1 / HALF_LIFE_DAYS)
    s = strength_from_days((d for d in day_set if d < start), start - dt.timedelta(days=1))
    series = []
    for offset in range((end - start).days + 1):
        date = start + dt.timedelta(days=offset)
        s = s * decay + (1.0 if date in day_set else 0.0)
        series.append(s)
    return series
