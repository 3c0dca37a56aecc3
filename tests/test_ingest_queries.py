"""The write path sends a small fixed number of SQL statements: per message for a
single identify, per chunk (not per message) for a batch."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from contacts.models import Contact, Interaction
from ingest.services import ingest_messages
from tests.segment_messages import identify

pytestmark = pytest.mark.django_db


def single_statements() -> int:
    """Statements for a single message that creates a day. On PostgreSQL: claim the
    messageId, create or lock the contact and add the interaction (one data-modifying
    WITH), then write the contact. SQLite cannot put an INSERT in a WITH clause: claim,
    contact upsert, interaction upsert and contact write are four statements."""
    return 2 if connection.vendor == "postgresql" else 4


def new_batch_statements() -> int:
    """Statements for a batch whose contacts are all new: claim the messageIds and find the
    contacts that exist (on SQLite: lock them), then insert the new contacts whole with
    their interactions. One statement each on PostgreSQL, two each on SQLite. No contact
    write follows."""
    return 2 if connection.vendor == "postgresql" else 4


def known_batch_statements() -> int:
    """Statements for a batch whose contacts all exist. On PostgreSQL: claim and find, then
    lock the contacts and add the interactions, then write the contacts. On SQLite: claim,
    lock, add the interactions, write."""
    return 3 if connection.vendor == "postgresql" else 4


def mixed_batch_statements() -> int:
    """Statements for a batch of new and existing contacts, the most a chunk takes: on
    PostgreSQL the new contacts inserted and the known ones locked in one pass in email
    order, then the known ones read with their interactions added, a statement more."""
    return 4 if connection.vendor == "postgresql" else 5


def statements(context):
    """The statements the write path sent; the savepoints are the test's own
    transaction around it (in production the chunk's transaction is BEGIN/COMMIT)."""
    return [q["sql"] for q in context.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]


def record(workspace, messages):
    with CaptureQueriesContext(connection) as context:
        results = ingest_messages(workspace=workspace, raw_messages=messages)
    return results, statements(context)


def many(count, start=dt.datetime(2024, 1, 1, 9, tzinfo=dt.timezone.utc)):
    """`count` messages, each from its own contact on its own day."""
    return [
        identify(f"person{i}@example.com", (start + dt.timedelta(days=i % 365, minutes=i)).isoformat(),
                 traits={"email": f"person{i}@example.com", "plan": "pro"})
        for i in range(count)
    ]


def test_a_message_that_creates_a_new_day_takes_two_or_four_statements(workspace):
    results, sql = record(workspace, [identify("jane@example.com", "2024-06-01T09:00:00Z")])

    assert [r.status for r in results] == ["created"]
    # claim the messageId, upsert (lock) the contact, upsert the interaction; write the contact
    assert len(sql) == single_statements(), sql


def test_a_new_day_of_a_known_contact_takes_as_many(workspace):
    record(workspace, [identify("jane@example.com", "2024-06-01T09:00:00Z")])

    results, sql = record(workspace, [identify("jane@example.com", "2024-06-02T09:00:00Z")])

    assert [r.status for r in results] == ["created"]
    assert len(sql) == single_statements(), sql
    assert Contact.objects.get().last_interaction_day == dt.date(2024, 6, 2)


def test_a_message_that_merges_into_its_day_takes_no_more_statements(workspace):
    record(workspace, [identify("jane@example.com", "2024-06-01T09:00:00Z")])

    results, sql = record(workspace, [identify("jane@example.com", "2024-06-01T15:00:00Z")])

    assert [r.status for r in results] == ["merged"]
    assert len(sql) <= single_statements(), sql
    assert Interaction.objects.get().event_count == 2


def test_a_merge_that_changes_nothing_on_the_contact_skips_the_contact_write(workspace):
    first = identify("jane@example.com", "2024-06-01T09:00:00Z")
    record(workspace, [first])

    # Another message of the same moment with the same traits: nothing on the contact moves.
    again = identify("jane@example.com", "2024-06-01T09:00:00Z")
    results, sql = record(workspace, [again])

    assert [r.status for r in results] == ["merged"]
    assert len(sql) == single_statements() - 1, sql


def test_a_duplicate_takes_one_statement(workspace):
    message = identify("jane@example.com", "2024-06-01T09:00:00Z")
    record(workspace, [message])

    results, sql = record(workspace, [message])

    assert [r.status for r in results] == ["duplicate"]
    assert len(sql) == 1, sql


@pytest.mark.parametrize("count", [100, 1000])
def test_a_batch_takes_the_same_statements_as_one_message_whatever_its_size(workspace, count):
    results, sql = record(workspace, many(count))

    assert [r.status for r in results] == ["created"] * count
    assert len(sql) == new_batch_statements(), [s[:80] for s in sql]
    assert not [s for s in sql if s.startswith("UPDATE")], "a batch's new contacts are written once"
    assert Interaction.objects.filter(workspace=workspace).count() == count
    contact = Contact.objects.get(email="person7@example.com")
    assert contact.traits == {"email": "person7@example.com", "plan": "pro"}
    assert contact.last_interaction_day == dt.date(2024, 1, 8) and contact.closeness_log is not None


def test_a_batch_of_known_contacts_takes_a_fixed_number_of_statements(workspace):
    record(workspace, many(50))
    later = [
        identify(f"person{i}@example.com", f"2025-03-{1 + i % 28:02d}T10:00:00Z",
                 traits={"email": f"person{i}@example.com", "plan": "team"})
        for i in range(50)
    ]

    results, sql = record(workspace, later)

    assert [r.status for r in results] == ["created"] * 50
    assert len(sql) == known_batch_statements(), [s[:80] for s in sql]
    assert set(Contact.objects.values_list("traits__plan", flat=True)) == {"team"}
    assert Interaction.objects.filter(workspace=workspace).count() == 100


def test_a_batch_of_new_and_known_contacts_takes_a_fixed_number_of_statements(workspace):
    record(workspace, many(50))
    later = [
        identify(f"person{i}@example.com", f"2025-03-{1 + i % 28:02d}T10:00:00Z",
                 traits={"email": f"person{i}@example.com", "plan": "team"})
        for i in range(100)  # persons 0-49 exist, 50-99 are new
    ]

    results, sql = record(workspace, later)

    assert [r.status for r in results] == ["created"] * 100
    assert len(sql) == mixed_batch_statements(), [s[:80] for s in sql]
    assert Contact.objects.filter(workspace=workspace).count() == 100
    assert set(Contact.objects.values_list("traits__plan", flat=True)) == {"team"}


@pytest.mark.parametrize("count", [2, 4])
def test_a_batch_of_a_handful_takes_the_single_statement_per_message_on_postgresql(workspace, count):
    # At most FEW_MESSAGES: each message's claim-and-upsert, then one write of the contacts.
    results, sql = record(workspace, many(count))

    assert [r.status for r in results] == ["created"] * count
    if connection.vendor == "postgresql":
        assert len(sql) == count + 1, [s[:80] for s in sql]
        assert sum(s.startswith("UPDATE") for s in sql) == 1
    else:
        assert len(sql) == new_batch_statements(), [s[:80] for s in sql]
    assert Interaction.objects.filter(workspace=workspace).count() == count


def test_a_batch_of_duplicates_takes_one_statement(workspace):
    messages = many(100)
    record(workspace, messages)

    results, sql = record(workspace, messages)

    assert {r.status for r in results} == {"duplicate"}
    assert len(sql) == 1


def test_a_batch_larger_than_a_chunk_takes_its_statements_per_chunk(workspace, monkeypatch):
    monkeypatch.setattr("ingest.services.CHUNK_MESSAGES", 40)

    results, sql = record(workspace, many(100))

    assert [r.status for r in results] == ["created"] * 100
    assert len(sql) == new_batch_statements() * 3  # chunks of 40, 40 and 20


def test_the_webhook_answers_one_new_day_with_the_key_look_up_and_the_write_statements(webhook):
    webhook.post(identify("warm-up@example.com"))  # the key's last_used_at is written once a minute

    with CaptureQueriesContext(connection) as context:
        response = webhook.post(identify("jane@example.com", "2024-06-01T09:00:00Z"))

    assert response.status_code == 200 and response.json()["status"] == "created"
    # the API key (with its workspace), then the statements of the write path
    assert len(statements(context)) == 1 + single_statements(), statements(context)


@pytest.mark.postgres
def test_a_batch_plans_its_contact_look_up_each_time_and_single_messages_stay_prepared(workspace):
    # A prepared statement's generic plan is made once, from the table sizes of that moment:
    # made while a workspace has a handful of contacts, a batch's look-up of contacts by
    # email would go on walking all of them after an import of thousands. A single
    # message's contact is found through its upsert's conflict, the unique index's probe.
    for i in range(8):
        record(workspace, [identify(f"person{i % 3}@example.com", f"2024-06-{1 + i:02d}T09:00:00Z")])
        record(workspace, many(3 + i))

    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE from_sql = false")
        prepared = [row[0] for row in cursor.fetchall()]
    assert not [sql for sql in prepared if "FOR NO KEY UPDATE" in sql]
    assert [sql for sql in prepared if "ON CONFLICT (workspace_id, email) DO UPDATE" in sql]
    assert [sql for sql in prepared if sql.startswith('UPDATE "contacts_contact"')]
