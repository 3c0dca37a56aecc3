"""SQLite, the default database, under several gunicorn workers writing at once: every
post succeeds, none answers "database is locked", and every row is stored."""

import sqlite3
import threading
from collections import Counter

import pytest

from tests.gunicorn_server import gunicorn, manage, post, server_env
from tests.segment_messages import identify

PORT = 8101
THREADS = 12
POSTS_PER_THREAD = 20


@pytest.fixture
def sqlite_site(tmp_path):
    database = tmp_path / "natsite.sqlite3"
    env = server_env(f"sqlite:///{database}")
    manage(env, "migrate", "--noinput", "-v", "0")
    key = manage(env, "createworkspace", "Acme", "--timezone", "UTC").rstrip("\n").splitlines()[-1]
    return env, key, database


def messages_for(thread):
    """A mix that makes writers collide: everyone writes Jane's same day, and each thread
    also writes its own contacts and days."""
    out = []
    for n in range(POSTS_PER_THREAD):
        if n % 2 == 0:
            out.append(identify("jane@example.com", f"2024-06-01T09:{thread:02d}:{n:02d}Z"))
        else:
            out.append(identify(f"t{thread}@example.com", f"2024-05-{1 + n:02d}T10:00:00Z"))
    return out


def test_concurrent_posts_from_several_workers_all_succeed_and_are_all_stored(sqlite_site):
    env, key, database = sqlite_site
    answers = []
    lock = threading.Lock()

    with gunicorn(env, PORT, workers=3, threads=4) as url:
        start = threading.Barrier(THREADS)

        def sender(thread):
            start.wait()
            for message in messages_for(thread):
                answer = post(url, key, message)
                with lock:
                    answers.append(answer)

        threads = [threading.Thread(target=sender, args=(t,)) for t in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

    assert len(answers) == THREADS * POSTS_PER_THREAD
    assert not [body for _, _, body in answers if "locked" in str(body).lower()]
    assert Counter(status for status, _, _ in answers) == {200: THREADS * POSTS_PER_THREAD}

    db = sqlite3.connect(database)
    jane_events = db.execute(
        "SELECT i.event_count FROM contacts_interaction i JOIN contacts_contact c ON c.id = i.contact_id"
        " WHERE c.email = 'jane@example.com'"
    ).fetchall()
    assert jane_events == [(THREADS * POSTS_PER_THREAD // 2,)]
    assert db.execute("SELECT COUNT(*) FROM contacts_contact").fetchone() == (THREADS + 1,)
    assert db.execute("SELECT COUNT(*) FROM contacts_interaction").fetchone() == (1 + THREADS * POSTS_PER_THREAD // 2,)
    assert db.execute("SELECT SUM(event_count) FROM contacts_interaction").fetchone() == (THREADS * POSTS_PER_THREAD,)
    assert db.execute("SELECT COUNT(*) FROM ingest_processedmessage").fetchone() == (THREADS * POSTS_PER_THREAD,)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()
