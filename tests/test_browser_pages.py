"""The founders' pages in a real Chromium, as a founder uses them: sign in, open the
dashboard, the contact list and a timeline, on a 375 px phone and on a desktop.

Screenshots of every page are saved under screenshots/ (git-ignored) for a human to
look at."""

import datetime as dt

import pytest

from tests.browser import BROWSER_MARKS, SCREENSHOTS, open_page, signs_in_over_http
from tests.factories import ContactFactory, contact_with_days

PASSWORD = "a founder's long passphrase"
VIEWPORTS = {"phone": {"width": 375, "height": 812}, "desktop": {"width": 1280, "height": 900}}
DAY = dt.timedelta(days=1)

pytestmark = BROWSER_MARKS


@pytest.fixture
def founder(settings, alice, workspace):
    """Alice, with a workspace whose contacts sit at every level."""
    signs_in_over_http(settings, alice, PASSWORD)
    today = workspace.today()
    ada = contact_with_days(
        workspace,
        [today - n * DAY for n in range(0, 400) if n % 3 == 0 or n < 10],
        name="Ada Lovelace",
        email="ada@example.com",
        traits={"plan": "enterprise", "company": "Analytical Engines", "seats": 40, "order_completed_last_30days": True},
    )
    contact_with_days(workspace, [today - n * DAY for n in range(3, 60, 7)], name="Grace Hopper", email="grace@example.com")
    contact_with_days(workspace, [today - n * DAY for n in range(35, 49)], name="Drifting Dora", email="dora@example.com")
    contact_with_days(workspace, [today - 60 * DAY], name="<script>alert('x')</script>", email="mallory@example.com")
    ContactFactory(workspace=workspace, name="Nora Never", email="nora@example.com")
    return ada


def fits_the_width(page):
    """Nothing makes the whole page scroll sideways (a chart may scroll in its own box)."""
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


@pytest.mark.parametrize("device", VIEWPORTS)
def test_a_founder_signs_in_and_browses_dashboard_contacts_and_a_timeline(live_server, founder, browser, device):
    SCREENSHOTS.mkdir(exist_ok=True)
    page = browser.new_context(viewport=VIEWPORTS[device]).new_page()
    alerts = []
    page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.dismiss()))

    # Signing in from a protected page lands back on it.
    open_page(page, f"{live_server.url}/")
    assert "/accounts/login/" in page.url
    page.screenshot(path=SCREENSHOTS / f"{device}-login.png", full_page=True)
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state("load")

    # Dashboard
    assert page.url == f"{live_server.url}/"
    assert page.locator("h1").inner_text() == "Acme"
    assert page.locator(".stat .badge.level-close").count() == 1
    assert page.locator("svg.bars rect.bar").count() == 90
    losing = page.locator("section.card", has=page.locator("h2", has_text="Losing touch"))
    assert "Drifting Dora" in losing.inner_text()
    assert fits_the_width(page)
    page.screenshot(path=SCREENSHOTS / f"{device}-dashboard.png", full_page=True)

    # Contact list, filtered by level from the select
    page.click("nav >> text=Contacts")
    page.wait_for_load_state("load")
    rows = page.locator("table.contacts tbody tr")
    assert rows.count() == 5
    assert "Ada Lovelace" in rows.nth(0).inner_text()
    assert "<script>alert('x')</script>" in page.locator("table.contacts").inner_text()  # shown as text
    assert fits_the_width(page)
    page.screenshot(path=SCREENSHOTS / f"{device}-contacts.png", full_page=True)
    page.select_option("select[name=level]", "cold")
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state("load")
    assert page.locator("table.contacts tbody tr").count() == 1
    assert "mallory@example.com" in page.locator("table.contacts").inner_text()

    # A timeline
    open_page(page, f"{live_server.url}/contacts/")
    page.click("text=Ada Lovelace")
    page.wait_for_load_state("load")
    assert page.url.endswith(f"/contacts/{founder.pk}/")
    assert page.locator("h1").inner_text() == "Ada Lovelace"
    assert page.locator(".contact-badge .badge.level-close").is_visible()
    assert page.locator("svg.heatmap rect").count() >= 365
    assert page.locator("svg.sparkline polyline").count() == 1
    assert "order_completed_last_30days" in page.locator("ul.audiences").inner_text()
    assert page.locator("ol.timeline li").count() == 50
    assert page.locator("h3.month").count() >= 2
    assert fits_the_width(page)
    page.screenshot(path=SCREENSHOTS / f"{device}-timeline.png", full_page=True)
    page.screenshot(path=SCREENSHOTS / f"{device}-timeline-top.png")
    page.click("a[rel=next]")
    page.wait_for_load_state("load")
    assert "page=2" in page.url and page.locator("ol.timeline li").count() == 50

    # Signing out
    page.click("form.logout button")
    page.wait_for_load_state("load")
    assert "/accounts/login/" in page.url
    assert alerts == []
