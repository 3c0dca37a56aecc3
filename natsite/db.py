"""Cursors for the statements the webhook runs on every message.

On PostgreSQL, Django binds parameters on the client, so the server parses and plans
every statement anew. The ingest's few statements are always the same text (a batch's
rows travel as one JSON parameter), so they are sent with server-side binding instead
and psycopg prepares each once per connection (OPTIONS["prepare_threshold"], set from
DATABASE_PREPARED_STATEMENTS): PostgreSQL then only executes them.

Behind a connection pooler in transaction mode that cannot keep prepared statements,
DATABASE_PREPARED_STATEMENTS=0 turns this off and these are ordinary Django cursors.
"""

import contextlib

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections
from django.db.backends.postgresql.base import CursorDebugWrapper, ServerBindingCursor


class LoggedCursor(CursorDebugWrapper):
    """Logs each statement with its parameters in place, as Django's own cursor does
    (psycopg keeps no text of a statement the server binds)."""

    def execute(self, sql, params=None):
        with self.debug_sql(self.db.ops.compose_sql(sql, params), params):
            return self._execute_with_wrappers(sql, params, many=False, executor=self._execute)


class PlannedEachTimeCursor(ServerBindingCursor):
    """Server-side binding without a prepared statement: PostgreSQL plans the statement
    for each execution, with its parameters and the tables' current sizes."""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        return super().execute(query, params, prepare=False, binary=binary)


def prepared_cursor(prepare=True):
    """A Django cursor (wrapped as connection.cursor()'s, so query logging and
    execute_wrappers see its statements) whose statements PostgreSQL prepares; with
    prepare=False, ones it plans for each execution instead (a prepared statement's
    generic plan, made while a table is small, can stay in use after it has grown)."""
    # `connection` finds the thread's connection on every attribute: look it up once.
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "postgresql":
        return db.cursor()
    # What connection.cursor() does before it makes a cursor.
    db.close_if_health_check_failed()
    db.ensure_connection()
    raw = db.connection
    if raw.prepare_threshold is None:
        return db.cursor()
    with db.wrap_database_errors:
        db.validate_thread_sharing()
        cursor = (ServerBindingCursor if prepare else PlannedEachTimeCursor)(raw)
        if db.queries_logged:
            return LoggedCursor(cursor, db)
        return db.make_cursor(cursor)


def first_statement(run):
    """run(), the request's first statement, without Django's health check before it.

    CONN_HEALTH_CHECKS sends a SELECT 1 at the start of every request that reuses a kept
    connection: a round trip per webhook message. Here the first statement is the check
    itself: when it fails on a kept connection that no longer works (the database
    restarted or the network dropped it since the last request), the connection is
    replaced and run() is tried once more on the fresh one, so the sender sees no error,
    as with the health check. run() must be a read that can safely run twice."""
    db = connections[DEFAULT_DB_ALIAS]
    reused = db.connection is not None and db.health_check_enabled and not db.health_check_done and not db.in_atomic_block
    if not reused:
        return run()
    db.health_check_done = True
    try:
        return run()
    except (OperationalError, InterfaceError):
        if db.is_usable():
            raise  # the connection works: this is the statement's own error
        db.close()
        return run()


# How many pages SQLite's write-ahead log grows to before a bulk load moves it into the
# database (the default is 1,000): see bulk_loading().
BULK_CHECKPOINT_PAGES = 10_000


@contextlib.contextmanager
def bulk_loading():
    """For the length of a bulk load on this connection (import_events): SQLite moves its
    write-ahead log into the database every BULK_CHECKPOINT_PAGES pages instead of every
    1,000. Each such checkpoint writes back every page the log holds, and a chunk of
    messages touches mostly the same index pages as the chunk before it, so fewer, larger
    checkpoints write each page fewer times. Transactions and durability are unchanged
    (only when the log is copied into the database file changes); the setting is put
    back after the block. Nothing to do on PostgreSQL."""
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "sqlite":
        yield
        return
    with db.cursor() as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint")
        (previous,) = cursor.fetchone()
        cursor.execute(f"PRAGMA wal_autocheckpoint = {BULK_CHECKPOINT_PAGES:d}")
    try:
        yield
    finally:
        with db.cursor() as cursor:
            cursor.execute(f"PRAGMA wal_autocheckpoint = {int(previous):d}")
