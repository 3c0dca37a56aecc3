"""Concurrent batches over one pool of new and known contacts: how many deadlocks
PostgreSQL breaks, and how long the batches take.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/natsite_perf_bench \\
        .venv/bin/python bench/batch_deadlocks.py [--senders 4] [--batches 40] [--size 50] [--pool 400]
        [--sizes 1,3,50]

Each sender (a thread with its own connection) records its batches one after another, all
senders at once, in a workspace made for the run (in the database DATABASE_URL names,
already migrated: bench/ingest.py leaves one). The emails come at random from a pool, so
a batch meets contacts that exist, contacts no one has inserted yet, and contacts another
batch is inserting at that moment. Every deadlock costs the batch PostgreSQL's
deadlock_timeout (1 s by default) before it is tried again; the recorded rows are checked
afterwards (every message counted once). With --sizes, each batch's size is drawn from
the list instead: single messages and batches of a handful take other statements (the
single message's upsert, once per message) than larger batches, and must not deadlock with
them either.
"""

import argparse
import datetime as dt
import os
import random
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "natsite.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402

from contacts.models import Interaction, Workspace  # noqa: E402
from ingest.models import ProcessedMessage  # noqa: E402
from ingest.services import ingest_messages  # noqa: E402


def deadlocks_so_far() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--batches", type=int, default=40, help="batches per sender")
    parser.add_argument("--size", type=int, default=50, help="messages per batch")
    parser.add_argument("--pool", type=int, default=400, help="distinct emails")
    parser.add_argument("--sizes", help="comma-separated batch sizes to draw from (instead of --size)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")] if args.sizes else [args.size]
    if connection.vendor != "postgresql":
        sys.exit("needs PostgreSQL: set DATABASE_URL")

    run = uuid.uuid4().hex[:8]
    workspace = Workspace.objects.create(name=f"Deadlocks {run}", slug=f"deadlocks-{run}")
    start_day = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    errors = []
    counts = [0] * args.senders  # messages sent, per sender

    def sender(number):
        rng = random.Random(number)
        try:
            for batch in range(args.batches):
                size = rng.choice(sizes)
                counts[number] += size
                ingest_messages(workspace=workspace, raw_messages=[
                    {"type": "identify", "messageId": f"{run}-{number}-{batch}-{i}",
                     "timestamp": (start_day + dt.timedelta(days=rng.randrange(300))).isoformat(),
                     "traits": {"email": f"pool-{rng.randrange(args.pool)}@example.com"}}
                    for i in range(size)
                ])
        except Exception as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    before = deadlocks_so_far()
    began = time.perf_counter()
    threads = [threading.Thread(target=sender, args=(n,)) for n in range(args.senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    time.sleep(1.5)  # the senders' connections report their counts as they end

    messages = sum(counts)
    recorded = ProcessedMessage.objects.filter(workspace=workspace).count()
    events = sum(Interaction.objects.filter(workspace=workspace).values_list("event_count", flat=True))
    print(f"{args.senders} senders x {args.batches} batches of {'/'.join(map(str, sizes))} over {args.pool} emails: "
          f"{elapsed:.1f} s, {messages / elapsed:,.0f} messages/s, deadlocks {deadlocks_so_far() - before}, "
          f"errors {len(errors)}, messages recorded {recorded} of {messages}, events {events}")
    workspace.delete()


if __name__ == "__main__":
    main()
