"""Cursors for the statements the webhook runs on every message.

On PostgreSQL, Django binds parameters on the client, so the server parses and plans
every statement anew. The ingest's few statements are always the same text (a batch's
rows travel as one JSON parameter), so they are sent with server-side binding instead
and psycopg prepares each once per connection (OPTIONS["prepare_threshold"], set from
DATABASE_PREPARED_STATEMENTS): PostgreSQL then only executes them.

Behind a connection pooler in transaction mode that cannot keep prepared statements,
DATABASE_PREPARED_STATEMENTS=0 turns this off and these are ordinary Django cursors.
"""

from django.db import InterfaceError, OperationalError, connection
from django.db.backends.postgresql.base import CursorDebugWrapper, ServerBindingCursor


class LoggedCursor(CursorDebugWrapper):
    """Logs each statement with its parameters in place, as Django's own cursor does
    (psycopg keeps no text of a statement the server binds)."""

    def execute(self, sql, params=None):
        with self.debug_sql(self.db.ops.compose_sql(sql, params), params):
            return self._execute_with_wrappers(sql, params, many=False, executor=self._execute)


def prepared_cursor():
    """A Django cursor (wrapped as connection.cursor()'s, so query logging and
    execute_wrappers see its statements) whose statements PostgreSQL prepares."""
    if connection.vendor != "postgresql":
        return connection.cursor()
    # What connection.cursor() does before it makes a cursor.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        return connection.cursor()
    with connection.wrap_database_errors:
        connection.validate_thread_sharing()
        cursor = ServerBindingCursor(raw)
        if connection.queries_logged:
            return LoggedCursor(cursor, connection)
        return connection.make_cursor(cursor)


def first_statement(run):
    """run(), the request's first statement, without Django's health check before it.

    CONN_HEALTH_CHECKS sends a SELECT 1 at the start of every request that reuses a kept
    connection: a round trip per webhook message. Here the first statement is the check
    itself: when it fails on a kept connection that no longer works (the database
    restarted or the network dropped it since the last request), the connection is
    replaced and run() is tried once more on the fresh one, so the sender sees no error,
    as with the health check. run() must be a read that can safely run twice."""
    reused = (
        connection.connection is not None
        and connection.health_check_enabled
        and not connection.health_check_done
        and not connection.in_atomic_block
    )
    if not reused:
        return run()
    connection.health_check_done = True
    try:
        return run()
    except (OperationalError, InterfaceError):
        if connection.is_usable():
            raise  # the connection works: this is the statement's own error
        connection.close()
        return run()
