"""Rotating the API key in a real Chromium, as workspace staff do: sign in, rotate with
a 1-hour grace, confirm the password, copy the key shown once, and Segment's next
request with it is accepted; after a reload the key is gone from the page.

Screenshots are saved under screenshots/ (git-ignored) for a human to look at."""

import base64
import json
import urllib.error
import urllib.request

import pytest
from django.utils import timezone

from ingest.models import ApiKey
from tests.browser import BROWSER_MARKS, SCREENSHOTS, signs_in_over_http

PASSWORD = "a founder's long passphrase"

pytestmark = BROWSER_MARKS


@pytest.fixture
def staff_member(settings, alice):
    signs_in_over_http(settings, alice, PASSWORD)
    return alice


def post_identify(base_url, key, email):
    """What Segment sends: Basic auth with the key as the user name."""
    body = json.dumps(
        {"type": "identify", "timestamp": timezone.now().isoformat(), "traits": {"email": email}}
    ).encode()
    token = base64.b64encode(f"{key}:".encode()).decode()
    request = urllib.request.Request(
        f"{base_url}/ingest/segment",
        data=body,
        method="POST",
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_staff_rotate_copy_the_key_once_and_segment_is_accepted_with_it(
    live_server, staff_member, workspace, api_key, browser
):
    SCREENSHOTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Script errors and Content-Security-Policy refusals; not the console's notes about
    # HTTP statuses (the password confirmation is served with 403 by design).
    page.on("console", lambda message: "Content Security Policy" in message.text and errors.append(message.text))

    page.goto(f"{live_server.url}/settings/api-keys/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]:has-text('Log in')")
    page.wait_for_url("**/settings/api-keys/")
    assert page.locator("#connection").is_visible()

    page.check("input[name=grace][value='1h']")
    page.click("button:has-text('Rotate API key')")
    page.wait_for_selector("text=Confirm your password")
    page.fill("#confirm-password", PASSWORD)
    page.click("button:has-text('Confirm and continue')")
    page.wait_for_selector("#shown-secret")

    shown = page.input_value("#shown-secret")
    page.click(".shown-once .copy-button")
    page.wait_for_selector(".shown-once .copy-status:has-text('Copied')")
    copied = page.evaluate("navigator.clipboard.readText()")
    page.screenshot(path=str(SCREENSHOTS / "api-keys-rotated.png"), full_page=True)

    assert copied == shown
    assert shown.startswith("nat_") and len(shown) >= 4 + 32
    new_key = ApiKey.objects.get(prefix=shown[:12])
    assert new_key.created_by == staff_member
    old_key = ApiKey.objects.exclude(pk=new_key.pk).get(workspace=workspace)
    remaining = old_key.expires_at - timezone.now()
    assert 59 * 60 < remaining.total_seconds() <= 3600

    status, answer = post_identify(live_server.url, copied, "peter@initech.com")
    assert (status, answer["status"]) == (200, "created")
    status, _ = post_identify(live_server.url, api_key, "joanna@initech.com")
    assert status == 200  # the old key works during its grace period
    status, answer = post_identify(live_server.url, copied, "not an address")
    assert (status, answer) == (400, {"message": "Invalid email address"})

    page.reload()
    page.wait_for_selector("#api-keys")
    assert page.locator("#shown-secret").count() == 0
    assert shown not in page.content()
    assert page.locator("#accepted-today").inner_text() == "2"
    assert page.locator(f"tr[data-prefix='{shown[:12]}'] .key-status").text_content() == "active"
    assert "Invalid email address" in page.locator("#rejected tr.rejection").inner_text()
    assert "Segment still uses this key" in page.locator(f"tr[data-prefix='{old_key.prefix}']").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "api-keys-after-reload.png"), full_page=True)

    page.set_viewport_size({"width": 375, "height": 812})
    page.screenshot(path=str(SCREENSHOTS / "api-keys-phone.png"), full_page=True)
    # On a phone nothing makes the whole page scroll sideways (tables scroll in their box).
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert errors == []
    context.close()
