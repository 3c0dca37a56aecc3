"""The cast: alice owns workspace Acme (and may rotate keys), bob is her teammate,
charlie is an outsider with a workspace of his own (Globex)."""

import base64
import gzip
import json
from pathlib import Path

import pytest
from django.db import connections

from tests.factories import MembershipFactory, UserFactory, WorkspaceFactory, api_key_for, grant_rotate

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Most tests make users; the production hasher's deliberate slowness (about a second
    per user on a busy machine) is not what they test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _postgres_only(request):
    """Tests marked @pytest.mark.postgres run only when DATABASE_URL is PostgreSQL."""
    if request.node.get_closest_marker("postgres"):
        from django.db import connection

        if connection.vendor != "postgresql":
            pytest.skip("needs PostgreSQL: run with DATABASE_URL=postgres://...")


@pytest.fixture
def browser(monkeypatch):
    """Debian's Chromium through Playwright, for the tests marked browser."""
    from playwright.sync_api import sync_playwright

    from tests.browser import launch

    # Playwright's sync API keeps an event loop on this thread; the tests' own ORM
    # reads are plain synchronous calls that never run inside that loop.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()
            # While Playwright's event loop runs on this thread, asgiref keeps the test's
            # ORM connection per context, apart from the thread's: closed here, inside
            # that context, or it would outlive the test and hold the test database open
            # when pytest-django drops it.
            connections.close_all()


def load_fixture(name):
    return json.loads((FIXTURES / "segment" / f"{name}.json").read_text())


@pytest.fixture
def workspace(db):
    return WorkspaceFactory(name="Acme", slug="acme")


@pytest.fixture
def other_workspace(db):
    return WorkspaceFactory(name="Globex", slug="globex")


@pytest.fixture
def alice(workspace):
    user = UserFactory(username="alice")
    MembershipFactory(user=user, workspace=workspace)
    grant_rotate(user)
    return user


@pytest.fixture
def bob(workspace):
    user = UserFactory(username="bob")
    MembershipFactory(user=user, workspace=workspace)
    return user


@pytest.fixture
def charlie(other_workspace):
    user = UserFactory(username="charlie")
    MembershipFactory(user=user, workspace=other_workspace)
    grant_rotate(user)
    return user


@pytest.fixture
def api_key(workspace):
    return api_key_for(workspace)


class Webhook:
    """Posts to /ingest/segment the way Segment does (Basic auth, key as user name)."""

    def __init__(self, client, key):
        self.client = client
        self.key = key

    def headers(self, key=None, **extra):
        token = base64.b64encode(f"{key or self.key}:".encode()).decode()
        return {"HTTP_AUTHORIZATION": f"Basic {token}", **extra}

    def post(self, payload, *, key=None, raw=None, gzipped=False, content_type="application/json", path="/ingest/segment", **extra):
        body = raw if raw is not None else json.dumps(payload).encode()
        if gzipped:
            body = gzip.compress(body)
            extra["HTTP_CONTENT_ENCODING"] = "gzip"
        return self.client.generic("POST", path, body, content_type=content_type, **self.headers(key, **extra))


@pytest.fixture
def webhook(client, api_key):
    return Webhook(client, api_key)
