"""Load run of the Segment webhook: no message lost, none counted twice.

Starts gunicorn over a freshly migrated PostgreSQL database, sends tens of thousands
of identify messages from concurrent clients with the disorder Segment produces
(replays of a messageId, days out of order, same-day bursts, Engage syncs, batches
as arrays and {"batch": [...]}, gzip bodies), retries 429 and 5xx after Retry-After
as Segment does, then compares what is stored (contacts, interactions, event counts,
traits, closeness_log) with a model computed from what was sent.

    .venv/bin/python bench/load.py --messages 30000
    .venv/bin/python bench/load.py --messages 10000 --fault   # the database drops out, repeatedly

With --fault, gunicorn reaches PostgreSQL through a TCP proxy (tests/tcp_proxy.py) that
is cut and restored while the load runs: the server is never restarted.
"""

import argparse
import base64
import collections
import datetime as dt
import gzip
import http.client
import itertools
import json
import math
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TIMEZONE = "Europe/Paris"
PG = "postgres://postgres@127.0.0.1:5432"
RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_ATTEMPTS = 200
SERVER_LOG = "/tmp/natsite-load-gunicorn.log"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=30000, help="messages to send, replays included")
    parser.add_argument("--clients", type=int, default=16, help="concurrent senders")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--port", type=int, default=8113)
    parser.add_argument("--proxy-port", type=int, default=8114)
    parser.add_argument("--database", default="natsite_rel_load")
    parser.add_argument("--cache-url", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--rate-limit", type=int, default=100000, help="INGEST_RATE_LIMIT for the server")
    parser.add_argument("--fault", action="store_true", help="cut the database connection during the load")
    parser.add_argument("--seed", type=int, default=20261123)
    return parser.parse_args()


# --- the database, the app and the server -------------------------------------------


def recreate_database(name):
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def set_up_django(database):
    os.environ["DATABASE_URL"] = f"{PG}/{database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "natsite.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def make_workspace():
    from contacts.models import Workspace
    from ingest.api_keys import create_api_key

    workspace = Workspace.objects.create(name="Load", slug="load", timezone=TIMEZONE)
    return workspace, create_api_key(workspace=workspace)[1]


def start_gunicorn(args, database_url):
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        CACHE_URL=args.cache_url,
        INGEST_RATE_LIMIT=str(args.rate_limit),
        INGEST_RETRY_AFTER_SECONDS="1",
        DEBUG="false",
        LOG_LEVEL="ERROR",
    )
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/gunicorn"), "natsite.wsgi", "-w", str(args.workers), "-b", f"127.0.0.1:{args.port}",
         "--timeout", "30", "--log-level", "warning"],
        cwd=ROOT, env=env, start_new_session=True, stderr=open(SERVER_LOG, "wb"),
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", args.port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit(f"gunicorn did not start; see {SERVER_LOG}")


# --- what is sent ---------------------------------------------------------------------

PLANS = ["free", "starter", "growth", "enterprise"]


def timestamp_text(moment, rng):
    """One of the ISO-8601 forms Segment's libraries emit, naming exactly `moment`."""
    shape = rng.random()
    if shape < 0.5:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if shape < 0.7:
        return moment.astimezone(dt.timezone(dt.timedelta(hours=-5))).isoformat()
    if shape < 0.85:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"  # nanoseconds
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"  # milliseconds: moment has none below


def make_message(number, contact, moment, engage, rng):
    email = f"contact{contact}@load.example"
    shown_email = email.upper() if rng.random() < 0.1 else email
    message = {"type": "identify", "messageId": f"load-{number}", "timestamp": timestamp_text(moment, rng)}
    traits = {}
    if engage:
        traits = {"email": shown_email, "order_completed_last_30days": rng.random() < 0.5}
        message["context"] = {"personas": {"computation_class": "audience", "computation_key": "order_completed_last_30days"}}
        message["userId"] = f"user-{contact}"
    else:
        place = rng.random()
        if place < 0.7:
            traits["email"] = shown_email
        elif place < 0.8:
            message["context"] = {"traits": {"email": shown_email}}
        elif place < 0.9:
            message["email"] = shown_email
        else:
            message["userId"] = shown_email
        if "userId" not in message and rng.random() < 0.8:
            message["userId"] = f"user-{contact}"
        if contact % 2:
            traits["name"] = f"Person {contact}"
        elif rng.random() < 0.7:
            traits["firstName"], traits["lastName"] = "Person", str(contact)
        if rng.random() < 0.6:
            traits["plan"] = rng.choice(PLANS)
        if rng.random() < 0.5:
            traits["visits"] = rng.randint(1, 500)
        where = rng.random()
        if where < 0.55:
            message.setdefault("context", {})["page"] = {"url": f"https://app.example/p/{rng.randint(1, 50)}"}
        elif where < 0.75:
            message["event"] = rng.choice(["Signed In", "Viewed Pricing", "Invited Teammate"])
        elif where < 0.78:
            message["properties"] = {"url": "javascript:alert(1)"}
    if traits:
        message["traits"] = traits
    return message


def generate(total, rng, now):
    """(unique messages, their moments by messageId, deliveries): deliveries are the
    messages as sent, replays included, in arrival order."""
    contacts = max(50, total // 15)
    unique_wanted = int(total / 1.1)
    uniques, used, moments = [], set(), {}
    while len(uniques) < unique_wanted:
        # Most contacts are seen now and then; a few are very active (hot rows).
        contact = rng.randrange(contacts) if rng.random() < 0.8 else int(rng.paretovariate(1.2)) % contacts
        base = now - dt.timedelta(days=rng.randint(0, 150), seconds=rng.randint(0, 20 * 3600))
        burst = 1 if rng.random() < 0.75 else rng.randint(2, 8)
        for _ in range(burst):
            moment = base - dt.timedelta(seconds=rng.randint(0, 3 * 3600), milliseconds=rng.randint(0, 999))
            if (contact, moment) in used:
                continue
            used.add((contact, moment))
            message = make_message(len(uniques), contact, moment, rng.random() < 0.1, rng)
            moments[message["messageId"]] = moment
            uniques.append(message)
    deliveries = list(uniques)
    while len(deliveries) < total:
        deliveries.append(rng.choice(uniques))  # a replay: the same messageId again
    rng.shuffle(deliveries)
    return uniques, moments, deliveries


def make_requests(deliveries, rng, key):
    """Group deliveries into request bodies: single objects, arrays, {"batch"}; some gzipped."""
    basic = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    requests, i = [], 0
    while i < len(deliveries):
        shape = rng.random()
        if shape < 0.5:
            messages, payload = deliveries[i:i + 1], deliveries[i]
        else:
            messages = deliveries[i:i + rng.randint(2, 60)]
            payload = messages if shape < 0.75 else {"batch": messages}
        i += len(messages)
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json",
                   "Authorization": basic if rng.random() < 0.8 else f"Bearer {key}"}
        if rng.random() < 0.15:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        requests.append((body, headers, len(messages), isinstance(payload, dict) and "batch" not in payload))
    return requests


# --- sending, like Segment --------------------------------------------------------------


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.http = collections.Counter()
        self.outcomes = collections.Counter()
        self.attempts = 0
        self.completed = 0
        self.unanswered = 0
        self.gave_up = 0
        self.after_last_restore = collections.Counter()

    def add(self, **counts):
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


def send_all(requests, args, tally, fault):
    work = queue.Queue()
    for item in requests:
        work.put(item)

    def client():
        while True:
            try:
                body, headers, count, single = work.get_nowait()
            except queue.Empty:
                return
            for _ in range(MAX_ATTEMPTS):
                tally.add(attempts=1)
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
                    conn.request("POST", "/ingest/segment", body, headers)
                    response = conn.getresponse()
                    status, raw = response.status, response.read()
                    retry_after = response.getheader("Retry-After")
                    conn.close()
                except OSError:
                    tally.add(unanswered=1)
                    time.sleep(0.5)
                    continue
                with tally.lock:
                    tally.http[status] += 1
                    if fault is not None and fault.restored_for_good.is_set():
                        tally.after_last_restore[status] += 1
                if status in RETRY_STATUSES:
                    # Segment retries 5xx and 429; it honours Retry-After.
                    time.sleep(float(retry_after or 1) + random.random() * 0.2)
                    continue
                answer = json.loads(raw)
                results = [answer] if single else answer.get("results", [])
                with tally.lock:
                    if status != 200:
                        tally.outcomes[f"rejected {status}"] += count
                    for result in results:
                        tally.outcomes[str(result.get("status"))] += 1
                    tally.completed += 1
                break
            else:
                tally.add(gave_up=count)

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    return threads


class Fault:
    """Cuts the proxy between gunicorn and PostgreSQL now and then while the load runs,
    until 85% of the requests are answered; the rest shows the recovery."""

    def __init__(self, proxy, done, tally, requests):
        self.proxy, self.done, self.tally, self.requests = proxy, done, tally, requests
        self.cuts = []
        self.restored_for_good = threading.Event()

    def run(self):
        plan = itertools.cycle([(2.0, 2.0), (5.0, 4.0), (3.0, 1.0), (8.0, 3.0), (1.0, 0.5)])  # (up, then down) s
        for up, down in plan:
            if self.done.wait(up) or self.tally.completed >= 0.85 * self.requests:
                break
            self.proxy.cut()
            started = time.time()
            time.sleep(down)
            self.proxy.restore()
            self.cuts.append(round(time.time() - started, 1))
        self.restored_for_good.set()


# --- the model, and the comparison -----------------------------------------------------


def fold(key):
    return key.lower().replace("_", "").replace("-", "")


def model_of(uniques, moments):
    """What must be stored, computed from the unique messages alone (arrival order is irrelevant)."""
    from contacts.closeness import log_for_days

    tz = ZoneInfo(TIMEZONE)
    per_contact = collections.defaultdict(list)
    for raw in uniques:
        moment = moments[raw["messageId"]]
        email = find_email(raw)
        per_contact[email].append((moment, raw))
    contacts = {}
    for email, items in per_contact.items():
        items.sort(key=lambda item: item[0])
        traits, user_id, days = {}, "", collections.defaultdict(list)
        for moment, raw in items:
            traits.update(raw.get("traits", {}))  # oldest first: the newest value of each key wins
            user_id = raw.get("userId", user_id)
            if "personas" not in raw.get("context", {}):
                days[moment.astimezone(tz).date()].append((moment, raw))
        name = traits.get("name") or " ".join(p for p in (traits.get("firstName"), traits.get("lastName")) if p)
        interactions = {}
        for day, day_items in days.items():
            first = day_items[0][1]
            description, url = description_of(first)
            interactions[day] = {
                "event_count": len(day_items),
                "occurred_at": day_items[0][0],
                "last_occurred_at": day_items[-1][0],
                "description": description,
                "url": url,
            }
        contacts[email] = {
            "name": name,
            "user_id": user_id,
            "traits": traits,
            "first_seen_at": items[0][0],
            "last_interaction_day": max(days) if days else None,
            "closeness_log": log_for_days(days),
            "interactions": interactions,
        }
    return contacts


def find_email(raw):
    for value in (raw.get("traits", {}).get("email"), raw.get("context", {}).get("traits", {}).get("email"),
                  raw.get("email"), raw.get("userId")):
        if value:
            return value.strip().lower()
    raise ValueError(raw)


def description_of(raw):
    url = raw.get("context", {}).get("page", {}).get("url") or raw.get("properties", {}).get("url")
    if url:
        return url, url if url.startswith("https://") else ""
    return raw.get("event") or "Identified via Segment", ""


def compare(model, workspace, unique_ids):
    from contacts.models import Contact, Interaction
    from ingest.models import ProcessedMessage

    lost = double = 0
    mismatches = collections.Counter()
    examples = []

    def differ(what, email, expected, got):
        mismatches[what] += 1
        if len(examples) < 10:
            examples.append(f"{what} {email}: expected {expected!r}, stored {got!r}")

    stored = {c["email"]: c for c in Contact.objects.filter(workspace=workspace).values()}
    interactions = collections.defaultdict(dict)
    for row in Interaction.objects.filter(workspace=workspace).values(
        "contact__email", "day", "event_count", "occurred_at", "last_occurred_at", "description", "url"
    ):
        interactions[row.pop("contact__email")][row.pop("day")] = row

    for email, expected in model.items():
        contact = stored.get(email)
        if contact is None:
            lost += sum(i["event_count"] for i in expected["interactions"].values()) or 1
            differ("missing contact", email, "present", None)
            continue
        for name in ("name", "user_id", "traits", "first_seen_at", "last_interaction_day"):
            if contact[name] != expected[name]:
                differ(name, email, expected[name], contact[name])
        if not math.isclose(contact["closeness_log"] or 0, expected["closeness_log"] or 0, rel_tol=0, abs_tol=1e-9) or (
            (contact["closeness_log"] is None) != (expected["closeness_log"] is None)
        ):
            differ("closeness_log", email, expected["closeness_log"], contact["closeness_log"])
        got_days = interactions.get(email, {})
        for day, want in expected["interactions"].items():
            got = got_days.get(day)
            if got is None:
                lost += want["event_count"]
                differ("missing interaction", email, day, None)
                continue
            lost += max(0, want["event_count"] - got["event_count"])
            double += max(0, got["event_count"] - want["event_count"])
            for name in ("occurred_at", "last_occurred_at", "description", "url"):
                if got[name] != want[name]:
                    differ(f"interaction {name}", email, want[name], got[name])
        for day in set(got_days) - set(expected["interactions"]):
            double += got_days[day]["event_count"]
            differ("unexpected interaction", email, None, day)
    for email in set(stored) - set(model):
        differ("unexpected contact", email, None, "present")
    processed = set(ProcessedMessage.objects.filter(workspace=workspace).values_list("message_id", flat=True))
    if processed != unique_ids:
        differ("processed messageIds", "-", len(unique_ids), len(processed))
    return lost, double, mismatches, examples, len(stored), sum(len(d) for d in interactions.values())


def main():
    args = parse_args()
    rng = random.Random(args.seed)
    recreate_database(args.database)
    set_up_django(args.database)
    workspace, key = make_workspace()

    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=1)
    uniques, moments, deliveries = generate(args.messages, rng, now)
    requests = make_requests(deliveries, rng, key)
    engage = sum(1 for m in uniques if "personas" in m.get("context", {}))

    proxy = fault = None
    database_url = f"{PG}/{args.database}"
    if args.fault:
        from tests.tcp_proxy import TcpProxy

        proxy = TcpProxy(listen_port=args.proxy_port, upstream_host="127.0.0.1", upstream_port=5432).start()
        database_url = f"postgres://postgres@127.0.0.1:{args.proxy_port}/{args.database}"
    server = start_gunicorn(args, database_url)
    tally = Tally()
    done = threading.Event()
    try:
        started = time.time()
        if proxy is not None:
            fault = Fault(proxy, done, tally, len(requests))
            fault_thread = threading.Thread(target=fault.run, daemon=True)
            fault_thread.start()
        for thread in send_all(requests, args, tally, fault):
            thread.join()
        elapsed = time.time() - started
        done.set()
        if fault is not None:
            fault_thread.join()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        if proxy is not None:
            proxy.stop()

    lost, double, mismatches, examples, contact_count, interaction_count = compare(
        model_of(uniques, moments), workspace, {m["messageId"] for m in uniques}
    )
    accepted = sum(n for status, n in tally.outcomes.items() if status in ("created", "merged", "duplicate", "traits_updated"))
    print(f"messages sent:        {len(deliveries)} ({len(uniques)} unique, {len(deliveries) - len(uniques)} replays, "
          f"{engage} Engage syncs) in {len(requests)} requests")
    print(f"clients / workers:    {args.clients} / {args.workers} gunicorn sync workers, rate limit {args.rate_limit}/s")
    print(f"HTTP attempts:        {tally.attempts} ({tally.attempts - len(requests)} retries, {tally.unanswered} unanswered)")
    print(f"HTTP statuses seen:   {dict(sorted(tally.http.items()))}")
    print(f"message outcomes:     {dict(sorted(tally.outcomes.items()))}")
    print(f"accepted:             {accepted} of {len(deliveries)}")
    print(f"stored:               {contact_count} contacts, {interaction_count} interactions")
    print(f"lost:                 {lost}")
    print(f"double-counted:       {double}")
    print(f"other mismatches:     {sum(mismatches.values())} {dict(mismatches)}")
    for line in examples:
        print("   ", line)
    print(f"gave up:              {tally.gave_up} messages")
    print(f"elapsed:              {elapsed:.1f} s ({len(deliveries) / elapsed:.0f} messages/s)")
    if fault is not None:
        print(f"database cuts:        {len(fault.cuts)} cuts of {fault.cuts} s; statuses after the last restore: "
              f"{dict(tally.after_last_restore)}")
    ok = lost == 0 and double == 0 and not mismatches and 500 not in tally.http and accepted == len(deliveries)
    print("RESULT:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
