"""The WSGI application (natsite/handlers.py): the webhook's paths are served by a handler
without the browsers' middleware, whose answers are the ones Django's full handler gives,
headers and all; every other path by the full handler."""

import base64
import contextlib
import io
import json
import sys

import pytest
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from contacts.models import Interaction
from natsite.handlers import BROWSER_MIDDLEWARE, Application, webhook_middleware


@contextlib.contextmanager
def _connections_kept():
    """As Django's test client does: the request signals leave the test's connection (and
    its open transaction) alone."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def call(handler, method, path, body=b"", host="127.0.0.1:8000", **headers):
    """(status, headers, body) of one WSGI request to `handler`."""
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": host,
        "REMOTE_ADDR": "127.0.0.1", "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.version": (1, 0),
        "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
        **{f"HTTP_{name.upper()}" if name != "content_type" else "CONTENT_TYPE": value
           for name, value in headers.items()},
    }
    started = {}

    def start_response(status, response_headers, exc_info=None):
        started["status"], started["headers"] = status, response_headers

    with _connections_kept():
        chunks = handler(environ, start_response)
        try:
            content = b"".join(chunks)
        finally:
            chunks.close()
    return started["status"], sorted(started["headers"]), content


def identify(email, message_id):
    return json.dumps({"type": "identify", "messageId": message_id, "timestamp": "2026-01-05T10:00:00Z",
                       "traits": {"email": email}}).encode()


def basic(key):
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


@pytest.fixture(scope="module")
def application():
    return Application()


def test_the_webhooks_middleware_is_the_sites_without_the_browsers():
    kept = webhook_middleware(settings.MIDDLEWARE)
    assert kept == [path for path in settings.MIDDLEWARE if path not in BROWSER_MIDDLEWARE]
    # What the webhook's answers need stays: security headers, the policy, the Host check.
    assert {
        "django.middleware.security.SecurityMiddleware", "natsite.middleware.ContentSecurityPolicyMiddleware",
        "django.middleware.common.CommonMiddleware", "django.middleware.clickjacking.XFrameOptionsMiddleware",
    } <= set(kept)
    # Each one left out is one the site has: a renamed middleware is not silently kept.
    assert BROWSER_MIDDLEWARE <= set(settings.MIDDLEWARE)


@pytest.mark.django_db
def test_a_message_to_the_webhook_is_recorded_and_answered_as_by_the_full_handler(application, api_key):
    answers = [
        call(handler, "POST", "/ingest/segment", identify(f"{name}@example.com", f"m-{name}"),
             content_type="application/json", authorization=basic(api_key))
        for name, handler in (("lean", application.webhook), ("full", application.pages))
    ]
    (lean_status, lean_headers, lean_body), (full_status, full_headers, full_body) = answers

    assert lean_status == full_status == "200 OK"
    assert lean_headers == full_headers  # the security headers, the policy, no cookie
    assert ("Content-Security-Policy", settings_policy()) in lean_headers
    assert json.loads(lean_body) == {**json.loads(full_body), "email": "lean@example.com"}
    assert json.loads(lean_body)["status"] == "created"
    assert sorted(Interaction.objects.values_list("contact__email", flat=True)) == [
        "full@example.com", "lean@example.com"
    ]


def settings_policy():
    from natsite.middleware import DEFAULT_POLICY, policy_header

    return policy_header({**DEFAULT_POLICY, **settings.CONTENT_SECURITY_POLICY})


@pytest.mark.django_db
@pytest.mark.parametrize(
    "method, headers, body",
    [
        ("POST", {"content_type": "application/json", "authorization": "Basic bm9wZTo="}, b"{}"),
        ("POST", {"content_type": "text/plain"}, b"{}"),
        ("POST", {"content_type": "application/json"}, b"{"),
        ("GET", {}, b""),
        ("OPTIONS", {}, b""),
    ],
    ids=["wrong-key", "no-key", "bad-json", "get", "options"],
)
def test_refusals_are_the_same_from_both_handlers(application, api_key, method, headers, body):
    if "authorization" not in headers and method == "POST":
        headers = {**headers, "authorization": basic(api_key)}
    lean = call(application.webhook, method, "/ingest/segment", body, **headers)
    full = call(application.pages, method, "/ingest/segment", body, **headers)
    assert lean == full
    assert not lean[0].startswith(("2", "5"))


@pytest.mark.django_db
def test_a_host_that_is_not_allowed_is_refused_by_the_webhooks_handler_too(application, api_key):
    status, headers, _ = call(application, "POST", "/ingest/segment", identify("a@example.com", "m-host"),
                              host="evil.example", content_type="application/json", authorization=basic(api_key))
    assert status.startswith("400")
    assert not Interaction.objects.exists()


@pytest.mark.django_db
def test_the_application_sends_the_webhooks_paths_to_the_lean_handler_and_the_rest_to_the_full_one(
    application, monkeypatch
):
    served = []
    for name in ("webhook", "pages"):
        handler = getattr(application, name)
        monkeypatch.setattr(application, name, lambda environ, start, handler=handler, name=name: (
            served.append((name, environ["PATH_INFO"])) or handler(environ, start)
        ))
    for path in ("/ingest/segment", "/ingest/segment/", "/healthz", "/ingest/segmentx"):
        call(application, "GET", path)
    assert served == [
        ("webhook", "/ingest/segment"), ("webhook", "/ingest/segment/"), ("pages", "/healthz"),
        ("pages", "/ingest/segmentx"),
    ]
    # The full handler still serves pages with sessions: a login page sets the CSRF cookie.
    status, headers, _ = call(application, "GET", "/accounts/login/")
    assert status == "200 OK"
    assert any(name == "Set-Cookie" and value.strip().startswith("csrftoken=") for name, value in headers)


@pytest.mark.django_db
def test_the_webhooks_handler_matches_each_of_its_paths_against_the_urlconf_once(application, api_key, monkeypatch):
    from django.urls.resolvers import URLResolver

    resolved = []
    resolve = URLResolver.resolve

    def counted(self, path):
        if self.pattern.regex.pattern == "^/":  # the root resolver, not the ones it includes
            resolved.append(path)
        return resolve(self, path)

    monkeypatch.setattr(URLResolver, "resolve", counted)
    fresh = Application()
    statuses = [
        call(fresh.webhook, "POST", path, identify("once@example.com", f"m-once-{n}"),
             content_type="application/json", authorization=basic(api_key))[0]
        for n, path in enumerate(["/ingest/segment"] * 3 + ["/ingest/segment/"] * 2)
    ]
    assert statuses == ["200 OK"] * 5
    assert resolved == ["/ingest/segment", "/ingest/segment/"]
    # Pages are resolved by Django as ever.
    call(fresh.pages, "GET", "/healthz")
    call(fresh.pages, "GET", "/healthz")
    assert resolved[2:] == ["/healthz", "/healthz"]


@pytest.mark.django_db
def test_the_webhooks_handler_follows_a_new_urlconf(application, api_key):
    from django.test import override_settings

    def status():
        return call(application.webhook, "POST", "/ingest/segment", identify("u@example.com", "m-urlconf"),
                    content_type="application/json", authorization=basic(api_key))[0]

    assert status() == "200 OK"
    with override_settings(ROOT_URLCONF="tests.urls_without_webhook"):
        assert status().startswith("404")
    assert status() == "200 OK"  # the same messageId again: a duplicate, answered 200
