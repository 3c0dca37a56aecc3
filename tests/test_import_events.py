"""import_events: every input form, gzip, stdin, bad lines, re-runs, and the same
database as the webhook for the same messages."""

import codecs
import gc
import gzip
import io
import json
import os
import pickle
import signal
import sys
import tracemalloc
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from contacts.models import Contact, Interaction
from ingest.backfill import BrokenExport, ReaderGone, checked_chunks, open_source, read_in_child
from ingest.models import ProcessedMessage, RejectedMessage
from ingest.serializers import normalize
from natsite.db import BULK_CACHE_KIB, BULK_CHECKPOINT_PAGES, bulk_loading
from tests.conftest import FIXTURES, load_fixture
from tests.segment_messages import identify

pytestmark = pytest.mark.django_db


def run_import(path, workspace, *args):
    out = io.StringIO()
    call_command("import_events", str(path), "--workspace", workspace.slug, "--no-progress", *args, stdout=out)
    return out.getvalue()


def write_lines(path, messages):
    path.write_text("".join(json.dumps(m) + "\n" for m in messages))
    return path


def summary_count(output, status):
    line = next(line for line in output.splitlines() if line.strip().startswith(status + " "))
    return int(line.split()[1].replace(",", ""))


def snapshot(workspace):
    """Everything an import writes for a workspace, without ids or bookkeeping times."""
    contacts = sorted(
        (c.email, c.name, c.user_id, json.dumps(c.traits, sort_keys=True), c.first_seen_at,
         c.last_interaction_day, c.closeness_log, c.last_interaction_log_strength)
        for c in Contact.objects.filter(workspace=workspace)
    )
    interactions = sorted(
        (i.contact.email, i.day, i.occurred_at, i.last_occurred_at, i.description, i.url, i.event_count)
        for i in Interaction.objects.filter(workspace=workspace).select_related("contact")
    )
    processed = sorted(ProcessedMessage.objects.filter(workspace=workspace).values_list("message_id", flat=True))
    return contacts, interactions, processed


MESSAGES = [
    identify("ann@example.com", "2024-06-01T09:00:00Z", messageId="m-1", traits={"email": "ann@example.com", "firstName": "Ann"}),
    identify("ann@example.com", "2024-06-01T08:00:00Z", messageId="m-2", page={"url": "https://example.com/early"}),
    identify("bob@example.com", "2024-06-02T10:00:00+02:00", messageId="m-3"),
]


def test_it_imports_json_lines(tmp_path, workspace):
    output = run_import(write_lines(tmp_path / "export.jsonl", MESSAGES), workspace)
    assert summary_count(output, "created") == 2
    assert summary_count(output, "merged") == 1
    ann = Contact.objects.get(workspace=workspace, email="ann@example.com")
    assert ann.name == "Ann"
    interaction = ann.interactions.get()
    assert (interaction.event_count, interaction.description) == (2, "https://example.com/early")


def test_it_imports_a_json_array_spread_over_many_lines(tmp_path, workspace):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(MESSAGES, indent=2))
    output = run_import(path, workspace)
    assert summary_count(output, "created") == 2
    assert Interaction.objects.filter(workspace=workspace).count() == 2


def test_it_imports_a_batch_object_whatever_keys_come_before_the_batch(tmp_path, workspace):
    path = tmp_path / "batch.json"
    path.write_text(json.dumps({"sentAt": "2024-06-03T00:00:00Z", "batch": MESSAGES, "context": {"library": {}}}))
    output = run_import(path, workspace)
    assert summary_count(output, "created") == 2
    assert summary_count(output, "merged") == 1


def test_it_imports_a_single_pretty_printed_message(workspace):
    output = run_import(FIXTURES / "segment" / "identify-recommended.json", workspace)
    assert summary_count(output, "created") == 1
    assert Contact.objects.get(workspace=workspace).email == "peter@initech.com"


def test_it_reads_gzip_by_its_first_bytes_whatever_the_file_is_called(tmp_path, workspace):
    path = tmp_path / "export.json"  # no .gz: the magic bytes tell
    path.write_bytes(gzip.compress("\n".join(json.dumps(m) for m in MESSAGES).encode()))
    output = run_import(path, workspace)
    assert summary_count(output, "created") == 2
    assert summary_count(output, "rejected") == 0


def test_a_byte_order_mark_at_the_start_is_skipped(tmp_path, workspace):
    path = tmp_path / "export.json"
    path.write_bytes(codecs.BOM_UTF8 + json.dumps(MESSAGES).encode())
    output = run_import(path, workspace)
    assert summary_count(output, "created") == 2
    assert summary_count(output, "rejected") == 0


def test_it_reads_a_gzipped_batch_from_stdin(monkeypatch, workspace):
    body = gzip.compress(json.dumps({"batch": MESSAGES}).encode())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(body)))
    output = run_import("-", workspace)
    assert output.startswith("Imported - into workspace acme: 3 messages")
    assert Contact.objects.filter(workspace=workspace).count() == 2


def test_bad_lines_are_reported_with_their_line_numbers_and_the_others_kept(tmp_path, workspace):
    path = tmp_path / "export.jsonl"
    path.write_text(
        "\n".join([
            json.dumps(identify("ann@example.com", messageId="good-1")),
            "{not json",
            "",
            json.dumps({"type": "track", "event": "Clicked", "timestamp": "2024-06-01T09:00:00Z"}),
            json.dumps([identify("bob@example.com", messageId="good-2"), {"type": "identify", "timestamp": "2024-06-01T09:00:00Z"}]),
            json.dumps(identify("cy@example.com", messageId="good-3")),
        ])
    )
    output = run_import(path, workspace)
    assert "line 2: 400 Line is not valid JSON" in output
    assert "line 4: 501 Only identify calls are accepted" in output
    assert "line 5, index 1: 400 Missing email" in output
    assert summary_count(output, "rejected") == 3
    assert "(400: 2, 501: 1)" in output
    emails = set(Contact.objects.filter(workspace=workspace).values_list("email", flat=True))
    assert emails == {"ann@example.com", "bob@example.com", "cy@example.com"}


def test_errors_in_an_array_are_reported_by_their_index(tmp_path, workspace):
    path = tmp_path / "export.json"
    path.write_text(json.dumps([MESSAGES[0], {"type": "identify", "traits": {"email": "x@example.com"}}], indent=1))
    output = run_import(path, workspace)
    assert "index 1: 400 Missing timestamp" in output


def test_a_message_the_webhook_would_not_parse_is_rejected_alone_in_an_array(tmp_path, workspace):
    path = tmp_path / "export.json"
    good = json.dumps(MESSAGES[2])
    path.write_text(f'[\n{{"type": "identify", "x": NaN}},\n{{"y": 1e999}},\n{good}\n]')
    output = run_import(path, workspace)
    assert "index 0: 400 Message is not valid JSON: NaN" in output
    assert "index 1: 400 Message is not valid JSON: 1e999" in output
    assert summary_count(output, "created") == 1


def test_a_message_over_the_webhook_size_limit_is_rejected_and_the_rest_kept(tmp_path, workspace, settings):
    big = identify("big@example.com", messageId="big", traits={"email": "big@example.com", "bio": "x" * 40_000})
    output = run_import(write_lines(tmp_path / "export.jsonl", [big, MESSAGES[2]]), workspace)
    assert f"line 1: 413 Message larger than {settings.INGEST_MAX_MESSAGE_BYTES} bytes" in output
    assert list(Contact.objects.filter(workspace=workspace).values_list("email", flat=True)) == ["bob@example.com"]


def test_a_second_run_leaves_the_database_as_the_first_left_it(tmp_path, workspace):
    messages = [load_fixture(name) for name in ("identify-recommended", "identify-analytics-js", "identify-event-name")]
    messages += MESSAGES + [{"type": "identify", "timestamp": "2024-06-05T12:00:00Z", "email": "nomid@example.com"}]
    path = write_lines(tmp_path / "export.jsonl", messages)
    run_import(path, workspace)
    once = snapshot(workspace)
    output = run_import(path, workspace)
    assert snapshot(workspace) == once
    assert summary_count(output, "duplicate") == len(messages)


def test_a_message_without_message_id_is_recognised_again_by_its_content(tmp_path, workspace):
    message = {"type": "identify", "timestamp": "2024-06-05T12:00:00Z", "email": "nomid@example.com"}
    run_import(write_lines(tmp_path / "a.jsonl", [message]), workspace)
    # The same content, in another file, formatted differently, with its keys in another order.
    (tmp_path / "b.json").write_text(json.dumps([dict(reversed(list(message.items())))], indent=4))
    output = run_import(tmp_path / "b.json", workspace)
    assert summary_count(output, "duplicate") == 1
    assert Interaction.objects.get(workspace=workspace).event_count == 1


def test_it_records_exactly_what_the_webhook_records_for_the_same_messages(tmp_path, workspace, other_workspace, webhook):
    messages = [
        load_fixture(name)
        for name in (
            "identify-recommended", "identify-analytics-js", "identify-event-name", "identify-flat-email",
            "identify-engage-audience", "track-not-supported",
        )
    ]
    messages += load_fixture("batch-actions-array") + MESSAGES
    messages += [
        # Out of order within a day, a trait that a later message overrides, a replay.
        identify("ann@example.com", "2024-06-01T07:00:00Z", messageId="m-4", event="Signed in",
                 traits={"email": "ann@example.com", "plan": "pro", "first_name": "Annie"}),
        identify("ann@example.com", "2024-05-20T07:00:00Z", messageId="m-5", traits={"email": "ann@example.com", "plan": "free"}),
        identify("ann@example.com", "2024-06-01T09:00:00Z", messageId="m-1"),
        {"type": "identify", "timestamp": "2024-06-03T00:00:00Z", "userId": "jo@example.com"},
        {"type": "identify", "timestamp": "2024-06-03T00:00:00Z", "userId": "jo@example.com"},
        {"type": "identify", "timestamp": "not a time", "email": "bad@example.com"},
        load_fixture("delete-user"),
    ]
    output = run_import(write_lines(tmp_path / "export.jsonl", messages), other_workspace)
    response = webhook.post(messages)
    assert response.status_code == 200
    statuses = [r["status"] for r in response.json()["results"]]
    for status in ("created", "merged", "duplicate", "traits_updated", "deleted"):
        assert summary_count(output, status) == statuses.count(status), status
    assert summary_count(output, "rejected") == response.json()["rejected"]
    contacts, interactions, _ = snapshot(workspace)  # the webhook's key is this workspace's
    assert len(contacts) >= 6 and len(interactions) >= 6
    assert snapshot(other_workspace) == (contacts, interactions, snapshot(workspace)[2])


def test_the_import_does_not_fill_the_list_of_rejected_segment_messages(tmp_path, workspace):
    run_import(write_lines(tmp_path / "export.jsonl", [{"type": "track", "timestamp": "2024-06-01T00:00:00Z"}]), workspace)
    assert not RejectedMessage.objects.filter(workspace=workspace).exists()


def test_a_document_that_breaks_off_stops_with_an_error_and_keeps_what_was_read(tmp_path, workspace):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(MESSAGES, indent=2)[:-40])  # truncated inside the last message
    with pytest.raises(CommandError, match="breaks off after 2 messages.*again resumes"):
        run_import(path, workspace, "--chunk-size", "1")
    assert Contact.objects.filter(workspace=workspace).count() == 1


def test_an_unknown_workspace_or_a_missing_file_is_an_error(tmp_path, workspace):
    with pytest.raises(CommandError, match="No workspace with slug 'nope'"):
        call_command("import_events", str(tmp_path / "x.jsonl"), "--workspace", "nope")
    with pytest.raises(CommandError, match="Cannot read"):
        run_import(tmp_path / "missing.jsonl", workspace)


def big_single_line_batch(tmp_path):
    """A 15 MB single-line batch (the worst case for a line reader) of 2,500 messages the
    webhook rejects: the tests are about reading."""
    padding = "x" * 6000
    path = tmp_path / "big.json"
    with path.open("w") as out:
        out.write('{"batch": [')
        out.write(",".join(json.dumps({"type": "track", "n": n, "pad": padding}) for n in range(2_500)))
        out.write("]}")
    return path


def test_reading_and_checking_an_export_keeps_memory_bounded_on_a_file_many_times_larger(tmp_path):
    """What the reader process does, measured here: it keeps one message and one chunk at a
    time, a peak well under the file's size."""
    path = big_single_line_batch(tmp_path)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        source = open_source(str(path))
        rejected = 0
        for chunk in checked_chunks(source, chunk_size=100):
            rejected += sum(1 for result in chunk.checked.results if not result.accepted)
        source.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rejected == 2_500
    assert size > 15_000_000
    assert peak < size / 6  # about 1 MB measured for this 15 MB file


def test_memory_stays_bounded_on_a_file_many_times_larger(tmp_path, workspace):
    """The command holds a chunk or two at a time, whatever the file's size."""
    path = big_single_line_batch(tmp_path)
    size = path.stat().st_size
    # A first import loads the command's modules: done before measuring, so that the test
    # gives the same figure run alone or after others.
    warm_up = tmp_path / "warm-up.json"
    warm_up.write_text('{"batch": [{"type": "track"}]}')
    run_import(warm_up, workspace)
    tracemalloc.start()
    try:
        output = run_import(path, workspace, "--chunk-size", "100", "--show-errors", "0")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary_count(output, "rejected") == 2_500
    assert peak < size / 6


def child_pids():
    """This process's children, from every one of its threads."""
    pids = set()
    for task in Path("/proc/self/task").iterdir():
        pids.update(int(pid) for pid in (task / "children").read_text().split())
    return pids


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads this process's children from /proc")
def test_the_reader_process_is_gone_after_an_import_that_completes_or_breaks_off(tmp_path, workspace):
    before = child_pids()
    run_import(write_lines(tmp_path / "export.jsonl", MESSAGES), workspace)
    assert child_pids() == before
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(MESSAGES)[:-30])
    with pytest.raises(CommandError, match="breaks off"):
        run_import(broken, workspace)
    assert child_pids() == before


def test_the_messages_read_before_a_document_breaks_off_are_recorded_whatever_the_chunk_size(tmp_path, workspace):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(MESSAGES, indent=2)[:-40])  # truncated inside the last message
    with pytest.raises(CommandError, match="breaks off after 2 messages"):
        run_import(path, workspace)  # one chunk of up to 1,000
    assert Interaction.objects.get(contact__email="ann@example.com").event_count == 2


def test_a_gzip_file_cut_short_is_reported_with_what_was_imported_before(tmp_path, workspace):
    lines = "".join(json.dumps(identify(f"p{n}@example.com", messageId=f"g-{n}")) + "\n" for n in range(3_000))
    compressed = gzip.compress(lines.encode())
    path = tmp_path / "export.jsonl.gz"
    path.write_bytes(compressed[: len(compressed) * 2 // 3])
    with pytest.raises(CommandError, match=r"Cannot read .* after [\d,]+ messages"):
        run_import(path, workspace, "--chunk-size", "100")
    recorded = Contact.objects.filter(workspace=workspace).count()
    assert 0 < recorded < 3_000
    assert ProcessedMessage.objects.filter(workspace=workspace).count() == recorded


def produce_then_fail(error):
    def produce():
        yield "one"
        yield "two"
        raise error

    return produce


def test_the_reader_process_hands_over_its_items_then_its_error():
    received = []
    with pytest.raises(BrokenExport, match="cut here"):
        for item in read_in_child(produce_then_fail(BrokenExport("cut here"))):
            received.append(item)
    assert received == ["one", "two"]


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("not this one")


def test_an_error_the_reader_process_cannot_send_arrives_as_its_name_and_words():
    with pytest.raises(RuntimeError, match="Unpicklable: odd"):
        list(read_in_child(produce_then_fail(Unpicklable("odd"))))


def test_a_reader_process_that_dies_is_reported_not_waited_for():
    def produce():
        yield "one"
        os.kill(os.getpid(), signal.SIGKILL)  # runs in the child

    items = read_in_child(produce)
    assert next(items) == "one"
    with pytest.raises(ReaderGone):
        next(items)


def test_stopping_early_ends_the_reader_process():
    def produce():
        while True:
            yield "x" * 100_000  # fills the pipe: the child blocks until it is ended

    before = child_pids()
    items = read_in_child(produce)
    assert next(items) == "x" * 100_000
    items.close()
    assert child_pids() == before


def test_a_normalized_message_survives_the_trip_to_the_parent_whole():
    message = normalize(
        identify("ann@example.com", "0999-06-01T09:00:00.5+02:00", traits={"email": "ann@example.com", "n": [1, {"a": None}]}),
        now=timezone.now(),
    )
    copy = pickle.loads(pickle.dumps(message))
    assert copy == message
    assert copy.stamp == "0999-06-01T07:00:00.500000Z"


def pragma(name):
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA {name}")
        return cursor.fetchone()[0]


def autocheckpoint():
    return pragma("wal_autocheckpoint")


def test_sqlite_checkpoints_its_log_less_often_for_the_length_of_an_import_only():
    if connection.vendor != "sqlite":
        with CaptureQueriesContext(connection) as queries, bulk_loading():
            pass
        assert len(queries) == 0  # nothing to set on PostgreSQL
        return
    before = autocheckpoint()
    with bulk_loading():
        assert autocheckpoint() == BULK_CHECKPOINT_PAGES != before
    assert autocheckpoint() == before


def test_sqlite_has_a_larger_page_cache_for_the_length_of_an_import_only():
    if connection.vendor != "sqlite":
        pytest.skip("the SQLite case (PostgreSQL: nothing is set, checked above)")
    before = pragma("cache_size")
    with bulk_loading():
        assert pragma("cache_size") == -BULK_CACHE_KIB != before
    assert pragma("cache_size") == before
    with pytest.raises(ZeroDivisionError), bulk_loading():
        1 / 0
    assert pragma("cache_size") == before


def test_the_objects_frozen_for_an_import_are_given_back_to_the_collector(tmp_path, workspace):
    """import_events freezes what the process holds for its run (natsite/gc_settle.py), and
    unfreezes it at the end, whether the import completes or breaks off."""
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(identify("jane@example.com")) + "\n")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"type": "identify"}, {')
    before = gc.get_freeze_count()
    run_import(good, workspace)
    assert gc.get_freeze_count() == before
    with pytest.raises(CommandError, match="breaks off"):
        run_import(broken, workspace)
    assert gc.get_freeze_count() == before
    assert Contact.objects.filter(workspace=workspace, email="jane@example.com").exists()


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_it_draws_a_progress_bar_on_a_terminal_and_nothing_else_when_asked(tmp_path, workspace):
    path = write_lines(tmp_path / "export.jsonl", MESSAGES)
    terminal = Terminal()
    call_command("import_events", str(path), "--workspace", workspace.slug, stdout=io.StringIO(), stderr=terminal)
    size = path.stat().st_size
    assert f"100% [{'#' * 24}] {size} B of {size} B · 3 messages" in terminal.getvalue()
    quiet = Terminal()
    call_command("import_events", str(path), "--workspace", workspace.slug, "--no-progress", stdout=io.StringIO(), stderr=quiet)
    assert quiet.getvalue() == ""


def test_a_json_lines_file_whose_first_line_is_broken_is_read_with_format_lines(tmp_path, workspace):
    path = tmp_path / "export.txt"  # no name to go by
    path.write_text('{"type": "identify",\n' + json.dumps(MESSAGES[2]) + "\n")
    with pytest.raises(CommandError, match="breaks off.*pass --format lines"):
        run_import(path, workspace)
    output = run_import(path, workspace, "--format", "lines")
    assert "line 1: 400 Line is not valid JSON" in output
    assert summary_count(output, "created") == 1


def mixed_export(count, seed=5):
    """Messages as a real source sends them: spellings, replays, Engage, deletes, bad ones."""
    import random

    rng = random.Random(seed)
    messages = []
    for n in range(count):
        c = rng.randrange(40)
        ts = f"2024-06-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00" + rng.choice(["Z", "+02:00"])
        kind = rng.random()
        if kind < 0.05:
            message = {"type": "track", "event": "Clicked", "timestamp": ts, "userId": f"u{c}"}
        elif kind < 0.08:
            message = {"type": "identify", "timestamp": "soon", "traits": {"email": f"p{c}@example.com"}}
        elif kind < 0.12:
            message = {"type": "identify", "timestamp": ts, "userId": f"u{c}", "context": {"personas": {"computation_key": "vip"}},
                       "traits": {"email": f"p{c}@example.com", "vip": rng.random() < 0.5}}
        elif kind < 0.13:
            message = {"type": "delete", "userId": f"u{c}", "context": []}
        else:
            message = {"type": rng.choice(["identify", "Identify"]), "timestamp": ts, "userId": f"u{c}",
                       "traits": {rng.choice(["email", "Email"]): f"P{c}@Example.com ",
                                  rng.choice(["firstName", "first_name"]): rng.choice(["Ann", "Bo"]),
                                  "plan": rng.choice(["free", "pro"])},
                       "page": {"url": f"https://example.com/{rng.randrange(5)}"}}
        if rng.random() < 0.8:
            message["messageId"] = f"mid-{rng.randrange(count)}"  # some ids come twice
        messages.append(message)
    return messages + [dict(rng.choice(messages)) for _ in range(count // 10)]  # exact replays


def test_a_mixed_export_imported_twice_equals_the_webhook_fed_in_batches(tmp_path, workspace, other_workspace, webhook, settings):
    settings.INGEST_RATE_LIMIT = 0
    messages = mixed_export(400)
    path = write_lines(tmp_path / "export.jsonl", messages)
    run_import(path, other_workspace, "--chunk-size", "64")
    once = snapshot(other_workspace)
    run_import(path, other_workspace)
    assert snapshot(other_workspace) == once
    for start in range(0, len(messages), 100):
        assert webhook.post(messages[start : start + 100]).status_code == 200
    assert snapshot(workspace) == once
    assert len(once[0]) >= 30 and len(once[1]) >= 100


def test_the_command_starts_without_loading_the_http_side(tmp_path):
    # A user waits for the command's start-up: it reads and checks messages by the
    # webhook's rules (ingest.bodies) without loading the webhook's view and DRF's, runs no
    # system checks (which load every URL's view), and does not compile Django's email
    # domain pattern with case folding (ingest.serializers compiles its own without).
    import subprocess

    code = (
        "import sys\n"
        "from django.core.management import execute_from_command_line\n"
        "from django.core.validators import EmailValidator\n"
        "from django.utils.functional import empty\n"
        "try:\n"
        "    execute_from_command_line(['manage.py', 'import_events', sys.argv[1], '--workspace', 'nowhere'])\n"
        "except SystemExit as stop:\n"
        "    print(stop.code)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('rest_framework.views', 'rest_framework.response', "
        "'ingest.views', 'ingest.openapi', 'natsite.urls', 'contacts.views'))))\n"
        "print(EmailValidator.domain_regex._wrapped is empty)\n"
    )
    database = tmp_path / "db.sqlite3"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "natsite.settings", "DATABASE_URL": f"sqlite:///{database}"}
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=root, env=env, check=True)
    done = subprocess.run(
        [sys.executable, "-c", code, str(write_lines(tmp_path / "export.jsonl", []))], cwd=root,
        capture_output=True, text=True, env=env, check=True,
    )
    assert done.stdout.splitlines() == ["1", "[]", "True"], done.stdout + done.stderr
    assert "No workspace with slug 'nowhere'" in done.stderr
