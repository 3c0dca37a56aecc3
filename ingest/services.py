"""The one write path: every Segment message, from the webhook, a batch or
import_events, is recorded by record_messages() (PRODUCT.md §2, §3).

A single message and a batch of thousands take the same few statements, in one
transaction per chunk of up to CHUNK_MESSAGES identifies:
1. claim the messageIds in ProcessedMessage (INSERT ... ON CONFLICT DO NOTHING
   RETURNING): a message already processed, or a second copy in the chunk, changes nothing;
   and take the contacts of the claimed messages, so concurrent chunks touching one contact
   are applied one after another and closeness_log stays exact. A single message's contact
   is upserted (created empty when new), and on PostgreSQL so is each message's of a batch
   of a handful (FEW_MESSAGES), in email order. A larger batch on PostgreSQL only finds
   which of its contacts exist, without locking them (one statement, a data-modifying
   WITH); on SQLite a batch reads and locks them (two statements);
2. merge the chunk's messages per contact and per (contact, day) in Python; a contact a
   batch creates is inserted whole (traits, days and closeness: all of its days are new),
   written once instead of inserted and then updated;
3. add the messages to the interactions in upserts whose RETURNING tells which days are
   new. On PostgreSQL a larger batch inserts its new contacts and locks the existing ones
   in one pass in email order (with the new ones' interactions), then reads the existing
   ones, locked, and adds theirs; a single identify's interaction is added by the
   statement of step 1 (nothing in its merge depends on the contact);
4. write the existing contacts' merged traits, first_seen_at, last day and closeness_log
   in one UPDATE ... FROM (VALUES ...).
Every writer takes contacts in email order, whether it inserts or locks them, so
concurrent chunks wait for each other and never deadlock; a contact that a concurrent
request inserts after a batch looked for it is merged into like any existing contact. On
PostgreSQL the statements are prepared once per connection (natsite/db.py), except a
batch's look-ups of contacts by email, planned for each batch: the one plan that depends
on how many contacts there are. The outcome is the one of recording the messages one at a
time, in order (the earliest message defines a day, the newest trait wins); a delete
request splits the chunk and runs alone, between the messages around it.
"""

import datetime as dt
import functools
import json
import logging
import random
import time
from dataclasses import dataclass

import orjson
from django.conf import settings
from django.db import (
    DEFAULT_DB_ALIAS, DatabaseError, DataError, OperationalError, connection, connections, transaction,
)
from django.db.models import Q
from django.utils import timezone

from contacts import closeness
from contacts.models import Contact, Interaction, Workspace
from ingest.models import ProcessedMessage, RejectedMessage
from ingest.serializers import MessageRejected, SegmentMessage, fold, normalize, read_by_orjson
from natsite.db import prepared_cursor

# trait_times' entry for userId; fold() never yields a leading space, so no trait clashes.
USER_ID_TIME = " user_id"
ACCEPTED = ("created", "merged", "duplicate", "traits_updated", "deleted")

logger = logging.getLogger(__name__)


@dataclass
class Result:
    status: str  # one of ACCEPTED, or "rejected"
    code: int = 200
    message: str = ""
    email: str = ""
    day: dt.date | None = None
    deleted: int | None = None

    @property
    def accepted(self) -> bool:
        return self.status != "rejected"

    def to_dict(self) -> dict:
        if not self.accepted:
            return {"status": self.code, "code": self.code, "message": self.message}
        out = {"status": self.status, "code": self.code}
        if self.email:
            out["email"] = self.email
        if self.day is not None:
            out["day"] = self.day.isoformat()
        if self.deleted is not None:
            out["deleted"] = self.deleted
        return out


def _json_order(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def merge_traits(traits: dict, trait_times: dict, incoming: dict, stamp: str) -> bool:
    """Merge `incoming`, the traits of a message whose timestamp_key is `stamp`, in place:
    per key, the newest message wins (ties: the larger value, so the outcome never depends
    on arrival order). Returns whether anything changed."""
    spelled = {fold(key): key for key in traits}
    changed = False
    for key, value in incoming.items():
        folded = fold(key)
        current_key = spelled.get(folded)
        previous = trait_times.get(folded)
        if current_key is not None and previous is not None:
            if stamp < previous:
                continue
            if stamp == previous and _json_order(value) <= _json_order(traits[current_key]):
                continue
        if current_key is not None and current_key != key:
            del traits[current_key]
        traits[key] = value
        trait_times[folded] = stamp
        spelled[folded] = key
        changed = True
    return changed


def name_from_traits(traits: dict) -> str:
    by_fold = {fold(key): value for key, value in traits.items()}
    name = by_fold.get("name")
    if isinstance(name, str) and name.strip():
        return name.strip()[:200]
    parts = [by_fold.get("firstname"), by_fold.get("lastname")]
    return " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())[:200]


# Messages recorded per transaction: bounds how long contact rows stay locked and how
# large one statement grows (parameters per statement stay far below both databases' caps).
CHUNK_MESSAGES = 1000
# A chunk of at most this many messages is claimed on PostgreSQL with the single message's
# prepared statement, once per message: for a handful of messages that costs less than
# planning the chunk's statement (see _claim_and_upsert_each).
FEW_MESSAGES = 4
# A chunk that loses a deadlock or a serialization failure to a concurrent batch is
# rolled back whole, so it can simply be tried again.
ATTEMPTS = 4
TRANSIENT_SQLSTATES = ("40P01", "40001")  # deadlock detected, serialization failure


def _db():
    """This thread's default connection. `connection` finds it again on every attribute
    (a few microseconds each): the per-message helpers look it up once."""
    return connections[DEFAULT_DB_ALIAS]


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _description_collation() -> str:
    """PostgreSQL compares descriptions with the "C" collation, so the database orders
    them as Python does (by code point), as SQLite's BINARY collation already does."""
    return ' COLLATE "C"' if connection.vendor == "postgresql" else ""


def _typed_row(columns: dict[str, str]) -> str:
    """PostgreSQL: FROM item `v`, one row of typed parameters under these column names."""
    return "(SELECT " + ", ".join(f"%s::{kind} AS {name}" for name, kind in columns.items()) + ") AS v"


def _rows(columns: dict[str, str], rows: list[tuple]) -> tuple[str, list]:
    """(FROM item `v` holding `rows` under these column names, its parameters).
    On PostgreSQL the rows travel as one JSON parameter, an array of arrays: a statement
    with thousands of placeholders costs the driver more to parse than the database to
    run, and keys repeated in every row cost more to encode. It is read as jsonb, parsed
    once, rather than json, whose every field read parses its row's text again (a third
    less of PostgreSQL's time for a chunk's rows). `columns` maps each name to its
    PostgreSQL type."""
    names = list(columns)
    postgresql = _db().vendor == "postgresql"
    if postgresql and len(rows) == 1:
        # One row, as for a single message: typed parameters, which PostgreSQL reads for
        # about half the CPU that parsing a one-row JSON document costs it.
        (row,) = rows
        params = [_json_text(value) if kind == "jsonb" else value for kind, value in zip(columns.values(), row)]
        return _typed_row(columns), params
    if postgresql:
        select = ", ".join(
            f"(e->{position})::jsonb AS {name}" if kind == "jsonb" else f"(e->>{position})::{kind} AS {name}"
            for position, (name, kind) in enumerate(columns.items())
        )
        document = _json_text(rows)
        return f"(SELECT {select} FROM jsonb_array_elements(%s::jsonb) AS e) AS v", [document]
    row = "(" + ", ".join(["%s"] * len(names)) + ")"
    select = ", ".join(f"column{position} AS {name}" for position, name in enumerate(names, start=1))
    return (
        f"(SELECT {select} FROM (VALUES {', '.join([row] * len(rows))})) AS v",
        [value for row in rows for value in row],
    )


def _json_text(value) -> str:
    """`value` as JSON text for a parameter, datetimes and dates as ISO text. orjson writes
    it in a seventh of the json module's time; what it refuses (integers past 64 bits,
    text with lone surrogates, keys that are not text) goes to the json module, which
    writes it as it always did. (Nothing here is NaN or infinite, which orjson would
    write as null: the webhook refuses them, and closeness is always finite.)"""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value, default=str)


def _naive_utc_text(value):
    """str() of the naive UTC datetime, as Django's SQLite adapter writes it."""
    if value is None:
        return None
    if value.tzinfo is not dt.timezone.utc:
        value = value.astimezone(dt.timezone.utc)
    return value.isoformat(" ")[:-6]  # without "+00:00"


def _time_adapter(db=None):
    """The function that turns a datetime into what the database driver takes. SQLite
    keeps naive UTC text: done directly, as Django's adapter would, since a chunk adapts
    thousands of them (and every look-up through `connection` has a cost)."""
    db = db or _db()
    if db.vendor == "sqlite" and db.timezone_name == "UTC":
        return _naive_utc_text
    return db.ops.adapt_datetimefield_value


def _time_of(value, zone) -> dt.datetime | None:
    """A datetime as read back with a raw cursor (SQLite's is naive, in the database's zone)."""
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is not None:
        return value
    if zone is dt.timezone.utc:
        return value.replace(tzinfo=zone)
    return timezone.make_aware(value, zone)


def _day_of(value) -> dt.date | None:
    return value if value is None or isinstance(value, dt.date) else dt.date.fromisoformat(value)


def _json_of(value) -> dict:
    """A JSON column's value: as the driver gave it, or read from its text (Django has
    PostgreSQL's jsonb come as text; SQLite stores text), by orjson where it reads what the
    json module reads (a quarter of the time), else by the json module."""
    if not isinstance(value, (str, bytes)):
        return value
    try:
        return read_by_orjson(value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value)
    except ValueError:
        return json.loads(value)


def _claim_message_ids(workspace: Workspace, message_ids) -> set[str]:
    """Record the messageIds new to the workspace, in one statement; returns them.
    Sorted, so two batches carrying the same ids wait for each other instead of deadlocking."""
    received_at = _time_adapter()(timezone.now())
    source, params = _rows(
        {"workspace_id": "bigint", "message_id": "text", "received_at": "timestamptz"},
        [(workspace.pk, message_id, received_at) for message_id in sorted(set(message_ids))],
    )
    with prepared_cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_table(ProcessedMessage)} (workspace_id, message_id, received_at) "
            f"SELECT workspace_id, message_id, received_at FROM {source} WHERE true "
            "ON CONFLICT (workspace_id, message_id) DO NOTHING RETURNING message_id",
            params,
        )
        return {row[0] for row in cursor.fetchall()}


@dataclass(slots=True)
class _LockedContact:
    """A contact row as locked for a chunk, or one the chunk creates (pk None until it is
    inserted): what the chunk reads and writes back."""

    pk: int | None
    email: str
    name: str
    user_id: str
    traits: dict
    trait_times: dict
    first_seen_at: dt.datetime | None
    last_interaction_day: dt.date | None
    closeness_log: float | None
    last_interaction_log_strength: float | None

    @classmethod
    def new(cls, email: str) -> "_LockedContact":
        return cls(None, email, "", "", {}, {}, None, None, None, None)


class ContactGoneMeanwhile(OperationalError):
    """A contact the chunk inserted meanwhile was deleted before the chunk could lock it:
    the chunk is rolled back and starts again."""


_CONTACT_COLUMNS = (
    "id, email, name, user_id, traits, trait_times, first_seen_at, last_interaction_day, closeness_log, "
    "last_interaction_log_strength"
)


def _contact_lock_sql(emails: str) -> str:
    """SELECT the workspace's contacts whose emails the subquery `emails` yields, in email
    order, locked for the rest of the transaction so concurrent chunks lock in one order.
    A join: one index probe per email, or one pass over the workspace's contacts against a
    hash of the emails, never a search of the list for each contact. On PostgreSQL FOR NO
    KEY UPDATE, the lock an UPDATE of the row takes, without giving the row a new version;
    SQLite has no row locks: the IMMEDIATE transaction holds the database's write lock."""
    lock = " FOR NO KEY UPDATE OF c" if connection.vendor == "postgresql" else ""
    return (
        f"SELECT {_CONTACT_COLUMNS} FROM {_table(Contact)} AS c JOIN (SELECT DISTINCT email FROM ({emails}) AS e) "
        f"AS w USING (email) WHERE c.workspace_id = %s ORDER BY email{lock}"
    )


def _contact_upsert_sql(select: str) -> str:
    """INSERT the contacts that `select` yields (workspace id, email, first seen, created at:
    the other columns start empty), or lock the ones that exist; RETURNING every row. Its
    look-up is the unique index's, as a conflict's always is, whatever the table's size."""
    return (
        f"INSERT INTO {_table(Contact)} "
        "(workspace_id, email, name, user_id, traits, trait_times, first_seen_at, created_at) "
        f"{select} ON CONFLICT (workspace_id, email) DO UPDATE SET email = excluded.email "
        f"RETURNING {_CONTACT_COLUMNS}"
    )


def _locked_contacts(rows) -> dict[str, _LockedContact]:
    db = _db()
    zone = dt.timezone.utc if db.timezone_name == "UTC" else db.timezone
    return {
        email: _LockedContact(
            pk, email, name, user_id, _json_of(traits), _json_of(trait_times), _time_of(first_seen_at, zone),
            _day_of(last_day), log, strength,
        )
        for pk, email, name, user_id, traits, trait_times, first_seen_at, last_day, log, strength in rows
    }


# How a claim-and-lock statement (CTEs `claimed` and `locked`) ends: the claimed messageIds,
# as rows whose id is NULL, then the locked contacts.
_CLAIMED_THEN_LOCKED = (
    "SELECT NULL, message_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM claimed "
    f"UNION ALL SELECT {_CONTACT_COLUMNS} FROM locked"
)


def _claimed_and_locked(rows) -> tuple[set[str], dict[str, _LockedContact]]:
    """A claim-and-lock statement's rows as (claimed messageIds, locked contacts by email)."""
    claimed = {row[1] for row in rows if row[0] is None}
    return claimed, _locked_contacts(row for row in rows if row[0] is not None)


def _lock_contacts(workspace: Workspace, emails: set[str]) -> dict[str, _LockedContact]:
    """Read and lock the contacts that exist among `emails`, in one statement, planned for
    each execution (see _claim_and_find)."""
    source, params = _rows({"email": "text"}, [(email,) for email in sorted(emails)])
    with prepared_cursor(prepare=False) as cursor:
        cursor.execute(_contact_lock_sql(f"SELECT email FROM {source}"), [*params, workspace.pk])
        return _locked_contacts(cursor.fetchall())


def _claim_and_lock(workspace: Workspace, messages: list[SegmentMessage], days_of: list[dt.date]):
    """Claim the chunk's messageIds, then lock the contacts of the messages it claimed.
    Returns (claimed messageIds, locked contacts by email, the interactions' rows or None).

    A single message's contact, when new, is created empty by the very statement that
    locks an existing one: an upsert, which can stay prepared; on PostgreSQL that statement
    also adds the message to its day's interaction, whose (contact id, day, event count)
    row it returns (None when it was not added: a batch, SQLite, an engage message). A
    batch on SQLite reads and locks only the contacts that exist, and inserts the new ones
    whole later, so that they are written once. On PostgreSQL a batch of at most
    FEW_MESSAGES takes the single message's statement for each message (planning a batch's
    statement costs more than a handful of those); a larger one is recorded by
    _record_in_email_order instead."""
    if len(messages) == 1:
        return _claim_and_upsert(workspace, messages[0], days_of[0])
    if connection.vendor == "postgresql":
        return _claim_and_upsert_each(workspace, messages, days_of)
    claimed = _claim_message_ids(workspace, [message.message_id for message in messages])
    emails = {message.email for message in messages if message.message_id in claimed}
    return claimed, _lock_contacts(workspace, emails) if emails else {}, None


@functools.cache
def _single_claim_sql(with_interaction: bool) -> str:
    """PostgreSQL: the statement of _claim_and_upsert, built once (with or without adding
    the message to its day's interaction)."""
    sql = (
        f"WITH claimed AS (INSERT INTO {_table(ProcessedMessage)} (workspace_id, message_id, received_at) "
        "VALUES (%s::bigint, %s::text, %s::timestamptz) "
        "ON CONFLICT (workspace_id, message_id) DO NOTHING RETURNING message_id), "
        "locked AS ("
        + _contact_upsert_sql(
            "SELECT %s::bigint, %s::text, '', '', '{}', '{}', %s::timestamptz, %s::timestamptz FROM claimed"
        )
        + ") "
    )
    if not with_interaction:
        return sql + _CLAIMED_THEN_LOCKED
    return sql + (
        f", merged AS ({_merge_interactions_sql('locked.id', f'locked, {_typed_row(_SINGLE_DAY_COLUMNS)}')}) "
        f"SELECT {_CONTACT_COLUMNS}, claimed.message_id, merged.day, merged.event_count "
        "FROM claimed JOIN locked ON true LEFT JOIN merged ON true"
    )


def _claim_and_upsert(workspace: Workspace, message: SegmentMessage, day: dt.date):
    """One message: claim its messageId and, if it is new, create or lock its contact and
    (an identify) add it to its day's interaction. One statement on PostgreSQL (a
    data-modifying WITH whose interaction upsert takes the contact's id from the contact
    upsert, so runs after the contact is locked); two on SQLite, which cannot put an
    INSERT in a WITH clause, and which adds the interaction later."""
    db = _db()
    adapt_time = _time_adapter(db)
    now = adapt_time(timezone.now())
    if db.vendor != "postgresql":
        if not _claim_message_ids(workspace, [message.message_id]):
            return set(), {}, None
        with prepared_cursor() as cursor:
            cursor.execute(
                _contact_upsert_sql("SELECT %s, %s, '', '', '{}', '{}', %s, %s WHERE true"),
                [workspace.pk, message.email, adapt_time(message.timestamp), now],
            )
            return {message.message_id}, _locked_contacts(cursor.fetchall()), None
    params = [workspace.pk, message.message_id, now, workspace.pk, message.email, message.timestamp, now]
    if not message.is_engage:
        # the interaction's workspace, then the values of _SINGLE_DAY_COLUMNS
        params += [workspace.pk, day, message.timestamp, message.timestamp, message.description, message.url, 1]
    with prepared_cursor() as cursor:
        cursor.execute(_single_claim_sql(not message.is_engage), params)
        rows = cursor.fetchall()
    if message.is_engage:
        return *_claimed_and_locked(rows), None
    if not rows:
        return set(), {}, None
    ((*contact, message_id, merged_day, event_count),) = rows
    return {message_id}, _locked_contacts([contact]), [(contact[0], merged_day, event_count)]


def _claim_and_upsert_each(workspace: Workspace, messages: list[SegmentMessage], days_of: list[dt.date]):
    """PostgreSQL, a batch of a handful of messages: _claim_and_upsert's prepared
    statement for each message, in (email, messageId) order, so that concurrent chunks
    lock contacts in one order. Returns what _claim_and_lock does, with the interactions'
    rows: one per (contact, day), the last count, so that a day is new when that count is
    the chunk's own."""
    claimed, contacts, merged = set(), {}, {}
    order = sorted(range(len(messages)), key=lambda i: (messages[i].email, messages[i].message_id, i))
    for index in order:
        ids, locked, rows = _claim_and_upsert(workspace, messages[index], days_of[index])
        claimed |= ids
        for email, contact in locked.items():
            contacts.setdefault(email, contact)  # the row as it was: nothing is written to it yet
        for row in rows or ():
            merged[row[0], row[1]] = row
    return claimed, contacts, list(merged.values())


def _claim_and_find(workspace, messages) -> tuple[set[str], set[str]]:
    """PostgreSQL, a batch: claim the messageIds and find which of the claimed messages'
    contacts exist, in one statement (a data-modifying WITH); returns (claimed messageIds,
    the emails of the contacts that exist). The contacts are read, not locked: they are
    locked with the new ones, in one pass in email order (_insert_new_and_lock_known).
    Planned for each execution, not prepared: a generic plan made while the workspace had
    few contacts would walk all of them for each email once it has many."""
    source, params = _rows(
        {"message_id": "text", "email": "text"}, [(message.message_id, message.email) for message in messages]
    )
    sql = (
        f"WITH m AS (SELECT * FROM {source}), "
        f"claimed AS (INSERT INTO {_table(ProcessedMessage)} (workspace_id, message_id, received_at) "
        "SELECT DISTINCT %s::bigint, message_id, %s::timestamptz FROM m ORDER BY message_id "
        "ON CONFLICT (workspace_id, message_id) DO NOTHING RETURNING message_id), "
        f"known AS (SELECT c.email FROM {_table(Contact)} AS c JOIN (SELECT DISTINCT m.email FROM m "
        "JOIN claimed USING (message_id)) AS w USING (email) WHERE c.workspace_id = %s) "
        "SELECT message_id, NULL FROM claimed UNION ALL SELECT NULL, email FROM known"
    )
    with prepared_cursor(prepare=False) as cursor:
        cursor.execute(sql, [*params, workspace.pk, timezone.now(), workspace.pk])
        rows = cursor.fetchall()
    return {message_id for message_id, _ in rows if message_id is not None}, {email for _, email in rows if email}


@dataclass
class _DayMerge:
    """What a chunk's messages add to one (contact, day) interaction."""

    first: int  # index of the first message of the day in the chunk: it is "created"
    occurred_at: dt.datetime
    description: str
    url: str
    last_occurred_at: dt.datetime
    event_count: int = 1

    def add(self, message: SegmentMessage) -> None:
        self.event_count += 1
        # The earliest message defines the day; on a tie the smaller description wins,
        # and on a full tie the one that came first, as one message at a time would.
        if (message.timestamp, message.description) < (self.occurred_at, self.description):
            self.occurred_at, self.description, self.url = message.timestamp, message.description, message.url
        self.last_occurred_at = max(self.last_occurred_at, message.timestamp)


# The state of a contact that a chunk writes (inserts whole, or updates): its columns and
# their PostgreSQL types.
_STATE_COLUMNS = {
    "name": "text", "user_id": "text", "traits": "jsonb", "trait_times": "jsonb",
    "first_seen_at": "timestamptz", "last_interaction_day": "date", "closeness_log": "float8",
    "last_interaction_log_strength": "float8",
}


def _state_rows(key: str, contacts: list[_LockedContact]) -> tuple[str, list]:
    """_rows of the contacts' state, in the order given, each row led by `key`: "id" for
    contacts that exist, "email" for new ones."""
    # jsonb columns take the JSON as it is on PostgreSQL (inside the rows' JSON document);
    # SQLite stores JSON text, written by orjson as the PostgreSQL parameter is (compact
    # UTF-8: the same values read back, in a sixth of the json module's time)
    db = _db()
    encode = (lambda value: value) if db.vendor == "postgresql" else _json_text
    adapt_day, adapt_time = db.ops.adapt_datefield_value, _time_adapter(db)
    by_id = key == "id"
    return _rows({key: "bigint" if by_id else "text", **_STATE_COLUMNS}, [
        (contact.pk if by_id else contact.email, contact.name, contact.user_id, encode(contact.traits),
         encode(contact.trait_times), adapt_time(contact.first_seen_at), adapt_day(contact.last_interaction_day),
         contact.closeness_log, contact.last_interaction_log_strength)
        for contact in contacts
    ])


def _insert_contacts_sql(source: str, lock_existing: bool = False) -> str:
    """INSERT the contacts `source` holds, whole, in email order; RETURNING (id, email) of
    those inserted. One that exists (a concurrent chunk may have inserted it since this
    chunk looked) is left alone (ON CONFLICT DO NOTHING), or with `lock_existing` locked
    and left alone: PostgreSQL locks every conflicting row of an ON CONFLICT DO UPDATE,
    and its WHERE false updates none. The SET names a column no unique index holds, so the
    lock is FOR NO KEY UPDATE's."""
    columns = ", ".join(["email", *_STATE_COLUMNS])
    conflict = "DO UPDATE SET name = excluded.name WHERE false" if lock_existing else "DO NOTHING"
    return (
        f"INSERT INTO {_table(Contact)} (workspace_id, created_at, {columns}) "
        f"SELECT %s, %s, {columns} FROM {source} WHERE true ORDER BY email "
        f"ON CONFLICT (workspace_id, email) {conflict} RETURNING id, email"
    )


_DAY_COLUMNS = {
    "contact_id": "bigint", "email": "text", "day": "date", "occurred_at": "timestamptz",
    "last_occurred_at": "timestamptz", "description": "text", "url": "text", "event_count": "integer",
}


# A single message's day as its claim-and-upsert statement adds it: the contact's id comes
# from the contact upsert of the same statement.
_SINGLE_DAY_COLUMNS = {name: kind for name, kind in _DAY_COLUMNS.items() if name not in ("contact_id", "email")}


def _day_rows(days: dict[tuple[str, dt.date], _DayMerge], contacts: dict[str, _LockedContact]) -> tuple[str, list]:
    """The chunk's (contact, day) merges, with the contact's id (None for one not yet
    inserted, or not in `contacts`)."""
    db = _db()
    adapt_day, adapt_time = db.ops.adapt_datefield_value, _time_adapter(db)
    return _rows(_DAY_COLUMNS, [
        (contacts[email].pk if email in contacts else None, email, adapt_day(day), adapt_time(merge.occurred_at),
         adapt_time(merge.last_occurred_at), merge.description, merge.url, merge.event_count)
        for (email, day), merge in sorted(days.items())
    ])


def _merge_interactions_sql(contact_id: str, source: str) -> str:
    """Add each row of `source` to its (contact, day) interaction, creating it when new;
    RETURNING (contact id, day, event count). `contact_id` is the contact's id in `source`."""
    table, collate = _table(Interaction), _description_collation()
    defines = (
        f"excluded.occurred_at < {table}.occurred_at OR (excluded.occurred_at = {table}.occurred_at "
        f"AND excluded.description{collate} < {table}.description{collate})"
    )
    return (
        f"INSERT INTO {table} "
        "(workspace_id, contact_id, day, occurred_at, last_occurred_at, description, url, event_count) "
        f"SELECT %s, {contact_id}, day, occurred_at, last_occurred_at, description, url, event_count FROM {source} "
        "WHERE true ORDER BY 2, 3 ON CONFLICT (contact_id, day) DO UPDATE SET "
        f"event_count = {table}.event_count + excluded.event_count, "
        f"description = CASE WHEN {defines} THEN excluded.description ELSE {table}.description END, "
        f"url = CASE WHEN {defines} THEN excluded.url ELSE {table}.url END, "
        f"occurred_at = CASE WHEN excluded.occurred_at < {table}.occurred_at "
        f"THEN excluded.occurred_at ELSE {table}.occurred_at END, "
        f"last_occurred_at = CASE WHEN excluded.last_occurred_at > {table}.last_occurred_at "
        f"THEN excluded.last_occurred_at ELSE {table}.last_occurred_at END "
        "RETURNING contact_id, day, event_count"
    )


def _merge_interactions(workspace: Workspace, days, contacts) -> list[tuple]:
    """Add the days of contacts that have ids to the interactions, in one statement; the
    interactions' (contact id, day, event count) rows."""
    day_source, day_params = _day_rows(days, contacts)
    with prepared_cursor() as cursor:
        cursor.execute(_merge_interactions_sql("contact_id", day_source), [workspace.pk, *day_params])
        return cursor.fetchall()


def _insert_and_merge(workspace, new, contacts, days) -> list[tuple]:
    """SQLite: insert the new contacts, then add the days to the interactions. Gives each
    new contact its pk; returns the interactions' (contact id, day, event count) rows. A
    new contact found inserted meanwhile, which the database's write lock, held from BEGIN
    (IMMEDIATE), rules out, makes the chunk start again."""
    if new:
        created_at = _time_adapter()(timezone.now())
        new_source, new_params = _state_rows("email", [contact for _, contact in sorted(new.items())])
        with prepared_cursor() as cursor:
            cursor.execute(_insert_contacts_sql(new_source), [workspace.pk, created_at, *new_params])
            if _give_ids(new, cursor.fetchall()):
                raise ContactGoneMeanwhile("A contact was inserted during the request; trying again")
    return _merge_interactions(workspace, days, contacts) if days else []


def _insert_new_and_lock_known(workspace, new, known, days) -> tuple[list[tuple], set[str]]:
    """PostgreSQL, a batch: one pass over the chunk's contacts in email order, inserting
    the new ones whole (with their days' interactions, which take the contact's id from
    the INSERT's RETURNING) and locking the ones that exist. Returns the interactions'
    (contact id, day, event count) rows and the emails inserted; gives each its pk.

    The one pass is what keeps concurrent chunks from deadlocking: every writer of
    contacts, a single message's upsert included, takes them in email order, whether it
    inserts or locks. (Locking the known contacts first and inserting the new ones after
    made a cycle: a chunk that found one of its new contacts inserted meanwhile had to lock
    it out of order.)"""
    created_at = _time_adapter()(timezone.now())
    # The known contacts travel empty: the conflict leaves them as they are. (One deleted
    # since it was found would be inserted so: the caller starts the chunk again.)
    rows = sorted([*new.values(), *(_LockedContact.new(email) for email in known)], key=lambda c: c.email)
    source, params = _state_rows("email", rows)
    day_source, day_params = _day_rows({key: merge for key, merge in days.items() if key[0] in new}, {})
    sql = (
        f"WITH inserted AS ({_insert_contacts_sql(source, lock_existing=True)}), "
        f"days AS (SELECT v.*, inserted.id AS new_id FROM {day_source} JOIN inserted USING (email)), "
        f"merged AS ({_merge_interactions_sql('new_id', 'days')}) "
        "SELECT contact_id, day, event_count, NULL FROM merged UNION ALL SELECT id, NULL, NULL, email FROM inserted"
    )
    with prepared_cursor() as cursor:
        cursor.execute(sql, [workspace.pk, created_at, *params, *day_params, workspace.pk])
        result = cursor.fetchall()
    inserted = [(pk, email) for pk, _, _, email in result if email is not None]
    if any(email in known for _, email in inserted):
        raise ContactGoneMeanwhile("A contact was deleted during the request; trying again")
    _give_ids(new, inserted)
    return [row[:3] for row in result if row[3] is None], {email for _, email in inserted}


def _lock_and_merge(workspace, emails: set[str], days) -> tuple[dict[str, _LockedContact], list[tuple]]:
    """PostgreSQL, a batch: read (and lock, in email order, those not locked yet) the
    contacts that exist among `emails`, and add their `days` to the interactions, in one
    statement planned for each execution (see _claim_and_find). Returns the contacts by
    email and the interactions' (contact id, day, event count) rows."""
    source, params = _rows({"email": "text"}, [(email,) for email in sorted(emails)])
    day_source, day_params = _day_rows(days, {})
    sql = (
        f"WITH locked AS ({_contact_lock_sql(f'SELECT email FROM {source}')}), "
        f"days AS (SELECT v.*, locked.id AS locked_id FROM {day_source} JOIN locked USING (email)), "
        f"merged AS ({_merge_interactions_sql('locked_id', 'days')}) "
        f"SELECT {_CONTACT_COLUMNS}, NULL::date, NULL::integer FROM locked UNION ALL "
        "SELECT contact_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, day, event_count FROM merged"
    )
    with prepared_cursor(prepare=False) as cursor:
        cursor.execute(sql, [*params, workspace.pk, *day_params, workspace.pk])
        result = cursor.fetchall()
    contacts = _locked_contacts(row[:10] for row in result if row[10] is None)
    return contacts, [(row[0], row[10], row[11]) for row in result if row[10] is not None]


def _give_ids(new: dict[str, _LockedContact], inserted) -> set[str]:
    """Give the inserted contacts their ids; returns the emails of those not inserted."""
    for pk, email in inserted:
        new[email].pk = pk
    return {email for email, contact in new.items() if contact.pk is None}


def _write_contacts(contacts: list[_LockedContact]) -> None:
    """Write the contacts' merged state in one UPDATE ... FROM."""
    if not contacts:
        return
    source, params = _state_rows("id", sorted(contacts, key=lambda contact: contact.pk))
    with prepared_cursor() as cursor:
        cursor.execute(_write_contacts_sql(source), params)


@functools.lru_cache(maxsize=16)
def _write_contacts_sql(source: str) -> str:
    """The UPDATE of _write_contacts for the FROM item `source`, the same string object
    each time, so that a kept cursor runs the very statement it ran before (natsite/db.py).
    PostgreSQL has two sources (one row, or a JSON document of rows); SQLite one per
    number of rows, of which the cache keeps the last few."""
    table = _table(Contact)
    return (
        f"UPDATE {table} SET {', '.join(f'{column} = v.{column}' for column in _STATE_COLUMNS)} "
        f"FROM {source} WHERE {table}.id = v.id"
    )


def _apply_identity(contact: _LockedContact, message: SegmentMessage) -> bool:
    """Merge one identify's userId, traits and first-seen time into the contact, in
    memory; returns whether the contact changed."""
    moment, stamp = message.timestamp, message.stamp
    changed = False
    if message.user_id:
        # userId is ordered like a trait: the newest message's userId is kept.
        previous = contact.trait_times.get(USER_ID_TIME)
        if previous is None or stamp > previous or (stamp == previous and message.user_id > contact.user_id):
            contact.trait_times[USER_ID_TIME] = stamp
            contact.user_id = message.user_id
            changed = True
    if merge_traits(contact.traits, contact.trait_times, message.traits, stamp):
        contact.name = name_from_traits(contact.traits)
        changed = True
    if contact.first_seen_at is None or moment < contact.first_seen_at:
        contact.first_seen_at = moment
        changed = True
    return changed


def _add_days(contacts: dict[str, _LockedContact], keys, days: dict[tuple[str, dt.date], _DayMerge]) -> None:
    """Add new days to their contacts' closeness_log in the order their first messages came,
    so the float sum is the very one that recording the messages one at a time would make."""
    for email, day in sorted(keys, key=lambda key: days[key].first):
        contact = contacts[email]
        contact.closeness_log = closeness.add_day(contact.closeness_log, day)
        contact.last_interaction_day = max(day, contact.last_interaction_day or day)
        contact.last_interaction_log_strength = contact.closeness_log - closeness.day_weight_log(
            contact.last_interaction_day
        )


def _merge_identities(messages, indexes, contacts, new, results) -> set[str]:
    """Merge the userIds, traits and first-seen times of the messages at `indexes` into
    their contacts, in memory; an email without a contact gets a new one, added to
    `contacts` and `new`. Returns the emails of existing contacts that changed."""
    changed = set()
    for index in indexes:
        message = messages[index]
        contact = contacts.get(message.email)
        if contact is None:
            contact = contacts[message.email] = new[message.email] = _LockedContact.new(message.email)
        if _apply_identity(contact, message) and contact.pk is not None:
            changed.add(message.email)
        if message.is_engage:
            results[index] = Result(status="traits_updated", email=message.email)
    return changed


def _day_merges(messages, indexes, days_of) -> dict[tuple[str, dt.date], _DayMerge]:
    """What the messages at `indexes` add to each (email, day) interaction (engage
    messages add to none)."""
    days: dict[tuple[str, dt.date], _DayMerge] = {}
    for index in indexes:
        message = messages[index]
        if message.is_engage:
            continue
        key = (message.email, days_of[index])
        if key in days:
            days[key].add(message)
        else:
            days[key] = _DayMerge(
                first=index, occurred_at=message.timestamp, description=message.description, url=message.url,
                last_occurred_at=message.timestamp,
            )
    return days


def _record_in_email_order(workspace, messages, fresh, days_of, known, contacts, new, results):
    """PostgreSQL, a batch whose messageIds are claimed (`fresh`, of which the contacts of
    `known` exist): the new contacts inserted whole and the known ones locked in one pass
    in email order, then the known ones (and any inserted meanwhile by a concurrent
    request) read, with their days added to the interactions, and the messages merged
    into them. Returns (changed, days, interactions' rows, created) for _record_identifies."""
    days = _day_merges(messages, fresh, days_of)
    first_new = [index for index in fresh if messages[index].email not in known]
    _merge_identities(messages, first_new, contacts, new, results)
    # Every day of a new contact is new: it is inserted with its closeness.
    created = {key for key in days if key[0] in new}
    _add_days(contacts, created, days)
    rows, inserted = _insert_new_and_lock_known(workspace, new, known, days) if new else ([], set())
    # Inserted by a concurrent request since this chunk looked, and now locked by it: merged
    # into like any contact that exists.
    taken = new.keys() - inserted
    for email in taken:
        del contacts[email], new[email]
    created = {key for key in created if key[0] not in taken}
    existing = known | taken
    changed = set()
    if existing:
        locked, more_rows = _lock_and_merge(
            workspace, existing, {key: merge for key, merge in days.items() if key[0] in existing}
        )
        if locked.keys() != existing:
            raise ContactGoneMeanwhile("A contact was deleted during the request; trying again")
        contacts.update(locked)
        changed = _merge_identities(
            messages, [index for index in fresh if messages[index].email in existing], contacts, new, results
        )
        rows += more_rows
    return changed, days, rows, created


def _record_identifies(workspace: Workspace, messages: list[SegmentMessage]) -> list[Result]:
    """Record a run of identifies in the caller's transaction, with the outcome of
    recording them one at a time in this order: the same statements whatever their number."""
    tzinfo = workspace.tzinfo
    days_of = [message.timestamp.astimezone(tzinfo).date() for message in messages]
    results: list[Result | None] = [None] * len(messages)

    in_email_order = len(messages) > FEW_MESSAGES and connection.vendor == "postgresql"
    if in_email_order:
        (claimed, known), contacts, rows = _claim_and_find(workspace, messages), {}, None
    else:
        claimed, contacts, rows = _claim_and_lock(workspace, messages, days_of)
    fresh = []
    for index, message in enumerate(messages):
        if message.message_id in claimed:
            claimed.discard(message.message_id)  # a second copy in this chunk is a duplicate
            fresh.append(index)
        else:
            results[index] = Result(status="duplicate", email=message.email, day=days_of[index])
    if not fresh:
        return results

    new: dict[str, _LockedContact] = {}  # the contacts this chunk inserts, by email
    if in_email_order:
        changed, days, rows, created = _record_in_email_order(
            workspace, messages, fresh, days_of, known, contacts, new, results
        )
    else:
        changed = _merge_identities(messages, fresh, contacts, new, results)
        days = _day_merges(messages, fresh, days_of)
        # Every day of a new contact is new: it is inserted with its closeness.
        created = {key for key in days if key[0] in new}
        _add_days(contacts, created, days)
        if rows is None:  # days not added yet: SQLite's (PostgreSQL's upserts add their message's day)
            rows = _insert_and_merge(workspace, new, contacts, days) if new or days else []

    email_of = {contact.pk: email for email, contact in contacts.items()}
    # A day of an existing contact is new when its interaction holds only this chunk's events.
    created_now = set()
    for contact_id, day, event_count in rows:
        key = (email_of[contact_id], _day_of(day))
        if key[0] not in new and event_count == days[key].event_count:
            created_now.add(key)
    _add_days(contacts, created_now, days)
    created |= created_now
    changed.update(email for email, _ in created_now)

    for index in fresh:
        if results[index] is None:
            message = messages[index]
            key = (message.email, days_of[index])
            status = "created" if key in created and days[key].first == index else "merged"
            results[index] = Result(status=status, email=message.email, day=days_of[index])

    _write_contacts([contacts[email] for email in changed if email not in new])
    return results


def record_delete(*, workspace: Workspace, message: SegmentMessage) -> Result:
    """Segment's user-deletion request: the user's contacts go, with their interactions."""
    match = Q(pk__in=[])
    if message.user_id:
        match |= Q(user_id=message.user_id)
    if message.email:
        match |= Q(email=message.email)
    # Locked first, in email order, as every writer of contacts takes them: a delete that
    # matches several contacts (one userId on several emails) then cannot deadlock with a
    # batch holding some of them (the DELETE alone would lock them in the order it finds them).
    matched = Contact.objects.filter(workspace=workspace).filter(match)
    ids = list(matched.order_by("email").select_for_update().values_list("pk", flat=True))
    _, per_model = Contact.objects.filter(pk__in=ids).delete()
    count = per_model.get(Contact._meta.label, 0)
    return Result(status="deleted", email=message.email, deleted=count)


def _record_delete_once(workspace: Workspace, messages: list[SegmentMessage]) -> list[Result]:
    (message,) = messages
    if not _claim_message_ids(workspace, [message.message_id]):
        return [Result(status="duplicate", email=message.email)]
    return [record_delete(workspace=workspace, message=message)]


def _is_transient(error: DatabaseError) -> bool:
    if isinstance(error, ContactGoneMeanwhile):
        return True
    return getattr(error.__cause__, "sqlstate", None) in TRANSIENT_SQLSTATES


def _in_transaction(record, workspace: Workspace, messages: list[SegmentMessage]) -> list[Result]:
    """record(workspace, messages) in one transaction, tried again after losing a deadlock,
    or a contact that a concurrent chunk inserted and then deleted before this one locked it."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with transaction.atomic():
                return record(workspace, messages)
        except OperationalError as error:
            if attempt == ATTEMPTS or not _is_transient(error):
                raise
            time.sleep(random.uniform(0, 0.01 * 2**attempt))
    raise AssertionError("unreachable")


def record_messages(*, workspace: Workspace, messages: list[SegmentMessage]) -> list[Result]:
    """Record normalized messages, one result per message in order, exactly as if they
    were recorded one at a time: identifies in transactions of CHUNK_MESSAGES (a handful of
    statements each), a delete alone in its own, between the identifies around it."""
    results = []
    start = 0
    while start < len(messages):
        if messages[start].type == "delete":
            results += _in_transaction(_record_delete_once, workspace, messages[start:start + 1])
            start += 1
            continue
        end = start
        while end < len(messages) and end - start < CHUNK_MESSAGES and messages[end].type != "delete":
            end += 1
        results += _record_run(workspace, messages[start:end])
        start = end
    return results


def _record_run(workspace: Workspace, messages: list[SegmentMessage]) -> list[Result]:
    """One transaction for the run; should the database refuse one message's values, the
    others are recorded one at a time and only that one is rejected."""
    try:
        return _in_transaction(_record_identifies, workspace, messages)
    except DataError as error:
        if len(messages) > 1:
            return [result for message in messages for result in _record_run(workspace, [message])]
        logger.warning("ingest: message %s could not be stored: %s", messages[0].message_id, error)
        return [Result(status="rejected", code=400, message="Message could not be stored: a value is out of range")]


def record_message(*, workspace: Workspace, message: SegmentMessage) -> Result:
    """Record one normalized message, exactly once per messageId, in its own transaction."""
    return record_messages(workspace=workspace, messages=[message])[0]


@dataclass
class Checked:
    """Messages checked by the webhook's rules, nothing recorded yet (no database needed,
    so import_events checks them in its reader process): one result per message in
    order, None for a valid message, whose normalized form waits in `valid`."""

    results: list[Result | None]
    valid: list[SegmentMessage]


def check_messages(raw_messages, *, now=None, rejected=None) -> Checked:
    """Normalize each decoded JSON message, or give it its rejection. `rejected` holds the
    results of messages refused before this (too large, not readable), by position: those
    are not normalized."""
    now = now or timezone.now()
    rejected = rejected or {}
    results: list[Result | None] = []
    valid = []
    for position, raw in enumerate(raw_messages):
        if position in rejected:
            results.append(rejected[position])
            continue
        try:
            valid.append(normalize(raw, now=now))
        except MessageRejected as refused:
            results.append(Result(status="rejected", code=refused.status, message=refused.message))
            continue
        results.append(None)
    return Checked(results, valid)


def record_checked(*, workspace: Workspace, checked: Checked, record=record_messages) -> list[Result]:
    """Record the valid messages of `checked` with `record` (record_messages, or what takes
    and returns the same); the results of all of them, in order."""
    recorded = iter(record(workspace=workspace, messages=checked.valid))
    return [next(recorded) if result is None else result for result in checked.results]


def ingest_messages(*, workspace: Workspace, raw_messages, now=None) -> list[Result]:
    """Validate and record a list of decoded JSON messages; one bad message never
    loses the good ones. Database errors propagate (the webhook answers 503)."""
    return record_checked(workspace=workspace, checked=check_messages(raw_messages, now=now))


def excerpt_of(raw, limit=300) -> str:
    try:
        # A body that could not be parsed is shown as the text it is.
        text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(raw)
    # Lone surrogates (from "\ud800" escapes) cannot be encoded for the database.
    text = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def remember_rejections(*, workspace: Workspace, rejected: list[tuple[Result, object]]) -> None:
    """Keep the workspace's last REJECTED_MESSAGES_KEPT rejections (when, status, why, excerpt)."""
    if not rejected:
        return
    keep = settings.REJECTED_MESSAGES_KEPT
    now = timezone.now()
    rows = [
        RejectedMessage(
            workspace=workspace, received_at=now, status=r.code, message=r.message[:500], excerpt=excerpt_of(raw)
        )
        for r, raw in rejected[-keep:]
    ]
    with transaction.atomic():
        RejectedMessage.objects.bulk_create(rows)
        newest = RejectedMessage.objects.filter(workspace=workspace).order_by("-id")
        first_dropped = newest.values_list("id", flat=True)[keep:keep + 1].first()
        if first_dropped is not None:
            RejectedMessage.objects.filter(workspace=workspace, id__lte=first_dropped).delete()
