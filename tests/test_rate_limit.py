"""The per-key rate limit: INGEST_RATE_LIMIT messages per second per API key, then 429
with Retry-After; shared by every gunicorn worker when CACHE_URL points at Redis; and a
cache outage never costs a message."""

import threading
import time

import pytest
import redis
from django.db import connection
from django.test import override_settings

from ingest.models import ProcessedMessage
from tests.factories import api_key_for
from tests.segment_messages import identify
from tests.servers import free_port, gunicorn, post

pytestmark = pytest.mark.django_db

REDIS_URL = "redis://127.0.0.1:6379/5"
GUNICORN_PORT = free_port()


def in_one_window(send):
    """Run `send` until one run falls inside a single one-second window of the limiter."""
    for _ in range(5):
        time.sleep(1 - time.time() % 1)  # a fresh window, untouched by an earlier try
        started = int(time.time())
        answers = send()
        if int(time.time()) == started:
            return answers
    pytest.fail("could not send within one second")


def assert_rate_limited(response):
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert response.json()["message"]


def test_a_key_over_its_limit_gets_429_with_retry_after_and_nothing_is_stored(settings, webhook):
    settings.INGEST_RATE_LIMIT = 5

    def send():
        messages = [identify(f"p{i}@example.com") for i in range(7)]
        return [(message, webhook.post(message)) for message in messages]

    answers = in_one_window(send)
    assert [a.status_code for _, a in answers] == [200] * 5 + [429] * 2
    for message, response in answers[5:]:
        assert_rate_limited(response)
        assert not ProcessedMessage.objects.filter(message_id=message["messageId"]).exists()


def test_the_limit_counts_messages_and_one_batch_may_spend_an_empty_window(settings, webhook):
    settings.INGEST_RATE_LIMIT = 10

    def send():
        batch = webhook.post([identify(f"b{i}@example.com") for i in range(25)])
        single = webhook.post(identify("after@example.com"))
        return batch, single

    batch, single = in_one_window(send)
    assert batch.status_code == 200
    assert batch.json()["accepted"] == 25
    assert_rate_limited(single)


def test_each_api_key_has_its_own_budget(settings, client, workspace, webhook):
    settings.INGEST_RATE_LIMIT = 3
    other_key = api_key_for(workspace)

    def send():
        spent = [webhook.post(identify(f"k{i}@example.com")) for i in range(4)]
        return spent, webhook.post(identify("other@example.com"), key=other_key)

    spent, other = in_one_window(send)
    assert spent[-1].status_code == 429
    assert other.status_code == 200


def test_a_limit_of_zero_turns_the_limit_off(settings, webhook):
    settings.INGEST_RATE_LIMIT = 0
    answers = [webhook.post(identify(f"z{i}@example.com")) for i in range(30)]
    assert {a.status_code for a in answers} == {200}


def test_the_redis_url_of_cache_url_uses_djangos_redis_backend(monkeypatch):
    import environ

    monkeypatch.setenv("CACHE_URL", REDIS_URL)
    backend = "django.core.cache.backends.redis.RedisCache"
    config = environ.Env().cache("CACHE_URL", backend=backend)
    assert config == {"BACKEND": backend, "LOCATION": REDIS_URL}


def test_when_the_cache_is_down_messages_are_still_accepted(settings, webhook):
    settings.INGEST_RATE_LIMIT = 1
    # Nothing listens on this port: every cache call fails to connect.
    unreachable = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": f"redis://127.0.0.1:{free_port()}/0"
        }
    }
    with override_settings(CACHES=unreachable):
        answers = [webhook.post(identify(f"down{i}@example.com")) for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert ProcessedMessage.objects.count() == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_limit_holds_across_three_gunicorn_workers_sharing_redis(workspace):
    if connection.vendor != "postgresql":
        pytest.skip("gunicorn needs a database it can reach: PostgreSQL")
    limit, batch, requests = 40, 5, 40
    key = api_key_for(workspace)
    shared = redis.Redis.from_url(REDIS_URL)
    database = connection.settings_dict
    password = f":{database['PASSWORD']}" if database["PASSWORD"] else ""
    env = {
        "DATABASE_URL": f"postgres://{database['USER']}{password}@{database['HOST'] or '127.0.0.1'}:"
        f"{database['PORT'] or 5432}/{database['NAME']}",
        "CACHE_URL": REDIS_URL,
        "INGEST_RATE_LIMIT": str(limit),
    }
    with gunicorn(port=GUNICORN_PORT, env=env, workers=3):
        for _ in range(6):  # the workers have served a request before the clock starts
            post(GUNICORN_PORT, key, [])

        def send():
            answers, lock = [], threading.Lock()
            bodies = [[identify(f"w{n}-{i}@example.com") for i in range(batch)] for n in range(requests)]

            def sender(chunk):
                for body in chunk:
                    answer = post(GUNICORN_PORT, key, body)
                    with lock:
                        answers.append((body, answer))

            threads = [threading.Thread(target=sender, args=(bodies[i::8],)) for i in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return answers

        time.sleep(1 - time.time() % 1)  # start at the top of a second
        started = time.time()
        answers = send()
        windows = int(time.time()) - int(started) + 1
        counters = shared.keys("*ingest-rate*")
    accepted = [body for body, a in answers if a.status == 200]
    refused = [(body, a) for body, a in answers if a.status != 200]
    # Per window: the budget, plus at most the one request that crossed it. (A counter
    # per worker would admit three times as much: all 200 messages.)
    assert limit <= len(accepted) * batch <= windows * (limit - 1 + batch), (len(accepted), windows)
    assert refused
    for body, answer in refused:
        assert answer.status == 429
        assert int(answer.headers["retry-after"]) >= 1
        assert answer.json()["message"]
        assert not ProcessedMessage.objects.filter(message_id__in=[m["messageId"] for m in body]).exists()
    for body in accepted:
        assert ProcessedMessage.objects.filter(message_id__in=[m["messageId"] for m in body]).count() == batch
    assert counters, "the count was kept in the shared Redis"
