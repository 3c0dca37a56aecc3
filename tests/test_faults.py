"""When the database goes away, the webhook answers 503 with Retry-After (never 500),
stores nothing half-done, and recovers by itself when the database returns.

A real gunicorn reaches the PostgreSQL test database through a TCP proxy that the test
cuts, silences and restores (the shared PostgreSQL server is never stopped). SQLite's
side (a write lock held past the busy timeout) is in tests/test_webhook_unavailable.py.
"""

import collections
import datetime as dt
import http.client
import threading
import time

import pytest
from django.db import connection

from contacts import closeness
from contacts.models import Contact, Interaction
from ingest.models import ProcessedMessage
from tests.segment_messages import identify
from tests.servers import free_port, gunicorn, post
from tests.tcp_proxy import TcpProxy

GUNICORN_PORT, PROXY_PORT = free_port(), free_port()
WORKERS = 2


def assert_retry_later(answer):
    assert answer.status == 503, answer.body
    assert int(answer.headers["retry-after"]) >= 1
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["message"]


def health():
    conn = http.client.HTTPConnection("127.0.0.1", GUNICORN_PORT, timeout=30)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


class Segment:
    """Delivers like Segment: a 503 is retried after Retry-After until it is accepted."""

    def __init__(self, key):
        self.key = key
        self.answers = []
        self.lock = threading.Lock()

    def deliver(self, payload):
        while True:
            answer = post(GUNICORN_PORT, self.key, payload)
            with self.lock:
                self.answers.append(answer)
            if answer.status != 503:
                return answer
            time.sleep(float(answer.headers["retry-after"]))


def day_of(n):
    return dt.date(2026, 9, 1) + dt.timedelta(days=n % 5)


def message(n, *, contact):
    return identify(f"person{contact}@example.com", timestamp=f"{day_of(n)}T{n % 24:02d}:{n % 60:02d}:00.{n:06d}Z")


@pytest.fixture
def proxied_server(db):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    database = connection.settings_dict
    proxy = TcpProxy(
        listen_port=PROXY_PORT, upstream_host=database["HOST"] or "127.0.0.1", upstream_port=int(database["PORT"] or 5432)
    ).start()
    password = f":{database['PASSWORD']}" if database["PASSWORD"] else ""
    env = {
        "DATABASE_URL": f"postgres://{database['USER']}{password}@127.0.0.1:{PROXY_PORT}/{database['NAME']}",
        "INGEST_RETRY_AFTER_SECONDS": "1",
        "INGEST_RATE_LIMIT": "0",
        "CACHE_URL": "locmemcache://faults",
    }
    try:
        with gunicorn(port=GUNICORN_PORT, env=env, workers=WORKERS) as server:
            yield proxy, server
    finally:
        proxy.stop()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_database_outage_answers_503_stores_nothing_half_done_and_recovers_without_restart(
    proxied_server, workspace, api_key
):
    proxy, server = proxied_server
    segment = Segment(api_key)
    sent = {}

    def deliver(payload):
        for item in payload if isinstance(payload, list) else [payload]:
            sent[item["messageId"]] = item
        return segment.deliver(payload)

    # Before the outage: workers keep their connections (CONN_MAX_AGE), one each.
    for n in range(8):
        assert deliver(message(n, contact=n % 3)).status == 200
    assert proxy.connections <= WORKERS

    # The database is gone: a batch is refused whole, and nothing of it is stored.
    proxy.cut()
    refused = [message(100 + n, contact=n) for n in range(4)]
    answer = post(GUNICORN_PORT, api_key, refused)
    assert_retry_later(answer)
    assert_retry_later(post(GUNICORN_PORT, api_key, message(200, contact=1)))
    assert health() == 503  # a load balancer sees the outage too
    assert not ProcessedMessage.objects.filter(message_id__in=[m["messageId"] for m in refused]).exists()
    proxy.restore()

    # The database drops out again while four senders stream singles, batches and replays.
    def stream(sender):
        for n in range(300 + sender * 100, 300 + sender * 100 + 30):
            if n % 3 == 0:
                deliver([message(n, contact=n % 7), message(n + 50, contact=(n + 1) % 7)])
            else:
                single = message(n, contact=n % 7)
                deliver(single)
                if n % 5 == 0:
                    deliver(single)  # Segment delivers some messages twice

    senders = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
    for thread in senders:
        thread.start()
    while len(segment.answers) < 20:
        time.sleep(0.01)
    connections_before = proxy.connections
    proxy.cut()
    time.sleep(1.5)
    proxy.restore()
    for thread in senders:
        thread.join()
    # The refused batch, retried now, goes through on the same server.
    assert deliver(refused).status == 200

    statuses = collections.Counter(a.status for a in segment.answers)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] >= 1
    for answer in segment.answers:
        if answer.status == 503:
            assert_retry_later(answer)
    assert server.poll() is None, "the server was never restarted"
    assert health() == 200
    assert proxy.connections > connections_before, "workers opened fresh connections after the outage"

    # What is stored is exactly what was sent, each message counted once.
    expected = collections.defaultdict(list)
    for item in sent.values():
        moment = dt.datetime.fromisoformat(item["timestamp"].replace("Z", "+00:00"))
        expected[(item["traits"]["email"], moment.date())].append(moment)
    stored = {
        (row.contact.email, row.day): row for row in Interaction.objects.select_related("contact")
    }
    assert set(stored) == set(expected)
    for slot, moments in expected.items():
        assert stored[slot].event_count == len(moments)
        assert stored[slot].occurred_at == min(moments)
        assert stored[slot].last_occurred_at == max(moments)
    assert ProcessedMessage.objects.count() == len(sent)
    for contact in Contact.objects.all():
        days = [day for email, day in expected if email == contact.email]
        assert contact.closeness_log == pytest.approx(closeness.log_for_days(days), abs=1e-9)
        assert contact.last_interaction_day == max(days)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_kept_connections_the_database_dropped_are_replaced_without_an_error(proxied_server, workspace, api_key):
    # The webhook sends no health-check SELECT 1 before its first statement: the API-key
    # look-up finds the dead connection and runs again on a fresh one (natsite/db.py).
    proxy, _ = proxied_server
    for n in range(2 * WORKERS):
        assert post(GUNICORN_PORT, api_key, message(n, contact=n)).status == 200
    opened = proxy.connections

    proxy.cut()  # every kept connection drops...
    proxy.restore()  # ...and the database answers again before the next message
    later = [message(100 + n, contact=n) for n in range(2 * WORKERS)]
    answers = [post(GUNICORN_PORT, api_key, item) for item in later]

    assert [a.status for a in answers] == [200] * len(later), [a.body for a in answers]
    assert proxy.connections > opened
    assert ProcessedMessage.objects.filter(message_id__in=[m["messageId"] for m in later]).count() == len(later)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_database_that_does_not_answer_gets_503_within_segments_timeout(proxied_server, workspace, api_key):
    proxy, _ = proxied_server
    assert post(GUNICORN_PORT, api_key, message(1, contact=1)).status == 200
    proxy.silence()  # connections drop; new ones are accepted and never answered
    try:
        started = time.monotonic()
        answer = post(GUNICORN_PORT, api_key, message(2, contact=1))
        elapsed = time.monotonic() - started
    finally:
        proxy.restore()
    assert_retry_later(answer)
    assert elapsed < 5, f"answered after {elapsed:.1f} s: connect_timeout bounds the wait"
    assert Segment(api_key).deliver(message(2, contact=1)).status == 200
    assert ProcessedMessage.objects.count() == 2
    assert sorted(Interaction.objects.values_list("event_count", flat=True)) == [1, 1]
