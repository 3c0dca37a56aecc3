"""API keys, the processed-message ledger and the log of rejected messages."""

import datetime as dt
import hashlib
import hmac
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from contacts.models import Workspace

KEY_PREFIX = "nat_"
# Characters of the key (after "nat_") kept in clear to find it and to show it in the UI.
SHOWN_CHARS = 8
GRACE_PERIODS = {  # choice -> the old key's remaining life when a key is rotated
    "now": dt.timedelta(0),
    "1h": dt.timedelta(hours=1),
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
}
DEFAULT_GRACE = "24h"


def hash_key(raw_key: str) -> str:
    return hmac.new(
        settings.API_KEY_HASH_SECRET.encode(), raw_key.encode("utf-8", "surrogatepass"), hashlib.sha256
    ).hexdigest()


def prefix_of(raw_key: str) -> str:
    return raw_key[: len(KEY_PREFIX) + SHOWN_CHARS]


class ApiKeyQuerySet(models.QuerySet):
    def active(self, now=None):
        now = now or timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiKey(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    prefix = models.CharField(max_length=32, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"
        permissions = [("rotate_apikey", "Can rotate and revoke the workspace's API keys")]

    def __str__(self):
        return f"{self.prefix}… ({self.workspace})"

    @classmethod
    @sensitive_variables("raw")  # kept out of error reports
    def issue(cls, *, workspace, created_by=None, expires_at=None):
        """Make a new key. Returns (ApiKey, raw key): the raw key exists only in memory."""
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        key = cls.objects.create(
            workspace=workspace,
            prefix=prefix_of(raw),
            key_hash=hash_key(raw),
            created_by=created_by,
            expires_at=expires_at,
        )
        return key, raw

    def status(self, now=None):
        now = now or timezone.now()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


class ApiKeyEvent(models.Model):
    """The audit trail of key lifecycle: who created, rotated or revoked which key, when."""

    CREATED, ROTATED, REVOKED = "created", "rotated", "revoked"
    # The workspace's signing secret is audited in the same trail (prefix is empty then).
    SIGNING_SECRET_SET, SIGNING_SECRET_CLEARED = "signing_set", "signing_cleared"
    ACTIONS = [
        (CREATED, "created"),
        (ROTATED, "rotated"),
        (REVOKED, "revoked"),
        (SIGNING_SECRET_SET, "signing secret set"),
        (SIGNING_SECRET_CLEARED, "signing secret cleared"),
    ]

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_key_events")
    api_key = models.ForeignKey(ApiKey, null=True, on_delete=models.SET_NULL, related_name="events")
    action = models.CharField(max_length=20, choices=ACTIONS)
    prefix = models.CharField(max_length=32, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(default=timezone.now)
    detail = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["-at"]


class ProcessedMessage(models.Model):
    """Segment messageIds already applied, so retries and replays change nothing."""

    # Led by the (workspace, ...) indexes below: no index of its own to write per message;
    # and no constraint in the database, which would check (and lock) the one workspace row
    # for every message. Deleting a workspace still deletes its ledger (Django cascades).
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    message_id = models.CharField(max_length=255)
    # Led by the (workspace, received_at) index below, which the purge uses too.
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "message_id"], name="unique_processed_message")
        ]
        # "Last event" and "accepted today" on the Segment connection panel, and the
        # purge of old messageIds (workspace by workspace), are range scans on this index.
        indexes = [models.Index(fields=["workspace", "received_at"], name="processed_received_idx")]


class RejectedMessage(models.Model):
    """The last rejected messages of a workspace, so a founder can see why events are missing."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="rejected_messages")
    received_at = models.DateTimeField(default=timezone.now)
    status = models.PositiveSmallIntegerField()
    message = models.CharField(max_length=500)
    excerpt = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [models.Index(fields=["workspace", "-received_at"], name="rejected_recent_idx")]
