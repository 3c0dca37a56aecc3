"""ContactSearch, the search's copy of each contact's email and name, is kept by the
database's triggers (migration contacts/0007) whatever writes the contacts: the webhook's
single messages and batches, imports, deletes, the ORM, raw statements. Checked on both
databases, through the app's own write paths."""

import io
import json

import pytest
from django.core.management import call_command
from django.db import connection

from contacts.models import Contact, ContactSearch, Workspace
from ingest.services import FEW_MESSAGES
from tests.segment_messages import identify

TRIGGERS = {"contact_search_insert", "contact_search_update", "contact_search_delete"}


def copies():
    return set(ContactSearch.objects.values_list("contact_id", "workspace_id", "email", "name"))


def contacts():
    return set(Contact.objects.values_list("id", "workspace_id", "email", "name"))


def named(address, name, day="2024-06-01", **fields):
    return identify(address, timestamp=f"{day}T09:00:00Z", traits={"email": address, "name": name}, **fields)


def test_every_write_path_keeps_the_copy_in_step(webhook, workspace, other_workspace, tmp_path):
    # A single message, a batch of a few (one statement per message), a larger batch (one
    # pass in email order), with new and known contacts, renames among them.
    assert webhook.post(named("ann@example.com", "Ann")).status_code == 200
    few = [named(f"few{i}@example.com", f"Few {i}") for i in range(FEW_MESSAGES - 1)]
    assert webhook.post([*few, named("ann@example.com", "Ann Lee", day="2024-06-02")]).status_code == 200
    many = [named(f"many{i}@example.com", f"Many {i}") for i in range(12)]
    renames = [named(f"few{i}@example.com", f"Renamed {i}", day="2024-06-03") for i in range(2)]
    assert webhook.post([*many, *renames]).json()["accepted"] == 14
    # An import into another workspace, of the same people.
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(named(f"many{i}@example.com", f"Other {i}")) + "\n" for i in range(8)))
    call_command("import_events", str(path), "--workspace", other_workspace.slug, "--no-progress", stdout=io.StringIO())
    # A delete request, the ORM, a raw statement.
    assert webhook.post({"type": "delete", "messageId": "d-1", "traits": {"email": "many0@example.com"}}).status_code == 200
    Contact.objects.filter(email="many1@example.com").update(name="Set By Update")
    contact = Contact.objects.get(workspace=workspace, email="many2@example.com")
    contact.name = "Saved"
    contact.save()
    Contact.objects.filter(email="many3@example.com", workspace=workspace).delete()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE contacts_contact SET email = 'moved@example.com' WHERE email = 'many4@example.com'")

    assert Contact.objects.count() == 1 + 3 + 12 + 8 - 2  # in acme, many0 and many3 deleted
    assert copies() == contacts()
    names = dict(ContactSearch.objects.filter(workspace_id=workspace.pk).values_list("email", "name"))
    assert names["ann@example.com"] == "Ann Lee" and names["few0@example.com"] == "Renamed 0"
    assert names["many1@example.com"] == "Set By Update" and names["many2@example.com"] == "Saved"
    assert "moved@example.com" in names and "many4@example.com" not in names


def test_a_workspaces_deletion_takes_its_copies(webhook, workspace, other_workspace):
    assert webhook.post([named(f"p{i}@example.com", f"P {i}") for i in range(6)]).status_code == 200
    Contact.objects.create(workspace=other_workspace, email="stays@example.com", name="Stays")
    Workspace.objects.filter(pk=workspace.pk).delete()
    assert copies() == contacts() == {(Contact.objects.get().pk, other_workspace.pk, "stays@example.com", "Stays")}


def test_the_search_finds_contacts_by_their_current_name(client, alice, webhook):
    assert webhook.post(named("zoe@example.com", "Zoe Old")).status_code == 200
    assert webhook.post(named("zoe@example.com", "Zoe New", day="2024-06-02")).status_code == 200
    client.force_login(alice)
    assert b"zoe@example.com" in client.get("/contacts/?q=zoe new").content
    assert b"zoe@example.com" not in client.get("/contacts/?q=zoe old").content


def test_the_triggers_are_there_after_every_migration(db):
    # On SQLite a migration that rebuilds the contacts table drops its triggers.
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'contacts_contact'::regclass AND NOT tgisinternal"
            )
            expected = TRIGGERS | {"contact_search_truncate"}
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'contacts_contact'")
            expected = TRIGGERS
        assert {row[0] for row in cursor.fetchall()} == expected


@pytest.mark.postgres
def test_emptying_the_contacts_table_empties_the_copy(workspace):
    Contact.objects.create(workspace=workspace, email="a@example.com", name="A")
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the test's transaction has the insert's checks pending
        cursor.execute("TRUNCATE contacts_contact CASCADE")
    assert not ContactSearch.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_migration_copies_the_contacts_there_are_and_goes_back(workspace):
    call_command("migrate", "contacts", "0006", verbosity=0)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO contacts_contact (workspace_id, email, name, user_id, traits, trait_times, created_at) "
                "VALUES (%s, 'old@example.com', 'From Before', '', '{}', '{}', %s)",
                [workspace.pk, "2024-06-01 00:00:00"],
            )
            if connection.vendor == "postgresql":
                cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'contacts_contact'")
                assert {"contact_email_trgm_idx", "contact_name_trgm_idx"} <= {row[0] for row in cursor.fetchall()}
    finally:
        call_command("migrate", "contacts", verbosity=0)
    assert copies() == contacts() and {row[2] for row in copies()} == {"old@example.com"}
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT indexname FROM pg_indexes WHERE indexname LIKE '%%trgm%%'")
            assert {row[0] for row in cursor.fetchall()} == {"contact_search_email_trgm_idx", "contact_search_name_trgm_idx"}
