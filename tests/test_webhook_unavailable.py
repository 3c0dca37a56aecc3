"""When the database cannot serve, the webhook answers 503 with Retry-After (Segment
retries 5xx), never a 500, and stores nothing half-done."""

import socket
import sqlite3

import pytest
from django.db import connection

from contacts.models import Contact
from tests.segment_messages import identify
from tests.servers import free_port, gunicorn, post, sqlite_site

SERVER_PORT = free_port()
CLOSED_PORT = free_port()  # nothing listens there


def nothing_listens_on(port):
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def assert_retry_later(answer):
    assert answer.status == 503, answer.body
    assert int(answer.headers["retry-after"]) > 0
    assert answer.json()["message"]


def test_with_postgresql_out_of_reach_every_post_is_503_with_retry_after():
    assert nothing_listens_on(CLOSED_PORT)
    env = {"DATABASE_URL": f"postgres://postgres@127.0.0.1:{CLOSED_PORT}/natsite"}
    with gunicorn(port=SERVER_PORT, env=env, workers=1):
        assert_retry_later(post(SERVER_PORT, "nat_" + "x" * 43, identify()))
        assert_retry_later(post(SERVER_PORT, "nat_" + "x" * 43, [identify(), identify()]))


def test_with_the_sqlite_file_locked_too_long_the_post_is_503_then_succeeds_on_retry(tmp_path):
    env, key = sqlite_site(tmp_path, SQLITE_BUSY_TIMEOUT=1)
    database = tmp_path / "natsite.sqlite3"
    message = identify("jane@example.com", "2024-06-01T09:00:00Z")

    with gunicorn(port=SERVER_PORT, env=env, workers=1):
        holder = sqlite3.connect(database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer that does not let go
        try:
            assert_retry_later(post(SERVER_PORT, key, message))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        retried = post(SERVER_PORT, key, message)  # Segment's retry

    assert (retried.status, retried.json()["status"]) == (200, "created")
    db = sqlite3.connect(database)
    assert db.execute("SELECT event_count FROM contacts_interaction").fetchall() == [(1,)]
    db.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_when_the_database_connection_is_lost_the_webhook_answers_503_and_recovers(webhook):
    assert nothing_listens_on(CLOSED_PORT)
    real_port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(CLOSED_PORT)
    try:
        response = webhook.post(identify())
        assert response.status_code == 503
        assert int(response["Retry-After"]) > 0
        assert response.json()["message"]
    finally:
        connection.close()
        connection.settings_dict["PORT"] = real_port
    assert not Contact.objects.exists()
    assert webhook.post(identify()).json()["status"] == "created"
