"""Per-key message rate limit over the shared cache (Redis across processes).

A fixed one-second window counts messages: a request is admitted while the window's
budget is not yet spent, so one batch larger than the budget still goes through when
the window is empty (Segment batches up to thousands of messages at once)."""

import math
import time

from django.conf import settings
from django.core.cache import cache


def admit(key_id: int, messages: int, now: float | None = None) -> float | None:
    """None when admitted; otherwise the seconds to wait before retrying."""
    limit = settings.INGEST_RATE_LIMIT
    if limit <= 0:
        return None
    now = time.time() if now is None else now
    window = int(now)
    bucket = f"ingest-rate:{key_id}:{window}"
    cache.add(bucket, 0, timeout=5)
    try:
        total = cache.incr(bucket, messages)
    except ValueError:  # the bucket expired between add and incr
        cache.set(bucket, messages, timeout=5)
        total = messages
    if total - messages >= limit:
        return max(1, math.ceil(window + 1 - now))
    return None
