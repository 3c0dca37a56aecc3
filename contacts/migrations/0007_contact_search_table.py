"""The contact list's search reads a narrow table of its own, ContactSearch (each
contact's email and name), kept by triggers on the contacts table; on PostgreSQL the
search's trigram indexes move there from the contacts table (migration 0003 made them).

A contact's row is rewritten for nearly every message, never as a HOT update (the list's
order indexes hold closeness_log and last_interaction_day, which a new day changes), so
PostgreSQL writes an entry in each of the table's indexes again: with the two GIN
indexes, some forty trigrams of email and name per message, about a tenth of
PostgreSQL's CPU in an import. The copy is written only when a contact is inserted,
deleted, or its email or name changes.

Both databases keep the copy by the same triggers, so the search is one query on both.
On SQLite, a migration that rebuilds the contacts table drops its triggers: the tests
check that they are there after every migration has run.
"""

from django.db import migrations, models

OLD_INDEXES = {"email": "contact_email_trgm_idx", "name": "contact_name_trgm_idx"}
NEW_INDEXES = {"email": "contact_search_email_trgm_idx", "name": "contact_search_name_trgm_idx"}
TRIGGERS = ("contact_search_insert", "contact_search_update", "contact_search_delete", "contact_search_truncate")
FUNCTION = "contact_search_sync"

POSTGRESQL_FUNCTION = f"""
CREATE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO contacts_contactsearch (contact_id, workspace_id, email, name)
        VALUES (NEW.id, NEW.workspace_id, NEW.email, NEW.name);
    ELSIF TG_OP = 'UPDATE' THEN
        UPDATE contacts_contactsearch SET workspace_id = NEW.workspace_id, email = NEW.email, name = NEW.name
        WHERE contact_id = OLD.id;
    ELSIF TG_OP = 'DELETE' THEN
        DELETE FROM contacts_contactsearch WHERE contact_id = OLD.id;
    ELSE
        DELETE FROM contacts_contactsearch;
    END IF;
    RETURN NULL;
END
$$
"""

# The update trigger fires only when a searched column changes value: a contact's rewrite
# for a message sets name to what it was, which costs the WHEN's comparison and no more.
CHANGED = "OLD.workspace_id IS DISTINCT FROM NEW.workspace_id OR OLD.email IS DISTINCT FROM NEW.email " \
    "OR OLD.name IS DISTINCT FROM NEW.name"
POSTGRESQL_TRIGGERS = [
    f"CREATE TRIGGER contact_search_insert AFTER INSERT ON contacts_contact "
    f"FOR EACH ROW EXECUTE FUNCTION {FUNCTION}()",
    f"CREATE TRIGGER contact_search_update AFTER UPDATE OF workspace_id, email, name ON contacts_contact "
    f"FOR EACH ROW WHEN ({CHANGED}) EXECUTE FUNCTION {FUNCTION}()",
    f"CREATE TRIGGER contact_search_delete AFTER DELETE ON contacts_contact "
    f"FOR EACH ROW EXECUTE FUNCTION {FUNCTION}()",
    f"CREATE TRIGGER contact_search_truncate AFTER TRUNCATE ON contacts_contact "
    f"FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()",
]

# SQLite empties a table with DELETE, which fires the delete trigger for every row.
SQLITE_TRIGGERS = [
    "CREATE TRIGGER contact_search_insert AFTER INSERT ON contacts_contact BEGIN "
    "INSERT INTO contacts_contactsearch (contact_id, workspace_id, email, name) "
    "VALUES (NEW.id, NEW.workspace_id, NEW.email, NEW.name); END",
    "CREATE TRIGGER contact_search_update AFTER UPDATE OF workspace_id, email, name ON contacts_contact "
    "WHEN OLD.workspace_id IS NOT NEW.workspace_id OR OLD.email IS NOT NEW.email OR OLD.name IS NOT NEW.name BEGIN "
    "UPDATE contacts_contactsearch SET workspace_id = NEW.workspace_id, email = NEW.email, name = NEW.name "
    "WHERE contact_id = OLD.id; END",
    "CREATE TRIGGER contact_search_delete AFTER DELETE ON contacts_contact BEGIN "
    "DELETE FROM contacts_contactsearch WHERE contact_id = OLD.id; END",
]

COPY = (
    "INSERT INTO contacts_contactsearch (contact_id, workspace_id, email, name) "
    "SELECT id, workspace_id, email, name FROM contacts_contact"
)


def keep_search_table(apps, schema_editor):
    postgresql = schema_editor.connection.vendor == "postgresql"
    if postgresql:
        for column, name in NEW_INDEXES.items():
            schema_editor.execute(
                f"CREATE INDEX {name} ON contacts_contactsearch USING gin (UPPER({column}::text) gin_trgm_ops)"
            )
        schema_editor.execute(POSTGRESQL_FUNCTION)
    for statement in POSTGRESQL_TRIGGERS if postgresql else SQLITE_TRIGGERS:
        schema_editor.execute(statement)
    schema_editor.execute(COPY)
    if postgresql:
        for name in OLD_INDEXES.values():
            schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


def search_contacts_table(apps, schema_editor):
    postgresql = schema_editor.connection.vendor == "postgresql"
    for trigger in TRIGGERS if postgresql else TRIGGERS[:3]:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {trigger}" + (" ON contacts_contact" if postgresql else ""))
    if postgresql:
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
        for column, name in OLD_INDEXES.items():
            schema_editor.execute(
                f"CREATE INDEX IF NOT EXISTS {name} ON contacts_contact USING gin (UPPER({column}::text) gin_trgm_ops)"
            )


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0006_interaction_workspace_without_db_constraint"),
    ]

    operations = [
        migrations.CreateModel(
            name="ContactSearch",
            fields=[
                ("contact_id", models.BigIntegerField(primary_key=True, serialize=False)),
                ("workspace_id", models.BigIntegerField()),
                ("email", models.CharField(max_length=254)),
                ("name", models.CharField(blank=True, default="", max_length=200)),
            ],
        ),
        migrations.RunPython(keep_search_table, search_contacts_table, elidable=False),
    ]
