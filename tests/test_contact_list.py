"""/contacts/: search, level filter, sorts, pagination, CSV export, scoping, escaping
and a bounded number of queries."""

import csv
import datetime as dt
import io

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from contacts import closeness
from contacts.models import Contact, ContactSearch
from contacts.views import CONTACTS_PER_PAGE
from tests.factories import ContactFactory, contact_with_days, many_contacts

DAY = dt.timedelta(days=1)


@pytest.fixture
def today(workspace):
    return workspace.today()


@pytest.fixture
def cast(workspace, today):
    """Four contacts at four levels, with distinct last interactions."""
    return {
        "close": contact_with_days(
            workspace, [today - n * DAY for n in range(14)], email="carl@close.test", name="Carl Close"
        ),
        "warm": contact_with_days(
            workspace, [today - n * DAY for n in range(2, 58, 7)], email="wanda@warm.test", name="Wanda Warm"
        ),
        "cold": contact_with_days(workspace, [today - 60 * DAY], email="colin@cold.test", name="Colin Cold"),
        "none": ContactFactory(workspace=workspace, email="nora@none.test", name="Nora None"),
    }


def emails(response):
    return [c.email for c in response.context["page"].object_list]


def read_csv(response):
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_it_requires_login(client, db):
    response = client.get("/contacts/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_it_sorts_by_closeness_by_default_with_no_interaction_last(client, alice, cast):
    client.force_login(alice)
    assert emails(client.get("/contacts/")) == [
        "carl@close.test",
        "wanda@warm.test",
        "colin@cold.test",
        "nora@none.test",
    ]


def test_it_sorts_by_last_interaction_and_by_email(client, alice, cast):
    client.force_login(alice)
    assert emails(client.get("/contacts/?sort=last")) == [
        "carl@close.test",
        "wanda@warm.test",
        "colin@cold.test",
        "nora@none.test",
    ]
    assert emails(client.get("/contacts/?sort=email")) == sorted(c.email for c in cast.values())


def test_it_searches_by_email_or_name_ignoring_case(client, alice, cast):
    client.force_login(alice)
    assert emails(client.get("/contacts/?q=WARM.test")) == ["wanda@warm.test"]
    assert emails(client.get("/contacts/?q=colin c")) == ["colin@cold.test"]
    assert emails(client.get("/contacts/?q=nobody")) == []
    assert b"No contact matches" in client.get("/contacts/?q=nobody").content


@pytest.mark.postgres
def test_its_search_is_answered_from_the_trigram_indexes(client, alice, workspace, cast):
    """The very query the page sends for ?q= uses the pg_trgm indexes of the search table
    (migration contacts/0007) once the workspace is large enough for an index to pay."""
    table = Contact._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {table} (workspace_id, email, name, user_id, traits, trait_times, created_at)
            SELECT %s, 'filler' || i || '@example.test', 'Filler ' || i, '', '{{}}', '{{}}', now()
            FROM generate_series(1, 20000) AS i""",
            [workspace.pk],
        )
        # What autovacuum does after a load: GIN's pending entries merged, statistics taken.
        for index in ("contact_search_email_trgm_idx", "contact_search_name_trgm_idx"):
            cursor.execute("SELECT gin_clean_pending_list(%s::regclass)", [index])
        cursor.execute(f"ANALYZE {table}")
        cursor.execute(f"ANALYZE {ContactSearch._meta.db_table}")
    client.force_login(alice)
    with CaptureQueriesContext(connection) as captured:
        assert emails(client.get("/contacts/?q=WARM.test")) == ["wanda@warm.test"]
    search = [q["sql"] for q in captured.captured_queries if "LIKE" in q["sql"] and "ORDER BY" in q["sql"]]
    assert len(search) == 1

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + search[0])
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "Seq Scan" not in plan
    assert "contact_search_email_trgm_idx" in plan and "contact_search_name_trgm_idx" in plan


@pytest.mark.parametrize("level", ["close", "warm", "cold", "none"])
def test_it_filters_by_level(client, alice, cast, level):
    client.force_login(alice)
    response = client.get(f"/contacts/?level={level}")
    assert emails(response) == [cast[level].email]
    assert f'<option value="{level}" selected>' in response.content.decode()


def test_it_shows_each_contacts_level_and_score_as_the_formula_gives(client, alice, cast, today):
    client.force_login(alice)
    html = client.get("/contacts/").content.decode()
    for contact in cast.values():
        days = list(contact.interactions.values_list("day", flat=True))
        s = sum(2 ** (-(today - d).days / 14) for d in days)
        level = "none" if not days else "close" if s >= 6 else "warm" if s >= 2 else "cool" if s >= 0.5 else "cold"
        score = round(100 * (1 - 2 ** (-s / 4)))
        assert f'<span class="badge level-{level}" title="Closeness {score}/100 ({level})">' in html


def test_it_ignores_unknown_filters_and_sorts(client, alice, cast):
    client.force_login(alice)
    response = client.get("/contacts/?level=<b>&sort=;drop&page=zzz")
    assert response.status_code == 200
    assert len(emails(response)) == 4


def test_it_paginates(client, alice, workspace):
    ContactFactory.create_batch(CONTACTS_PER_PAGE + 3, workspace=workspace)
    client.force_login(alice)

    first = client.get("/contacts/?sort=email")
    second = client.get("/contacts/?sort=email&page=2")

    assert len(emails(first)) == CONTACTS_PER_PAGE
    assert len(emails(second)) == 3
    assert set(emails(first)).isdisjoint(emails(second))
    assert 'href="?sort=email&amp;page=2" rel="next"' in first.content.decode()


def test_it_shows_only_the_users_workspace(client, charlie, cast, other_workspace):
    ContactFactory(workspace=other_workspace, email="gus@globex.test")
    client.force_login(charlie)
    response = client.get("/contacts/")
    assert emails(response) == ["gus@globex.test"]
    assert b"carl@close.test" not in response.content


def test_it_points_an_empty_workspace_to_the_segment_set_up(client, alice):
    client.force_login(alice)
    response = client.get("/contacts/")
    assert b"No contacts yet" in response.content and b'href="/settings/api-keys/"' in response.content


def test_it_escapes_names_and_emails(client, alice, workspace, today):
    contact_with_days(workspace, [today], name="<script>alert('n')</script>", email="x<img src=x>@evil.test")
    client.force_login(alice)
    html = client.get("/contacts/?q=<script>").content.decode()
    assert "<script>alert" not in html and "<img src=x>" not in html
    assert "&lt;script&gt;alert(&#x27;n&#x27;)&lt;/script&gt;" in html


def test_it_exports_what_is_shown_as_csv(client, alice, cast, today):
    client.force_login(alice)
    response = client.get("/contacts/export.csv?level=warm")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = read_csv(response)
    warm = cast["warm"]
    expected = closeness.Closeness.from_log(warm.closeness_log, today)
    assert rows == [
        {
            "email": "wanda@warm.test",
            "name": "Wanda Warm",
            "level": "warm",
            "score": str(expected.score),
            "last_interaction_day": warm.last_interaction_day.isoformat(),
            "first_seen_at": str(warm.first_seen_at),
            "user_id": "",
        }
    ]


def test_its_csv_export_keeps_the_search_and_sort_across_all_pages(client, alice, workspace):
    ContactFactory.create_batch(CONTACTS_PER_PAGE + 5, workspace=workspace)
    ContactFactory(workspace=workspace, email="zed@other.test")
    client.force_login(alice)

    rows = read_csv(client.get("/contacts/export.csv?q=example.com&sort=email"))

    assert len(rows) == CONTACTS_PER_PAGE + 5
    assert [r["email"] for r in rows] == sorted(r["email"] for r in rows)


def test_its_csv_export_neutralizes_spreadsheet_formulas(client, alice, workspace, today):
    contact_with_days(workspace, [today], name="=HYPERLINK(\"http://evil\")", email="f@formula.test")
    client.force_login(alice)
    rows = read_csv(client.get("/contacts/export.csv"))
    assert rows[0]["name"] == "'=HYPERLINK(\"http://evil\")"


def test_its_csv_export_is_scoped_to_the_users_workspace(client, charlie, cast):
    client.force_login(charlie)
    assert read_csv(client.get("/contacts/export.csv")) == []


def _fill(workspace, today, contacts):
    many_contacts(workspace, contacts, lambda n: [today - (n % 90) * DAY, today - (n % 13 + 20) * DAY])


@pytest.mark.parametrize("contacts", [3, 300])
@pytest.mark.parametrize("query", ["", "?level=cool", "?sort=last&q=example", "?sort=email&page=2"])
def test_it_runs_a_bounded_number_of_queries(
    client, alice, workspace, today, contacts, query, django_assert_max_num_queries
):
    _fill(workspace, today, contacts)
    client.force_login(alice)
    with django_assert_max_num_queries(7):
        response = client.get(f"/contacts/{query}")
    assert response.status_code == 200


@pytest.mark.parametrize("contacts", [3, 300])
def test_its_csv_export_runs_a_bounded_number_of_queries(
    client, alice, workspace, today, contacts, django_assert_max_num_queries
):
    _fill(workspace, today, contacts)
    client.force_login(alice)
    with django_assert_max_num_queries(7):
        rows = read_csv(client.get("/contacts/export.csv"))
    assert len(rows) == contacts


def test_it_stops_counting_at_the_cap_and_says_so(client, alice, workspace, monkeypatch):
    from contacts.pagination import CappedPaginator

    monkeypatch.setattr(CappedPaginator, "COUNT_CAP", CONTACTS_PER_PAGE + 2)
    ContactFactory.create_batch(CONTACTS_PER_PAGE + 5, workspace=workspace)
    client.force_login(alice)

    response = client.get("/contacts/")

    html = response.content.decode()
    assert f"{CONTACTS_PER_PAGE + 2}+ contacts" in html
    assert "Page 1 of 2+" in html
    assert len(emails(response)) == CONTACTS_PER_PAGE
