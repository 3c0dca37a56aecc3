"""The webhook never writes an API key or the Authorization header to the logs, nor to
the error report mailed to ADMINS when something crashes."""

import base64
import logging

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from ingest.models import ApiKey
from tests.conftest import Webhook

pytestmark = pytest.mark.django_db


def identify(message_id="m-1"):
    return {"type": "identify", "messageId": message_id, "traits": {"email": "ada@example.com"},
            "timestamp": "2026-01-05T10:00:00Z"}


def secrets_of(raw_key):
    """Every form the key travels in: raw, as Basic credentials, as the header value."""
    token = base64.b64encode(f"{raw_key}:".encode()).decode()
    return [raw_key, raw_key[12:], token, f"Basic {token}", f"Bearer {raw_key}"]


def everything_logged(records):
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(record) + repr(record.__dict__) for record in records)


def assert_not_leaked(text, raw_key):
    for secret in secrets_of(raw_key):
        assert secret not in text


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


def test_accepted_and_refused_requests_log_no_key(client, api_key, workspace, logs):
    webhook = Webhook(client, api_key)
    assert webhook.post(identify()).status_code == 200
    unknown = "nat_" + "x" * 43
    assert webhook.post(identify("m-2"), key=unknown).status_code == 401
    assert client.post(
        "/ingest/segment", identify("m-3"), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {api_key}x"
    ).status_code == 401
    ApiKey.objects.filter(workspace=workspace).update(revoked_at=timezone.now())
    assert webhook.post(identify("m-4")).status_code == 401
    assert logs.records  # the refusals were logged (as "Unauthorized: /ingest/segment")
    text = everything_logged(logs.records)
    assert_not_leaked(text, api_key)
    assert_not_leaked(text, unknown)


def test_a_crash_logs_and_mails_no_key(settings, api_key, monkeypatch, logs):
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.DEBUG = False

    def crash(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("ingest.views.record_checked", crash)
    response = Webhook(Client(raise_request_exception=False), api_key).post(identify())
    assert response.status_code == 500
    text = everything_logged(logs.records)
    assert "boom" in text  # the crash itself is logged, with its traceback
    assert_not_leaked(text, api_key)
    assert len(mail.outbox) == 1
    report = mail.outbox[0].body
    assert "HTTP_AUTHORIZATION" in report and "********" in report  # the header is masked
    assert_not_leaked(report, api_key)


def test_gunicorns_access_log_leaves_out_the_basic_auth_user_name_which_is_the_key(tmp_path):
    """gunicorn's default access log prints the Basic user name; gunicorn.conf.py's does not."""
    import os
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    from tests.servers import free_port, gunicorn

    root = Path(__file__).resolve().parent.parent
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", DEBUG="0", LOG_LEVEL="WARNING")

    def manage(*args):
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=root, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    manage("migrate", "--noinput", "-v", "0")
    raw_key = manage("createworkspace", "Logs", "--slug", "logs").strip().splitlines()[-1]
    access_log = tmp_path / "access.log"
    port = free_port()
    with gunicorn(port=port, env=env, workers=1, options=["--access-logfile", str(access_log)]):
        token = base64.b64encode(f"{raw_key}:".encode()).decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/ingest/segment",
            data=b'{"type": "identify", "email": "ada@example.com", "timestamp": "2026-01-05T10:00:00Z"}',
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
    logged = access_log.read_text()
    assert '"POST /ingest/segment HTTP/1.1" 200' in logged
    assert_not_leaked(logged, raw_key)


def test_a_crash_while_the_key_is_being_checked_keeps_it_out_of_the_html_error_report(
    settings, api_key, monkeypatch
):
    """The HTML error report lists each frame's local variables: the ones holding the key
    are marked sensitive, so they are shown as stars."""
    from django.utils.log import AdminEmailHandler

    settings.ADMINS = [("Ops", "ops@example.com")]

    def crash(api_key, now):
        raise RuntimeError("boom while touching the key")

    monkeypatch.setattr("ingest.authentication.touch", crash)
    handler = AdminEmailHandler(include_html=True)
    request_logger = logging.getLogger("django.request")
    request_logger.addHandler(handler)
    try:
        response = Webhook(Client(raise_request_exception=False), api_key).post(identify())
    finally:
        request_logger.removeHandler(handler)
    assert response.status_code == 500
    html = next(m.alternatives[0][0] for m in mail.outbox if m.alternatives)
    assert "boom while touching the key" in html and "raw_key" in html  # the frame is there...
    assert_not_leaked(html, api_key)  # ...its secrets are not
    for secret in secrets_of(api_key):
        assert base64.b64encode(secret.encode()).decode() not in html
