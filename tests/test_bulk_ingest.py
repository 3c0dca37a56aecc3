"""Recording a list of messages in bulk leaves the database exactly as recording them
one at a time does, for messy shuffled batches: duplicates (also within the batch),
same-day bursts, ties, days out of order, Engage syncs, deletes and invalid messages.
And concurrent batches touching the same contacts keep closeness exact."""

import datetime as dt
import random
import threading
import time

import pytest
from django.db import connection

from contacts import closeness
from contacts.models import Contact, Interaction
from ingest.models import ProcessedMessage
from ingest import services
from ingest.services import FEW_MESSAGES, ingest_messages
from tests.factories import WorkspaceFactory

PEOPLE = [f"person{i}@example.com" for i in range(8)]
START = dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)
PAGES = ["https://example.com/pricing", "https://example.com/docs", "Signed up", "", "javascript:alert(1)"]


def messy_batch(seed: int, size: int = 240) -> list:
    """A shuffled batch of identifies over a few people and days, with every kind of mess."""
    rng = random.Random(seed)
    messages = []
    for n in range(size):
        person = rng.randrange(len(PEOPLE))
        # Bursts: many messages share a few days and hours; some share the exact second.
        moment = START + dt.timedelta(days=rng.randrange(12), hours=rng.choice([0, 3, 23]), minutes=rng.randrange(3))
        message = {
            "type": "identify",
            "messageId": f"m-{seed}-{n}",
            "userId": f"user-{person}",
            "timestamp": moment.isoformat().replace("+00:00", rng.choice(["Z", "+00:00"])),
            "traits": {"email": PEOPLE[person], "plan": rng.choice(["free", "pro", "team"]), "seen": n % 5},
        }
        page = rng.choice(PAGES)
        if page:
            message["context"] = {"page": {"url": page}}
        if rng.random() < 0.2:
            message["traits"][rng.choice(["firstName", "first_name"])] = rng.choice(["Ann", "Bo", "Cy"])
        if rng.random() < 0.1:  # an Engage audience sync: traits only
            message["context"] = {"personas": {"computation_key": "vip"}}
            message["traits"]["vip"] = True
        messages.append(message)
    # Segment's retries: copies of earlier messages, some in the same batch.
    messages += [dict(rng.choice(messages)) for _ in range(size // 8)]
    # A user-deletion request by userId, one by email, and one for nobody.
    messages += [
        {"type": "delete", "userId": "user-1", "messageId": f"d-{seed}-1", "context": []},
        {"type": "delete", "userId": "nobody", "traits": {"email": PEOPLE[2]}, "messageId": f"d-{seed}-2"},
        {"type": "delete", "userId": "user-404", "messageId": f"d-{seed}-3"},
    ]
    # Invalid messages: each is rejected alone.
    messages += [
        {"type": "identify", "messageId": f"x-{seed}-1", "timestamp": "2024-03-02T00:00:00Z"},
        {"type": "identify", "messageId": f"x-{seed}-2", "traits": {"email": "a@example.com"}, "timestamp": "soon"},
        {"type": "track", "messageId": f"x-{seed}-3", "event": "Clicked"},
        {"messageId": f"x-{seed}-4", "traits": {"email": "b@example.com"}},
        "not an object",
    ]
    rng.shuffle(messages)
    return messages


def snapshot(workspace) -> dict:
    """Every row the write path owns for the workspace, comparable across workspaces."""
    contacts = {
        c.email: (
            c.name, c.user_id, c.traits, c.trait_times, c.first_seen_at, c.last_interaction_day,
            c.closeness_log, c.last_interaction_log_strength,
        )
        for c in Contact.objects.filter(workspace=workspace)
    }
    interactions = sorted(
        Interaction.objects.filter(workspace=workspace).values_list(
            "contact__email", "day", "occurred_at", "last_occurred_at", "description", "url", "event_count"
        )
    )
    processed = sorted(ProcessedMessage.objects.filter(workspace=workspace).values_list("message_id", flat=True))
    return {"contacts": contacts, "interactions": interactions, "processed": processed}


def outcome(results) -> list:
    return [r.to_dict() for r in results]


def one_at_a_time(workspace, messages, now):
    return [ingest_messages(workspace=workspace, raw_messages=[m], now=now)[0] for m in messages]


NOW = dt.datetime(2024, 3, 20, tzinfo=dt.timezone.utc)


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
def test_a_batch_leaves_the_same_database_as_one_message_at_a_time(seed, tz):
    messages = messy_batch(seed)
    singly, together = WorkspaceFactory(timezone=tz), WorkspaceFactory(timezone=tz)

    expected = outcome(one_at_a_time(singly, messages, NOW))
    got = outcome(ingest_messages(workspace=together, raw_messages=messages, now=NOW))

    assert got == expected
    assert snapshot(together) == snapshot(singly)
    statuses = {r["status"] for r in got}
    assert {"created", "merged", "duplicate", "traits_updated", "deleted", 400, 501} <= statuses


# Trait values that a trip through the database's JSON types could alter: integers past 64
# bits, floats whose shortest form has many digits or an exponent, text that needs escapes.
AWKWARD_TRAITS = {
    "big": 2**70, "negative": -(2**63) - 1, "third": 0.1 + 0.2, "tiny": 1e-300, "exponent": 1.5e-07,
    "quoted": 'say "hi" \\ bye', "accents": "Zoë Ångström 東京 🚀", "nested": {"list": [1, "two", None, True]},
}


@pytest.mark.django_db
@pytest.mark.parametrize("past_64_bits", [False, True], ids=["orjson", "json-module"])
def test_awkward_trait_values_come_back_from_a_batch_as_sent_and_as_one_at_a_time(past_64_bits):
    # Integers past 64 bits are what sends a chunk's rows to the json module (PostgreSQL).
    traits = AWKWARD_TRAITS if past_64_bits else {
        key: value for key, value in AWKWARD_TRAITS.items() if key not in ("big", "negative")
    }
    messages = [
        {
            "type": "identify", "messageId": f"awkward-{n}", "timestamp": f"2024-03-0{n + 1}T10:00:00Z",
            "traits": {"email": f"awkward{n % 2}@example.com", **traits, "n": n},
        }
        for n in range(6)
    ]
    singly, together = WorkspaceFactory(), WorkspaceFactory()

    expected = outcome(one_at_a_time(singly, messages, NOW))
    got = outcome(ingest_messages(workspace=together, raw_messages=messages, now=NOW))

    assert got == expected
    assert snapshot(together) == snapshot(singly)
    for contact in Contact.objects.filter(workspace=together):
        assert {key: contact.traits[key] for key in traits} == traits


# On PostgreSQL, a chunk of at most FEW_MESSAGES is claimed message by message with the
# single message's statement, a larger one with the chunk's own: both ways are compared.
@pytest.mark.django_db
@pytest.mark.parametrize("chunk, few", [(7, 0), (3, 4), (7, 8)], ids=["chunk-statement", "each-of-3", "each-of-7"])
def test_chunk_boundaries_change_nothing(monkeypatch, chunk, few):
    messages = messy_batch(4)
    singly, chunked = WorkspaceFactory(), WorkspaceFactory()
    expected = outcome(one_at_a_time(singly, messages, NOW))

    monkeypatch.setattr("ingest.services.CHUNK_MESSAGES", chunk)
    monkeypatch.setattr("ingest.services.FEW_MESSAGES", few)
    got = outcome(ingest_messages(workspace=chunked, raw_messages=messages, now=NOW))

    assert got == expected
    assert snapshot(chunked) == snapshot(singly)


@pytest.mark.django_db
def test_a_batch_split_across_requests_in_another_order_gives_the_same_contacts_and_days():
    messages = [m for m in messy_batch(5) if isinstance(m, dict) and m.get("type") == "identify"]
    forward, backward = WorkspaceFactory(), WorkspaceFactory()

    for start in range(0, len(messages), 50):
        ingest_messages(workspace=forward, raw_messages=messages[start:start + 50], now=NOW)
    reversed_messages = messages[::-1]
    for start in range(0, len(reversed_messages), 33):
        ingest_messages(workspace=backward, raw_messages=reversed_messages[start:start + 33], now=NOW)

    a, b = snapshot(forward), snapshot(backward)
    assert a["interactions"] == b["interactions"]
    assert a["processed"] == b["processed"]
    for email, row in a["contacts"].items():
        other = b["contacts"][email]
        assert row[:6] == other[:6]
        # The same days summed in another order: equal to the last bits of a double.
        assert row[6] == pytest.approx(other[6], rel=1e-12)


@pytest.mark.django_db
def test_replaying_a_batch_changes_nothing():
    messages = messy_batch(6)
    workspace = WorkspaceFactory()
    first = ingest_messages(workspace=workspace, raw_messages=messages, now=NOW)
    before = snapshot(workspace)

    again = ingest_messages(workspace=workspace, raw_messages=messages, now=NOW)

    assert snapshot(workspace) == before
    assert [r.status for r, f in zip(again, first) if f.accepted] == [
        "duplicate" for f in first if f.accepted
    ]


@pytest.mark.django_db
def test_a_copy_of_a_message_within_one_batch_is_a_duplicate_and_counted_once():
    message = {"type": "identify", "messageId": "same", "timestamp": "2024-03-02T10:00:00Z",
               "traits": {"email": "ann@example.com"}}
    workspace = WorkspaceFactory()

    results = ingest_messages(workspace=workspace, raw_messages=[message, dict(message), dict(message)], now=NOW)

    assert [r.status for r in results] == ["created", "duplicate", "duplicate"]
    assert Interaction.objects.get(workspace=workspace).event_count == 1
    assert ProcessedMessage.objects.filter(workspace=workspace).count() == 1


@pytest.mark.django_db
def test_a_small_batch_adding_to_a_day_with_one_event_merges_into_it():
    # Each message's statement returns its day's count so far: a day that had one event
    # before the batch reaches 2 with the batch's first message, the batch's own count.
    def message(n, day, email="ann@example.com"):
        return {"type": "identify", "messageId": f"day-{n}", "timestamp": f"2024-03-{day:02d}T1{n}:00:00Z",
                "traits": {"email": email}}

    workspace = WorkspaceFactory()
    ingest_messages(workspace=workspace, raw_messages=[message(0, 2)], now=NOW)

    batch = [message(1, 2), message(2, 2), message(3, 5), message(4, 5, "bo@example.com")]
    assert len(batch) <= FEW_MESSAGES
    results = ingest_messages(workspace=workspace, raw_messages=batch, now=NOW)

    assert [r.status for r in results] == ["merged", "merged", "created", "created"]
    assert sorted(
        Interaction.objects.filter(workspace=workspace).values_list("contact__email", "day", "event_count")
    ) == [
        ("ann@example.com", dt.date(2024, 3, 2), 3),
        ("ann@example.com", dt.date(2024, 3, 5), 1),
        ("bo@example.com", dt.date(2024, 3, 5), 1),
    ]


def _concurrent_batches(workspace, batches):
    """Each batch sent by a thread of its own, all at once; the errors raised."""
    return _concurrent_senders(workspace, [[batch] for batch in batches])


def _concurrent_senders(workspace, senders):
    """Each sender's batches sent one after another by a thread of its own, the senders
    all at once; the errors raised."""
    errors, barrier = [], threading.Barrier(len(senders))

    def send(batches):
        try:
            barrier.wait()
            for batch in batches:
                ingest_messages(workspace=workspace, raw_messages=batch)
        except Exception as error:  # reported by the assertion below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(batches,)) for batches in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def _days_of_batch(prefix, b, people, *, days):
    """Batch b of four: for every person, the days b, b + 4, ... before `days` (each batch
    brings other days), shuffled in an order of its own (the locks must still not deadlock)."""
    batch = [
        {"type": "identify", "messageId": f"{prefix}-{b}-{person}-{d}",
         "timestamp": (START + dt.timedelta(days=d, hours=b)).isoformat(), "traits": {"email": person, "batch": b}}
        for person in people for d in range(b, days, 4)
    ]
    random.Random(b).shuffle(batch)
    return batch


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_touching_the_same_contacts_keep_closeness_exact():
    workspace = WorkspaceFactory()
    batches = [_days_of_batch("c", b, PEOPLE, days=40) for b in range(4)]

    deadlocks = _deadlocks_so_far()
    errors = _concurrent_batches(workspace, batches)

    assert errors == []
    assert _deadlocks_so_far() == deadlocks
    _assert_days_kept_and_closeness_exact(workspace, days_per_contact=40)
    assert ProcessedMessage.objects.filter(workspace=workspace).count() == sum(len(b) for b in batches)


def _assert_days_kept_and_closeness_exact(workspace, *, days_per_contact):
    for contact in Contact.objects.filter(workspace=workspace):
        days = list(Interaction.objects.filter(contact=contact).values_list("day", flat=True))
        assert len(days) == days_per_contact
        assert contact.closeness_log == pytest.approx(closeness.log_for_days(days), rel=1e-12)
        assert contact.last_interaction_day == max(days)


def _deadlocks_so_far() -> int:
    """PostgreSQL's count of deadlocks in this database, once the other connections to it
    have ended (a connection reports its counts by the time it ends)."""
    with connection.cursor() as cursor:
        for _ in range(100):
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0] == 0:
                break
            time.sleep(0.1)
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_small_batches_touching_the_same_contacts_keep_closeness_exact():
    # Batches of a few messages are claimed message by message (FEW_MESSAGES), in email
    # order whatever the batch's order, so that they lock their contacts in one order.
    workspace = WorkspaceFactory()
    senders = []
    for b in range(4):
        messages = _days_of_batch("s", b, PEOPLE[:4], days=24)
        senders.append([messages[start:start + 3] for start in range(0, len(messages), 3)])

    deadlocks = _deadlocks_so_far()
    errors = _concurrent_senders(workspace, senders)

    assert errors == []
    # A deadlock would be retried and leave the same rows: PostgreSQL's count tells.
    assert _deadlocks_so_far() == deadlocks
    _assert_days_kept_and_closeness_exact(workspace, days_per_contact=24)
    assert ProcessedMessage.objects.filter(workspace=workspace).count() == 4 * 4 * 6


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_of_any_size_over_new_and_known_contacts_do_not_deadlock():
    # Single messages, batches of a handful and larger batches, each sender drawing its
    # people at random from a pool of which a third exists at the start: a batch meets
    # contacts that exist, contacts no one has inserted yet, and contacts another request
    # is inserting at that moment. Every writer takes its contacts in email order, whether
    # it inserts or locks them, so PostgreSQL never has a deadlock to break.
    workspace = WorkspaceFactory()
    pool = [f"pool{i:02d}@example.com" for i in range(60)]
    ingest_messages(workspace=workspace, raw_messages=[
        {"type": "identify", "messageId": f"known-{person}", "timestamp": START.isoformat(),
         "traits": {"email": person}}
        for person in pool[::3]
    ])
    senders = []
    for sender in range(6):
        rng = random.Random(sender)
        batches = []
        for b in range(25):
            batches.append([
                {"type": "identify", "messageId": f"m-{sender}-{b}-{i}",
                 "timestamp": (START + dt.timedelta(days=rng.randrange(1, 90), hours=sender)).isoformat(),
                 "traits": {"email": rng.choice(pool), "sender": sender}}
                for i in range(rng.choice([1, 3, 12, 40]))
            ])
        senders.append(batches)

    deadlocks = _deadlocks_so_far()
    errors = _concurrent_senders(workspace, senders)

    assert errors == []
    assert _deadlocks_so_far() == deadlocks
    sent = [message for batches in senders for batch in batches for message in batch]
    expected_days, expected_events = {}, {}
    for message in sent + [{"timestamp": START.isoformat(), "traits": {"email": p}} for p in pool[::3]]:
        person, day = message["traits"]["email"], dt.datetime.fromisoformat(message["timestamp"]).date()
        expected_days.setdefault(person, set()).add(day)
        expected_events[person] = expected_events.get(person, 0) + 1
    contacts = Contact.objects.filter(workspace=workspace)
    assert sorted(contact.email for contact in contacts) == sorted(expected_days)
    for contact in contacts:
        interactions = list(Interaction.objects.filter(contact=contact).values_list("day", "event_count"))
        days = [day for day, _ in interactions]
        assert set(days) == expected_days[contact.email] and len(days) == len(set(days))
        assert sum(count for _, count in interactions) == expected_events[contact.email]
        assert contact.closeness_log == pytest.approx(closeness.log_for_days(days), rel=1e-12)
        assert contact.last_interaction_day == max(days)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("with_new", [True, False], ids=["new-and-known", "known-only"])
def test_a_known_contact_deleted_before_the_batch_locks_it_makes_the_batch_start_again(monkeypatch, with_new):
    # A batch finds its known contacts without locking them, and locks them afterwards
    # (with the new ones, or alone). A contact deleted in between (Segment's delete
    # request, or a member in the admin) makes the chunk start again, and the batch's
    # messages then create the contact afresh, as if the deletion had come first.
    workspace = WorkspaceFactory()
    ingest_messages(workspace=workspace, raw_messages=[
        {"type": "identify", "messageId": "old", "timestamp": START.isoformat(),
         "traits": {"email": "gone@example.com"}}
    ])
    find, attempts = services._claim_and_find, []

    def find_then_delete_meanwhile(*args):
        found = find(*args)
        attempts.append(sorted(found[1]))
        if len(attempts) == 1:  # another request deletes the contact, and commits
            thread = threading.Thread(target=lambda: (
                Contact.objects.filter(email="gone@example.com").delete(), connection.close()))
            thread.start()
            thread.join()
        return found

    monkeypatch.setattr(services, "_claim_and_find", find_then_delete_meanwhile)
    people = ["gone@example.com"] + ([f"new{i}@example.com" for i in range(2)] if with_new else [])
    batch = [
        {"type": "identify", "messageId": f"b-{person}-{d}", "timestamp": (START + dt.timedelta(days=d)).isoformat(),
         "traits": {"email": person, "plan": "pro"}}
        for person in people for d in range(1, 6)
    ]
    assert len(batch) > FEW_MESSAGES

    results = ingest_messages(workspace=workspace, raw_messages=batch)

    assert attempts == [["gone@example.com"], []]
    assert [r.status for r in results] == ["created"] * 5 * len(people)
    gone = Contact.objects.get(workspace=workspace, email="gone@example.com")
    assert gone.traits == {"email": "gone@example.com", "plan": "pro"}
    days = list(Interaction.objects.filter(contact=gone).values_list("day", flat=True))
    assert sorted(days) == [dt.date(2024, 3, d) for d in range(2, 7)]
    assert gone.closeness_log == pytest.approx(closeness.log_for_days(days), rel=1e-12)
    assert Contact.objects.filter(workspace=workspace).count() == len(people)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_copies_of_one_batch_record_each_message_once():
    workspace = WorkspaceFactory()
    batch = [
        {"type": "identify", "messageId": f"r-{i}", "timestamp": (START + dt.timedelta(days=i % 9)).isoformat(),
         "traits": {"email": PEOPLE[i % len(PEOPLE)]}}
        for i in range(200)
    ]

    errors = _concurrent_batches(workspace, [batch, batch[::-1], batch])

    assert errors == []
    assert ProcessedMessage.objects.filter(workspace=workspace).count() == 200
    assert sum(Interaction.objects.filter(workspace=workspace).values_list("event_count", flat=True)) == 200


def _own_connection(**options):
    """A psycopg connection of its own to the test database, outside Django's."""
    import psycopg

    return psycopg.connect(**connection.get_connection_params(), **options)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_delete_request_locks_its_contacts_in_email_order():
    # One userId on two emails, zoe's contact made first (the lower id). While another
    # transaction holds amy's row, as a batch taking amy then zoe would, the delete must
    # wait for amy before it takes zoe: deleting in the order it finds the rows (zoe first)
    # made a cycle with such a batch.
    workspace = WorkspaceFactory()
    for person in ("zoe", "amy"):
        ingest_messages(workspace=workspace, raw_messages=[
            {"type": "identify", "messageId": f"m-{person}", "userId": "usr_1", "timestamp": START.isoformat(),
             "traits": {"email": f"{person}@example.com"}}
        ])
    assert Contact.objects.get(email="zoe@example.com").pk < Contact.objects.get(email="amy@example.com").pk
    table = Contact._meta.db_table
    # The checker's every statement is a transaction of its own: it sees the activity
    # anew each time, and its lock test ends at once.
    holder, checker = _own_connection(), _own_connection(autocommit=True)
    try:
        holder.execute(f"SELECT id FROM {table} WHERE email = 'amy@example.com' FOR NO KEY UPDATE")
        results = []
        deleting = threading.Thread(target=lambda: (results.extend(ingest_messages(
            workspace=workspace, raw_messages=[{"type": "delete", "userId": "usr_1", "messageId": "del-1"}]
        )), connection.close()))
        deleting.start()
        for _ in range(200):  # until the delete waits on a row lock
            waiting = checker.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()[0]
            if waiting:
                break
            time.sleep(0.05)
        assert waiting == 1

        # zoe's row is not locked yet: the delete takes amy first
        checker.execute(f"SELECT id FROM {table} WHERE email = 'zoe@example.com' FOR NO KEY UPDATE NOWAIT")
    finally:
        holder.rollback()
        holder.close()
        checker.close()
    deleting.join(timeout=10)

    assert [(r.status, r.deleted) for r in results] == [("deleted", 2)]
    assert not Contact.objects.filter(workspace=workspace).exists()
