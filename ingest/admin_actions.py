"""The admin's "Rotate API key" action, mixed into contacts.admin.WorkspaceAdmin.

Kept apart from ingest/admin.py, which imports contacts/admin.py for its scoping mixin:
contacts/admin.py can import this module without an import cycle."""

from django.contrib import admin, messages
from django.views.decorators.debug import sensitive_variables

from ingest.api_keys import rotate_api_key
from ingest.models import DEFAULT_GRACE

PERMISSION = "ingest.rotate_apikey"
# The new keys travel in the admin's messages cookie until displayed; past about a dozen
# messages Django would spill them into the session, i.e. the database.
MAX_ROTATED_AT_ONCE = 5


class ApiKeyRotationAdminMixin:
    """Adds the rotate action (offered only to holders of ingest.rotate_apikey) to a
    Workspace admin whose queryset is already scoped to the user's workspaces."""

    # The signing secret is set and cleared on /settings/api-keys/, and shown only once
    # there: the admin's form would show it in clear.
    exclude = ("signing_secret",)

    def has_rotate_apikey_permission(self, request):
        return request.user.has_perm(PERMISSION)

    @admin.action(description="Rotate API key (old keys expire in 24 hours)", permissions=["rotate_apikey"])
    @sensitive_variables("raw_key")  # error reports never show a key
    def rotate_api_key(self, request, queryset):
        workspaces = list(queryset.order_by("name", "pk")[: MAX_ROTATED_AT_ONCE + 1])
        if len(workspaces) > MAX_ROTATED_AT_ONCE:
            self.message_user(
                request,
                f"Rotate at most {MAX_ROTATED_AT_ONCE} workspaces at a time, so that each new key can be shown.",
                messages.ERROR,
            )
            return
        for workspace in workspaces:
            api_key, raw_key = rotate_api_key(workspace=workspace, actor=request.user, grace=DEFAULT_GRACE)
            self.message_user(
                request,
                f"New API key for {workspace.name}: {raw_key} — copy it now, it is shown only this once. "
                f"The workspace's other keys expire in 24 hours.",
                messages.SUCCESS,
            )
