"""Password guessing is cut short: per user name and per client IP, after
LOGIN_FAILURE_LIMIT attempts in the window the login answers 429 with Retry-After,
on /accounts/login/ and /admin/login/ alike, across processes when the cache is Redis."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.contrib.auth import SESSION_KEY

BASE_DIR = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"
LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"


@pytest.fixture(autouse=True)
def _limits(settings):
    settings.LOGIN_FAILURE_LIMIT = 5
    settings.LOGIN_FAILURE_LIMIT_PER_IP = 20
    settings.LOGIN_FAILURE_WINDOW_SECONDS = 900
    settings.NUM_PROXIES = 0
    # Production's slow hasher would make every attempt take a second here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def alice_with_password(alice):
    alice.set_password(PASSWORD)
    alice.is_staff = True
    alice.save()
    return alice


def sign_in(client, password, *, username="alice", path=LOGIN, ip="203.0.113.7", **extra):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=ip, **extra)


def signed_in(client):
    return SESSION_KEY in client.session


def fail(client, times, **kwargs):
    statuses = [sign_in(client, "wrong guess", **kwargs).status_code for _ in range(times)]
    assert statuses == [200] * times  # the form again, with its error
    return statuses


@pytest.mark.django_db
def test_wrong_passwords_up_to_the_limit_get_the_form_back(client, alice_with_password):
    fail(client, 5)
    assert not signed_in(client)


@pytest.mark.django_db
def test_over_the_limit_even_the_right_password_is_refused_with_429(client, alice_with_password):
    fail(client, 5)
    response = sign_in(client, PASSWORD)
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 900
    assert "Too many failed sign-in attempts" in response.content.decode()
    assert not signed_in(client)


@pytest.mark.django_db
def test_the_lock_ends_when_the_window_has_passed(settings, client, alice_with_password):
    settings.LOGIN_FAILURE_WINDOW_SECONDS = 2
    fail(client, 5)
    assert sign_in(client, PASSWORD).status_code == 429
    time.sleep(2.2)
    response = sign_in(client, PASSWORD)
    assert response.status_code == 302
    assert signed_in(client)


@pytest.mark.django_db
def test_a_successful_sign_in_starts_the_count_again(client, alice_with_password):
    fail(client, 4)
    assert sign_in(client, PASSWORD).status_code == 302
    client.logout()
    fail(client, 5)  # five more wrong passwords are allowed again
    assert sign_in(client, PASSWORD).status_code == 429


@pytest.mark.django_db
def test_the_user_name_is_locked_from_every_address(client, alice_with_password):
    fail(client, 5, ip="203.0.113.7")
    assert sign_in(client, PASSWORD, ip="198.51.100.20").status_code == 429


@pytest.mark.django_db
def test_user_names_are_counted_whatever_their_case(client, alice_with_password):
    for username in ("alice", "ALICE", " Alice", "alicE", "aLice"):
        assert sign_in(client, "wrong guess", username=username).status_code == 200
    assert sign_in(client, PASSWORD).status_code == 429


@pytest.mark.django_db
def test_one_address_guessing_many_user_names_is_locked(settings, client, alice_with_password):
    settings.LOGIN_FAILURE_LIMIT_PER_IP = 3
    for username in ("bob", "carol", "dave"):
        assert sign_in(client, "wrong guess", username=username).status_code == 200
    assert sign_in(client, PASSWORD).status_code == 429
    # Another address is not affected by that address's lock.
    assert sign_in(client, PASSWORD, ip="198.51.100.20").status_code == 302


@pytest.mark.django_db
def test_a_forged_x_forwarded_for_does_not_escape_the_address_count(settings, client, alice_with_password):
    settings.LOGIN_FAILURE_LIMIT_PER_IP = 3
    for n, username in enumerate(("bob", "carol", "dave")):
        sign_in(client, "wrong guess", username=username, HTTP_X_FORWARDED_FOR=f"10.0.0.{n}")
    assert sign_in(client, PASSWORD, HTTP_X_FORWARDED_FOR="10.9.9.9").status_code == 429


@pytest.mark.django_db
def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(settings, client, alice_with_password):
    settings.LOGIN_FAILURE_LIMIT_PER_IP = 3
    settings.NUM_PROXIES = 1
    for username in ("bob", "carol", "dave"):
        sign_in(client, "wrong guess", username=username, ip="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.7")
    # Same proxy, another client: not locked. The guessing client: locked, whatever it prepends.
    assert sign_in(client, PASSWORD, ip="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.20").status_code == 302
    client.logout()
    forged = "1.2.3.4, 203.0.113.7"
    assert sign_in(client, PASSWORD, ip="10.0.0.1", HTTP_X_FORWARDED_FOR=forged).status_code == 429


@pytest.mark.django_db
def test_the_admin_login_shares_the_count_with_the_app_login(client, alice_with_password):
    fail(client, 3, path=LOGIN)
    fail(client, 2, path=ADMIN_LOGIN)
    response = sign_in(client, PASSWORD, path=ADMIN_LOGIN)
    assert response.status_code == 429
    assert "Too many failed sign-in attempts" in response.content.decode()
    assert sign_in(client, PASSWORD, path=LOGIN).status_code == 429
    assert not signed_in(client)


@pytest.mark.django_db
def test_the_admin_login_still_signs_staff_in_under_the_limit(client, alice_with_password):
    fail(client, 2, path=ADMIN_LOGIN)
    response = sign_in(client, PASSWORD, path=ADMIN_LOGIN)
    assert response.status_code == 302
    assert signed_in(client)


@pytest.mark.django_db
def test_a_limit_of_zero_turns_the_rate_limit_off(settings, client, alice_with_password):
    settings.LOGIN_FAILURE_LIMIT = 0
    settings.LOGIN_FAILURE_LIMIT_PER_IP = 0
    fail(client, 12)
    assert sign_in(client, PASSWORD).status_code == 302


def redis_available():
    try:
        import redis

        return redis.Redis.from_url("redis://127.0.0.1:6379/6", socket_connect_timeout=1).ping()
    except Exception:
        return False


@pytest.mark.django_db
@pytest.mark.skipif(not redis_available(), reason="needs Redis on 127.0.0.1:6379")
def test_with_redis_another_process_sees_the_lock(settings, client, alice_with_password):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/6"}
    }
    from django.core.cache import cache

    cache.clear()
    try:
        fail(client, 5)
        # A second process (as a second gunicorn worker would be) reads the same counts.
        script = (
            "import django; django.setup()\n"
            "from django.test import RequestFactory\n"
            "from natsite.login import count_attempt\n"
            "request = RequestFactory().post('/accounts/login/', REMOTE_ADDR='198.51.100.20')\n"
            "print('wait', count_attempt(request, 'alice'))\n"
        )
        env = {**os.environ, "CACHE_URL": "redis://127.0.0.1:6379/6", "DJANGO_SETTINGS_MODULE": "natsite.settings"}
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        wait = int(result.stdout.split()[-1])
        assert 1 <= wait <= 900
    finally:
        cache.clear()


@pytest.mark.django_db
def test_an_incomplete_form_is_not_counted_as_an_attempt(client, alice_with_password):
    for _ in range(8):
        assert client.post(LOGIN, {"username": "alice", "password": ""}, REMOTE_ADDR="203.0.113.7").status_code == 200
    assert sign_in(client, PASSWORD).status_code == 302


@pytest.mark.parametrize("backend", ["locmem", "redis"])
def test_concurrent_guesses_cannot_slip_past_the_limit(settings, backend):
    """Attempts are counted before any password is checked: of 30 simultaneous guesses
    at one account, exactly LOGIN_FAILURE_LIMIT get to try."""
    from concurrent.futures import ThreadPoolExecutor

    from django.core.cache import cache
    from django.test import RequestFactory

    from natsite.login import count_attempt

    if backend == "redis":
        if not redis_available():
            pytest.skip("needs Redis on 127.0.0.1:6379")
        settings.CACHES = {
            "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                        "LOCATION": "redis://127.0.0.1:6379/6"}
        }
    cache.clear()
    requests = [RequestFactory().post(LOGIN, REMOTE_ADDR=f"198.51.100.{n}") for n in range(30)]
    try:
        with ThreadPoolExecutor(max_workers=10) as pool:
            waits = list(pool.map(lambda request: count_attempt(request, "alice"), requests))
    finally:
        cache.clear()
    assert waits.count(None) == 5
    assert all(1 <= wait <= 900 for wait in waits if wait is not None)


@pytest.mark.django_db
def test_with_the_cache_down_sign_in_still_works_and_the_lapse_is_logged(client, alice_with_password, caplog):
    from django.test import override_settings

    unreachable = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    with override_settings(CACHES=unreachable):  # restored before the suite clears the cache
        assert sign_in(client, "wrong guess").status_code == 200
        response = sign_in(client, PASSWORD)
    assert response.status_code == 302
    assert signed_in(client)
    assert "rate limit not applied, the cache is unavailable" in caplog.text
