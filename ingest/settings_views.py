"""The settings page /settings/api-keys/ (PRODUCT.md §4, §5): the workspace's API keys,
rotate and revoke, the optional signing secret, and the Segment connection panel.

Every action is a POST with CSRF protection, scoped to the user's workspaces (another
workspace's key or workspace is a 404), allowed only with `ingest.rotate_apikey` (else
403), and asks for the password again unless it was confirmed in the last 15 minutes.
Each action redirects to the page, which shows a new secret exactly once.
"""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET, require_POST

from contacts.scoping import user_workspaces, workspace_required
from ingest import connection, password_confirmation, shown_once
from ingest.api_keys import clear_signing_secret, revoke_api_key, rotate_api_key, set_signing_secret
from ingest.models import DEFAULT_GRACE, GRACE_PERIODS, ApiKey, ApiKeyEvent

PERMISSION = "ingest.rotate_apikey"
GRACE_CHOICES = [("now", "Now"), ("1h", "In 1 hour"), ("24h", "In 24 hours"), ("7d", "In 7 days")]
KEYS_SHOWN = 100
EVENTS_SHOWN = 50


def page_path() -> str:
    return reverse("api-keys")


def may_manage_keys(user) -> bool:
    return user.has_perm(PERMISSION)


@require_GET
@never_cache
@workspace_required
def api_keys(request):
    workspace = request.workspace
    now = timezone.now()
    shown = shown_once.take(request, workspace_id=workspace.pk)
    keys = list(ApiKey.objects.filter(workspace=workspace).select_related("created_by")[:KEYS_SHOWN])
    for key in keys:
        key.current_status = key.status(now)
    mark_keys_still_in_use(keys)
    context = {
        "workspace": workspace,
        "keys": keys,
        "has_active_key": any(key.current_status == "active" for key in keys),
        "events": ApiKeyEvent.objects.filter(workspace=workspace).select_related("actor")[:EVENTS_SHOWN],
        "shown": shown,
        "may_manage": may_manage_keys(request.user),
        "password_recent": password_confirmation.is_recent(request),
        "grace_choices": GRACE_CHOICES,
        "default_grace": DEFAULT_GRACE,
        "endpoint_url": connection.endpoint_url(request),
        "last_event_at": connection.last_event_at(workspace),
        "accepted_today": connection.accepted_today(workspace, now),
        "rejections": connection.recent_rejections(workspace),
        "rejections_kept": settings.REJECTED_MESSAGES_KEPT,
    }
    response = render(request, "settings/api_keys.html", context)
    shown_once.forget(request, response, path=page_path())
    return response


def mark_keys_still_in_use(keys):
    """Flag keys on their way out (active, with an expiry) that were used after the
    newest key was made: Segment still has the old key, and will be refused once it
    expires."""
    newest = max((key.created_at for key in keys if key.current_status == "active"), default=None)
    for key in keys:
        key.still_in_use = bool(
            key.current_status == "active"
            and key.expires_at is not None
            and key.last_used_at is not None
            and newest is not None
            and key.created_at < newest <= key.last_used_at
        )


def _workspace_from_post(request):
    """The workspace named by the form, among the user's; anything else is a 404."""
    slug = request.POST.get("workspace", "")
    workspace = user_workspaces(request.user).filter(slug=slug).first()
    if workspace is None:
        raise Http404("No such workspace")
    return workspace


def _key_for_user(user, key_id):
    try:
        return ApiKey.objects.select_related("workspace").get(pk=key_id, workspace__in=user_workspaces(user))
    except ApiKey.DoesNotExist:
        raise Http404("No such API key") from None


def sensitive_action(view):
    """Login, POST and no caching; CSRF is the middleware's. The view itself resolves its
    target (404 outside the user's workspaces), then asks _guard()."""
    return login_required(require_POST(never_cache(sensitive_post_parameters("password")(view))))


def _guard(request, workspace, action_label):
    """None when the user may act now; else the response to send instead."""
    if not may_manage_keys(request.user):
        return render(
            request,
            "settings/forbidden.html",
            {"workspace": workspace, "action_label": action_label},
            status=403,
        )
    if password_confirmation.is_recent(request):
        return None
    password = request.POST.get("password", "")
    if password and password_confirmation.confirm(request, password):
        return None
    if password_confirmation.too_many_failures(request.user):
        error = "Too many wrong passwords. Try again in 15 minutes."
    elif password:
        error = "That password is not right."
    else:
        error = ""
    carried = [(name, request.POST.get(name, "")) for name in ("workspace", "grace") if name in request.POST]
    return render(
        request,
        "settings/confirm_password.html",
        {"workspace": workspace, "action_label": action_label, "carried": carried, "error": error},
        status=403,
    )


def _back_to_page(workspace):
    return redirect(f"{page_path()}?workspace={workspace.slug}")


@sensitive_action
@sensitive_variables("raw_key")  # error reports never show a key
def rotate(request):
    workspace = _workspace_from_post(request)
    grace = request.POST.get("grace", DEFAULT_GRACE)
    if grace not in GRACE_PERIODS:
        return JsonResponse({"message": f"Unknown grace period; choose one of {', '.join(GRACE_PERIODS)}"}, status=400)
    refused = _guard(request, workspace, "rotate the API key")
    if refused is not None:
        return refused
    api_key, raw_key = rotate_api_key(workspace=workspace, actor=request.user, grace=grace)
    response = _back_to_page(workspace)
    shown_once.keep(
        request, response, path=page_path(), workspace_id=workspace.pk, kind="api_key", label=api_key.prefix, secret=raw_key
    )
    return response


@sensitive_action
def revoke(request, key_id):
    api_key = _key_for_user(request.user, key_id)
    refused = _guard(request, api_key.workspace, f"revoke the key {api_key.prefix}…")
    if refused is not None:
        return refused
    revoke_api_key(api_key=api_key, actor=request.user)
    return _back_to_page(api_key.workspace)


@sensitive_action
@sensitive_variables("secret")
def generate_signing_secret(request):
    workspace = _workspace_from_post(request)
    refused = _guard(request, workspace, "set a new signing secret")
    if refused is not None:
        return refused
    secret = set_signing_secret(workspace=workspace, actor=request.user)
    response = _back_to_page(workspace)
    shown_once.keep(
        request, response, path=page_path(), workspace_id=workspace.pk, kind="signing_secret", label="", secret=secret
    )
    return response


@sensitive_action
def remove_signing_secret(request):
    workspace = _workspace_from_post(request)
    refused = _guard(request, workspace, "clear the signing secret")
    if refused is not None:
        return refused
    clear_signing_secret(workspace=workspace, actor=request.user)
    return _back_to_page(workspace)
