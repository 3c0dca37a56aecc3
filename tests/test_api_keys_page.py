"""/settings/api-keys/: who may see, rotate and revoke keys, the key shown once, the
password re-confirmation, the signing secret and the Segment connection panel."""

import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import time

import pytest
from django.apps import apps
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import Client
from django.utils import timezone

from contacts.models import Workspace
from ingest import connection as segment_connection
from ingest import password_confirmation
from ingest.api_keys import create_api_key
from ingest.models import ApiKey, ApiKeyEvent, ProcessedMessage, RejectedMessage
from tests.conftest import Webhook
from tests.factories import MembershipFactory, UserFactory, grant_rotate

PAGE = "/settings/api-keys/"
ROTATE = "/settings/api-keys/rotate/"
SIGNING = "/settings/api-keys/signing-secret/"
SIGNING_CLEAR = "/settings/api-keys/signing-secret/clear/"
KEY_PATTERN = re.compile(r"nat_[A-Za-z0-9_-]{32,}")


def revoke_url(api_key):
    return f"/settings/api-keys/{api_key.pk}/revoke/"


def identify(email="peter@initech.com", message_id=None, timestamp=None):
    payload = {
        "type": "identify",
        "timestamp": timestamp or timezone.now().isoformat(),
        "traits": {"email": email},
    }
    if message_id:
        payload["messageId"] = message_id
    return payload


def confirm_password_recently(client):
    """As if the user had typed their password a moment ago."""
    session = client.session
    session[password_confirmation.SESSION_KEY] = time.time()
    session.save()


def signed_in(user, client=None):
    client = client or Client()
    client.force_login(user)
    confirm_password_recently(client)
    return client


def shown_key(response) -> str | None:
    found = KEY_PATTERN.search(response.content.decode())
    return found.group(0) if found else None


@pytest.fixture
def acme_key(workspace, alice):
    return create_api_key(workspace=workspace, actor=alice)[0]


@pytest.fixture
def users(alice, bob, charlie):
    return {"alice": alice, "bob": bob, "charlie": charlie, "anonymous": None}


def client_for(users, who):
    if who == "anonymous":
        return Client()
    return signed_in(users[who])


# --- The permission matrix -------------------------------------------------------------


@pytest.mark.parametrize(
    "who, expected",
    [("alice", 200), ("bob", 200), ("charlie", 404), ("anonymous", "login")],
)
def test_viewing_acmes_keys_depends_on_who_asks(users, acme_key, who, expected):
    response = client_for(users, who).get(PAGE + "?workspace=acme")

    if expected == "login":
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=")
    else:
        assert response.status_code == expected
    if expected == 200:
        assert acme_key.prefix in response.content.decode()


@pytest.mark.parametrize(
    "who, expected",
    [("alice", 302), ("bob", 403), ("charlie", 404), ("anonymous", "login")],
)
def test_rotating_acmes_key_depends_on_who_asks(users, workspace, acme_key, who, expected):
    response = client_for(users, who).post(ROTATE, {"workspace": "acme", "grace": "1h"})

    keys = ApiKey.objects.filter(workspace=workspace)
    if expected == "login":
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=")
    else:
        assert response.status_code == expected
    if expected == 302:
        assert response["Location"] == PAGE + "?workspace=acme"
        assert keys.count() == 2
        assert ApiKeyEvent.objects.filter(action="rotated", actor=users["alice"]).count() == 1
    else:
        assert keys.count() == 1
        assert not ApiKeyEvent.objects.filter(action="rotated").exists()


@pytest.mark.parametrize(
    "who, expected",
    [("alice", 302), ("bob", 403), ("charlie", 404), ("anonymous", "login")],
)
def test_revoking_acmes_key_depends_on_who_asks(users, acme_key, who, expected):
    response = client_for(users, who).post(revoke_url(acme_key))

    acme_key.refresh_from_db()
    if expected == "login":
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=")
    else:
        assert response.status_code == expected
    if expected == 302:
        assert acme_key.revoked_at is not None
        assert ApiKeyEvent.objects.filter(action="revoked", prefix=acme_key.prefix, actor=users["alice"]).exists()
    else:
        assert acme_key.revoked_at is None


@pytest.mark.parametrize(
    "who, expected",
    [("alice", 302), ("bob", 403), ("charlie", 404), ("anonymous", "login")],
)
def test_setting_acmes_signing_secret_depends_on_who_asks(users, workspace, who, expected):
    response = client_for(users, who).post(SIGNING, {"workspace": "acme"})

    workspace.refresh_from_db()
    assert response.status_code == (302 if expected == "login" else expected)
    assert bool(workspace.signing_secret) == (expected == 302)


@pytest.mark.parametrize("who, expected", [("alice", 302), ("bob", 403), ("charlie", 404)])
def test_clearing_acmes_signing_secret_depends_on_who_asks(users, workspace, who, expected):
    Workspace.objects.filter(pk=workspace.pk).update(signing_secret="s3cret-shared-with-segment")

    response = client_for(users, who).post(SIGNING_CLEAR, {"workspace": "acme"})

    workspace.refresh_from_db()
    assert response.status_code == expected
    assert (workspace.signing_secret == "") == (expected == 302)


def test_a_teammate_without_the_permission_sees_the_page_read_only(bob, acme_key):
    response = signed_in(bob).get(PAGE)

    page = response.content.decode()
    assert response.status_code == 200
    assert acme_key.prefix in page
    assert "Rotate API key" not in page
    assert "Revoke now" not in page
    assert "Generate a signing secret" not in page
    assert "Can rotate and revoke the workspace's API keys" in page


def test_an_outsider_sees_only_their_own_workspace(charlie, acme_key, other_workspace):
    globex_key = create_api_key(workspace=other_workspace, actor=charlie)[0]

    response = signed_in(charlie).get(PAGE)

    page = response.content.decode()
    assert response.status_code == 200
    assert globex_key.prefix in page
    assert acme_key.prefix not in page
    assert "Acme" not in page


def test_an_outsider_cannot_name_someone_elses_workspace_in_a_form(charlie, workspace, acme_key):
    client = signed_in(charlie)

    assert client.post(ROTATE, {"workspace": "acme"}).status_code == 404
    assert client.post(ROTATE, {"workspace": ""}).status_code == 404
    assert client.post(SIGNING, {"workspace": "acme"}).status_code == 404
    assert client.post("/settings/api-keys/999999/revoke/").status_code == 404
    assert ApiKey.objects.filter(workspace=workspace).count() == 1


def test_a_superuser_member_may_rotate_without_an_explicit_grant(workspace, acme_key):
    root = UserFactory(username="root", is_superuser=True, is_staff=True)
    MembershipFactory(user=root, workspace=workspace)

    response = signed_in(root).post(ROTATE, {"workspace": "acme"})

    assert response.status_code == 302
    assert ApiKey.objects.filter(workspace=workspace).count() == 2


def test_rotating_is_a_post_only(alice):
    assert signed_in(alice).get(ROTATE).status_code == 405


def test_an_unknown_grace_period_is_a_400_with_a_message(alice, workspace):
    response = signed_in(alice).post(ROTATE, {"workspace": "acme", "grace": "forever"})

    assert response.status_code == 400
    assert "grace period" in response.json()["message"]
    assert not ApiKey.objects.filter(workspace=workspace).exists()


# --- CSRF ------------------------------------------------------------------------------


def csrf_client(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    confirm_password_recently(client)
    return client


def test_rotating_without_a_csrf_token_is_refused(alice, workspace, acme_key):
    client = csrf_client(alice)
    client.get(PAGE)  # sets the CSRF cookie, but the form field is left out

    response = client.post(ROTATE, {"workspace": "acme"})

    assert response.status_code == 403
    assert ApiKey.objects.filter(workspace=workspace).count() == 1


def test_revoking_without_a_csrf_token_is_refused(alice, acme_key):
    client = csrf_client(alice)
    client.get(PAGE)

    response = client.post(revoke_url(acme_key))

    acme_key.refresh_from_db()
    assert response.status_code == 403
    assert acme_key.revoked_at is None


def test_rotating_with_the_pages_csrf_token_works(alice, workspace, acme_key):
    client = csrf_client(alice)
    page = client.get(PAGE).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)

    response = client.post(ROTATE, {"workspace": "acme", "grace": "24h", "csrfmiddlewaretoken": token})

    assert response.status_code == 302
    assert ApiKey.objects.filter(workspace=workspace).count() == 2


# --- Password re-confirmation -----------------------------------------------------------


def test_rotating_asks_for_the_password_when_not_confirmed_recently(alice, workspace, acme_key):
    client = Client()
    client.force_login(alice)

    response = client.post(ROTATE, {"workspace": "acme", "grace": "1h"})

    page = response.content.decode()
    assert response.status_code == 403
    assert "Confirm your password" in page
    assert 'name="grace" value="1h"' in page  # the choice is carried through the confirmation
    assert ApiKey.objects.filter(workspace=workspace).count() == 1


def test_a_wrong_password_does_not_rotate(alice, workspace, acme_key):
    client = Client()
    client.force_login(alice)

    response = client.post(ROTATE, {"workspace": "acme", "grace": "1h", "password": "not-her-password"})

    assert response.status_code == 403
    assert "That password is not right." in response.content.decode()
    assert ApiKey.objects.filter(workspace=workspace).count() == 1


def test_the_right_password_rotates_and_is_remembered_for_15_minutes(alice, workspace, acme_key):
    client = Client()
    client.force_login(alice)

    rotated = client.post(ROTATE, {"workspace": "acme", "grace": "1h", "password": "password"})
    revoked = client.post(revoke_url(acme_key))  # no password this time

    acme_key.refresh_from_db()
    assert rotated.status_code == 302
    assert revoked.status_code == 302
    assert acme_key.revoked_at is not None
    assert ApiKey.objects.filter(workspace=workspace).count() == 2


def test_a_confirmation_older_than_15_minutes_is_asked_again(alice, acme_key):
    client = Client()
    client.force_login(alice)
    session = client.session
    session[password_confirmation.SESSION_KEY] = time.time() - 15 * 60 - 1
    session.save()

    response = client.post(revoke_url(acme_key))

    acme_key.refresh_from_db()
    assert response.status_code == 403
    assert "Confirm your password" in response.content.decode()
    assert acme_key.revoked_at is None


def test_wrong_passwords_are_limited(alice, workspace, acme_key):
    client = Client()
    client.force_login(alice)
    for _ in range(password_confirmation.MAX_FAILURES):
        client.post(ROTATE, {"workspace": "acme", "password": "guess"})

    response = client.post(ROTATE, {"workspace": "acme", "password": "password"})

    assert response.status_code == 403
    assert "Too many wrong passwords" in response.content.decode()
    assert ApiKey.objects.filter(workspace=workspace).count() == 1


def test_the_teammate_is_refused_before_being_asked_for_a_password(bob, acme_key):
    client = Client()
    client.force_login(bob)

    response = client.post(revoke_url(acme_key), {"password": "password"})

    assert response.status_code == 403
    assert "Confirm your password" not in response.content.decode()
    assert password_confirmation.SESSION_KEY not in client.session


# --- The new key, shown exactly once ------------------------------------------------------


def test_the_new_key_is_shown_once_and_works(alice, workspace, acme_key):
    client = signed_in(alice)

    rotated = client.post(ROTATE, {"workspace": "acme", "grace": "1h"})
    first = client.get(rotated["Location"])
    second = client.get(PAGE)

    new_key = shown_key(first)
    newest = ApiKey.objects.filter(workspace=workspace).order_by("-created_at", "-pk").first()
    assert new_key is not None and new_key.startswith(newest.prefix)
    assert "shown <strong>only this once</strong>" in first.content.decode()
    assert "no-store" in first["Cache-Control"]
    assert new_key not in rotated["Location"]
    assert shown_key(second) is None
    assert Webhook(client, new_key).post(identify()).status_code == 200


def test_the_new_key_is_not_shown_to_another_browser_of_the_same_user(alice, acme_key):
    client = signed_in(alice)
    client.post(ROTATE, {"workspace": "acme"})
    other_browser = signed_in(alice)

    assert shown_key(other_browser.get(PAGE)) is None


def test_the_grace_period_keeps_the_old_key_working_then_it_is_expired(alice, client, workspace):
    old_key, old_raw = create_api_key(workspace=workspace)
    before = timezone.now()

    response = signed_in(alice).post(ROTATE, {"workspace": "acme", "grace": "1h"})

    old_key.refresh_from_db()
    assert response.status_code == 302
    assert before + dt.timedelta(hours=1) <= old_key.expires_at <= timezone.now() + dt.timedelta(hours=1)
    webhook = Webhook(client, old_raw)
    assert webhook.post(identify(message_id="during-grace")).status_code == 200

    # An hour and a second later: the clock is moved by moving the key's deadline back.
    ApiKey.objects.filter(pk=old_key.pk).update(expires_at=old_key.expires_at - dt.timedelta(hours=1, seconds=1))
    after = webhook.post(identify(message_id="after-grace"))

    assert after.status_code == 401
    assert after.json() == {"message": "API key expired"}
    assert after["WWW-Authenticate"] == 'Basic realm="natsite"'


def test_rotating_with_no_grace_ends_the_old_key_at_once(alice, client, workspace):
    _, old_raw = create_api_key(workspace=workspace)

    signed_in(alice).post(ROTATE, {"workspace": "acme", "grace": "now"})

    response = Webhook(client, old_raw).post(identify())
    assert response.status_code == 401
    assert response.json() == {"message": "API key expired"}


def test_a_revoked_key_is_refused_as_revoked(alice, client, workspace):
    api_key, raw = create_api_key(workspace=workspace)

    signed_in(alice).post(revoke_url(api_key))

    response = Webhook(client, raw).post(identify())
    assert response.status_code == 401
    assert response.json() == {"message": "API key revoked"}


def test_the_page_lists_keys_with_creator_use_expiry_and_status(alice, workspace):
    revoked, _ = create_api_key(workspace=workspace, actor=alice)
    ApiKey.objects.filter(pk=revoked.pk).update(revoked_at=timezone.now())
    signed_in(alice).post(ROTATE, {"workspace": "acme", "grace": "7d"})

    page = signed_in(alice).get(PAGE).content.decode()

    rows = re.findall(r'<tr class="api-key status-(\w+)" data-prefix="([^"]+)">', page)
    assert [status for status, _ in rows] == ["active", "revoked"]
    assert "by alice" in page
    assert "never" in page  # the new key has not been used yet


def test_the_history_shows_who_rotated_and_revoked_which_key(alice, workspace, acme_key):
    client = signed_in(alice)
    client.post(ROTATE, {"workspace": "acme", "grace": "24h"})
    client.post(revoke_url(acme_key))

    page = client.get(PAGE).content.decode()

    history = page[page.index('id="key-history"') :]
    assert history.count('<tr class="key-event">') == 3  # created, rotated, revoked
    assert "revoked" in history and "rotated" in history
    assert f"<code>{acme_key.prefix}…</code>" in history
    assert "alice" in history


# --- No raw secret in the database or the logs -------------------------------------------


def every_stored_text():
    """Every value of every row of every table, sessions decoded."""
    texts = []
    for model in apps.get_models():
        fields = [f.attname for f in model._meta.concrete_fields]
        for row in model.objects.values_list(*fields):
            texts.extend(str(value) for value in row)
    for session in Session.objects.all():
        texts.append(json.dumps(session.get_decoded(), default=str))
    return texts


def test_no_raw_key_is_ever_stored(alice, workspace, acme_key):
    client = signed_in(alice)
    rotated = client.post(ROTATE, {"workspace": "acme", "grace": "1h"})

    stored_before_render = every_stored_text()  # the key is waiting to be shown
    new_key = shown_key(client.get(rotated["Location"]))
    stored_after_render = every_stored_text()

    secret_part = new_key.removeprefix("nat_")[8:]
    for text in stored_before_render + stored_after_render:
        assert new_key not in text
        assert secret_part not in text
    api_key_columns = [
        str(value)
        for model in (ApiKey, ApiKeyEvent)
        for row in model.objects.values_list(*[f.attname for f in model._meta.concrete_fields])
        for value in row
    ]
    assert api_key_columns and not any(secret_part in value for value in api_key_columns)


def test_no_raw_key_reaches_the_logs(alice, client, workspace, acme_key, caplog, settings):
    settings.DEBUG = False
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django.db.backends")
    connection.force_debug_cursor = True  # log every SQL statement, with its parameters
    try:
        browser = signed_in(alice)
        rotated = browser.post(ROTATE, {"workspace": "acme", "grace": "1h"})
        new_key = shown_key(browser.get(rotated["Location"]))
        webhook = Webhook(client, new_key)
        accepted = webhook.post(identify())
        rejected = webhook.post({"type": "identify", "traits": {"email": "x@example.com"}})
        browser.post(revoke_url(ApiKey.objects.get(prefix=new_key[:12])))
        refused = webhook.post(identify())
    finally:
        connection.force_debug_cursor = False

    assert (accepted.status_code, rejected.status_code, refused.status_code) == (200, 400, 401)
    assert any("SELECT" in record.getMessage() for record in caplog.records)  # SQL was logged
    assert new_key not in caplog.text
    assert new_key.removeprefix("nat_")[8:] not in caplog.text


# --- Signing secret ----------------------------------------------------------------------


def signature(secret, body):
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def test_a_generated_signing_secret_is_shown_once_and_enforced(alice, client, workspace, api_key):
    browser = signed_in(alice)

    response = browser.post(SIGNING, {"workspace": "acme"})
    first = browser.get(response["Location"]).content.decode()
    second = browser.get(PAGE).content.decode()

    workspace.refresh_from_db()
    secret = workspace.signing_secret
    assert len(secret) >= 32
    assert secret in first and "Your new signing secret" in first
    assert secret not in second
    assert "Signing is <strong>on</strong>" in second

    body = json.dumps(identify()).encode()
    webhook = Webhook(client, api_key)
    unsigned = webhook.post(None, raw=body)
    signed = webhook.post(None, raw=body, HTTP_X_SIGNATURE=signature(secret, body))
    assert unsigned.status_code == 401
    assert unsigned.json() == {"message": "Missing X-Signature"}
    assert signed.status_code == 200


def test_clearing_the_signing_secret_lets_unsigned_requests_in(alice, client, workspace, api_key):
    browser = signed_in(alice)
    browser.post(SIGNING, {"workspace": "acme"})

    response = browser.post(SIGNING_CLEAR, {"workspace": "acme"})

    workspace.refresh_from_db()
    assert response.status_code == 302
    assert workspace.signing_secret == ""
    assert Webhook(client, api_key).post(identify()).status_code == 200
    actions = list(ApiKeyEvent.objects.filter(workspace=workspace).values_list("action", flat=True))
    assert actions[:2] == [ApiKeyEvent.SIGNING_SECRET_CLEARED, ApiKeyEvent.SIGNING_SECRET_SET]


# --- The Segment connection panel ---------------------------------------------------------


def test_the_panel_shows_the_endpoint_from_the_request(alice):
    page = signed_in(alice).get(PAGE).content.decode()

    assert 'value="http://testserver/ingest/segment"' in page


def test_the_panel_shows_the_endpoint_from_site_url_when_set(alice, settings):
    settings.SITE_URL = "https://crm.example.com/"

    page = signed_in(alice).get(PAGE).content.decode()

    assert 'value="https://crm.example.com/ingest/segment"' in page


def test_the_panel_says_when_nothing_has_arrived_yet(alice):
    page = signed_in(alice).get(PAGE).content.decode()

    assert '<dd id="last-event">No event yet</dd>' in page
    assert '<dd id="accepted-today">0</dd>' in page
    assert "No rejected message" in page
    assert "Webhooks (Actions)" in page and "Add destination" in page


def test_the_panel_shows_last_event_todays_count_and_rejections(alice, workspace, webhook):
    start = segment_connection.start_of_today(workspace, timezone.now())
    ProcessedMessage.objects.create(workspace=workspace, message_id="yesterday", received_at=start - dt.timedelta(minutes=1))
    webhook.post(identify(email="ann@initech.com", message_id="m1"))
    webhook.post(identify(email="bea@initech.com", message_id="m2"))
    webhook.post(identify(email="bea@initech.com", message_id="m2"))  # a replay: not counted again
    webhook.post({"type": "identify", "timestamp": timezone.now().isoformat(), "traits": {"name": "<script>alert(1)</script>"}})

    page = signed_in(alice).get(PAGE).content.decode()

    assert '<dd id="accepted-today">2</dd>' in page
    assert re.search(r'<dd id="last-event"><time datetime="[^"]+"[^>]*>(now|\d+\xa0seconds? ago)</time></dd>', page)
    rejections = page[page.index('id="rejected"') :]
    assert rejections.count('<tr class="rejection">') == 1
    assert "Missing email" in rejections
    assert '<span class="http-status">400</span>' in rejections
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rejections
    assert "<script>alert(1)" not in page


def test_todays_count_starts_at_midnight_in_the_workspace_time_zone(workspace):
    Workspace.objects.filter(pk=workspace.pk).update(timezone="Pacific/Auckland")
    workspace.refresh_from_db()
    now = timezone.now()
    start = segment_connection.start_of_today(workspace, now)
    ProcessedMessage.objects.create(workspace=workspace, message_id="before", received_at=start - dt.timedelta(seconds=1))
    ProcessedMessage.objects.create(workspace=workspace, message_id="after", received_at=start)

    assert start.astimezone(workspace.tzinfo).time() == dt.time(0)
    assert start <= now < start + dt.timedelta(days=1, hours=1)
    assert segment_connection.accepted_today(workspace, now) == 1


def test_the_panel_lists_only_the_workspaces_own_rejections(alice, other_workspace):
    RejectedMessage.objects.create(workspace=other_workspace, status=400, message="Globex secret reason", excerpt="{}")

    page = signed_in(alice).get(PAGE).content.decode()

    assert "Globex secret reason" not in page


# --- Bounded queries -------------------------------------------------------------------------


def fill_workspace(workspace, alice, keys, rejections):
    for i in range(keys):
        api_key = create_api_key(workspace=workspace, actor=alice)[0]
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now(), expires_at=timezone.now())
    RejectedMessage.objects.bulk_create(
        RejectedMessage(workspace=workspace, status=400, message=f"Missing email {i}", excerpt="{}") for i in range(rejections)
    )
    ProcessedMessage.objects.bulk_create(
        ProcessedMessage(workspace=workspace, message_id=f"m{i}") for i in range(rejections)
    )


@pytest.mark.parametrize("keys, rejections", [(1, 1), (60, 100)])
def test_the_page_runs_a_bounded_number_of_queries(alice, bob, workspace, keys, rejections, django_assert_max_num_queries):
    fill_workspace(workspace, alice, keys, rejections)
    client = signed_in(alice)

    with django_assert_max_num_queries(12):
        response = client.get(PAGE)

    assert response.status_code == 200
    assert response.content.decode().count('<tr class="rejection">') == rejections


def test_a_user_with_several_workspaces_may_rotate_each(alice, other_workspace):
    MembershipFactory(user=alice, workspace=other_workspace)
    grant_rotate(alice)
    client = signed_in(alice)

    response = client.post(ROTATE, {"workspace": "globex"})
    page = client.get(response["Location"]).content.decode()

    assert response["Location"] == PAGE + "?workspace=globex"
    assert "Workspace <strong>Globex</strong>" in page
    assert shown_key(client.get(PAGE + "?workspace=globex")) is None
    assert ApiKey.objects.filter(workspace=other_workspace).count() == 1


# --- The panel's queries are index range scans (PostgreSQL) -------------------------------------


@pytest.mark.postgres
def test_last_event_and_todays_count_use_the_workspace_received_at_index(workspace, other_workspace):
    table = ProcessedMessage._meta.db_table
    with connection.cursor() as cursor:
        for ws in (workspace, other_workspace):
            cursor.execute(
                f"INSERT INTO {table} (workspace_id, message_id, received_at) "
                "SELECT %s, 'm' || n, now() - n * interval '1 minute' FROM generate_series(1, 20000) AS n",
                [ws.pk],
            )
        cursor.execute(f"ANALYZE {table}")

    plans = []
    for queryset in (
        ProcessedMessage.objects.filter(workspace=workspace).order_by("-received_at").values_list("received_at")[:1],
        ProcessedMessage.objects.filter(
            workspace=workspace, received_at__gte=segment_connection.start_of_today(workspace, timezone.now())
        ),
    ):
        plans.append(queryset.explain())

    assert all("processed_received_idx" in plan for plan in plans), plans
    assert all("Seq Scan" not in plan for plan in plans), plans


# --- Warnings that explain missing events ----------------------------------------------------


def test_an_old_key_segment_still_uses_after_a_rotation_is_flagged(alice, client, workspace):
    old_key, old_raw = create_api_key(workspace=workspace)
    browser = signed_in(alice)
    browser.post(ROTATE, {"workspace": "acme", "grace": "1h"})

    before_use = browser.get(PAGE).content.decode()
    Webhook(client, old_raw).post(identify())  # Segment has not been updated yet
    after_use = browser.get(PAGE).content.decode()

    assert "Segment still uses this key" not in before_use
    row = re.search(rf'<tr class="api-key status-active" data-prefix="{old_key.prefix}">.*?</tr>', after_use, re.S)
    assert "Segment still uses this key" in row.group(0)
    assert after_use.count("Segment still uses this key") == 1


def test_a_workspace_without_an_active_key_is_warned(alice, workspace, acme_key):
    client = signed_in(alice)
    with_key = client.get(PAGE).content.decode()
    client.post(revoke_url(acme_key))

    without_key = client.get(PAGE).content.decode()

    assert "no active API key" not in with_key
    assert "This workspace has no active API key" in without_key
