"""Sign-in rate limit against password guessing, shared by /accounts/login/ and the
admin's /admin/login/.

Sign-in attempts are counted per user name (whatever the address) and per client IP
(whatever the user name) in the shared cache, so every web process sees the same
counts when CACHE_URL points at Redis. Once either count is over its limit within the
window, the form refuses to check the password and the page answers 429 with
Retry-After until the window (which opens at the first attempt) has passed. A
successful sign-in clears the user name's count but not the IP's failures, so that
one account an attacker holds cannot wipe the count of their guesses at others."""

import hashlib
import logging
import math
import time
from functools import wraps

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache

CACHE_PREFIX = "login-failures"

logger = logging.getLogger(__name__)


def client_ip(request) -> str:
    """The client's address: REMOTE_ADDR, or the NUM_PROXIES-th address from the right of
    X-Forwarded-For behind that many trusted proxies (the left part can be forged)."""
    proxies = settings.NUM_PROXIES
    if proxies > 0:
        hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if len(hops) >= proxies:
            return hops[-proxies]
    return request.META.get("REMOTE_ADDR", "")


def _counters(request, username: str) -> list[tuple[str, int]]:
    """(cache key, limit) for each count one attempt adds to."""
    name = hashlib.sha256(username.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()
    address = hashlib.sha256(client_ip(request).encode()).hexdigest()
    return [
        (f"{CACHE_PREFIX}:user:{name}", settings.LOGIN_FAILURE_LIMIT),
        (f"{CACHE_PREFIX}:ip:{address}", settings.LOGIN_FAILURE_LIMIT_PER_IP),
    ]


def _count(key: str, window: int, now: float) -> int:
    """Adds one to a counter whose window opens at its first attempt; returns the count."""
    if cache.add(key, 1, timeout=window):  # atomic: only the first attempt opens the window
        cache.set(f"{key}:ends", now + window, timeout=window)
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # the window closed between add() and incr()
        cache.set(key, 1, timeout=window)
        cache.set(f"{key}:ends", now + window, timeout=window)
        return 1


def count_attempt(request, username: str, now: float | None = None) -> int | None:
    """Counts a sign-in attempt before the password is checked; returns the seconds to
    wait when it is over a limit (the attempt is refused), else None.

    Counting before checking (not after a failure) keeps concurrent guesses from all
    slipping through while the first ones are still being checked."""
    now = time.time() if now is None else now
    window = settings.LOGIN_FAILURE_WINDOW_SECONDS
    waits = []
    try:
        for key, limit in _counters(request, username):
            if limit <= 0:
                continue
            if _count(key, window, now) > limit:
                window_ends = cache.get(f"{key}:ends") or now + window
                waits.append(min(window, max(1, math.ceil(window_ends - now))))
    except Exception as error:  # noqa: BLE001 - any cache failure
        # Nobody could sign in while the cache is down if this failed closed; the slow
        # password hash still bounds guessing meanwhile.
        logger.warning("login: rate limit not applied, the cache is unavailable: %s", error)
        return None
    return max(waits) if waits else None


def attempt_succeeded(request, username: str) -> None:
    """A right password: the user name's count starts again, and the attempt is taken
    back from the IP's count (only failures should use up an address's budget)."""
    user_key, ip_key = (key for key, _limit in _counters(request, username))
    try:
        cache.delete_many([user_key, f"{user_key}:ends"])
        cache.decr(ip_key)
    except ValueError:  # the IP's window closed meanwhile
        pass
    except Exception as error:  # noqa: BLE001 - any cache failure: the sign-in stands
        logger.warning("login: could not clear the failed attempts, the cache is unavailable: %s", error)


class RateLimitedLoginMixin:
    """For AuthenticationForm and its admin variant: every attempt is counted; over the
    limit the password is not even checked; a successful sign-in clears the count."""

    rate_limited_message = "Too many failed sign-in attempts. Try again in %(minutes)s minute(s)."

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        if not (username and self.cleaned_data.get("password")):
            return super().clean()  # an incomplete form checks no password: not an attempt
        self.retry_after = count_attempt(self.request, username)
        if self.retry_after is not None:
            raise forms.ValidationError(
                self.rate_limited_message, code="rate_limited", params={"minutes": math.ceil(self.retry_after / 60)}
            )
        cleaned_data = super().clean()  # raises on a wrong password: the attempt stays counted
        attempt_succeeded(self.request, username)
        return cleaned_data


class LoginForm(RateLimitedLoginMixin, AuthenticationForm):
    pass


class AdminLoginForm(RateLimitedLoginMixin, AdminAuthenticationForm):
    pass


def answers_429_when_rate_limited(login_view):
    """Wraps a LoginView-based view (ours or admin.site.login): a refused attempt is
    429 Too Many Requests with Retry-After, still showing the form and its message."""

    @wraps(login_view)
    def view(request, *args, **kwargs):
        response = login_view(request, *args, **kwargs)
        form = (getattr(response, "context_data", None) or {}).get("form")
        wait = getattr(form, "retry_after", None)
        if wait is not None:
            response.status_code = 429
            response["Retry-After"] = str(wait)
        return response

    return view
