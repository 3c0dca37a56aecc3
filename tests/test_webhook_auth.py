"""Who may post to /ingest/segment: API keys (Basic or Bearer), signing secrets, methods."""

import base64
import datetime as dt
import gzip
import hashlib
import hmac
import json

import pytest
from django.utils import timezone

from contacts.models import Contact, Interaction
from ingest.api_keys import revoke_api_key
from ingest.authentication import keys_with_prefix
from ingest.models import ApiKey, RejectedMessage, prefix_of
from tests.factories import api_key_for
from tests.segment_messages import identify

pytestmark = pytest.mark.django_db

REALM = 'Basic realm="natsite"'


def post(client, headers, payload=None, path="/ingest/segment", **extra):
    body = json.dumps(payload or identify()).encode()
    return client.generic("POST", path, body, content_type="application/json", **headers, **extra)


def basic(user, password=""):
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def assert_refused(response, message):
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == REALM
    assert response["Content-Type"] == "application/json"
    assert response.json()["message"] == message
    assert not Contact.objects.exists()
    assert not Interaction.objects.exists()


def test_it_accepts_the_key_as_basic_user_name_with_an_empty_password(client, api_key, workspace):
    response = post(client, basic(api_key))
    assert response.status_code == 200
    assert response.json()["status"] == "created"
    assert Contact.objects.get().workspace == workspace


def test_it_ignores_the_basic_password(client, api_key):
    assert post(client, basic(api_key, "anything")).status_code == 200


def test_it_accepts_the_key_as_a_bearer_token(client, api_key):
    response = post(client, {"HTTP_AUTHORIZATION": f"Bearer {api_key}"})
    assert response.status_code == 200
    assert Contact.objects.count() == 1


def test_a_request_without_a_key_is_refused_with_the_basic_realm(client, api_key):
    response = post(client, {})
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == REALM
    assert "API key" in response.json()["message"]
    assert not Contact.objects.exists()


def test_an_unknown_key_is_refused_as_invalid(client, api_key):
    assert_refused(post(client, basic(api_key + "x")), "Invalid API key")
    assert_refused(post(client, basic("nat_" + "A" * 43)), "Invalid API key")
    assert_refused(post(client, {"HTTP_AUTHORIZATION": "Bearer nope"}), "Invalid API key")


def test_a_revoked_key_is_refused_as_revoked(client, api_key):
    revoke_api_key(api_key=ApiKey.objects.get())
    assert_refused(post(client, basic(api_key)), "API key revoked")


def test_an_expired_key_is_refused_as_expired(client, api_key):
    ApiKey.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert_refused(post(client, basic(api_key)), "API key expired")


def test_a_key_that_expires_later_still_works(client, api_key):
    ApiKey.objects.update(expires_at=timezone.now() + dt.timedelta(hours=1))
    assert post(client, basic(api_key)).status_code == 200


def test_a_workspace_may_have_several_active_keys(client, workspace, api_key):
    second = api_key_for(workspace)
    assert post(client, basic(api_key), identify("a@example.com")).status_code == 200
    assert post(client, basic(second), identify("b@example.com")).status_code == 200
    assert Contact.objects.filter(workspace=workspace).count() == 2


def test_a_key_records_into_its_own_workspace_only(client, api_key, other_workspace):
    other_key = api_key_for(other_workspace)
    post(client, basic(other_key), identify("jane@example.com"))
    assert Contact.objects.get().workspace == other_workspace


def test_a_successful_request_marks_the_key_as_used(client, api_key):
    assert ApiKey.objects.get().last_used_at is None
    post(client, basic(api_key))
    assert ApiKey.objects.get().last_used_at is not None


def test_a_malformed_authorization_header_is_refused(client, api_key):
    response = post(client, {"HTTP_AUTHORIZATION": "Basic %%%not-base64"})
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == REALM
    assert response.json()["message"]


def signature(secret, body):
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


@pytest.fixture
def signing_secret(workspace):
    workspace.signing_secret = "shh-it-is-a-secret"
    workspace.save()
    return workspace.signing_secret


def test_with_a_signing_secret_a_request_without_signature_is_refused(client, api_key, signing_secret):
    response = post(client, basic(api_key))
    assert_refused(response, response.json()["message"])
    assert "X-Signature" in response.json()["message"]


def test_with_a_signing_secret_a_wrong_signature_is_refused(client, api_key, signing_secret):
    body = json.dumps(identify()).encode()
    wrong = signature("another secret", body)
    response = client.generic(
        "POST", "/ingest/segment", body, content_type="application/json", HTTP_X_SIGNATURE=wrong, **basic(api_key)
    )
    assert_refused(response, "Invalid X-Signature")


def test_with_a_signing_secret_the_hmac_sha1_of_the_raw_body_is_accepted(client, api_key, signing_secret):
    body = json.dumps(identify()).encode()
    response = client.generic(
        "POST",
        "/ingest/segment",
        body,
        content_type="application/json",
        HTTP_X_SIGNATURE=signature(signing_secret, body),
        **basic(api_key),
    )
    assert response.status_code == 200
    assert Contact.objects.count() == 1


def test_the_signature_covers_the_body_as_sent_even_when_gzipped(client, api_key, signing_secret):
    body = gzip.compress(json.dumps(identify()).encode())
    response = client.generic(
        "POST",
        "/ingest/segment",
        body,
        content_type="application/json",
        HTTP_CONTENT_ENCODING="gzip",
        HTTP_X_SIGNATURE=signature(signing_secret, body),
        **basic(api_key),
    )
    assert response.status_code == 200


def test_a_signature_is_not_needed_when_the_workspace_has_no_secret(client, api_key):
    response = post(client, basic(api_key), HTTP_X_SIGNATURE="whatever")
    assert response.status_code == 200


def test_the_path_with_a_trailing_slash_is_the_same_endpoint_without_redirect(client, api_key):
    response = post(client, basic(api_key), path="/ingest/segment/")
    assert response.status_code == 200
    assert response.json()["status"] == "created"


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("with_key", [True, False])
def test_a_method_other_than_post_is_405_in_json(client, api_key, with_key, method):
    response = client.generic(method, "/ingest/segment", **(basic(api_key) if with_key else {}))
    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    assert method in response.json()["message"]
    assert "POST" in response["Allow"]


def test_a_refused_signature_is_kept_in_the_workspace_rejected_log(client, api_key, signing_secret, workspace):
    post(client, basic(api_key), HTTP_X_SIGNATURE="0" * 40)
    rejected = RejectedMessage.objects.get(workspace=workspace)
    assert (rejected.status, rejected.message) == (401, "Invalid X-Signature")


# The look-up hands out again the key and workspace it built from the very same rows
# (ingest/authentication.py): whatever changes in either row is seen on the next message.


def test_an_unchanged_key_is_built_once_and_a_changed_one_anew(api_key):
    (first,) = keys_with_prefix(prefix_of(api_key))
    (again,) = keys_with_prefix(prefix_of(api_key))
    assert again is first and again.workspace is first.workspace
    ApiKey.objects.update(expires_at=timezone.now() + dt.timedelta(hours=1))
    (changed,) = keys_with_prefix(prefix_of(api_key))
    assert changed is not first and changed.expires_at is not None and first.expires_at is None


def test_a_key_revoked_after_its_messages_is_refused_on_the_next_one(client, api_key):
    assert post(client, basic(api_key), identify("a@example.com")).status_code == 200
    assert post(client, basic(api_key), identify("b@example.com")).status_code == 200
    revoke_api_key(api_key=ApiKey.objects.get())
    response = post(client, basic(api_key), identify("c@example.com"))
    assert response.status_code == 401 and response.json()["message"] == "API key revoked"
    assert sorted(Contact.objects.values_list("email", flat=True)) == ["a@example.com", "b@example.com"]


def test_a_signing_secret_set_after_a_message_applies_to_the_next_one(client, api_key, workspace):
    assert post(client, basic(api_key), identify("a@example.com")).status_code == 200
    workspace.signing_secret = "set-in-between"
    workspace.save(update_fields=["signing_secret"])
    response = post(client, basic(api_key), identify("b@example.com"))
    assert response.status_code == 401 and response.json()["message"] == "Missing X-Signature"


def test_a_key_moved_to_its_expiry_after_its_messages_is_refused_as_expired(client, api_key):
    assert post(client, basic(api_key), identify("a@example.com")).status_code == 200
    ApiKey.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    response = post(client, basic(api_key), identify("b@example.com"))
    assert response.status_code == 401
    assert response.json()["message"] == "API key expired"
