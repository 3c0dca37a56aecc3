"""Concurrent deliveries on PostgreSQL: what Segment's parallel retries do to one contact.
Threads post through the webhook at the same moment, each on its own connection."""

import base64
import datetime as dt
import json
import threading
import time

import pytest
from django.db import connection, transaction
from django.test import Client

from contacts import closeness
from contacts.models import Contact, Interaction, Workspace
from ingest.models import ProcessedMessage
from ingest.services import ingest_messages
from tests.factories import WorkspaceFactory, api_key_for
from tests.segment_messages import identify

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 20


@pytest.fixture(autouse=True)
def _no_rate_limit(settings):
    settings.INGEST_RATE_LIMIT = 0


@pytest.fixture
def key():
    return api_key_for(WorkspaceFactory(slug="race"))


def post_all_at_once(key, messages):
    """Post each message from its own thread, all released together; the answers in order."""
    start = threading.Barrier(len(messages))
    answers = [None] * len(messages)
    token = base64.b64encode(f"{key}:".encode()).decode()

    def deliver(i, message):
        client = Client()
        try:
            start.wait()
            response = client.generic(
                "POST", "/ingest/segment", json.dumps(message), content_type="application/json",
                HTTP_AUTHORIZATION=f"Basic {token}",
            )
            answers[i] = (response.status_code, response.json())
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver, args=(i, m)) for i, m in enumerate(messages)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def test_twenty_messages_of_one_contact_and_day_at_once_make_one_interaction(key):
    messages = [identify("jane@example.com", f"2024-06-01T09:00:{i:02d}Z") for i in range(THREADS)]
    answers = post_all_at_once(key, messages)
    assert all(status == 200 for status, _ in answers), answers
    assert sorted(body["status"] for _, body in answers) == ["created"] + ["merged"] * (THREADS - 1)
    row = Interaction.objects.get()
    assert row.event_count == THREADS
    assert row.occurred_at == dt.datetime(2024, 6, 1, 9, 0, 0, tzinfo=dt.timezone.utc)
    assert row.last_occurred_at == dt.datetime(2024, 6, 1, 9, 0, THREADS - 1, tzinfo=dt.timezone.utc)
    assert Contact.objects.count() == 1


def test_twenty_new_days_of_one_contact_at_once_keep_closeness_exact(key):
    days = [dt.date(2024, 6, 1) - dt.timedelta(days=3 * i) for i in range(THREADS)]
    answers = post_all_at_once(key, [identify("jane@example.com", f"{day}T12:00:00Z") for day in days])
    assert [body["status"] for _, body in answers] == ["created"] * THREADS
    contact = Contact.objects.get()
    assert Interaction.objects.count() == THREADS
    assert contact.closeness_log == pytest.approx(closeness.log_for_days(days), abs=1e-9)
    assert contact.last_interaction_day == max(days)
    Contact.recompute_closeness([contact.pk])
    # Equal up to the order floating-point additions were made in.
    assert contact.closeness_log == pytest.approx(Contact.objects.get().closeness_log, abs=1e-9)


def test_the_same_message_id_delivered_twenty_times_at_once_is_applied_once(key):
    message = identify("jane@example.com", "2024-06-01T09:00:00Z", traits={"email": "jane@example.com", "plan": "pro"})
    answers = post_all_at_once(key, [message] * THREADS)
    assert sorted(body["status"] for _, body in answers) == ["created"] + ["duplicate"] * (THREADS - 1)
    assert Interaction.objects.get().event_count == 1
    assert ProcessedMessage.objects.count() == 1


def test_twenty_new_contacts_at_once_are_twenty_contacts(key):
    answers = post_all_at_once(key, [identify(f"p{i}@example.com") for i in range(THREADS)])
    assert [body["status"] for _, body in answers] == ["created"] * THREADS
    assert Contact.objects.count() == THREADS


def test_traits_sent_at_once_end_with_the_newest_per_key(key):
    messages = [
        identify("jane@example.com", f"2024-06-{1 + i:02d}T09:00:00Z", traits={"email": "jane@example.com", "step": i})
        for i in range(THREADS)
    ]
    post_all_at_once(key, messages)
    assert Contact.objects.get().traits["step"] == THREADS - 1


def test_concurrent_batches_over_the_same_contacts_neither_deadlock_nor_lose_events(key):
    # Each batch touches the same five contacts in its own order, on days of its own.
    people = [f"p{i}@example.com" for i in range(5)]
    batches = []
    for b in range(10):
        order = people[b % 5:] + people[: b % 5]
        if b % 2:
            order.reverse()
        batches.append([identify(email, f"2024-05-{1 + b:02d}T{9 + n:02d}:00:00Z") for n, email in enumerate(order)])
    answers = post_all_at_once(key, batches)
    assert all(status == 200 for status, _ in answers), answers
    assert sum(body["accepted"] for _, body in answers) == 50
    assert Interaction.objects.count() == 50
    for contact in Contact.objects.all():
        days = list(contact.interactions.values_list("day", flat=True))
        assert len(days) == 10
        assert contact.closeness_log == pytest.approx(closeness.log_for_days(days), abs=1e-9)


def wait_for_a_lock_wait(seconds=20):
    """Until another backend of this database waits for a lock (a row or a transaction)."""
    deadline = time.monotonic() + seconds
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return True
            time.sleep(0.02)
    return False


def test_a_contact_created_meanwhile_by_a_concurrent_chunk_is_locked_and_merged_into(key):
    workspace = Workspace.objects.get(slug="race")
    first_recorded, may_commit = threading.Event(), threading.Event()
    answers = {}

    def first():
        # Creates jane and keeps its transaction open, as a long batch would.
        try:
            with transaction.atomic():
                answers["first"] = ingest_messages(
                    workspace=workspace, raw_messages=[identify("jane@example.com", "2024-06-01T09:00:00Z")]
                )
                first_recorded.set()
                may_commit.wait(30)
        finally:
            connection.close()

    def second():
        # A batch that does not see the uncommitted jane, so inserts her too: that insert
        # waits for the first transaction, finds her there once it commits, and the batch
        # then locks her and merges its message into her.
        try:
            answers["second"] = ingest_messages(workspace=workspace, raw_messages=[
                identify("jane@example.com", "2024-06-03T09:00:00Z"),
                identify("joe@example.com", "2024-06-03T10:00:00Z"),
            ])
        finally:
            connection.close()

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert first_recorded.wait(30)
    threads.append(threading.Thread(target=second))
    threads[1].start()
    assert wait_for_a_lock_wait(), "the batch's insert of jane should wait for the first transaction"
    may_commit.set()
    for thread in threads:
        thread.join(timeout=60)

    assert [r.status for r in answers["first"]] == ["created"]
    assert [r.status for r in answers["second"]] == ["created", "created"]
    assert Contact.objects.get(email="joe@example.com").last_interaction_day == dt.date(2024, 6, 3)
    contact = Contact.objects.get(email="jane@example.com")
    days = [dt.date(2024, 6, 1), dt.date(2024, 6, 3)]
    assert sorted(contact.interactions.values_list("day", flat=True)) == days
    assert contact.closeness_log == pytest.approx(closeness.log_for_days(days), abs=1e-9)
    assert contact.last_interaction_day == days[1]
    assert contact.first_seen_at == dt.datetime(2024, 6, 1, 9, tzinfo=dt.timezone.utc)
