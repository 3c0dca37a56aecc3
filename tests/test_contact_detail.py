"""/contacts/<id>/: the header (badge, first seen, last interaction in words), the
heatmap and sparkline, traits and Engage audiences, the timeline, scoping, escaping
and a bounded number of queries."""

import datetime as dt
import re

import pytest

from contacts import charts, closeness
from contacts.models import Contact, Interaction
from contacts.views import TIMELINE_PER_PAGE
from tests.factories import ContactFactory, InteractionFactory, contact_with_days

DAY = dt.timedelta(days=1)


@pytest.fixture
def today(workspace):
    return workspace.today()


def detail(client, contact, query=""):
    return client.get(f"/contacts/{contact.pk}/{query}")


def expected_measure(days, today):
    """Level and score straight from PRODUCT.md §3, independently of contacts/closeness.py."""
    s = sum(2 ** (-(today - d).days / 14) for d in set(days) if d <= today)
    if not days:
        level = "none"
    elif s >= 6:
        level = "close"
    elif s >= 2:
        level = "warm"
    elif s >= 0.5:
        level = "cool"
    else:
        level = "cold"
    return level, round(100 * (1 - 2 ** (-s / 4)))


def test_it_requires_login(client, workspace):
    contact = ContactFactory(workspace=workspace)
    response = detail(client, contact)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_it_is_a_404_for_another_workspaces_contact(client, charlie, workspace):
    contact = ContactFactory(workspace=workspace, name="Acme Only")
    client.force_login(charlie)
    response = detail(client, contact)
    assert response.status_code == 404
    assert b"Acme Only" not in response.content


def test_it_is_a_404_for_a_contact_that_does_not_exist(client, alice):
    client.force_login(alice)
    assert client.get("/contacts/987654/").status_code == 404


def test_it_shows_the_header(client, alice, workspace, today):
    contact = contact_with_days(
        workspace, [today - 3 * DAY, today - 40 * DAY], name="Jane Doe", email="jane@example.com", user_id="usr_1"
    )
    client.force_login(alice)
    html = detail(client, contact).content.decode()

    assert "<h1>Jane Doe</h1>" in html
    assert "jane@example.com" in html and "usr_1" in html
    assert "3 days ago" in html
    first_seen = today - 40 * DAY
    assert f"{first_seen.day} {first_seen:%b %Y}" in html


@pytest.mark.parametrize(
    "offsets",
    [
        range(14),  # every day for two weeks
        range(0, 70, 7),  # weekly
        [1, 31, 61, 91, 121],  # monthly
        [60],  # once two months ago
        [0, 1, 5, 9, 13, 40, 41, 200, 300],  # an irregular private history
        [],
    ],
)
def test_its_badge_shows_the_level_and_score_of_the_formula(client, alice, workspace, today, offsets):
    days = [today - n * DAY for n in offsets]
    contact = contact_with_days(workspace, days)
    level, score = expected_measure(days, today)
    client.force_login(alice)
    response = detail(client, contact)
    html = response.content.decode()
    badge = re.search(r'<div class="contact-badge"><span class="badge level-(\w+)"[^>]*>\w+ <b>(\d+)</b>', html)
    assert badge, "no closeness badge"
    assert (badge.group(1), int(badge.group(2))) == (level, score)


def test_the_formula_examples_of_the_product_give_their_levels(client, alice, workspace, today):
    examples = {
        "close": [today - n * DAY for n in range(14)],
        "warm": [today - n * DAY for n in range(0, 70, 7)],
        "cool": [today - n * DAY for n in (1, 31, 61, 91)],
        "cold": [today - 60 * DAY],
    }
    client.force_login(alice)
    for level, days in examples.items():
        contact = contact_with_days(workspace, days)
        assert f'<div class="contact-badge"><span class="badge level-{level}"' in detail(client, contact).content.decode()


def test_its_heatmap_covers_a_year_and_marks_interaction_days(client, alice, workspace, today):
    contact = contact_with_days(workspace, [today, today - 10 * DAY, today - 400 * DAY])
    Interaction.objects.filter(contact=contact, day=today).update(event_count=12)
    client.force_login(alice)
    response = detail(client, contact)

    heatmap = response.context["heatmap"]
    cells = {cell.day: cell for cell in heatmap["cells"]}
    assert today in cells and today - 364 * DAY in cells and today - 400 * DAY not in cells
    assert cells[today].shade == 4 and cells[today - 10 * DAY].shade == 1
    assert heatmap["active_days"] == 2
    html = response.content.decode()
    assert html.count('<rect class="shade-') == len(heatmap["cells"])
    assert f"{today:%a} {today.day} {today:%b %Y}: 12 events" in html


def test_its_sparkline_follows_the_score_over_the_year(client, alice, workspace, today):
    days = [today - n * DAY for n in (0, 2, 4, 100, 101)]
    contact = contact_with_days(workspace, days)
    client.force_login(alice)
    sparkline = detail(client, contact).context["sparkline"]

    points = [tuple(map(float, p.split(","))) for p in sparkline["points"].split()]
    assert len(points) == 365
    # The last point is today's score; the point 100 days back is that day's score.
    for back in (0, 100, 50):
        _, score = expected_measure([d for d in days if d <= today - back * DAY], today - back * DAY)
        y = points[-1 - back][1]
        assert round((sparkline["height"] - y) / sparkline["height"] * 100) == score


def test_strength_series_matches_the_definition_day_by_day(today):
    days = [today - n * DAY for n in (3, 5, 8, 30, 31, 200, 500)]
    start = today - 60 * DAY
    series = closeness.strength_series(days, start, today)
    for offset, value in enumerate(series):
        on = start + offset * DAY
        assert value == pytest.approx(sum(2 ** (-(on - d).days / 14) for d in days if d <= on))


def test_it_separates_engage_audiences_from_traits(client, alice, workspace):
    contact = ContactFactory(
        workspace=workspace,
        traits={"plan": "pro", "seats": 12, "order_completed_last_30days": True, "churn_risk": False},
    )
    client.force_login(alice)
    response = detail(client, contact)

    assert [t["key"] for t in response.context["traits"]] == ["plan", "seats"]
    assert response.context["audiences"] == [
        {"key": "churn_risk", "member": False},
        {"key": "order_completed_last_30days", "member": True},
    ]
    html = response.content.decode()
    audiences = html.split("<h2>Engage audiences</h2>")[1].split("</section>")[0]
    assert "order_completed_last_30days" in audiences and "plan" not in audiences


def test_an_engage_sync_through_the_webhook_shows_an_audience_but_no_interaction(client, alice, webhook):
    from tests.conftest import load_fixture

    assert webhook.post(load_fixture("identify-engage-audience")).json()["status"] == "traits_updated"
    contact = Contact.objects.get(email="jane.doe@example.com")
    client.force_login(alice)
    response = detail(client, contact)
    assert response.context["audiences"] == [{"key": "order_completed_last_30days", "member": True}]
    assert response.context["interaction_days"] == 0
    assert b"No interactions yet" in response.content


def test_its_timeline_is_newest_first_grouped_by_month(client, alice, workspace, today):
    first_of_month = today.replace(day=1)
    days = [first_of_month, first_of_month - DAY, first_of_month - 40 * DAY]
    contact = contact_with_days(workspace, days)
    client.force_login(alice)
    html = detail(client, contact).content.decode()

    months = re.findall(r'<h3 class="month">([^<]+)</h3>', html)
    expected = []
    for day in sorted(days, reverse=True):
        label = f"{day:%B %Y}"
        if label not in expected:
            expected.append(label)
    assert months == expected
    shown = re.findall(r'<ol class="timeline">.*?</ol>', html, re.S)
    dates = [d for block in shown for d in re.findall(r'<time datetime="([\d-]+)">', block)]
    assert dates == [d.isoformat() for d in sorted(days, reverse=True)]


def test_its_timeline_is_paginated(client, alice, workspace, today):
    contact = contact_with_days(workspace, [today - n * DAY for n in range(TIMELINE_PER_PAGE + 7)])
    client.force_login(alice)

    first = detail(client, contact)
    second = detail(client, contact, "?page=2")

    assert len(first.context["page"].object_list) == TIMELINE_PER_PAGE
    assert [i.day for i in second.context["page"].object_list] == [
        today - n * DAY for n in range(TIMELINE_PER_PAGE, TIMELINE_PER_PAGE + 7)
    ]
    assert 'href="?page=2" rel="next">Older' in first.content.decode()


def test_it_links_only_http_urls(client, alice, workspace, today):
    contact = ContactFactory(workspace=workspace)
    InteractionFactory(contact=contact, day=today, description="Pricing page", url="https://acme.test/pricing?a=1&b=2")
    InteractionFactory(contact=contact, day=today - DAY, description="Sneaky", url="javascript:alert(1)")
    InteractionFactory(contact=contact, day=today - 2 * DAY, description="Data", url="data:text/html,<b>x</b>")
    client.force_login(alice)
    html = detail(client, contact).content.decode()

    assert '<a href="https://acme.test/pricing?a=1&amp;b=2" rel="noopener noreferrer nofollow">Pricing page</a>' in html
    assert "javascript:" not in html
    assert 'href="data:' not in html
    assert "<span>Sneaky</span>" in html


def test_it_escapes_every_user_supplied_string(client, alice, workspace, today):
    payload = "<script>alert(1)</script>"
    contact = ContactFactory(
        workspace=workspace,
        name=payload,
        email="evil@example.com",
        user_id=payload,
        traits={payload: payload, "homepage": "javascript:alert(2)", "nested": {"x": payload}, "<b>aud</b>": True},
    )
    InteractionFactory(contact=contact, day=today, description=payload, url="https://x.test/\"><script>alert(3)</script>")
    client.force_login(alice)
    html = detail(client, contact).content.decode()

    assert "<script>" not in html and "<b>aud</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="javascript:' not in html
    assert "&lt;b&gt;aud&lt;/b&gt;" in html


def test_it_shows_how_long_ago_in_words(client, alice, workspace, today):
    from contacts.templatetags.contacts_tags import days_ago

    assert days_ago(today, today) == "today"
    assert days_ago(today - DAY, today) == "yesterday"
    assert days_ago(today - 3 * DAY, today) == "3 days ago"
    assert days_ago(today - 70 * DAY, today).endswith("months ago")
    assert days_ago(None, today) == "never"


def test_the_heatmap_and_chart_shapes_stay_inside_their_boxes(today):
    heatmap = charts.activity_heatmap({today: 3}, today)
    assert all(0 <= c.x < heatmap["width"] and 0 <= c.y < heatmap["height"] for c in heatmap["cells"])
    chart = charts.daily_active_chart({today: 5, today - DAY: 10}, today)
    assert all(0 <= b.y <= chart["height"] and b.height <= chart["height"] for b in chart["bars"])
    assert max(b.height for b in chart["bars"]) == chart["height"] - 4


@pytest.mark.parametrize("interaction_days", [3, 400])
def test_it_runs_a_bounded_number_of_queries(
    client, alice, workspace, today, interaction_days, django_assert_max_num_queries
):
    contact = contact_with_days(workspace, [today - n * DAY for n in range(interaction_days)])
    client.force_login(alice)
    with django_assert_max_num_queries(7):
        response = detail(client, contact, "?page=2" if interaction_days > TIMELINE_PER_PAGE else "")
    assert response.status_code == 200
    assert response.context["interaction_days"] == interaction_days
