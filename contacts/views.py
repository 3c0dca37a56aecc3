"""The founders' pages: dashboard, contact list (and its CSV export), a contact's
timeline, and /healthz.

Every page reads through contacts/scoping.py: the current workspace comes from
@workspace_required, a single contact from get_contact_for_user (another workspace's
contact is a 404). Each page runs a fixed number of queries whatever the data size.
"""

import csv
import datetime as dt
import json
from urllib.parse import urlencode

from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Count, F, IntegerField, Subquery
from django.db.utils import DatabaseError
from django.http import JsonResponse, StreamingHttpResponse
from django.shortcuts import render

from contacts import charts, closeness
from contacts.models import Contact, ContactSearch, Interaction, Workspace, level_q
from contacts.pagination import CappedPaginator
from contacts.scoping import get_contact_for_user, workspace_required

CONTACTS_PER_PAGE = 50
TIMELINE_PER_PAGE = 50
DASHBOARD_LIST_SIZE = 8
SORTS = {
    "closeness": "Closeness",
    "last": "Last interaction",
    "email": "Email",
}
CSV_COLUMNS = ["email", "name", "level", "score", "last_interaction_day", "first_seen_at", "user_id"]


def healthz(request):
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return JsonResponse({"status": "database unavailable"}, status=503)
    return JsonResponse({"status": "ok"})


class RowCount(Subquery):
    """COUNT(*) of a queryset as a scalar subquery, so one SELECT can hold several counts,
    each planned on its own (a range count reads only its own index range)."""

    template = "(SELECT COUNT(*) FROM (%(subquery)s) counted_rows)"
    output_field = IntegerField()


def _with_closeness(contacts, today):
    """Attach today's Closeness to each contact (computed from closeness_log, no query)."""
    contacts = list(contacts)
    for contact in contacts:
        contact.today_closeness = contact.closeness_on(today)
    return contacts


@workspace_required
def dashboard(request):
    workspace = request.workspace
    today = workspace.today()
    contacts = Contact.objects.filter(workspace=workspace)

    # Each count is a range of one index, (workspace, closeness_log) for a level,
    # (workspace, last_interaction_day) for the recent ones: one query of seven range
    # counts, each an index-only scan of just its own contacts. The levels partition
    # the contacts, so their sum is the total.
    counted = {level: contacts.filter(level_q(level, today)) for level in closeness.LEVELS}
    counted["active_7"] = contacts.filter(last_interaction_day__gt=today - dt.timedelta(days=7))
    counted["active_30"] = contacts.filter(last_interaction_day__gt=today - dt.timedelta(days=30))
    counts = (
        Workspace.objects.filter(pk=workspace.pk)
        .values(**{name: RowCount(rows.values("workspace")) for name, rows in counted.items()})
        .get()
    )
    counts["total"] = sum(counts[level] for level in closeness.LEVELS)
    chart_start = today - dt.timedelta(days=89)
    # One interaction per contact per day, so rows per day are the day's active contacts.
    per_day = dict(
        Interaction.objects.filter(workspace=workspace, day__gte=chart_start, day__lte=today)
        .order_by()
        .values_list("day")
        .annotate(active=Count("*"))  # COUNT(*): an index-only scan of (workspace, day)
    )
    latest_first = (F("last_interaction_day").desc(nulls_last=True), "-pk")
    losing_touch = _with_closeness(contacts.losing_touch(today).order_by(*latest_first)[:DASHBOARD_LIST_SIZE], today)
    recently_active = _with_closeness(
        contacts.filter(last_interaction_day__isnull=False).order_by(*latest_first)[:DASHBOARD_LIST_SIZE], today
    )
    levels = [
        {"level": level, "count": counts[level], "label": level.capitalize()} for level in closeness.LEVELS
    ]
    return render(
        request,
        "contacts/dashboard.html",
        {
            "today": today,
            "counts": counts,
            "levels": levels,
            "chart": charts.daily_active_chart(per_day, today),
            "losing_touch": losing_touch,
            "recently_active": recently_active,
        },
    )


def _filtered_contacts(request, today):
    """The contact list's query from ?q=, ?level= and ?sort=, shared by the page and CSV."""
    query = request.GET.get("q", "").strip()[:200]
    level = request.GET.get("level", "")
    sort = request.GET.get("sort", "closeness")
    if level not in closeness.LEVELS:
        level = ""
    if sort not in SORTS:
        sort = "closeness"

    contacts = Contact.objects.filter(workspace=request.workspace)
    if query:
        contacts = contacts.filter(pk__in=ContactSearch.objects.matching(request.workspace, query))
    if level:
        contacts = contacts.at_level(level, today)
    # Both orders are DESC NULLS LAST, as their indexes are: a page is read off the index.
    if sort == "closeness":
        contacts = contacts.order_by(F("closeness_log").desc(nulls_last=True), "-pk")
    elif sort == "last":
        contacts = contacts.order_by(F("last_interaction_day").desc(nulls_last=True), "-pk")
    else:
        contacts = contacts.order_by("email", "pk")
    return contacts, {"q": query, "level": level, "sort": sort}


@workspace_required
def contact_list(request):
    today = request.workspace.today()
    contacts, filters = _filtered_contacts(request, today)
    contacts = contacts.defer("traits", "trait_times")
    page = CappedPaginator(contacts, CONTACTS_PER_PAGE).get_page(request.GET.get("page"))
    page.object_list = _with_closeness(page.object_list, today)
    return render(
        request,
        "contacts/contact_list.html",
        {
            "page": page,
            "filters": filters,
            "levels": closeness.LEVELS,
            "sorts": SORTS,
            "query_string": _query_string(filters),
            "today": today,
        },
    )


def _query_string(filters) -> str:
    return urlencode({key: value for key, value in filters.items() if value})


class _Echo:
    """A file-like object whose write() returns the line, for streaming csv.writer output."""

    def write(self, value):
        return value


def _csv_cell(value) -> str:
    """Neutralize spreadsheet formulas: a cell starting with = + - @ is read as text."""
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


@workspace_required
def contact_export(request):
    """The contact list as CSV: the same search, level and sort, every page, streamed."""
    today = request.workspace.today()
    contacts, _ = _filtered_contacts(request, today)
    rows = contacts.values_list(
        "email", "name", "closeness_log", "last_interaction_day", "first_seen_at", "user_id"
    ).iterator(chunk_size=2000)
    writer = csv.writer(_Echo())

    def lines():
        yield writer.writerow(CSV_COLUMNS)
        for email, name, log, last_day, first_seen, user_id in rows:
            measure = closeness.Closeness.from_log(log, today)
            yield writer.writerow(
                [_csv_cell(v) for v in (email, name, measure.level, measure.score, last_day, first_seen, user_id)]
            )

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    filename = f"contacts-{request.workspace.slug}-{today.isoformat()}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def split_traits(traits: dict):
    """(traits, audiences): Engage audience syncs set boolean traits (e.g.
    order_completed_last_30days: true), so boolean values are audience memberships and
    everything else is a trait. Values that are not text are shown as JSON."""
    shown, audiences = [], []
    for key in sorted(traits, key=str.lower):
        value = traits[key]
        if isinstance(value, bool):
            audiences.append({"key": key, "member": value})
        elif isinstance(value, str):
            shown.append({"key": key, "value": value})
        else:
            shown.append({"key": key, "value": json.dumps(value, ensure_ascii=False, sort_keys=True)})
    return shown, audiences


@workspace_required
def contact_detail(request, contact_id):
    contact = get_contact_for_user(request.user, contact_id)
    today = contact.workspace.today()
    # Every interaction day (two small columns, on the unique (contact, day) index) feeds
    # both charts; the timeline page loads full rows for 50 days only.
    day_counts = dict(Interaction.objects.filter(contact=contact).order_by().values_list("day", "event_count"))
    timeline = Interaction.objects.filter(contact=contact).order_by("-day")
    paginator = Paginator(timeline, TIMELINE_PER_PAGE)
    paginator.count = len(day_counts)  # already known: saves a COUNT(*)
    page = paginator.get_page(request.GET.get("page"))
    traits, audiences = split_traits(contact.traits if isinstance(contact.traits, dict) else {})
    return render(
        request,
        "contacts/contact_detail.html",
        {
            "contact": contact,
            "measure": contact.closeness_on(today),
            "today": today,
            "page": page,
            "traits": traits,
            "audiences": audiences,
            "interaction_days": len(day_counts),
            "heatmap": charts.activity_heatmap(day_counts, today),
            "sparkline": charts.closeness_sparkline(day_counts.keys(), today),
        },
    )
