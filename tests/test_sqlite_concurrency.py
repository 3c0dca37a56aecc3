"""SQLite, the default database, under several gunicorn workers writing at once: every
post succeeds, none answers "database is locked", and every row is stored."""

import sqlite3
import threading
from collections import Counter

from tests.segment_messages import identify
from tests.servers import free_port, gunicorn, post, sqlite_site

PORT = free_port()
THREADS = 12
POSTS_PER_THREAD = 20


def messages_for(thread):
    """A mix that makes writers collide: everyone writes Jane's same day, and each thread
    also writes its own contact on days of its own."""
    out = []
    for n in range(POSTS_PER_THREAD):
        if n % 2 == 0:
            out.append(identify("jane@example.com", f"2024-06-01T09:{thread:02d}:{n:02d}Z"))
        else:
            out.append(identify(f"t{thread}@example.com", f"2024-05-{1 + n:02d}T10:00:00Z"))
    return out


def test_concurrent_posts_from_several_workers_all_succeed_and_are_all_stored(tmp_path):
    env, key = sqlite_site(tmp_path)
    answers = []
    lock = threading.Lock()

    with gunicorn(port=PORT, env={**env, "GUNICORN_CMD_ARGS": "--threads 4"}, workers=3):
        start = threading.Barrier(THREADS)

        def sender(thread):
            start.wait()
            for message in messages_for(thread):
                answer = post(PORT, key, message)
                with lock:
                    answers.append(answer)

        threads = [threading.Thread(target=sender, args=(t,)) for t in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

    assert len(answers) == THREADS * POSTS_PER_THREAD
    assert not [a.body for a in answers if b"locked" in a.body.lower()]
    assert Counter(a.status for a in answers) == {200: THREADS * POSTS_PER_THREAD}

    db = sqlite3.connect(tmp_path / "natsite.sqlite3")
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
