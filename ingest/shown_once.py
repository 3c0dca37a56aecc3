"""A secret (a new API key, a new signing secret) shown exactly once, on the page the
browser is redirected to after the POST that made it.

The secret is split in two with a one-time pad: the session (stored in the database)
keeps the secret XOR a random pad, and a short-lived HttpOnly cookie scoped to the
settings page keeps the pad. Neither half alone says anything about the secret, so
the secret is never in the database, a URL or a log, and the next render of the page
consumes both halves.
"""

import base64
import secrets

from django.conf import settings

SESSION_KEY = "shown_once"
COOKIE_NAME = "natsite_shown_once"
COOKIE_MAX_AGE = 300  # seconds: long enough to follow the redirect


def _xor(data: bytes, pad: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, pad, strict=True))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def keep(request, response, *, path: str, workspace_id: int, kind: str, label: str, secret: str) -> None:
    """Hold `secret` for the next render of the page at `path` (the redirect target)."""
    data = secret.encode()
    pad = secrets.token_bytes(len(data))
    request.session[SESSION_KEY] = {
        "workspace_id": workspace_id,
        "kind": kind,
        "label": label,
        "sealed": _b64(_xor(data, pad)),
    }
    response.set_cookie(
        COOKIE_NAME,
        _b64(pad),
        max_age=COOKIE_MAX_AGE,
        path=path,
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Strict",
    )


def take(request, *, workspace_id: int) -> dict | None:
    """The secret kept for this workspace, consumed: {"kind", "label", "secret"}, else None.
    Call forget() on the response that renders it."""
    held = request.session.pop(SESSION_KEY, None)
    pad = request.COOKIES.get(COOKIE_NAME)
    if not held or not pad or held.get("workspace_id") != workspace_id:
        return None
    try:
        secret = _xor(base64.urlsafe_b64decode(held["sealed"]), base64.urlsafe_b64decode(pad)).decode()
    except (ValueError, KeyError, UnicodeDecodeError):
        return None
    return {"kind": held["kind"], "label": held["label"], "secret": secret}


def forget(request, response, *, path: str) -> None:
    if COOKIE_NAME in request.COOKIES:
        response.delete_cookie(COOKIE_NAME, path=path, samesite="Strict")
