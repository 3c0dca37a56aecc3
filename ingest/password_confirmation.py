"""Recent password confirmation before a sensitive action (rotating or revoking a key,
changing the signing secret): the user types their password again unless they did in
the last CONFIRMATION_WINDOW. The time of the last confirmation lives in the session.

Wrong passwords are counted per user: after MAX_FAILURES within the window, further
attempts are refused until it passes, so a borrowed session cannot guess the password.
"""

import datetime as dt
import time

from django.core.cache import cache

SESSION_KEY = "password_confirmed_at"
CONFIRMATION_WINDOW = dt.timedelta(minutes=15)
MAX_FAILURES = 5


def _failures_key(user) -> str:
    return f"password-confirmation-failures:{user.pk}"


def is_recent(request, now: float | None = None) -> bool:
    confirmed_at = request.session.get(SESSION_KEY)
    if not isinstance(confirmed_at, (int, float)):
        return False
    now = time.time() if now is None else now
    return 0 <= now - confirmed_at < CONFIRMATION_WINDOW.total_seconds()


def too_many_failures(user) -> bool:
    return cache.get(_failures_key(user), 0) >= MAX_FAILURES


def confirm(request, password: str) -> bool:
    """Check the password; on success remember the time in the session."""
    user = request.user
    if too_many_failures(user):
        return False
    if password and user.check_password(password):
        request.session[SESSION_KEY] = time.time()
        cache.delete(_failures_key(user))
        return True
    key = _failures_key(user)
    cache.add(key, 0, timeout=int(CONFIRMATION_WINDOW.total_seconds()))
    try:
        cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=int(CONFIRMATION_WINDOW.total_seconds()))
    return False
