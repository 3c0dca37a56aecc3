"""What the browser tests share: Debian's Chromium driven by Playwright (no browser
download), the marks every such test carries, and where screenshots go."""

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps calling hosts this closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"

BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs Debian's chromium at {CHROMIUM}"),
]


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def open_page(page, url):
    """Go to url, wait for the page to load, and insist on a 200."""
    response = page.goto(url)
    page.wait_for_load_state("load")
    assert response.status == 200, f"{url}: {response.status}"
    return response


def signs_in_over_http(settings, user, password):
    """Ready `user` to sign in through the live server, which speaks plain http: the
    session and CSRF cookies must travel over it; the password is hashed quickly."""
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    user.set_password(password)
    user.save()
