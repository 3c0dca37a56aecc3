"""The Segment & API keys page with a large ledger of processed messages: how long the
page takes and how PostgreSQL answers the connection panel's two queries ("last event"
and "accepted today").

    .venv/bin/python bench/connection_panel.py [--rows 500000] [--requests 50]

Recreates BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/natsite_keys_bench),
fills two workspaces with --rows processed messages each, spread over the last 30 days
(what the retention keeps), plus 100 rejected messages and 20 keys, then prints the
page's p50/p95 and query count and EXPLAIN ANALYZE of both panel queries.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/natsite_keys_bench")


def recreate_database(url):
    import psycopg

    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500_000, help="processed messages per workspace")
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()

    recreate_database(DATABASE_URL)
    os.environ["DATABASE_URL"] = DATABASE_URL
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "natsite.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from contacts.models import Membership, Workspace
    from ingest import connection as segment_connection
    from ingest import password_confirmation
    from ingest.api_keys import create_api_key
    from ingest.models import ProcessedMessage, RejectedMessage

    settings.ALLOWED_HOSTS = ["testserver"]
    # No collectstatic here: plain static URLs instead of the manifest's hashed names.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    owner = get_user_model().objects.create_user("bench-owner", password="bench-password-1234")
    workspaces = [Workspace.objects.create(name=f"Bench {i}", slug=f"bench-{i}") for i in range(2)]
    Membership.objects.create(user=owner, workspace=workspaces[0])
    table = ProcessedMessage._meta.db_table
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for workspace in workspaces:
            cursor.execute(
                f"INSERT INTO {table} (workspace_id, message_id, received_at) "
                "SELECT %s, 'm' || n, now() - (n * (30 * 86400.0 / %s)) * interval '1 second' "
                "FROM generate_series(1, %s) AS n",
                [workspace.pk, args.rows, args.rows],
            )
        cursor.execute(f"VACUUM ANALYZE {table}")  # what autovacuum does to a settled table
    print(f"filled {2 * args.rows:,} processed messages in {time.perf_counter() - started:.1f} s")
    for _ in range(20):
        create_api_key(workspace=workspaces[0], actor=owner)
    RejectedMessage.objects.bulk_create(
        RejectedMessage(workspace=workspaces[0], status=400, message="Missing email", excerpt='{"type": "identify"}')
        for _ in range(100)
    )

    client = Client()
    client.force_login(owner)
    session = client.session
    session[password_confirmation.SESSION_KEY] = time.time()
    session.save()
    client.get("/settings/api-keys/")  # warm up
    timings = []
    for _ in range(args.requests):
        started = time.perf_counter()
        response = client.get("/settings/api-keys/")
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    with CaptureQueriesContext(connection) as queries:
        client.get("/settings/api-keys/")
    timings.sort()
    p95 = timings[int(len(timings) * 0.95) - 1]
    print(f"GET /settings/api-keys/: p50 {statistics.median(timings):.1f} ms, p95 {p95:.1f} ms, {len(queries)} queries")

    workspace = workspaces[0]
    last = ProcessedMessage.objects.filter(workspace=workspace).order_by("-received_at").values_list("received_at")[:1]
    print(f"\n-- last event\n{last.explain(analyze=True)}")
    start = segment_connection.start_of_today(workspace, timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(
            f"EXPLAIN ANALYZE SELECT COUNT(*) FROM {table} WHERE workspace_id = %s AND received_at >= %s",
            [workspace.pk, start],
        )
        print("\n-- accepted today\n" + "\n".join(row[0] for row in cursor.fetchall()))
    print(f"\naccepted today: {segment_connection.accepted_today(workspace):,}")


if __name__ == "__main__":
    main()
