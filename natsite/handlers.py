"""The WSGI application: Django's handler for the pages, and a leaner one for the webhook.

Every request to the Segment webhook comes from a machine, never from a browser: it has
no session, no CSRF token, no signed-in user, and no flash message or static file to
show. The middleware that serves browsers (BROWSER_MIDDLEWARE) would still do its work on
every message for nothing, so the webhook's path is served by a handler whose middleware
is settings.MIDDLEWARE without those: the security headers, the check of the Host header,
and any middleware added later apply to the webhook as to every page. Both handlers send
Django's request signals, which manage the database connections.
"""

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.urls import get_resolver

# The middleware that serves browsers only: sessions, CSRF, sign-in, flash messages and
# static files. The webhook is exempt from CSRF, and reads none of the others.
BROWSER_MIDDLEWARE = frozenset({
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
})

# The webhook's paths (ingest/urls.py takes both), as PATH_INFO has them.
WEBHOOK_PATHS = frozenset({"/ingest/segment", "/ingest/segment/"})


def webhook_middleware(middleware: list[str]) -> list[str]:
    return [path for path in middleware if path not in BROWSER_MIDDLEWARE]


class WebhookHandler(WSGIHandler):
    """Django's WSGI handler with webhook_middleware(settings.MIDDLEWARE), which resolves
    each of the webhook's paths once rather than on every message."""

    def __init__(self):
        super().__init__()
        # (the URL resolver, {path: its match}): a new URLconf (ROOT_URLCONF changed and
        # the URL caches cleared) makes get_resolver() return a new resolver, and the
        # matches made with the old one are dropped.
        self._resolved = (None, {})

    def load_middleware(self, is_async=False):
        # BaseHandler reads settings.MIDDLEWARE: the webhook's list stands in for it while
        # the chain is built (once, when the application is loaded, before any request).
        middleware = settings.MIDDLEWARE
        settings.MIDDLEWARE = webhook_middleware(middleware)
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = middleware

    def resolve_request(self, request):
        """What Django's resolve_request does, with the match of each of WEBHOOK_PATHS kept:
        matching them against every URL pattern of the site cost a message about as much
        as the security middleware does. A match holds the view and its (empty) arguments,
        nothing of the request. Any other path, or a request whose middleware chose its
        own URLconf, is resolved as Django does."""
        if hasattr(request, "urlconf") or request.path_info not in WEBHOOK_PATHS:
            return super().resolve_request(request)
        resolver = get_resolver()
        kept_for, matches = self._resolved
        if kept_for is not resolver:
            matches = {}
            self._resolved = (resolver, matches)
        match = matches.get(request.path_info)
        if match is None:
            match = matches[request.path_info] = resolver.resolve(request.path_info)
        request.resolver_match = match
        return match


class Application:
    """The WSGI application: the webhook's paths to WebhookHandler, the rest to Django's
    own handler."""

    def __init__(self):
        self.pages = WSGIHandler()
        self.webhook = WebhookHandler()

    def __call__(self, environ, start_response):
        handler = self.webhook if environ.get("PATH_INFO") in WEBHOOK_PATHS else self.pages
        return handler(environ, start_response)
