"""Per-key message rate limit over the shared cache (Redis across processes).

A fixed one-second window counts messages: a request is admitted while the window's
budget is not yet spent, so one batch larger than the budget still goes through when
the window is empty (Segment batches up to thousands of messages at once). In one
window a key is admitted at most INGEST_RATE_LIMIT - 1 + (one request's messages).

The count is kept with the cache's atomic operations only: add() creates the window
(SET NX on Redis) with the first request's messages, incr() adds the others (INCRBY);
there is no read-then-write, so concurrent workers never overwrite each other's counts.
"""

import logging
import math
import time

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

# A window's counter outlives its second by a margin, so it never expires while it is
# still being counted (an incr on an expired key would fail or restart the count).
WINDOW_TTL_SECONDS = 5


def _count(bucket: str, messages: int) -> int:
    """Add `messages` to the window's counter atomically; the counter's new value."""
    for _ in range(2):
        if cache.add(bucket, messages, timeout=WINDOW_TTL_SECONDS):
            return messages
        try:
            return cache.incr(bucket, messages)
        except ValueError:  # evicted between add and incr: create it again
            continue
    return messages


def admit(key_id: int, messages: int, now: float | None = None) -> float | None:
    """None when admitted; otherwise the seconds to wait before retrying."""
    limit = settings.INGEST_RATE_LIMIT
    if limit <= 0:
        return None
    now = time.time() if now is None else now
    window = int(now)
    try:
        total = _count(f"ingest-rate:{key_id}:{window}", messages)
    except Exception as error:  # noqa: BLE001 - any cache failure
        # The limit protects the server; losing Segment's messages because the cache is
        # down would be worse than admitting them unmetered for a while.
        logger.warning("ingest: rate limit not applied, the cache is unavailable: %s", error)
        return None
    if total - messages >= limit:
        return max(1, math.ceil(window + 1 - now))
    return None
