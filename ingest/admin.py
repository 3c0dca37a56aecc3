"""The admin for API keys and their history: read-only lists without hashes. Keys are
made by rotating (the settings page, the Workspace admin action, or the rotate_api_key
command), never typed in here; revoking is on the settings page."""

from django.contrib import admin
from django.utils import timezone

from contacts.admin import WorkspaceScopedAdminMixin
from ingest.models import ApiKey, ApiKeyEvent


class ReadOnlyAdminMixin:
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # The audit trail and the keys it names stay: a key is revoked, not deleted.
        return False


class KeyStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("expired", "Expired"), ("revoked", "Revoked")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.active(now)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(WorkspaceScopedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("shown_prefix", "workspace", "created_at", "created_by", "last_used_at", "expires_at", "status")
    list_select_related = ("workspace", "created_by")
    list_filter = (KeyStatusFilter, ("workspace", admin.RelatedOnlyFieldListFilter))
    search_fields = ("prefix",)
    # key_hash is never shown.
    fields = ("prefix", "workspace", "created_at", "created_by", "last_used_at", "expires_at", "revoked_at")
    readonly_fields = fields
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description="key", ordering="prefix")
    def shown_prefix(self, api_key):
        return f"{api_key.prefix}…"

    @admin.display(description="status")
    def status(self, api_key):
        return api_key.status()


@admin.register(ApiKeyEvent)
class ApiKeyEventAdmin(WorkspaceScopedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("at", "workspace", "action", "shown_prefix", "actor", "detail")
    list_select_related = ("workspace", "actor")
    list_filter = ("action", ("workspace", admin.RelatedOnlyFieldListFilter))
    search_fields = ("prefix", "actor__username")
    fields = ("at", "workspace", "action", "prefix", "actor", "detail")
    readonly_fields = fields
    date_hierarchy = "at"
    show_full_result_count = False

    @admin.display(description="key", ordering="prefix")
    def shown_prefix(self, event):
        return f"{event.prefix}…" if event.prefix else ""
