"""The closeness formula of PRODUCT.md §3 as plain functions, against its definition."""

import datetime as dt
import math
import random

import pytest

from contacts import closeness
from contacts.closeness import CLOSE, COLD, COOL, NONE, WARM

TODAY = dt.date(2024, 6, 30)
H = 14


def every(step_days, count, last=TODAY):
    return [last - dt.timedelta(days=step_days * k) for k in range(count)]


def definition(days, today=TODAY):
    """S(today) written out from the spec, independently of contacts/closeness.py."""
    return sum(2 ** (-(today - d).days / H) for d in set(days) if d <= today)


def stored_log(days):
    log = None
    for day in days:
        log = closeness.add_day(log, day)
    return log


def measure(days, today=TODAY):
    return closeness.Closeness.from_log(stored_log(days), today)


def test_seen_every_day_for_two_weeks_is_close():
    days = every(1, 14)
    assert definition(days) >= 6
    assert measure(days).level == CLOSE


def test_seen_every_week_is_warm():
    for last in (TODAY, TODAY - dt.timedelta(days=6)):
        days = every(7, 52, last=last)
        assert 2 <= definition(days) < 6
        assert measure(days).level == WARM


def test_seen_every_month_is_cool():
    days = every(30, 12)
    assert 0.5 <= definition(days) < 2
    assert measure(days).level == COOL
    assert measure(days, TODAY + dt.timedelta(days=10)).level == COOL


def test_seen_once_two_months_ago_is_cold():
    days = [TODAY - dt.timedelta(days=60)]
    assert 0 < definition(days) < 0.5
    assert measure(days).level == COLD


def test_never_seen_is_none():
    assert closeness.Closeness.from_log(None, TODAY) == closeness.Closeness(strength=0.0, level=NONE, score=0)
    assert closeness.level_for(0.0) == NONE
    assert closeness.level_for(3.0, has_interactions=False) == NONE


@pytest.mark.parametrize(
    "s, level", [(6.0, CLOSE), (5.999, WARM), (2.0, WARM), (1.999, COOL), (0.5, COOL), (0.499, COLD), (1e-9, COLD)]
)
def test_levels_have_the_documented_bounds(s, level):
    assert closeness.level_for(s) == level


@pytest.mark.parametrize("s", [0, 0.5, 1, 2, 4, 6, 8, 12, 40, 1000])
def test_the_score_is_the_documented_formula(s):
    assert closeness.score_for(s) == round(100 * (1 - 2 ** (-s / 4)))


def test_the_score_runs_from_0_to_100():
    assert closeness.score_for(0) == 0
    assert closeness.score_for(4) == 50
    assert closeness.score_for(8) == 75
    assert closeness.score_for(1000) == 100


def test_the_stored_form_gives_the_definition_on_any_later_date():
    rng = random.Random(7)
    for _ in range(50):
        days = {TODAY - dt.timedelta(days=rng.randrange(0, 400)) for _ in range(rng.randrange(1, 40))}
        log = stored_log(sorted(days))
        for later in (0, 1, 30, 365):
            today = TODAY + dt.timedelta(days=later)
            assert closeness.strength(log, today) == pytest.approx(definition(days, today), rel=1e-9)
            assert closeness.strength_from_days(days, today) == pytest.approx(definition(days, today), rel=1e-12)


def test_adding_days_gives_the_same_log_in_any_order():
    rng = random.Random(11)
    days = sorted({TODAY - dt.timedelta(days=rng.randrange(0, 3000)) for _ in range(200)})
    reference = closeness.log_for_days(days)
    for _ in range(20):
        shuffled = days[:]
        rng.shuffle(shuffled)
        assert stored_log(shuffled) == pytest.approx(reference, abs=1e-9)
    assert stored_log(reversed(days)) == pytest.approx(reference, abs=1e-9)


def test_the_log_sum_exp_update_does_not_overflow():
    # 2 ** (ordinal / H) alone is about 2 ** 52_800: far beyond a float.
    days = every(1, 3000)
    with pytest.raises(OverflowError):
        2.0 ** closeness.day_weight_log(TODAY)
    log = stored_log(days)
    assert math.isfinite(log)
    assert log == pytest.approx(closeness.log_for_days(days), abs=1e-9)
    assert closeness.strength(log, TODAY) == pytest.approx(definition(days), rel=1e-9)


def test_log_for_days_counts_each_day_once():
    assert closeness.log_for_days([TODAY, TODAY, TODAY]) == closeness.log_for_days([TODAY])
    assert closeness.log_for_days([]) is None


def test_the_stored_form_is_the_documented_log():
    days = every(3, 5)
    expected = math.log2(sum(2 ** (d.toordinal() / H - 52_000) for d in days)) + 52_000
    assert closeness.log_for_days(days) == pytest.approx(expected, abs=1e-9)


def level_by_range(log, today):
    for level in (CLOSE, WARM, COOL, COLD):
        low, high = closeness.log_range(level, today)
        if (low is None or log >= low) and (high is None or log < high):
            return level
    raise AssertionError("no level range holds this log")


def test_the_level_ranges_on_closeness_log_match_level_for():
    rng = random.Random(3)
    checked = 0
    for _ in range(400):
        days = {TODAY - dt.timedelta(days=rng.randrange(0, 200)) for _ in range(rng.randrange(1, 30))}
        log = closeness.log_for_days(days)
        for today in (TODAY, TODAY + dt.timedelta(days=rng.randrange(1, 120))):
            s = closeness.strength(log, today)
            assert level_by_range(log, today) == closeness.Closeness.from_log(log, today).level
            if all(abs(s - bound) > 1e-6 for bound in (0.5, 2, 6)):
                assert level_by_range(log, today) == closeness.level_for(s)
                checked += 1
    assert checked > 700


@pytest.mark.parametrize("s", [0.5, 2.0, 6.0])
def test_at_a_level_boundary_the_page_and_the_filter_agree(s):
    log = closeness.log_threshold(s, TODAY)
    for nudge in (-1e-9, 0.0, 1e-9):
        assert closeness.Closeness.from_log(log + nudge, TODAY).level == level_by_range(log + nudge, TODAY)


def test_days_from_decades_ago_are_cold_not_none():
    log = closeness.log_for_days([dt.date(1950, 1, 1)])
    assert closeness.strength(log, TODAY) == 0.0  # underflows
    assert closeness.Closeness.from_log(log, TODAY).level == COLD
    assert level_by_range(log, TODAY) == COLD
