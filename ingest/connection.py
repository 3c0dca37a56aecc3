"""What the Segment connection panel shows: where Segment must post, whether events
are arriving, and why recent ones were refused."""

import datetime as dt

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from ingest.models import ProcessedMessage, RejectedMessage


def endpoint_url(request) -> str:
    """The webhook's absolute URL: SITE_URL when set (behind a proxy the request may not
    know the public name), else from the request."""
    path = reverse("segment-webhook")
    if settings.SITE_URL:
        return settings.SITE_URL.rstrip("/") + path
    return request.build_absolute_uri(path)


def start_of_today(workspace, now: dt.datetime) -> dt.datetime:
    """Midnight of the workspace's today, as an aware datetime."""
    local = now.astimezone(workspace.tzinfo)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def last_event_at(workspace) -> dt.datetime | None:
    """When the newest message was accepted (kept PROCESSED_MESSAGE_RETENTION_DAYS)."""
    return (
        ProcessedMessage.objects.filter(workspace=workspace)
        .order_by("-received_at")
        .values_list("received_at", flat=True)
        .first()
    )


def accepted_today(workspace, now: dt.datetime | None = None) -> int:
    """New messages accepted since midnight in the workspace's time zone (replays of a
    messageId already seen are not counted: they change nothing)."""
    now = now or timezone.now()
    return ProcessedMessage.objects.filter(workspace=workspace, received_at__gte=start_of_today(workspace, now)).count()


def recent_rejections(workspace):
    return RejectedMessage.objects.filter(workspace=workspace).order_by("-received_at", "-id")[
        : settings.REJECTED_MESSAGES_KEPT
    ]
