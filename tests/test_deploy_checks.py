"""`manage.py check --deploy` is clean with the documented production settings, and
natsite's own checks catch development secrets and a shared secret."""

import os
import subprocess
import sys
from pathlib import Path

from django.core.checks import run_checks
from django.test import override_settings

BASE_DIR = Path(__file__).resolve().parent.parent

# The production environment the README documents (values are examples, not secrets).
# SESSION_COOKIE_SECURE and CSRF_COOKIE_SECURE are left out on purpose: secure cookies
# must be the default once DEBUG is off (else security.W012/W016 would be reported).
PRODUCTION_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "Yq3v8JrX2mZk7tPwLc9aHs4dNf6gBu1eVo5iRy0qTx8zKj2lWm-_3nQpC7bEh9uSa",
    "API_KEY_HASH_SECRET": "p4Rk9sVw2Xy7Lm3Nc8Bq5Tz1Hd6Gf0JaUe-_Ko2Ri9Ys4Pv",
    "ALLOWED_HOSTS": "natsite.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://natsite.example.com",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
    "BEHIND_TLS_PROXY": "1",
}


def ids(messages):
    return sorted(message.id for message in messages)


def test_check_deploy_reports_nothing_with_the_production_settings():
    env = {**os.environ, **PRODUCTION_ENV}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues (0 silenced)." in output, output


def test_check_deploy_flags_the_development_defaults_when_debug_is_off():
    # The settings module's own defaults: no SECRET_KEY nor API_KEY_HASH_SECRET set.
    env = {key: value for key, value in {**os.environ, **PRODUCTION_ENV}.items()
           if key not in ("SECRET_KEY", "API_KEY_HASH_SECRET", "DJANGO_SETTINGS_MODULE")}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert "natsite.W001" in output and "natsite.W002" in output, output


@override_settings(DEBUG=False, SECRET_KEY="dev-only-insecure-secret-key-change-me-0123456789abcdef")
def test_a_development_secret_key_is_flagged_when_debug_is_off():
    assert "natsite.W001" in ids(run_checks(include_deployment_checks=True))


@override_settings(DEBUG=False, API_KEY_HASH_SECRET="dev-only-api-key-hash-secret-change-me")
def test_a_development_api_key_hash_secret_is_flagged_when_debug_is_off():
    assert "natsite.W002" in ids(run_checks(include_deployment_checks=True))


@override_settings(DEBUG=False, API_KEY_HASH_SECRET="too-short-to-key-hashes")
def test_a_short_api_key_hash_secret_is_flagged_when_debug_is_off():
    assert "natsite.W002" in ids(run_checks(include_deployment_checks=True))


@override_settings(
    DEBUG=True,
    SECRET_KEY="dev-only-insecure-secret-key-change-me-0123456789abcdef",
    API_KEY_HASH_SECRET="dev-only-api-key-hash-secret-change-me",
)
def test_development_secrets_are_fine_while_debug_is_on():
    found = ids(run_checks(include_deployment_checks=True))
    assert "natsite.W001" not in found and "natsite.W002" not in found


@override_settings(SECRET_KEY=PRODUCTION_ENV["SECRET_KEY"], API_KEY_HASH_SECRET=PRODUCTION_ENV["SECRET_KEY"])
def test_an_api_key_hash_secret_equal_to_the_secret_key_is_flagged_even_outside_deploy_checks():
    assert "natsite.W003" in ids(run_checks())


@override_settings(
    DEBUG=False,
    SECRET_KEY=PRODUCTION_ENV["SECRET_KEY"],
    API_KEY_HASH_SECRET=PRODUCTION_ENV["API_KEY_HASH_SECRET"],
)
def test_distinct_random_secrets_raise_no_natsite_warning():
    assert not [i for i in ids(run_checks(include_deployment_checks=True)) if i.startswith("natsite.")]
