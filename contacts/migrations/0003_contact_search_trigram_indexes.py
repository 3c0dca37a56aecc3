"""Trigram indexes for the contact list's search, on PostgreSQL only.

The search is a case-insensitive substring of email or name; Django writes `icontains`
on PostgreSQL as UPPER(column::text) LIKE UPPER('%…%'), so each index is on that very
expression with gin_trgm_ops: the planner then answers the search from the index
instead of reading every contact. SQLite has no pg_trgm and scans, which is fine at
the sizes it serves. The indexes are not in Contact.Meta.indexes because a GIN index
cannot be written on SQLite; this migration is where they live.
"""

from django.db import migrations

SEARCHED_COLUMNS = ("email", "name")


def index_name(column):
    return f"contact_{column}_trgm_idx"


def create_search_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("contacts", "Contact")._meta.db_table)
    # pg_trgm is a trusted extension (PostgreSQL 13+): the database owner may create it.
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for column in SEARCHED_COLUMNS:
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {index_name(column)} ON {table} "
            f"USING gin (UPPER({schema_editor.quote_name(column)}::text) gin_trgm_ops)"
        )


def drop_search_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    # The extension stays: other objects may rely on it, and it costs nothing unused.
    for column in SEARCHED_COLUMNS:
        schema_editor.execute(f"DROP INDEX IF EXISTS {index_name(column)}")


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0002_contact_list_order_indexes"),
    ]

    operations = [
        migrations.RunPython(create_search_indexes, drop_search_indexes, elidable=False),
    ]
