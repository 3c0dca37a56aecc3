"""Deleting a workspace deletes everything it holds, and nothing of another workspace:
its interactions and its processed-message ledger included, whose workspace columns
have no constraint in the database (Django cascades the deletion)."""

import pytest
from django.db import connection

from contacts.models import Contact, Interaction
from ingest.models import ProcessedMessage
from ingest.services import ingest_messages
from tests.segment_messages import identify

pytestmark = pytest.mark.django_db


def fill(workspace, prefix):
    messages = [identify(f"{prefix}{i}@example.com", f"2024-06-0{1 + i}T09:00:00Z") for i in range(3)]
    results = ingest_messages(workspace=workspace, raw_messages=messages)
    assert [r.status for r in results] == ["created"] * 3


def counts(workspace):
    return (
        Contact.objects.filter(workspace=workspace).count(),
        Interaction.objects.filter(workspace=workspace).count(),
        ProcessedMessage.objects.filter(workspace=workspace).count(),
    )


def test_deleting_a_workspace_deletes_its_interactions_and_ledger_and_nothing_else(workspace, other_workspace):
    fill(workspace, "acme")
    fill(other_workspace, "globex")
    gone_id = workspace.pk

    workspace.delete()

    assert counts(gone_id) == (0, 0, 0)
    assert counts(other_workspace) == (3, 3, 3)


def test_the_interaction_and_ledger_workspace_columns_have_no_database_constraint():
    with connection.cursor() as cursor:
        constraints = {
            table: connection.introspection.get_constraints(cursor, table)
            for table in ("contacts_interaction", "ingest_processedmessage", "contacts_contact")
        }

    def foreign_keys(table):
        return {info["columns"][0]: info["foreign_key"] for info in constraints[table].values() if info["foreign_key"]}

    assert "workspace_id" not in foreign_keys("contacts_interaction")
    assert "workspace_id" not in foreign_keys("ingest_processedmessage")
    # the chain that keeps interactions whole stays: interaction -> contact -> workspace
    assert foreign_keys("contacts_interaction")["contact_id"] == ("contacts_contact", "id")
    assert foreign_keys("contacts_contact")["workspace_id"] == ("contacts_workspace", "id")
