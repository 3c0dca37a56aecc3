"""natsite.db.analyze_if_grown, and import_events keeping the contacts' statistics up
with a first import (PostgreSQL: SQLite plans without them)."""

import io
import json

import pytest
from django.core.management import call_command
from django.db import connection

from contacts.models import Contact
from natsite.db import ANALYZE_GROWTH, analyze_if_grown
from tests.segment_messages import identify

pytestmark = pytest.mark.django_db


def planner_view():
    """(pages, rows) of the contacts table as the planner last learned them (rows -1: never)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT relpages, reltuples FROM pg_class WHERE oid = 'contacts_contact'::regclass")
        return cursor.fetchone()


def pages_now():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size('contacts_contact') / current_setting('block_size')::int")
        return cursor.fetchone()[0]


@pytest.fixture
def empty_contacts_table():
    """A contacts table that is empty and never analyzed, as before a first import. Inside
    the test's transaction: rolled back with it."""
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE contacts_contact CASCADE")
    assert planner_view() == (0, -1)


def add_contacts(workspace, start, count):
    Contact.objects.bulk_create(
        Contact(workspace=workspace, email=f"c{n}@example.com", traits={"plan": "pro", "note": "x" * 200})
        for n in range(start, start + count)
    )


@pytest.mark.postgres
def test_a_table_is_analyzed_once_it_outgrows_its_statistics_and_not_before(workspace, empty_contacts_table):
    add_contacts(workspace, 0, 2000)

    assert analyze_if_grown(Contact, ["workspace", "email"])
    pages, rows = planner_view()
    assert pages == pages_now() > 0
    assert rows == 2000

    # Grown, but not past ANALYZE_GROWTH times what was analyzed: left as it is.
    add_contacts(workspace, 2000, 500)
    assert pages_now() <= ANALYZE_GROWTH * pages
    assert not analyze_if_grown(Contact, ["workspace", "email"])
    assert planner_view() == (pages, 2000)

    add_contacts(workspace, 2500, 4000)
    assert pages_now() > ANALYZE_GROWTH * pages
    assert analyze_if_grown(Contact, ["workspace", "email"])
    assert planner_view() == (pages_now(), 6500)


@pytest.mark.postgres
def test_a_table_too_small_to_matter_is_not_analyzed(workspace, empty_contacts_table):
    add_contacts(workspace, 0, 3)

    assert not analyze_if_grown(Contact, ["workspace", "email"])
    assert planner_view() == (0, -1)


def test_nothing_is_analyzed_on_sqlite(workspace):
    if connection.vendor != "sqlite":
        pytest.skip("the SQLite case")
    add_contacts(workspace, 0, 2000)

    assert not analyze_if_grown(Contact, ["workspace", "email"])


@pytest.mark.postgres
def test_a_first_import_leaves_the_planner_knowing_how_many_contacts_there_are(
    tmp_path, workspace, empty_contacts_table
):
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(identify(f"c{n}@example.com")) + "\n" for n in range(2500)))

    call_command("import_events", str(path), "--workspace", workspace.slug, "--no-progress", stdout=io.StringIO())

    # The transaction that filled the table is still open, so autovacuum cannot have
    # analyzed it: only the import did, after a chunk of 1,000 at least, and last when the
    # table had not yet grown ANALYZE_GROWTH times again.
    pages, rows = planner_view()
    assert rows >= 1000
    assert pages_now() <= ANALYZE_GROWTH * pages
    assert Contact.objects.filter(workspace=workspace).count() == 2500
