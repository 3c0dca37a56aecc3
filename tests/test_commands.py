"""The management commands of PRODUCT.md §6 that ingest relies on: createworkspace,
rotate_api_key, recompute_closeness, purge_processed_messages."""

import base64
import datetime as dt
import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from contacts import closeness
from contacts.models import Contact, Membership, Workspace
from ingest.models import ApiKey, ProcessedMessage
from tests.factories import UserFactory
from tests.segment_messages import identify

pytestmark = pytest.mark.django_db


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def last_line(output):
    return output.rstrip("\n").splitlines()[-1]


def post(client, key, payload=None):
    token = base64.b64encode(f"{key}:".encode()).decode()
    return client.generic(
        "POST", "/ingest/segment", json.dumps(payload or identify()), content_type="application/json",
        HTTP_AUTHORIZATION=f"Basic {token}",
    )


def move_clock(monkeypatch, delta):
    moved = timezone.now() + delta
    monkeypatch.setattr(timezone, "now", lambda: moved)


# createworkspace ---------------------------------------------------------------------------


def test_createworkspace_prints_the_key_alone_on_its_last_line_and_it_works(client):
    key = last_line(run("createworkspace", "Acme Corp"))
    assert key.startswith("nat_") and " " not in key and len(key) >= 4 + 32
    workspace = Workspace.objects.get()
    assert (workspace.name, workspace.slug, workspace.timezone) == ("Acme Corp", "acme-corp", "UTC")
    assert post(client, key).status_code == 200
    assert Contact.objects.get().workspace == workspace


def test_createworkspace_stores_only_a_hash_of_the_key():
    key = last_line(run("createworkspace", "Acme"))
    stored = ApiKey.objects.get()
    assert key not in (stored.key_hash, stored.prefix)
    assert key.startswith(stored.prefix)


def test_createworkspace_takes_a_slug_and_a_timezone():
    run("createworkspace", "Acme", "--slug", "acme-eu", "--timezone", "Europe/Paris")
    assert Workspace.objects.filter(slug="acme-eu", timezone="Europe/Paris").exists()


def test_createworkspace_refuses_an_unknown_timezone():
    with pytest.raises(CommandError, match="Mars/Olympus"):
        run("createworkspace", "Acme", "--timezone", "Mars/Olympus")
    assert not Workspace.objects.exists()


def test_createworkspace_refuses_a_slug_in_use():
    run("createworkspace", "Acme")
    with pytest.raises(CommandError):
        run("createworkspace", "Acme")
    assert Workspace.objects.count() == 1


def test_createworkspace_owner_becomes_a_member_who_may_rotate_keys():
    user = UserFactory(username="dana")
    run("createworkspace", "Acme", "--owner", "dana")
    workspace = Workspace.objects.get()
    assert Membership.objects.filter(user=user, workspace=workspace).exists()
    user = type(user).objects.get(pk=user.pk)  # permissions are cached per instance
    assert user.has_perm("ingest.rotate_apikey")
    assert ApiKey.objects.get().created_by == user


def test_createworkspace_refuses_an_unknown_owner():
    with pytest.raises(CommandError, match="nobody"):
        run("createworkspace", "Acme", "--owner", "nobody")
    assert not Workspace.objects.exists()


# rotate_api_key ----------------------------------------------------------------------------


@pytest.fixture
def first_key():
    return last_line(run("createworkspace", "Acme", "--slug", "acme"))


def test_rotate_prints_a_new_key_that_works(client, first_key):
    new_key = last_line(run("rotate_api_key", "acme"))
    assert new_key.startswith("nat_") and new_key != first_key
    assert post(client, new_key).status_code == 200


def test_the_old_key_works_within_the_grace_period_and_expires_after(client, first_key, monkeypatch):
    run("rotate_api_key", "acme", "--grace-hours", "2")
    assert post(client, first_key).status_code == 200
    move_clock(monkeypatch, dt.timedelta(hours=1, minutes=59))
    assert post(client, first_key).status_code == 200
    move_clock(monkeypatch, dt.timedelta(hours=2, minutes=1))
    response = post(client, first_key)
    assert response.status_code == 401
    assert response.json()["message"] == "API key expired"


def test_the_default_grace_period_is_24_hours(client, first_key, monkeypatch):
    run("rotate_api_key", "acme")
    move_clock(monkeypatch, dt.timedelta(hours=23, minutes=50))
    assert post(client, first_key).status_code == 200
    move_clock(monkeypatch, dt.timedelta(hours=24, minutes=10))
    assert post(client, first_key).json()["message"] == "API key expired"


def test_a_zero_grace_ends_the_old_key_now(client, first_key):
    new_key = last_line(run("rotate_api_key", "acme", "--grace-hours", "0"))
    assert post(client, first_key).json()["message"] == "API key expired"
    assert post(client, new_key).status_code == 200


def test_rotate_refuses_an_unknown_workspace_or_a_negative_grace(first_key):
    with pytest.raises(CommandError):
        run("rotate_api_key", "nope")
    with pytest.raises(CommandError):
        run("rotate_api_key", "acme", "--grace-hours", "-1")


# recompute_closeness -------------------------------------------------------------------------


def test_recompute_closeness_repairs_a_corrupted_closeness_log(webhook):
    days = [dt.date(2024, 6, 1), dt.date(2024, 6, 3), dt.date(2024, 5, 2)]
    for day in days:
        webhook.post(identify("jane@example.com", f"{day}T10:00:00Z"))
    webhook.post(identify("john@example.com", "2024-06-01T10:00:00Z"))
    expected = closeness.log_for_days(days)
    Contact.objects.filter(email="jane@example.com").update(
        closeness_log=123.0, last_interaction_day=None, last_interaction_log_strength=None
    )
    output = run("recompute_closeness")
    jane = Contact.objects.get(email="jane@example.com")
    assert jane.closeness_log == pytest.approx(expected, abs=1e-9)
    assert jane.last_interaction_day == dt.date(2024, 6, 3)
    assert jane.last_interaction_log_strength == pytest.approx(expected - closeness.day_weight_log(dt.date(2024, 6, 3)))
    assert "2 contacts" in output and "1 changed" in output
    assert "0 changed" in run("recompute_closeness")


def test_recompute_closeness_clears_a_contact_without_interactions(webhook):
    webhook.post(identify(context={"personas": {"computation_class": "audience"}}))
    Contact.objects.update(closeness_log=5.0)
    run("recompute_closeness")
    assert Contact.objects.get().closeness_log is None


# purge_processed_messages ------------------------------------------------------------------


def processed(workspace, message_id, age):
    return ProcessedMessage.objects.create(workspace=workspace, message_id=message_id, received_at=timezone.now() - age)


def test_purge_forgets_message_ids_older_than_30_days(workspace):
    processed(workspace, "old", dt.timedelta(days=30, hours=1))
    processed(workspace, "recent", dt.timedelta(days=29, hours=23))
    output = run("purge_processed_messages")
    assert list(ProcessedMessage.objects.values_list("message_id", flat=True)) == ["recent"]
    assert "1" in output


def test_purge_forgets_old_message_ids_of_every_workspace_and_only_those(workspace, other_workspace):
    for owner in (workspace, other_workspace):
        processed(owner, f"old-{owner.slug}", dt.timedelta(days=45))
        processed(owner, f"recent-{owner.slug}", dt.timedelta(days=1))

    output = run("purge_processed_messages")

    assert sorted(ProcessedMessage.objects.values_list("workspace__slug", "message_id")) == [
        ("acme", "recent-acme"), ("globex", "recent-globex"),
    ]
    assert "Purged 2 " in output


def test_every_message_writes_one_index_of_the_ledger_for_its_time():
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, ProcessedMessage._meta.db_table)
    indexed = sorted(
        tuple(info["columns"]) for info in constraints.values()
        if (info["index"] or info["unique"]) and not info["primary_key"]
    )

    assert indexed == [("workspace_id", "message_id"), ("workspace_id", "received_at")]


def test_purge_retention_is_configurable(workspace, settings):
    processed(workspace, "ten-days", dt.timedelta(days=10))
    processed(workspace, "two-days", dt.timedelta(days=2))
    settings.PROCESSED_MESSAGE_RETENTION_DAYS = 7
    run("purge_processed_messages")
    assert list(ProcessedMessage.objects.values_list("message_id", flat=True)) == ["two-days"]
    run("purge_processed_messages", "--days", "1")
    assert not ProcessedMessage.objects.exists()


def test_a_purged_message_id_is_new_again(webhook):
    message = identify(timestamp="2024-06-01T09:00:00Z")
    webhook.post(message)
    ProcessedMessage.objects.update(received_at=timezone.now() - dt.timedelta(days=31))
    run("purge_processed_messages")
    assert webhook.post(message).json()["status"] == "merged"
