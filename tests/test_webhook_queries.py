"""The single-message path of the webhook runs a bounded number of SQL statements,
whatever the size of the workspace."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import ContactFactory, InteractionFactory
from tests.segment_messages import identify

pytestmark = pytest.mark.django_db

# One identify through the webhook, counted from the request in:
#   1 find the API key by its prefix (with its workspace)
#   1 mark the key as used (at most once a minute; counted here since it is a fresh key)
#   1 claim the messageId, upsert and lock the contact, add to the day's interaction or
#     create it: one statement on PostgreSQL (a data-modifying WITH); three on SQLite
#   1 write the contact's traits, first seen, last day and closeness_log
#   2 SAVEPOINT / RELEASE around the message (BEGIN / COMMIT in production)
# = 6 on PostgreSQL, 8 on SQLite, at most; nothing depends on how many contacts or
# interactions the workspace has.
def max_queries() -> int:
    return 6 if connection.vendor == "postgresql" else 8


def print_queries(context):
    return "\n".join(q["sql"][:160] for q in context.captured_queries)


@pytest.fixture
def crowded(workspace):
    """A workspace that already has many contacts and a long timeline for Jane."""
    for i in range(30):
        ContactFactory(workspace=workspace, email=f"someone{i}@example.com")
    jane = ContactFactory(workspace=workspace, email="jane@example.com")
    for day in range(1, 29):
        InteractionFactory(contact=jane, day=dt.date(2024, 5, day))
    return workspace


@pytest.mark.parametrize(
    "email, timestamp, status",
    [
        ("new@example.com", "2024-06-01T09:00:00Z", "created"),
        ("jane@example.com", "2024-06-01T09:00:00Z", "created"),
        ("jane@example.com", "2024-05-03T09:00:00Z", "merged"),
    ],
)
def test_one_message_takes_a_bounded_number_of_queries(webhook, crowded, django_assert_max_num_queries, email, timestamp, status):
    message = identify(email, timestamp, traits={"email": email, "plan": "pro", "firstName": "Jane"})
    with django_assert_max_num_queries(max_queries()):
        response = webhook.post(message)
    assert response.json()["status"] == status


def test_a_duplicate_takes_fewer_queries_than_a_new_message(webhook, crowded):
    message = identify()
    with CaptureQueriesContext(connection) as first:
        webhook.post(message)
    with CaptureQueriesContext(connection) as again:
        assert webhook.post(message).json()["status"] == "duplicate"
    assert len(again) < len(first), print_queries(again)
