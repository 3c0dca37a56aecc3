"""The pages work under the strict Content-Security-Policy: a real Chromium signs in,
opens every kind of page (the app's and the admin's) and no policy violation is
reported, while the page's own scripts and styles still run."""

import datetime as dt

import pytest

from contacts.models import Contact
from tests.browser import BROWSER_MARKS, open_page, signs_in_over_http
from tests.factories import ContactFactory, InteractionFactory, api_key_for

PASSWORD = "correct horse battery staple"

pytestmark = BROWSER_MARKS

# Reported by the page itself, so a violation is seen even when Chromium's console wording changes.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + (event.blockedURI || "inline"));
});
"""


@pytest.fixture
def founder(settings, alice, workspace):
    alice.is_staff = True
    signs_in_over_http(settings, alice, PASSWORD)
    today = dt.date.today()
    contact = ContactFactory(workspace=workspace, email="ada@example.com", name="Ada Lovelace",
                             traits={"plan": "pro", "company": "Analytical Engines"})
    for days_ago in (0, 3, 9, 30, 200):
        InteractionFactory(contact=contact, day=today - dt.timedelta(days=days_ago),
                           description=f"https://example.com/pricing?visit={days_ago}")
    Contact.recompute_closeness([contact.pk])
    ContactFactory(workspace=workspace, email="grace@example.com", name="Grace Hopper")
    api_key_for(workspace)
    return contact


@pytest.fixture
def browser_page(browser):
    context = browser.new_context()
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    page.console_messages_seen = []
    page.on(
        "console",
        lambda message: page.console_messages_seen.append(
            (message.type, message.text, (message.location or {}).get("url", ""))
        ),
    )
    return page


def visit(page, url):
    response = open_page(page, url)
    assert "default-src 'self'" in response.headers["content-security-policy"]
    return page


def violations(page):
    reported = page.evaluate("window.__cspViolations")
    in_console = [text for kind, text, url in page.console_messages_seen if "Content Security Policy" in text]
    return reported + in_console


def test_the_app_and_the_admin_report_no_csp_violation(live_server, founder, browser_page):
    page = browser_page
    base = live_server.url
    visit(page, f"{base}/accounts/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")

    # The app's own stylesheet applies (a blocked stylesheet would leave the default font).
    assert page.evaluate("getComputedStyle(document.querySelector('header')).display") != ""
    pages = [
        "/",
        "/contacts/",
        "/contacts/?level=close&sort=email",
        f"/contacts/{founder.pk}/",
        "/settings/api-keys/",
        "/admin/",
        "/admin/contacts/contact/",
        f"/admin/contacts/contact/{founder.pk}/change/",
        "/admin/contacts/interaction/",
        "/admin/contacts/workspace/",
        f"/admin/contacts/workspace/{founder.workspace_id}/change/",  # prepopulate.js
        "/admin/contacts/membership/",
        "/admin/ingest/apikey/",
        "/admin/ingest/apikeyevent/",
    ]
    seen = {}
    for path in pages:
        visit(page, base + path)
        seen[path] = violations(page)
    assert {path: found for path, found in seen.items() if found} == {}
    # No script error either (the browser's own favicon probe aside).
    errors = [(text, url) for kind, text, url in page.console_messages_seen if kind == "error"]
    assert [error for error in errors if not error[1].endswith("/favicon.ico")] == []


def test_the_admin_scripts_still_run_under_the_policy(live_server, founder, browser_page):
    page = browser_page
    base = live_server.url
    visit(page, f"{base}/admin/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")
    visit(page, f"{base}/admin/contacts/contact/")
    # theme.js (a static file) switches the colour theme: it runs despite the policy.
    before = page.evaluate("document.documentElement.dataset.theme || 'auto'")
    page.click("button.theme-toggle")
    assert page.evaluate("document.documentElement.dataset.theme") != before
    assert violations(page) == []


def test_an_inline_script_would_be_reported(live_server, founder, browser_page):
    """The check above can fail: an injected inline script is blocked and reported."""
    page = browser_page
    visit(page, f"{live_server.url}/accounts/login/")
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.__ran = 1';"
        " document.body.appendChild(s); }"
    )
    page.wait_for_timeout(200)
    assert page.evaluate("window.__ran") is None
    assert violations(page)
