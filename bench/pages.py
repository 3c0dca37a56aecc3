"""Benchmark of the founders' pages on PostgreSQL at scale (not a test: it prints figures).

Fills its own database with 100,000 contacts and about 1,000,000 interactions (SQL
generate_series, closeness computed in SQL with the same log-sum-exp as
contacts/closeness.py and checked against it on a sample), then times pages through
Django's test client, in-process, so the figures are the view, the ORM, PostgreSQL and
the template, without network or server overhead:

- the contact list sorted by closeness and filtered by each level (target p50 < 50 ms);
- the detail page of a contact with 3,650 interaction days (target p50 < 100 ms);
- for reference, the unfiltered list, the list by last interaction, a search, the
  dashboard and a late timeline page.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/natsite_pages_bench \\
        .venv/bin/python bench/pages.py [--refill] [--runs 40]

The data is kept between runs (pass --refill to rebuild it).
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/natsite_pages_bench"
CONTACTS = 100_000
LONG_HISTORY_DAYS = 3_650


def ensure_database(url):
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def fill(workspace):
    """100,000 contacts; contact 1 has an interaction every day for ten years, the
    others 1 to 19 days spread over two years (about 1,000,000 rows in all)."""
    from django.db import connection

    from contacts.models import Contact, Interaction

    contact_table = Contact._meta.db_table
    interaction_table = Interaction._meta.db_table
    today = workspace.today()
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {interaction_table}, {contact_table} RESTART IDENTITY CASCADE")
        cursor.execute(
            f"""
            INSERT INTO {contact_table}
                (workspace_id, email, name, user_id, traits, trait_times, created_at)
            SELECT %s, 'contact' || i || '@bench.example', 'Contact ' || i, 'usr_' || i,
                   jsonb_build_object('plan', CASE WHEN i %% 3 = 0 THEN 'pro' ELSE 'free' END,
                                      'in_audience', i %% 5 = 0),
                   '{{}}', now()
            FROM generate_series(1, %s) AS i
            """,
            [workspace.pk, CONTACTS],
        )
        # Contact n > 1: 1 + n % 19 days, day k at ((n * 7 + k * (1 + n % 30)) % 730) days ago:
        # distinct per contact (k * step < 730), spread over two years.
        cursor.execute(
            f"""
            INSERT INTO {interaction_table}
                (workspace_id, contact_id, day, occurred_at, last_occurred_at, description, url, event_count)
            SELECT %(ws)s, c.id, d.day, d.day + time '09:30', d.day + time '17:00',
                   'https://app.example/page/' || (c.id %% 97), 'https://app.example/page/' || (c.id %% 97),
                   1 + (c.id + d.k) %% 4
            FROM {contact_table} c
            CROSS JOIN LATERAL (
                SELECT k, %(today)s::date - ((c.id * 7 + k * (1 + c.id %% 30)) %% 730)::int AS day
                FROM generate_series(1, 1 + c.id %% 19) AS k
            ) d
            WHERE c.id > 1
            """,
            {"ws": workspace.pk, "today": today},
        )
        cursor.execute(
            f"""
            INSERT INTO {interaction_table}
                (workspace_id, contact_id, day, occurred_at, last_occurred_at, description, url, event_count)
            SELECT %s, 1, %s::date - k, (%s::date - k) + time '10:00', (%s::date - k) + time '10:00',
                   'Daily check-in ' || k, '', 1 + k %% 5
            FROM generate_series(0, %s - 1) AS k
            """,
            [workspace.pk, today, today, today, LONG_HISTORY_DAYS],
        )
        # closeness_log = log2(Σ 2 ** (ordinal(d) / 14)) as max + log2(Σ 2 ** (x - max)),
        # with ordinal(d) as Python's date.toordinal() (0001-01-01 is 1).
        cursor.execute(
            f"""
            WITH w AS (
                SELECT contact_id, day, (day - date '0001-01-01' + 1) / 14.0::float8 AS x
                FROM {interaction_table}
            ), m AS (
                SELECT contact_id, max(x) AS mx, max(day) AS last_day, min(day) AS first_day
                FROM w GROUP BY contact_id
            ), s AS (
                SELECT w.contact_id, m.mx + ln(sum(power(2.0::float8, w.x - m.mx))) / ln(2.0::float8) AS log,
                       m.mx, m.last_day, m.first_day
                FROM w JOIN m USING (contact_id)
                GROUP BY w.contact_id, m.mx, m.last_day, m.first_day
            )
            UPDATE {contact_table} c
            SET closeness_log = s.log,
                last_interaction_log_strength = s.log - s.mx,
                last_interaction_day = s.last_day,
                first_seen_at = s.first_day + time '09:30'
            FROM s WHERE s.contact_id = c.id
            """
        )
        # What autovacuum does soon after a load: statistics, and the visibility map
        # that lets counts be index-only scans.
        cursor.execute(f"VACUUM ANALYZE {contact_table}")
        cursor.execute(f"VACUUM ANALYZE {interaction_table}")


def check_sample(workspace):
    """The SQL-computed closeness_log equals contacts/closeness.py's on a sample."""
    from contacts import closeness
    from contacts.models import Contact

    sample = Contact.objects.filter(workspace=workspace, pk__in=[1, 2, 3, 17, 1000, 54321, 99999])
    for contact in sample:
        days = list(contact.interactions.values_list("day", flat=True))
        expected = closeness.log_for_days(days)
        assert abs(contact.closeness_log - expected) < 1e-9, (contact.pk, contact.closeness_log, expected)


def measure(client, url, runs):
    from django.db import connection

    queries = []

    def count(execute, sql, params, many, context):
        queries.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        response = client.get(url)
        if hasattr(response, "streaming_content"):
            b"".join(response.streaming_content)
    assert response.status_code == 200, (url, response.status_code)
    timings, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        response = client.get(url)
        if hasattr(response, "streaming_content"):
            b"".join(response.streaming_content)
        timings.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    timings.sort()
    p95 = timings[min(len(timings) - 1, round(0.95 * (len(timings) - 1)))]
    return statistics.median(timings), p95, statistics.median(cpu), database_time(queries), len(queries)


def database_time(queries) -> float:
    """PostgreSQL's own execution time for one request's SELECTs (EXPLAIN ANALYZE)."""
    from django.db import connection

    total = 0.0
    with connection.cursor() as cursor:
        for sql, params in queries:
            if not sql.lstrip().upper().startswith("SELECT"):
                continue
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0]
            plan = json.loads(plan) if isinstance(plan, str) else plan
            total += plan[0]["Planning Time"] + plan[0]["Execution Time"]
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refill", action="store_true", help="rebuild the data even if present")
    parser.add_argument("--runs", type=int, default=40, help="timed requests per page (after one warm-up)")
    args = parser.parse_args()

    url = os.environ.setdefault("DATABASE_URL", DEFAULT_URL)
    if not url.startswith("postgres"):
        sys.exit("bench/pages.py needs PostgreSQL: set DATABASE_URL=postgres://...")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "natsite.settings")
    ensure_database(url)

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import override_settings

    from contacts import closeness
    from contacts.models import Contact, Interaction, Membership, Workspace

    call_command("migrate", verbosity=0)
    workspace, _ = Workspace.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    user, _ = get_user_model().objects.get_or_create(username="bench-founder")
    Membership.objects.get_or_create(user=user, workspace=workspace)

    load_before = os.getloadavg()
    if args.refill or Contact.objects.filter(workspace=workspace).count() != CONTACTS:
        started = time.perf_counter()
        fill(workspace)
        print(f"filled in {time.perf_counter() - started:.0f} s")
    check_sample(workspace)

    today = workspace.today()
    contacts = Contact.objects.filter(workspace=workspace)
    print(
        f"data: {contacts.count():,} contacts, {Interaction.objects.filter(workspace=workspace).count():,} interactions;"
        f" per level today: "
        + ", ".join(f"{level} {contacts.at_level(level, today).count():,}" for level in closeness.LEVELS)
    )
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} (2 cores shared)")

    pages = [
        ("contact list, by closeness, level=close", "/contacts/?level=close", 50),
        ("contact list, by closeness, level=warm", "/contacts/?level=warm", 50),
        ("contact list, by closeness, level=cool", "/contacts/?level=cool", 50),
        ("contact list, by closeness, level=cold", "/contacts/?level=cold", 50),
        ("contact list, by closeness, level=cold, page 100", "/contacts/?level=cold&page=100", 50),
        ("contact detail, 3,650 interaction days", "/contacts/1/", 100),
        ("contact detail, 3,650 days, timeline page 40", "/contacts/1/?page=40", 100),
        ("contact list, by closeness, all levels", "/contacts/", None),
        ("contact list, by last interaction", "/contacts/?sort=last", None),
        ("contact list, search 'contact4242'", "/contacts/?q=contact4242", None),
        ("dashboard", "/", None),
    ]
    client = Client()
    client.force_login(user)
    # "app CPU" is this process's CPU time (Django, template, driver), without PostgreSQL's
    # work or the time spent waiting for a core: a figure the machine's load barely moves.
    # "DB" is PostgreSQL's planning + execution time for the request's queries (EXPLAIN
    # ANALYZE, once), without round trips.
    print(f"\n{'page':52} {'p50 ms':>8} {'p95 ms':>8} {'app CPU':>8} {'DB ms':>8} {'queries':>8}  target p50")
    with override_settings(
        STORAGES={**settings.STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
    ):
        for label, path, target in pages:
            p50, p95, cpu, db, queries = measure(client, path, args.runs)
            verdict = "" if target is None else f"< {target} ms {'ok' if p50 < target else 'MISSED'}"
            print(f"{label:52} {p50:8.1f} {p95:8.1f} {cpu:8.1f} {db:8.1f} {queries:8}  {verdict}")
    load_after = os.getloadavg()
    print(f"\nload average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; runs per page: {args.runs}")


if __name__ == "__main__":
    main()
