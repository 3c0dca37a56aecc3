"""Template helpers for the founders' pages: the closeness badge, dates in words and
links that are only ever http(s)."""

import datetime as dt
from urllib.parse import urlsplit

from django import template
from django.utils.html import escape, format_html
from django.utils.safestring import mark_safe
from django.utils.timesince import timesince

register = template.Library()


@register.simple_tag
def level_badge(measure, show_score=True):
    """The closeness badge: the level's colour (one CSS class per level) and the score.
    Built in Python rather than an included template: list pages show fifty of them."""
    score = format_html(" <b>{}</b>", measure.score) if show_score else ""
    return format_html(
        '<span class="badge level-{}" title="Closeness {}/100 ({})">{}{}</span>',
        measure.level,
        measure.score,
        measure.level,
        measure.level,
        score,
    )


@register.filter
def short_date(value):
    """"23 Nov 2026": a date (or a datetime) the way the pages show it."""
    if not isinstance(value, dt.date):
        return ""
    return f"{value.day} {value:%b %Y}"


@register.filter
def days_ago(day, today):
    """A past day in words relative to the workspace's today: "today", "3 days ago"."""
    if not isinstance(day, dt.date):
        return "never"
    if isinstance(day, dt.datetime):
        day = day.date()
    days = (today - day).days
    if days < 0:
        return "tomorrow" if days == -1 else f"in {-days} days"
    if days == 0:
        return "today"
    if days == 1:
        return "yesterday"
    if days < 14:
        return f"{days} days ago"
    return f"{timesince(day, today, depth=1)} ago"


@register.filter
def http_url(value):
    """The URL when it is http(s), else "" — so a javascript: URL never becomes a link."""
    if not isinstance(value, str):
        return ""
    try:
        scheme = urlsplit(value.strip()).scheme.lower()
    except ValueError:
        return ""
    return value.strip() if scheme in ("http", "https") else ""


# The charts' shapes are written here rather than in a template loop: a year of
# heatmap cells is ~370 rects, and the template engine localizes every number. Every
# value is a number or a date computed by contacts/charts.py, never user input, so the
# markup is built with plain formatting.


@register.simple_tag
def heatmap_cells(heatmap):
    size = heatmap["cell"]
    return mark_safe(
        "".join(
            f'<rect class="shade-{int(cell.shade)}" x="{int(cell.x)}" y="{int(cell.y)}" width="{int(size)}" '
            f'height="{int(size)}" rx="2"><title>{escape(cell.title)}</title></rect>'
            for cell in heatmap["cells"]
        )
    )


@register.simple_tag
def chart_bars(chart):
    return mark_safe(
        "".join(
            f'<rect class="bar" x="{float(bar.x)}" y="{float(bar.y)}" width="{float(bar.width)}" '
            f'height="{float(bar.height)}"><title>{escape(bar.title)}</title></rect>'
            for bar in chart["bars"]
        )
    )
