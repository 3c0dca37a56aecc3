"""The admin: closeness column and level filter, the timeline on a contact's page,
interactions by date, and scoping — staff who are not superusers see only their
workspaces' rows, and membership alone lets them browse them."""

import datetime as dt

import pytest
from django.contrib.auth.models import Permission

from contacts.models import Contact, Interaction
from tests.factories import ContactFactory, InteractionFactory, UserFactory, contact_with_days, many_contacts

DAY = dt.timedelta(days=1)


@pytest.fixture
def today(workspace):
    return workspace.today()


@pytest.fixture
def staff_alice(alice):
    alice.is_staff = True
    alice.save(update_fields=["is_staff"])
    return alice


@pytest.fixture
def staff_charlie(charlie):
    charlie.is_staff = True
    charlie.save(update_fields=["is_staff"])
    return charlie


@pytest.fixture
def superuser(db):
    return UserFactory(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def acme_and_globex(workspace, other_workspace, today):
    return {
        "acme": contact_with_days(workspace, [today - n * DAY for n in range(14)], email="carl@acme.test"),
        "acme_cold": contact_with_days(workspace, [today - 60 * DAY], email="colin@acme.test"),
        "globex": contact_with_days(other_workspace, [today], email="gus@globex.test"),
    }


def listed(response):
    return [obj.email for obj in response.context["cl"].result_list]


def test_a_member_who_is_staff_can_browse_contacts_without_a_permission_grant(client, staff_alice, acme_and_globex):
    assert not staff_alice.user_permissions.filter(codename__in=["view_contact", "view_interaction"]).exists()
    client.force_login(staff_alice)

    index = client.get("/admin/")
    contacts = client.get("/admin/contacts/contact/")
    interactions = client.get("/admin/contacts/interaction/")

    assert index.status_code == 200 and b"/admin/contacts/contact/" in index.content
    assert contacts.status_code == 200 and interactions.status_code == 200
    assert sorted(listed(contacts)) == ["carl@acme.test", "colin@acme.test"]
    assert {i.contact.email for i in interactions.context["cl"].result_list} == {"carl@acme.test", "colin@acme.test"}


def test_staff_see_no_row_of_another_workspace(client, staff_charlie, acme_and_globex, workspace):
    client.force_login(staff_charlie)
    acme = acme_and_globex["acme"]

    assert listed(client.get("/admin/contacts/contact/")) == ["gus@globex.test"]
    assert b"carl@acme.test" not in client.get("/admin/contacts/interaction/").content
    assert [w.name for w in client.get("/admin/contacts/workspace/").context["cl"].result_list] == ["Globex"]
    assert b"alice" not in client.get("/admin/contacts/membership/").content
    for url in (
        f"/admin/contacts/contact/{acme.pk}/change/",
        f"/admin/contacts/workspace/{workspace.pk}/change/",
        f"/admin/contacts/interaction/{acme.interactions.first().pk}/change/",
    ):
        response = client.get(url, follow=True)
        assert b"carl@acme.test" not in response.content
        assert b"doesn\xe2\x80\x99t exist" in response.content or response.status_code == 404


def test_its_workspace_filter_offers_only_the_users_workspaces(client, staff_alice, acme_and_globex):
    client.force_login(staff_alice)
    html = client.get("/admin/contacts/contact/").content.decode()
    assert "Acme" in html and "Globex" not in html


def test_staff_with_no_workspace_cannot_browse(client, db, acme_and_globex):
    loner = UserFactory(username="loner", is_staff=True)
    client.force_login(loner)
    assert client.get("/admin/contacts/contact/").status_code == 403


def test_a_superuser_sees_every_workspace(client, superuser, acme_and_globex):
    client.force_login(superuser)
    assert sorted(listed(client.get("/admin/contacts/contact/"))) == [
        "carl@acme.test",
        "colin@acme.test",
        "gus@globex.test",
    ]


def test_its_contact_list_shows_closeness_and_filters_by_level(client, staff_alice, acme_and_globex, today):
    client.force_login(staff_alice)
    expected = acme_and_globex["acme"].closeness_on(today)

    html = client.get("/admin/contacts/contact/").content.decode()
    close_only = client.get("/admin/contacts/contact/?level=close")
    cold_only = client.get("/admin/contacts/contact/?level=cold")

    assert f'<span class="badge level-close">close <b>{expected.score}</b></span>' in html
    assert "css/levels.css" in html
    assert listed(close_only) == ["carl@acme.test"]
    assert listed(cold_only) == ["colin@acme.test"]


def test_its_level_filter_uses_each_workspaces_today(client, superuser, workspace, other_workspace, today):
    other_workspace.timezone = "Pacific/Kiritimati"  # UTC+14: often already tomorrow
    other_workspace.save()
    for ws in (workspace, other_workspace):
        contact_with_days(ws, [ws.today() - n * DAY for n in range(14)], email=f"daily@{ws.slug}.test")
    client.force_login(superuser)
    assert sorted(listed(client.get("/admin/contacts/contact/?level=close"))) == [
        "daily@acme.test",
        "daily@globex.test",
    ]


def test_its_contact_page_shows_the_latest_timeline_and_links_the_full_page(client, staff_alice, workspace, today):
    contact = contact_with_days(workspace, [today - n * DAY for n in range(30)])
    InteractionFactory(contact=ContactFactory(workspace=workspace), description="<script>alert(1)</script>")
    Interaction.objects.filter(contact=contact, day=today).update(description="<script>alert(1)</script>")
    client.force_login(staff_alice)

    html = client.get(f"/admin/contacts/contact/{contact.pk}/change/").content.decode()

    assert html.count("<tr><td>20") + html.count(f"<tr><td>{today.year - 1}") == 20
    assert today.isoformat() in html and (today - 19 * DAY).isoformat() in html
    assert (today - 20 * DAY).isoformat() not in html
    assert f'href="/contacts/{contact.pk}/"' in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_its_interaction_list_has_a_date_hierarchy(client, staff_alice, acme_and_globex, today):
    client.force_login(staff_alice)
    response = client.get(f"/admin/contacts/interaction/?day__year={today.year}&day__month={today.month}&day__day={today.day}")
    assert response.status_code == 200
    assert [i.day for i in response.context["cl"].result_list] == [today]
    assert response.context["cl"].date_hierarchy == "day"


def test_deleting_an_interaction_in_the_admin_recomputes_closeness(client, superuser, workspace, today):
    contact = contact_with_days(workspace, [today, today - DAY])
    interaction = contact.interactions.get(day=today)
    client.force_login(superuser)

    client.post(f"/admin/contacts/interaction/{interaction.pk}/delete/", {"post": "yes"})

    contact.refresh_from_db()
    assert contact.last_interaction_day == today - DAY
    assert contact.closeness_on(today).strength == pytest.approx(2 ** (-1 / 14))


def test_its_foreign_key_choices_are_limited_to_the_users_workspaces(client, staff_alice, acme_and_globex):
    staff_alice.user_permissions.add(Permission.objects.get(codename="add_membership"))
    client.force_login(staff_alice)
    html = client.get("/admin/contacts/membership/add/").content.decode()
    assert ">Acme</option>" in html and "Globex" not in html


@pytest.mark.parametrize("contacts", [3, 300])
@pytest.mark.parametrize("url", ["/admin/contacts/contact/", "/admin/contacts/contact/?level=cool", "/admin/contacts/interaction/"])
def test_its_lists_run_a_bounded_number_of_queries(
    client, staff_alice, workspace, today, contacts, url, django_assert_max_num_queries
):
    many_contacts(workspace, contacts, lambda n: [today - (n % 20) * DAY, today - (n % 7) * DAY])
    client.force_login(staff_alice)
    with django_assert_max_num_queries(12):
        response = client.get(url)
    assert response.status_code == 200 and response.context["cl"].result_list


@pytest.mark.parametrize("days", [3, 300])
def test_its_contact_page_runs_a_bounded_number_of_queries(
    client, staff_alice, workspace, today, days, django_assert_max_num_queries
):
    contact = contact_with_days(workspace, [today - n * DAY for n in range(days)])
    client.force_login(staff_alice)
    with django_assert_max_num_queries(12):
        response = client.get(f"/admin/contacts/contact/{contact.pk}/change/")
    assert response.status_code == 200
    assert Contact.objects.get(pk=contact.pk).interactions.count() == days


def test_its_date_hierarchy_offers_the_years_and_months_with_interactions(client, staff_alice, workspace):
    today = workspace.today()
    last_year = today.replace(year=today.year - 1, month=3, day=10)
    contact_with_days(workspace, [today, last_year])
    client.force_login(staff_alice)

    years = client.get("/admin/contacts/interaction/").content.decode()
    months = client.get(f"/admin/contacts/interaction/?day__year={last_year.year}").content.decode()

    assert f"?day__year={last_year.year}" in years and f"?day__year={today.year}" in years
    assert f"?day__month=3&amp;day__year={last_year.year}" in months
    assert f"day__month=4&amp;day__year={last_year.year}" not in months
