"""Every response carries the security headers; production settings add HSTS, secure
cookies and the https redirect."""

import pytest

from natsite.middleware import DEFAULT_POLICY

STRICT_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/accounts/login/", "/healthz", "/admin/login/"])
def test_pages_carry_a_strict_content_security_policy_and_the_other_headers(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == STRICT_CSP
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"


def test_the_policy_allows_no_inline_code_nor_other_origins():
    for directive in ("script-src", "style-src", "default-src"):
        assert DEFAULT_POLICY[directive] == "'self'"
    assert "unsafe" not in STRICT_CSP


@pytest.mark.django_db
def test_the_webhook_answers_carry_the_headers_too(webhook):
    response = webhook.post({"type": "identify", "email": "a@example.com", "timestamp": "2026-01-01T00:00:00Z"})
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == STRICT_CSP
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.django_db
def test_a_view_may_set_its_own_policy(settings, client):
    settings.CONTENT_SECURITY_POLICY = {"img-src": "'self' data: https://images.example.com"}
    response = client.get("/healthz")
    assert "img-src 'self' data: https://images.example.com;" in response["Content-Security-Policy"]
    assert "script-src 'self';" in response["Content-Security-Policy"]


@pytest.mark.django_db
def test_hsts_is_sent_over_https_when_configured(settings, client):
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = True
    response = client.get("/healthz", secure=True)
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert "Strict-Transport-Security" not in client.get("/healthz")  # never over plain http


@pytest.mark.django_db
def test_no_hsts_unless_configured(settings, client):
    settings.SECURE_HSTS_SECONDS = 0
    assert "Strict-Transport-Security" not in client.get("/healthz", secure=True)


@pytest.mark.django_db
def test_plain_http_is_redirected_to_https_except_the_health_check(settings, client):
    settings.SECURE_SSL_REDIRECT = True
    response = client.get("/accounts/login/")
    assert response.status_code == 301
    assert response["Location"] == "https://testserver/accounts/login/"
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_session_and_csrf_cookies_are_secure_and_session_is_http_only(settings, client, alice):
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    alice.set_password("a-long-passphrase")
    alice.save()
    response = client.get("/accounts/login/", secure=True)
    csrf_cookie = response.cookies["csrftoken"]
    assert csrf_cookie["secure"] is True
    assert csrf_cookie["samesite"] == "Lax"
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "a-long-passphrase"}, secure=True
    )
    assert response.status_code == 302
    session_cookie = response.cookies["sessionid"]
    assert session_cookie["secure"] is True
    assert session_cookie["httponly"] is True
    assert session_cookie["samesite"] == "Lax"
