"""The Django admin for workspaces, members, contacts and interactions.

WorkspaceScopedAdminMixin is the admin's one scoping rule, reused by every ModelAdmin
that shows workspace data (ingest/admin.py too): a superuser sees everything; other
staff see only the rows of the workspaces they are members of, and membership alone
lets them browse those rows (view access without a per-user permission grant).
"""

import datetime as dt

from django.contrib import admin
from django.db import models
from django.db.models import F, Max, Min, Q
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from contacts import closeness
from contacts.models import Contact, Interaction, Membership, Workspace, level_q
from contacts.pagination import CappedPaginator
from contacts.scoping import user_workspaces
from ingest.admin_actions import ApiKeyRotationAdminMixin

ADMIN_TIMELINE_SIZE = 20


def member_workspace_ids(request) -> list[int]:
    """The ids of the signed-in user's workspaces, looked up once per request."""
    if not hasattr(request, "_member_workspace_ids"):
        request._member_workspace_ids = list(user_workspaces(request.user).values_list("pk", flat=True))
    return request._member_workspace_ids


class WorkspaceScopedAdminMixin:
    """Scope a ModelAdmin to the user's workspaces.

    `workspace_lookup` is the path from the model to its workspace ("workspace",
    "contact__workspace"; "pk" for Workspace itself)."""

    workspace_lookup = "workspace"

    def _scoped(self, request) -> bool:
        return not request.user.is_superuser

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if not self._scoped(request):
            return queryset
        return queryset.filter(**{f"{self.workspace_lookup}__in": member_workspace_ids(request)})

    def _is_member_staff(self, request) -> bool:
        return request.user.is_active and request.user.is_staff and bool(member_workspace_ids(request))

    def has_module_permission(self, request):
        return super().has_module_permission(request) or self._is_member_staff(request)

    def has_view_permission(self, request, obj=None):
        # Membership is what gives access: a member who is staff may browse their
        # workspace's rows; get_queryset keeps every other workspace out of reach.
        if super().has_view_permission(request, obj):
            return True
        return self._is_member_staff(request) and (obj is None or self._owns(request, obj))

    def _owns(self, request, obj) -> bool:
        if not self._scoped(request):
            return True
        return type(obj)._default_manager.filter(
            pk=obj.pk, **{f"{self.workspace_lookup}__in": member_workspace_ids(request)}
        ).exists()

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        """Choices (and raw-id values) limited to the user's workspaces."""
        if self._scoped(request):
            related = db_field.related_model
            if related is Workspace:
                kwargs["queryset"] = Workspace.objects.filter(pk__in=member_workspace_ids(request))
            elif any(f.name == "workspace" for f in related._meta.get_fields()):
                kwargs["queryset"] = related._default_manager.filter(workspace__in=member_workspace_ids(request))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ClosenessLevelFilter(admin.SimpleListFilter):
    title = "closeness"
    parameter_name = "level"

    def lookups(self, request, model_admin):
        return [(level, level.capitalize()) for level in closeness.LEVELS]

    def queryset(self, request, queryset):
        level = self.value()
        if level not in closeness.LEVELS:
            return queryset
        # "Today" is per workspace time zone: one at_level range per zone in the list.
        zones = Workspace.objects.filter(
            pk__in=queryset.order_by().values("workspace_id")
        ).values_list("timezone", flat=True).distinct()
        match = Q(pk__in=[])
        for zone in zones:
            today = Workspace(timezone=zone).today()
            match |= Q(workspace__timezone=zone) & level_q(level, today)
        return queryset.filter(match)


@admin.register(Workspace)
class WorkspaceAdmin(WorkspaceScopedAdminMixin, ApiKeyRotationAdminMixin, admin.ModelAdmin):
    workspace_lookup = "pk"
    list_display = ("name", "slug", "timezone", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    actions = ["rotate_api_key"]  # ingest/admin_actions.py


@admin.register(Membership)
class MembershipAdmin(WorkspaceScopedAdminMixin, admin.ModelAdmin):
    list_display = ("user", "workspace", "created_at")
    list_filter = (("workspace", admin.RelatedOnlyFieldListFilter),)
    list_select_related = ("user", "workspace")
    search_fields = ("user__username", "user__email", "workspace__name")
    raw_id_fields = ("user",)


@admin.register(Contact)
class ContactAdmin(WorkspaceScopedAdminMixin, admin.ModelAdmin):
    list_display = ("email", "name", "closeness_column", "last_interaction_day", "workspace")
    list_filter = (ClosenessLevelFilter, ("workspace", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("workspace",)
    search_fields = ("email", "name", "user_id")
    ordering = (F("closeness_log").desc(nulls_last=True), "-pk")  # as contact_closeness_desc_idx
    show_full_result_count = False
    paginator = CappedPaginator
    readonly_fields = (
        "closeness_column",
        "first_seen_at",
        "last_interaction_day",
        "closeness_log",
        "last_interaction_log_strength",
        "trait_times",
        "timeline",
    )
    fields = (
        "workspace",
        "email",
        "name",
        "user_id",
        "closeness_column",
        "first_seen_at",
        "last_interaction_day",
        "traits",
        "timeline",
        "closeness_log",
        "last_interaction_log_strength",
        "trait_times",
    )

    def get_queryset(self, request):
        return super().get_queryset(request).defer("trait_times")

    @admin.display(description="Closeness", ordering="closeness_log")
    def closeness_column(self, contact):
        measure = contact.closeness_on(contact.workspace.today())
        return format_html(
            '<span class="badge level-{}">{} <b>{}</b></span>', measure.level, measure.level, measure.score
        )

    @admin.display(description="Timeline")
    def timeline(self, contact):
        if contact.pk is None:
            return "—"
        latest = contact.interactions.order_by("-day")[:ADMIN_TIMELINE_SIZE]
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((i.day.isoformat(), i.description, i.event_count) for i in latest),
        )
        page = reverse("contact-detail", args=[contact.pk])
        return format_html(
            '<table><thead><tr><th>Day</th><th>Description</th><th>Events</th></tr></thead><tbody>{}</tbody></table>'
            '<p>Latest {} days shown. <a href="{}">Open the full timeline</a></p>',
            rows or format_html('<tr><td colspan="3">No interactions yet.</td></tr>'),
            ADMIN_TIMELINE_SIZE,
            page,
        )

    def view_on_site(self, contact):
        return reverse("contact-detail", args=[contact.pk])


class DateSpanQuerySet(models.QuerySet):
    """dates() from the first and last date only (two index look-ups) instead of a
    DISTINCT over every row: the date hierarchy of a million interactions stays quick.
    A year, month or day without interactions may be offered; it simply lists nothing."""

    def dates(self, field_name, kind, order="ASC"):
        span = self.aggregate(first=Min(field_name), last=Max(field_name))
        first, last = span["first"], span["last"]
        if first is None:
            return []
        if kind == "year":
            found = [dt.date(year, 1, 1) for year in range(first.year, last.year + 1)]
        elif kind == "month":
            found, month = [], dt.date(first.year, first.month, 1)
            while month <= last:
                found.append(month)
                month = (month + dt.timedelta(days=32)).replace(day=1)
        else:
            found = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
        return found if order == "ASC" else found[::-1]


@admin.register(Interaction)
class InteractionAdmin(WorkspaceScopedAdminMixin, admin.ModelAdmin):
    list_display = ("day", "contact", "description", "event_count", "workspace")
    list_filter = (("workspace", admin.RelatedOnlyFieldListFilter),)
    list_select_related = ("contact", "workspace")
    date_hierarchy = "day"
    search_fields = ("contact__email", "description")
    raw_id_fields = ("contact",)
    show_full_result_count = False
    paginator = CappedPaginator
    # Interactions come from Segment through the one write path; here they are read,
    # and deleting one recomputes its contact's closeness.
    readonly_fields = ("workspace", "contact", "day", "occurred_at", "last_occurred_at", "event_count")

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return DateSpanQuerySet(model=queryset.model, query=queryset.query, using=queryset._db)

    def has_add_permission(self, request):
        return False

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        Contact.recompute_closeness([obj.contact_id])

    def delete_queryset(self, request, queryset):
        contact_ids = list(queryset.values_list("contact_id", flat=True).distinct())
        super().delete_queryset(request, queryset)
        Contact.recompute_closeness(contact_ids)
