"""The admin: a read-only API key list without hashes, the key history, and the
"Rotate API key" action on Workspace, scoped for staff who are not superusers."""

import re

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from contacts.models import Workspace
from ingest.api_keys import create_api_key
from ingest.models import ApiKey, ApiKeyEvent
from tests.conftest import Webhook
from tests.factories import UserFactory
from tests.test_api_keys_page import KEY_PATTERN, every_stored_text, identify

KEYS = "/admin/ingest/apikey/"
EVENTS = "/admin/ingest/apikeyevent/"
WORKSPACES = "/admin/contacts/workspace/"


def staff(user):
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def root_client(db):
    root = UserFactory(username="root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(root)
    return client


@pytest.fixture
def acme_key(workspace, alice):
    return create_api_key(workspace=workspace, actor=alice)[0]


@pytest.fixture
def globex_key(other_workspace, charlie):
    return create_api_key(workspace=other_workspace, actor=charlie)[0]


def rotate_action(client, *workspaces):
    return client.post(
        WORKSPACES,
        {"action": "rotate_api_key", "_selected_action": [w.pk for w in workspaces], "index": 0},
    )


def offered_actions(client):
    page = client.get(WORKSPACES).content.decode()
    return set(re.findall(r'<option value="(\w+)"', page))


# --- Read-only lists ---------------------------------------------------------------------


def test_the_key_list_shows_prefix_workspace_creator_and_status_but_no_hash(root_client, acme_key):
    response = root_client.get(KEYS)

    page = response.content.decode()
    assert response.status_code == 200
    assert f"{acme_key.prefix}…" in page
    assert "Acme" in page and "alice" in page and "active" in page
    assert acme_key.key_hash not in page
    assert "key_hash" not in page and "Key hash" not in page


def test_a_keys_page_is_read_only_and_shows_no_hash(root_client, acme_key):
    response = root_client.get(f"{KEYS}{acme_key.pk}/change/")

    page = response.content.decode()
    assert response.status_code == 200
    assert acme_key.prefix in page
    assert acme_key.key_hash not in page
    assert 'name="_save"' not in page


def test_keys_cannot_be_added_changed_or_deleted_in_the_admin(root_client, acme_key):
    assert root_client.get(f"{KEYS}add/").status_code == 403
    assert root_client.post(f"{KEYS}{acme_key.pk}/change/", {"prefix": "nat_forged00"}).status_code == 403
    assert root_client.post(f"{KEYS}{acme_key.pk}/delete/", {"post": "yes"}).status_code == 403
    acme_key.refresh_from_db()
    assert acme_key.prefix != "nat_forged00"
    assert ApiKey.objects.filter(pk=acme_key.pk).exists()


def test_the_key_list_filters_by_status(root_client, workspace, acme_key):
    revoked, _ = create_api_key(workspace=workspace)
    ApiKey.objects.filter(pk=revoked.pk).update(revoked_at=acme_key.created_at)

    page = root_client.get(KEYS + "?status=revoked").content.decode()

    assert f"{revoked.prefix}…" in page
    assert f"{acme_key.prefix}…" not in page


def test_the_key_history_is_read_only(root_client, acme_key):
    event = ApiKeyEvent.objects.get(api_key=acme_key)

    listing = root_client.get(EVENTS)

    assert listing.status_code == 200
    assert f"{acme_key.prefix}…" in listing.content.decode()
    assert root_client.get(f"{EVENTS}add/").status_code == 403
    assert root_client.post(f"{EVENTS}{event.pk}/delete/", {"post": "yes"}).status_code == 403


def test_staff_who_are_not_superusers_see_only_their_workspaces_keys(alice, acme_key, globex_key):
    client = staff(alice)

    keys = client.get(KEYS).content.decode()
    events = client.get(EVENTS).content.decode()
    foreign = client.get(f"{KEYS}{globex_key.pk}/change/")

    assert f"{acme_key.prefix}…" in keys
    assert globex_key.prefix not in keys
    assert globex_key.prefix not in events
    assert foreign.status_code == 302  # the admin's "does not exist" redirect
    assert globex_key.prefix not in Client().get(foreign["Location"]).content.decode()


def test_a_teammate_who_is_staff_may_browse_keys_without_a_grant(bob, acme_key):
    response = staff(bob).get(KEYS)

    assert response.status_code == 200
    assert f"{acme_key.prefix}…" in response.content.decode()


def test_the_workspace_form_does_not_show_the_signing_secret(root_client, workspace):
    Workspace.objects.filter(pk=workspace.pk).update(signing_secret="secret-shared-with-segment")

    page = root_client.get(f"{WORKSPACES}{workspace.pk}/change/").content.decode()

    assert "secret-shared-with-segment" not in page
    assert 'name="signing_secret"' not in page


# --- The rotate action -------------------------------------------------------------------


def test_rotating_in_the_admin_shows_the_new_key_once_and_it_works(alice, workspace, acme_key):
    client = staff(alice)

    response = rotate_action(client, workspace)
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    first = client.get(WORKSPACES).content.decode()
    later = client.get(WORKSPACES).content.decode()

    assert response.status_code == 302
    assert len(shown) == 1 and "shown only this once" in shown[0]
    new_key = KEY_PATTERN.search(shown[0]).group(0)
    assert new_key in first
    assert not KEY_PATTERN.search(later)
    assert ApiKey.objects.filter(workspace=workspace).count() == 2
    assert ApiKeyEvent.objects.filter(workspace=workspace, action="rotated", actor=alice).count() == 1
    acme_key.refresh_from_db()
    assert acme_key.expires_at is not None  # the old key is in its 24-hour grace period
    assert Webhook(Client(), new_key).post(identify()).status_code == 200
    assert not any(new_key.removeprefix("nat_")[8:] in text for text in every_stored_text())


def test_the_message_with_the_key_is_displayed_on_the_next_page_only(alice, workspace):
    client = staff(alice)

    followed = client.post(
        WORKSPACES, {"action": "rotate_api_key", "_selected_action": [workspace.pk], "index": 0}, follow=True
    )
    again = client.get(WORKSPACES)

    assert KEY_PATTERN.search(followed.content.decode())
    assert not KEY_PATTERN.search(again.content.decode())


def test_the_rotate_action_is_offered_only_with_the_permission(alice, bob):
    assert "rotate_api_key" in offered_actions(staff(alice))
    assert "rotate_api_key" not in offered_actions(staff(bob))


def test_a_teammate_without_the_permission_cannot_rotate_in_the_admin(bob, workspace):
    response = rotate_action(staff(bob), workspace)

    assert response.status_code in (200, 302)
    assert not ApiKey.objects.filter(workspace=workspace).exists()


def test_staff_of_another_workspace_cannot_rotate_its_key(charlie, workspace, other_workspace):
    response = rotate_action(staff(charlie), workspace)

    assert response.status_code in (200, 302)
    assert not ApiKey.objects.filter(workspace=workspace).exists()
    assert not ApiKey.objects.filter(workspace=other_workspace).exists()


def test_a_superuser_may_rotate_several_workspaces_at_once(root_client, workspace, other_workspace):
    response = rotate_action(root_client, workspace, other_workspace)

    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert len(shown) == 2
    assert {KEY_PATTERN.search(m).group(0)[:12] for m in shown} == set(
        ApiKey.objects.values_list("prefix", flat=True)
    )


def test_the_admin_refuses_to_rotate_more_workspaces_than_it_can_show_keys_for(root_client):
    workspaces = [Workspace.objects.create(name=f"Team {i}", slug=f"team-{i}") for i in range(6)]

    response = rotate_action(root_client, *workspaces)

    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert shown == ["Rotate at most 5 workspaces at a time, so that each new key can be shown."]
    assert not ApiKey.objects.exists()
