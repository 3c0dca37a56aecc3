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
import weakref

import psycopg
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections
from django.db.backends.postgresql.base import CursorDebugWrapper, ServerBindingCursor
from django.db.backends.utils import CursorWrapper


class LoggedCursor(CursorDebugWrapper):
    """Logs each statement with its parameters in place, as Django's own cursor does
    (psycopg keeps no text of a statement the server binds)."""

    def execute(self, sql, params=None):
        with self.debug_sql(self.db.ops.compose_sql(sql, params), params):
            return self._execute_with_wrappers(sql, params, many=False, executor=self._execute)


# psycopg's default loader of timestamptz text: its compiled one (psycopg[binary]).
_COMPILED_TIMESTAMPTZ_LOADER = psycopg.adapters.get_loader(
    psycopg.postgres.types["timestamptz"].oid, psycopg.pq.Format.TEXT
)


class PlannedEachTimeCursor(ServerBindingCursor):
    """Server-side binding without a prepared statement: PostgreSQL plans the statement
    for each execution, with its parameters and the tables' current sizes."""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        return super().execute(query, params, prepare=False, binary=binary)


def _new_cursor(raw, prepare, utc=False):
    cursor = (ServerBindingCursor if prepare else PlannedEachTimeCursor)(raw)
    if utc:
        # psycopg's own loader (compiled) instead of Django's (Python): with the session in
        # UTC, which Django sets for a connection in UTC, both give the same aware
        # datetimes, in datetime.timezone.utc.
        cursor.adapters.register_loader("timestamptz", _COMPILED_TIMESTAMPTZ_LOADER)
    return cursor


# Statements a connection keeps a cursor for, per `prepare`: more than the ingest has.
KEPT_STATEMENTS = 32


class _Kept:
    """A connection's kept cursors (for `prepare`), one per statement text, and whether
    they are handed out now.

    psycopg keeps what it worked out for a statement (its parameters' dumpers, a loader
    for each column of its rows) only until its cursor runs a different statement: one
    cursor taking turns with the webhook's statements worked it all out again for each
    one (about a twentieth of a message's CPU in-process). A cursor per statement text
    keeps it."""

    __slots__ = ("raw", "prepare", "utc", "cursors", "cursor", "in_use")

    def __init__(self, raw, prepare, utc):
        self.raw, self.prepare, self.utc = raw, prepare, utc
        self.cursors = {}
        # The cursor that ran the last statement (until the first, one that has run none).
        self.cursor = _new_cursor(raw, prepare, utc)
        self.in_use = False

    def cursor_for(self, sql):
        cursor = self.cursors.get(sql)
        if cursor is None or cursor.closed:
            if len(self.cursors) >= KEPT_STATEMENTS:
                for kept in self.cursors.values():
                    kept.close()
                self.cursors.clear()
            cursor = self.cursors[sql] = _new_cursor(self.raw, self.prepare, self.utc)
        self.cursor = cursor
        return cursor


class KeptCursorWrapper(CursorWrapper):
    """A connection's kept cursors, wrapped as Django wraps its cursors: each statement
    runs on the cursor kept for its text, and leaving the `with` block hands them back
    instead of closing them."""

    def __init__(self, kept: _Kept, db):
        super().__init__(kept.cursor, db)
        self.kept = kept
        kept.in_use = True

    def execute(self, sql, params=None):
        self.cursor = self.kept.cursor_for(sql)
        return super().execute(sql, params)

    def executemany(self, sql, param_list):
        self.cursor = self.kept.cursor_for(sql)
        return super().executemany(sql, param_list)

    def __enter__(self):
        return self

    def __exit__(self, type, value, traceback):
        self.kept.in_use = False

    def close(self):
        self.kept.in_use = False


# Per psycopg connection (one per thread, so nothing here is shared between threads): its
# kept cursors by `prepare`. A cursor made for every statement, with its row loaders,
# cost about a quarter of the statement's CPU.
_kept = weakref.WeakKeyDictionary()


def _kept_cursor(db, raw, prepare) -> _Kept | None:
    """The connection's kept cursors, or None while they are handed out (a statement run
    meanwhile, which none of the ingest's does, gets a cursor of its own)."""
    cursors = _kept.get(raw)
    if cursors is None:
        cursors = _kept[raw] = {}
    kept = cursors.get(prepare)
    if kept is None:  # a cursor closed since is made anew by cursor_for()
        kept = cursors[prepare] = _Kept(raw, prepare, db.timezone_name == "UTC")
    return None if kept.in_use else kept


def prepared_cursor(prepare=True):
    """A Django cursor (wrapped as connection.cursor()'s, so query logging and
    execute_wrappers see its statements) whose statements PostgreSQL prepares; with
    prepare=False, ones it plans for each execution instead (a prepared statement's
    generic plan, made while a table is small, can stay in use after it has grown).
    Outside query logging it is one cursor kept per connection: use it in a `with` block,
    and fetch its rows there."""
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
        if db.queries_logged:
            return LoggedCursor(_new_cursor(raw, prepare), db)
        kept = _kept_cursor(db, raw, prepare)
        if kept is not None:
            return KeptCursorWrapper(kept, db)
        return db.make_cursor(_new_cursor(raw, prepare))


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
# SQLite's page cache for a bulk load, in KiB (a negative cache_size is KiB; the default
# is 2,000): see bulk_loading().
BULK_CACHE_KIB = 65_536


@contextlib.contextmanager
def bulk_loading():
    """For the length of a bulk load on this connection (import_events): SQLite moves its
    write-ahead log into the database every BULK_CHECKPOINT_PAGES pages instead of every
    1,000. Each such checkpoint writes back every page the log holds, and a chunk of
    messages touches mostly the same index pages as the chunk before it, so fewer, larger
    checkpoints write each page fewer times. Transactions and durability are unchanged
    (only when the log is copied into the database file changes); the setting is put
    back after the block. Its page cache grows from SQLite's default 2 MB to
    BULK_CACHE_KIB for the load too: a chunk's statements probe the contacts' and
    interactions' indexes all over, and with the default cache a workspace's indexes past a
    few MB were read again from the file, page by page, on every chunk (imports of 50,000
    messages into a 28 MB database, alternated six times: ~12,600 -> ~13,800 messages/s).
    Nothing to do on PostgreSQL."""
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "sqlite":
        yield
        return
    previous = {}
    with db.cursor() as cursor:
        for name, value in (("wal_autocheckpoint", BULK_CHECKPOINT_PAGES), ("cache_size", -BULK_CACHE_KIB)):
            cursor.execute(f"PRAGMA {name}")
            (previous[name],) = cursor.fetchone()
            cursor.execute(f"PRAGMA {name} = {value:d}")
    try:
        yield
    finally:
        with db.cursor() as cursor:
            for name, value in previous.items():
                cursor.execute(f"PRAGMA {name} = {int(value):d}")


# A table is analyzed again once it holds this many times the pages it had when last
# analyzed (and at least ANALYZE_MIN_PAGES): see analyze_if_grown().
ANALYZE_GROWTH = 2
ANALYZE_MIN_PAGES = 16


def analyze_if_grown(model, fields) -> bool:
    """PostgreSQL: ANALYZE these fields' columns of the model's table when it has outgrown
    its statistics (more than ANALYZE_GROWTH times the pages it had when last analyzed);
    returns whether it did.

    A first import grows a table by thousands of rows a second, far faster than
    autovacuum analyzes it (at most once a minute). Planned on statistics of a near-empty
    table, a statement that looks up a chunk's contacts hashes every contact of the
    workspace instead of probing an index for each one, and a prepared statement keeps
    the plan made when the table was small: each chunk then costs more the larger the
    workspace grows. ANALYZE reads a bounded sample, and makes PostgreSQL plan such
    statements again. Only the columns those plans depend on are analyzed (a JSON
    column's statistics cost the most to gather); autovacuum does all of them later.
    SKIP_LOCKED: a table that autovacuum is analyzing is left to it."""
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "postgresql":
        return False
    table = model._meta.db_table
    columns = ", ".join(db.ops.quote_name(model._meta.get_field(name).column) for name in fields)
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT relpages, pg_relation_size(oid) / current_setting('block_size')::int FROM pg_class "
            "WHERE oid = %s::regclass",
            [db.ops.quote_name(table)],
        )
        analyzed_pages, pages = cursor.fetchone()
        if pages < ANALYZE_MIN_PAGES or pages <= ANALYZE_GROWTH * analyzed_pages:
            return False
        cursor.execute(f"ANALYZE (SKIP_LOCKED) {db.ops.quote_name(table)} ({columns})")
    return True
