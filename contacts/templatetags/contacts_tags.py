"""Template helpers for the founders' pages: the closeness badge, dates in words and
links that are only ever http(s)."""

import datetime as dt
from urllib.parse import urlsplit

from django import template
from django.utils.html import format_html, format_html_join
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
# heatmap cells is ~370 rects, and the template engine localizes every number.


@register.simple_tag
def heatmap_cells(heatmap):
    size = heatmap["cell"]
    return format_html_join(
        "",
        '<rect class="shade-{}" x="{}" y="{}" width="{}" height="{}" rx="2"><title>{}</title></rect>',
        ((cell.shade, cell.x, cell.y, size, size, cell.title) for cell in heatmap["cells"]),
    )


@register.simple_tag
def chart_bars(chart):
    return format_html_join(
        "",
        '<rect class="bar" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>',
        ((bar.x, bar.y, bar.width, bar.height, bar.title) for bar in chart["bars"]),
    )
