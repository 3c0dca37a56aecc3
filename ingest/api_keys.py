"""API key lifecycle: create, rotate with a grace period, revoke; the workspace's
optional signing secret; every step audited."""

import datetime as dt
import secrets

from django.db import transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from ingest.models import DEFAULT_GRACE, GRACE_PERIODS, ApiKey, ApiKeyEvent


@sensitive_variables("raw")  # error reports never show a key
def create_api_key(*, workspace, actor=None) -> tuple[ApiKey, str]:
    with transaction.atomic():
        api_key, raw = ApiKey.issue(workspace=workspace, created_by=actor)
        ApiKeyEvent.objects.create(
            workspace=workspace, api_key=api_key, action=ApiKeyEvent.CREATED, prefix=api_key.prefix, actor=actor
        )
    return api_key, raw


@sensitive_variables("raw")
def rotate_api_key(*, workspace, actor=None, grace: dt.timedelta | str = DEFAULT_GRACE) -> tuple[ApiKey, str]:
    """Make a new key; the workspace's other active keys expire after the grace period.
    Returns (new ApiKey, raw key): the raw key is shown once and never stored."""
    if isinstance(grace, str):
        grace = GRACE_PERIODS[grace]
    now = timezone.now()
    ends = now + grace
    with transaction.atomic():
        old_keys = list(ApiKey.objects.select_for_update().filter(workspace=workspace).active(now))
        api_key, raw = ApiKey.issue(workspace=workspace, created_by=actor)
        for old in old_keys:
            if old.expires_at is None or old.expires_at > ends:
                old.expires_at = ends
                old.save(update_fields=["expires_at"])
        ApiKeyEvent.objects.create(
            workspace=workspace,
            api_key=api_key,
            action=ApiKeyEvent.ROTATED,
            prefix=api_key.prefix,
            actor=actor,
            detail=f"old keys ({', '.join(k.prefix for k in old_keys) or 'none'}) expire {ends:%Y-%m-%d %H:%M} UTC",
        )
    return api_key, raw


def revoke_api_key(*, api_key: ApiKey, actor=None) -> ApiKey:
    with transaction.atomic():
        if api_key.revoked_at is None:
            api_key.revoked_at = timezone.now()
            api_key.save(update_fields=["revoked_at"])
            ApiKeyEvent.objects.create(
                workspace_id=api_key.workspace_id,
                api_key=api_key,
                action=ApiKeyEvent.REVOKED,
                prefix=api_key.prefix,
                actor=actor,
            )
    return api_key


@sensitive_variables("secret")
def set_signing_secret(*, workspace, actor=None) -> str:
    """Generate a new signing secret for the workspace (replacing any); returns it, to be
    shown once. The webhook must keep it in clear to check X-Signature."""
    secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        workspace.signing_secret = secret
        workspace.save(update_fields=["signing_secret"])
        ApiKeyEvent.objects.create(workspace=workspace, action=ApiKeyEvent.SIGNING_SECRET_SET, actor=actor)
    return secret


def clear_signing_secret(*, workspace, actor=None) -> None:
    with transaction.atomic():
        if workspace.signing_secret:
            workspace.signing_secret = ""
            workspace.save(update_fields=["signing_secret"])
            ApiKeyEvent.objects.create(workspace=workspace, action=ApiKeyEvent.SIGNING_SECRET_CLEARED, actor=actor)
