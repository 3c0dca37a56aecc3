"""import_events on two PostgreSQL connections (ingest/parallel.py): a chunk split by
contact records exactly what one connection records, results in order."""

import datetime as dt
import random
import threading

import pytest
from django.db import connection, connections, transaction

from contacts import closeness
from contacts.models import Contact, Interaction
from ingest.models import ProcessedMessage
from ingest.parallel import MIN_SPLIT, TwoConnectionRecorder, can_record_in_parallel, split_by_contact
from ingest.serializers import normalize
from ingest.services import check_messages, ingest_messages, record_checked
from tests.factories import WorkspaceFactory
from tests.test_import_events import run_import, snapshot, write_lines

NOW = dt.datetime(2024, 7, 1, tzinfo=dt.timezone.utc)


def export(count, seed=7, contacts=60):
    """Identifies over a few dozen contacts and two weeks: bursts on one day, ties to the
    second, Engage syncs, traits that change, a bad message now and then, exact replays."""
    rng = random.Random(seed)
    messages = []
    for n in range(count):
        c = rng.randrange(contacts)
        moment = dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc) + dt.timedelta(
            days=rng.randrange(14), hours=rng.choice([1, 9, 23]), seconds=rng.randrange(3)
        )
        message = {
            "type": "identify", "messageId": f"p-{seed}-{n}", "userId": f"u{c}",
            "timestamp": moment.isoformat().replace("+00:00", "Z"),
            "traits": {"email": f"p{c}@example.com", "plan": rng.choice(["free", "pro", "team"]), "seen": n % 7},
            "context": {"page": {"url": f"https://example.com/{rng.randrange(4)}"}},
        }
        if rng.random() < 0.1:
            message["context"] = {"personas": {"computation_key": "vip"}}
        if rng.random() < 0.02:
            message["timestamp"] = "soon"
        messages.append(message)
    messages += [dict(rng.choice(messages)) for _ in range(count // 10)]
    rng.shuffle(messages)
    return messages


def normalized(messages):
    """The valid ones, normalized (as a chunk's Checked.valid)."""
    return check_messages(messages, now=NOW).valid


def summary_counts(output):
    return [line for line in output.splitlines() if line.startswith("  ")]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_import_split_over_two_connections_records_what_one_connection_records(tmp_path):
    path = write_lines(tmp_path / "export.jsonl", export(1500))
    one, two = WorkspaceFactory(slug="one"), WorkspaceFactory(slug="two")

    on_one = run_import(path, one, "--connections", "1", "--chunk-size", "500")
    on_two = run_import(path, two, "--connections", "2", "--chunk-size", "500")

    assert snapshot(two) == snapshot(one)
    assert summary_counts(on_two) == summary_counts(on_one)
    contacts, interactions, _ = snapshot(two)
    assert len(contacts) == 60 and len(interactions) > 500
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("import-helper")]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_split_chunk_gives_each_message_its_result_in_order():
    messages = export(600, seed=8)
    whole, split = WorkspaceFactory(), WorkspaceFactory()
    expected = record_checked(workspace=whole, checked=check_messages(messages, now=NOW))

    recorder = TwoConnectionRecorder(split)
    try:
        got = recorder.record(check_messages(messages, now=NOW))
        assert recorder.helper is not None  # the chunk was split
    finally:
        recorder.close()

    assert [r.to_dict() for r in got] == [r.to_dict() for r in expected]
    assert {r.status for r in got} >= {"created", "merged", "duplicate", "traits_updated", "rejected"}
    assert snapshot(split) == snapshot(whole)


def test_a_chunk_is_split_by_contact_each_contact_whole_and_in_order():
    messages = normalized(export(MIN_SPLIT * 2))
    halves = split_by_contact(messages)

    assert halves is not None and all(halves)
    for half in halves:
        assert half == sorted(half)
    emails = [{messages[position].email for position in half} for half in halves]
    assert emails[0].isdisjoint(emails[1])
    assert sorted(halves[0] + halves[1]) == list(range(len(messages)))


def test_a_chunk_that_splitting_could_change_is_recorded_whole():
    messages = normalized(export(MIN_SPLIT * 2))
    assert split_by_contact(messages[: MIN_SPLIT - 1]) is None  # too small to be worth it

    with_delete = messages + normalized([{"type": "delete", "userId": "u3", "messageId": "d-1"}])
    assert split_by_contact(with_delete) is None

    # One messageId for two contacts of different halves: which counts depends on order.
    halves = split_by_contact(messages)
    a, b = messages[halves[0][0]], messages[halves[1][0]]
    copy = normalize({"type": "identify", "messageId": a.message_id, "timestamp": "2024-06-02T00:00:00Z",
                      "traits": {"email": b.email}}, now=NOW)
    assert split_by_contact(messages + [copy]) is None


@pytest.mark.django_db(transaction=True)
def test_two_connections_only_on_postgresql_and_outside_a_transaction():
    with transaction.atomic():
        assert not can_record_in_parallel()
    assert can_record_in_parallel() == (connection.vendor == "postgresql")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_import_on_two_connections_beside_live_batches_for_the_same_contacts_loses_nothing(tmp_path):
    """Row locks order the import's halves and concurrent batches touching the same
    contacts: every message counted once, every day kept, closeness exact."""
    workspace = WorkspaceFactory(slug="live")
    people = [f"p{c}@example.com" for c in range(40)]

    def identify_on(person, day, source):
        moment = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=day, hours=3)
        return {"type": "identify", "messageId": f"{source}-{person}-{day}", "timestamp": moment.isoformat(),
                "traits": {"email": person, "source": source}}

    # The import brings the even days, the live batches the odd ones, for the same people.
    imported = [identify_on(person, day, "import") for day in range(0, 60, 2) for person in people]
    random.Random(1).shuffle(imported)
    live = [identify_on(person, day, "live") for day in range(1, 60, 2) for person in people]
    random.Random(2).shuffle(live)
    path = write_lines(tmp_path / "export.jsonl", imported)

    errors = []

    def post_live():
        try:
            for start in range(0, len(live), 150):
                results = ingest_messages(workspace=workspace, raw_messages=live[start:start + 150])
                assert all(result.accepted for result in results)
        except Exception as error:  # reported below
            errors.append(error)
        finally:
            connections.close_all()

    poster = threading.Thread(target=post_live)
    poster.start()
    run_import(path, workspace, "--connections", "2", "--chunk-size", "400")
    poster.join()

    assert errors == []
    assert ProcessedMessage.objects.filter(workspace=workspace).count() == len(imported) + len(live)
    for contact in Contact.objects.filter(workspace=workspace):
        days = list(Interaction.objects.filter(contact=contact).values_list("day", flat=True))
        assert len(days) == 60
        assert contact.closeness_log == pytest.approx(closeness.log_for_days(days), rel=1e-12)
        assert contact.last_interaction_day == max(days)
    assert Contact.objects.filter(workspace=workspace).count() == len(people)
