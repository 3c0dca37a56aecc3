"""The dashboard at /: level counts, activity, the 90-day chart, losing touch and
recently active, the empty state, scoping and a bounded number of queries."""

import datetime as dt
import re

import pytest

from contacts.models import Interaction
from tests.factories import ContactFactory, contact_with_days, many_contacts

DAY = dt.timedelta(days=1)


def days_back(today, *offsets):
    return [today - n * DAY for n in offsets]


def stat_for(html, level):
    """The number shown on the dashboard's tile for a level."""
    match = re.search(
        rf'<span class="stat-value">([\d,]+)</span>\s*<span class="badge level-{level}">', html
    )
    assert match, f"no tile for {level}"
    return int(match.group(1).replace(",", ""))


@pytest.fixture
def today(workspace):
    return workspace.today()


def test_it_requires_login(client, db):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_it_points_an_empty_workspace_to_the_segment_set_up(client, alice):
    client.force_login(alice)
    response = client.get("/")
    assert response.status_code == 200
    assert b"No events yet" in response.content
    assert b'href="/settings/api-keys/"' in response.content


def test_it_counts_contacts_per_level(client, alice, workspace, today):
    contact_with_days(workspace, days_back(today, *range(14)))  # every day for two weeks: close
    contact_with_days(workspace, days_back(today, *range(0, 56, 7)))  # weekly: warm
    contact_with_days(workspace, days_back(today, 3, 33, 63, 93))  # monthly: cool
    contact_with_days(workspace, days_back(today, 60))  # once two months ago: cold
    ContactFactory(workspace=workspace)  # no interaction: none
    ContactFactory(workspace=workspace)

    client.force_login(alice)
    html = client.get("/").content.decode()

    assert {level: stat_for(html, level) for level in ("close", "warm", "cool", "cold", "none")} == {
        "close": 1,
        "warm": 1,
        "cool": 1,
        "cold": 1,
        "none": 2,
    }


def test_it_counts_contacts_active_in_the_last_7_and_30_days(client, alice, workspace, today):
    contact_with_days(workspace, days_back(today, 0))
    contact_with_days(workspace, days_back(today, 6, 40))
    contact_with_days(workspace, days_back(today, 7))
    contact_with_days(workspace, days_back(today, 29))
    contact_with_days(workspace, days_back(today, 30))

    client.force_login(alice)
    response = client.get("/")

    assert response.context["counts"]["active_7"] == 2
    assert response.context["counts"]["active_30"] == 4
    html = response.content.decode()
    assert re.search(r'<span class="stat-value">2</span><span class="stat-label">active in the last 7 days', html)
    assert re.search(r'<span class="stat-value">4</span><span class="stat-label">active in the last 30 days', html)


def test_its_chart_has_one_bar_per_day_for_90_days_with_daily_active_contacts(client, alice, workspace, today):
    contact_with_days(workspace, days_back(today, 0, 5, 95))
    contact_with_days(workspace, days_back(today, 5))

    client.force_login(alice)
    response = client.get("/")

    bars = response.context["chart"]["bars"]
    assert len(bars) == 90
    assert bars[-1].day == today and bars[0].day == today - 89 * DAY
    by_day = {bar.day: bar.count for bar in bars}
    assert by_day[today] == 1
    assert by_day[today - 5 * DAY] == 2
    assert sum(by_day.values()) == 3  # the day 95 days ago is outside the chart
    html = response.content.decode()
    assert html.count('<rect class="bar"') == 90
    assert f"{(today - 5 * DAY):%a} {(today - 5 * DAY).day} {(today - 5 * DAY):%b}: 2 active" in html


def test_it_lists_contacts_losing_touch(client, alice, workspace, today):
    # Close a month ago (daily for two weeks), silent since: cool or colder today.
    drifting = contact_with_days(workspace, days_back(today, *range(35, 49)), name="Drifting Dora")
    still_close = contact_with_days(workspace, days_back(today, *range(14)), name="Close Carl")
    # Warm once but last seen 120 days ago: beyond the 90-day window.
    long_gone = contact_with_days(workspace, days_back(today, *range(120, 134)), name="Gone Gina")

    client.force_login(alice)
    response = client.get("/")

    losing = [c.pk for c in response.context["losing_touch"]]
    assert losing == [drifting.pk]
    assert still_close.pk not in losing and long_gone.pk not in losing
    html = response.content.decode()
    section = html.split("<h2>Losing touch</h2>")[1].split("</section>")[0]
    assert "Drifting Dora" in section and "Close Carl" not in section


def test_it_lists_recently_active_contacts_newest_first(client, alice, workspace, today):
    older = contact_with_days(workspace, days_back(today, 10), name="Older Olga")
    newer = contact_with_days(workspace, days_back(today, 1), name="Newer Ned")
    ContactFactory(workspace=workspace, name="Never Nina")

    client.force_login(alice)
    response = client.get("/")

    assert [c.pk for c in response.context["recently_active"]] == [newer.pk, older.pk]
    html = response.content.decode()
    assert html.index("Newer Ned") < html.index("Older Olga")
    assert "yesterday" in html and "10 days ago" in html


def test_it_shows_only_the_current_workspace(client, charlie, alice, workspace, today):
    contact_with_days(workspace, days_back(today, 0), name="Acme Secret", email="secret@acme.test")

    client.force_login(charlie)
    response = client.get("/")

    assert response.status_code == 200
    assert b"Acme Secret" not in response.content and b"secret@acme.test" not in response.content
    assert b"No events yet" in response.content


def test_it_refuses_a_workspace_the_user_is_not_a_member_of(client, charlie, workspace):
    client.force_login(charlie)
    assert client.get("/?workspace=acme").status_code == 404


def test_it_escapes_contact_names(client, alice, workspace, today):
    contact_with_days(workspace, days_back(today, 0), name="<script>alert(1)</script>")

    client.force_login(alice)
    html = client.get("/").content.decode()

    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def _fill(workspace, today, contacts):
    many_contacts(workspace, contacts, lambda n: days_back(today, n % 80, (n * 7) % 120, 40 + n % 30))


@pytest.mark.parametrize("contacts", [3, 300])
def test_it_runs_a_bounded_number_of_queries(client, alice, workspace, today, contacts, django_assert_max_num_queries):
    _fill(workspace, today, contacts)
    assert Interaction.objects.filter(workspace=workspace).count() >= contacts
    client.force_login(alice)

    with django_assert_max_num_queries(8):
        response = client.get("/")

    assert response.status_code == 200
    assert response.context["counts"]["total"] == contacts


def test_a_member_of_two_workspaces_switches_between_them(client, alice, workspace, other_workspace, today):
    from tests.factories import MembershipFactory

    MembershipFactory(user=alice, workspace=other_workspace)
    contact_with_days(other_workspace, days_back(today, 0), name="Globex Gus")
    client.force_login(alice)

    first = client.get("/").content.decode()
    switched = client.get("/?workspace=globex").content.decode()
    remembered = client.get("/contacts/").content.decode()

    assert '<select name="workspace" aria-label="Workspace">' in first
    assert "<h1>Acme</h1>" in first and "Globex Gus" not in first
    assert "<h1>Globex</h1>" in switched and "Globex Gus" in switched
    assert '<option value="globex" selected>' in remembered and "Globex Gus" in remembered
