"""The one write path: every Segment message, from the webhook, a batch or
import_events, is recorded by record_messages() (PRODUCT.md §2, §3).

A single message and a batch of thousands take the same few statements, in one
transaction per chunk of up to CHUNK_MESSAGES identifies:
1. claim the messageIds in ProcessedMessage (INSERT ... ON CONFLICT DO NOTHING
   RETURNING): a message already processed, or a second copy in the chunk, changes nothing;
2. upsert the contacts of the claimed messages (INSERT ... ON CONFLICT DO UPDATE
   RETURNING), which also locks their rows, so concurrent chunks touching one contact are
   applied one after another and closeness_log stays exact; on PostgreSQL 1 and 2 are
   one statement (data-modifying WITH), on SQLite two;
3. merge the chunk's messages per (contact, day) in Python, then add them to the
   interactions in one upsert whose RETURNING tells which days are new;
4. write the contacts' merged traits, first_seen_at, last day and closeness_log in one
   UPDATE ... FROM (VALUES ...).
On PostgreSQL the statements are prepared once per connection (natsite/db.py).
The outcome is the one of recording the messages one at a time, in order (the
earliest message defines a day, the newest trait wins); a delete request splits the
chunk and runs alone, between the messages around it.
"""

import datetime as dt
import functools
import json
import logging
import random
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, DataError, OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from contacts import closeness
from contacts.models import Contact, Interaction, Workspace
from ingest.models import ProcessedMessage, RejectedMessage
from ingest.serializers import MessageRejected, SegmentMessage, fold, normalize
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


@functools.lru_cache(maxsize=4096)  # asked twice per message (userId, then traits)
def timestamp_key(moment: dt.datetime) -> str:
    """A UTC timestamp as a string that sorts like the moment it names."""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_order(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def merge_traits(traits: dict, trait_times: dict, incoming: dict, moment: dt.datetime) -> bool:
    """Merge `incoming` in place: per key, the newest message wins (ties: the larger
    value, so the outcome never depends on arrival order). Returns whether anything changed."""
    stamp = timestamp_key(moment)
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
# A chunk that loses a deadlock or a serialization failure to a concurrent batch is
# rolled back whole, so it can simply be tried again.
ATTEMPTS = 4
TRANSIENT_SQLSTATES = ("40P01", "40001")  # deadlock detected, serialization failure


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _description_collation() -> str:
    """PostgreSQL compares descriptions with the "C" collation, so the database orders
    them as Python does (by code point), as SQLite's BINARY collation already does."""
    return ' COLLATE "C"' if connection.vendor == "postgresql" else ""


def _rows(columns: dict[str, str], rows: list[tuple]) -> tuple[str, list]:
    """(FROM item `v` holding `rows` under these column names, its parameters).
    On PostgreSQL the rows travel as one JSON parameter, an array of arrays: a statement
    with thousands of placeholders costs the driver more to parse than the database to
    run, and keys repeated in every row cost more to encode. `columns` maps each name
    to its PostgreSQL type."""
    names = list(columns)
    if connection.vendor == "postgresql" and len(rows) == 1:
        # One row, as for a single message: typed parameters, which PostgreSQL reads for
        # about half the CPU that parsing a one-row JSON document costs it.
        select = ", ".join(f"%s::{kind} AS {name}" for name, kind in columns.items())
        (row,) = rows
        params = [json.dumps(value) if kind == "jsonb" else value for kind, value in zip(columns.values(), row)]
        return f"(SELECT {select}) AS v", params
    if connection.vendor == "postgresql":
        select = ", ".join(
            f"(e->{position})::jsonb AS {name}" if kind == "jsonb" else f"(e->>{position})::{kind} AS {name}"
            for position, (name, kind) in enumerate(columns.items())
        )
        document = json.dumps(rows, default=str)  # datetimes and dates as ISO text
        return f"(SELECT {select} FROM json_array_elements(%s::json) AS e) AS v", [document]
    row = "(" + ", ".join(["%s"] * len(names)) + ")"
    select = ", ".join(f"column{position} AS {name}" for position, name in enumerate(names, start=1))
    return (
        f"(SELECT {select} FROM (VALUES {', '.join([row] * len(rows))})) AS v",
        [value for row in rows for value in row],
    )


def _naive_utc_text(value):
    return None if value is None else str(value.astimezone(dt.timezone.utc).replace(tzinfo=None))


def _time_adapter():
    """The function that turns a datetime into what the database driver takes. SQLite
    keeps naive UTC text: done directly, as Django's adapter would, since a chunk adapts
    thousands of them (and every look-up through `connection` has a cost)."""
    if connection.vendor == "sqlite" and connection.timezone_name == "UTC":
        return _naive_utc_text
    return connection.ops.adapt_datetimefield_value


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
    return json.loads(value) if isinstance(value, (str, bytes)) else value


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
    """A contact row as locked for a chunk: what the chunk reads and writes back."""

    pk: int
    email: str
    name: str
    user_id: str
    traits: dict
    trait_times: dict
    first_seen_at: dt.datetime | None
    last_interaction_day: dt.date | None
    closeness_log: float | None
    last_interaction_log_strength: float | None


_CONTACT_COLUMNS = (
    "id, email, name, user_id, traits, trait_times, first_seen_at, last_interaction_day, closeness_log, "
    "last_interaction_log_strength"
)


def _contact_lock_sql(select: str) -> str:
    """INSERT the contacts that `select` yields (workspace id, email, first seen, created at:
    the other columns start empty), or lock the ones that exist; RETURNING every row."""
    return (
        f"INSERT INTO {_table(Contact)} "
        "(workspace_id, email, name, user_id, traits, trait_times, first_seen_at, created_at) "
        f"{select} ON CONFLICT (workspace_id, email) DO UPDATE SET email = excluded.email "
        f"RETURNING {_CONTACT_COLUMNS}"
    )


def _locked_contacts(rows) -> dict[str, _LockedContact]:
    zone = dt.timezone.utc if connection.timezone_name == "UTC" else connection.timezone
    return {
        email: _LockedContact(
            pk, email, name, user_id, _json_of(traits), _json_of(trait_times), _time_of(first_seen_at, zone),
            _day_of(last_day), log, strength,
        )
        for pk, email, name, user_id, traits, trait_times, first_seen_at, last_day, log, strength in rows
    }


def _lock_contacts(workspace: Workspace, first_seen: dict[str, dt.datetime]) -> dict[str, _LockedContact]:
    """Create the contacts that are new and lock every row for the rest of the
    transaction, in one statement; sorted by email, so concurrent batches lock in one order."""
    adapt_time = _time_adapter()
    created_at = adapt_time(timezone.now())
    source, params = _rows(
        {"email": "text", "first_seen_at": "timestamptz"},
        [(email, adapt_time(first_seen[email])) for email in sorted(first_seen)],
    )
    sql = _contact_lock_sql(f"SELECT %s, email, '', '', '{{}}', '{{}}', first_seen_at, %s FROM {source} WHERE true")
    with prepared_cursor() as cursor:
        cursor.execute(sql, [workspace.pk, created_at, *params])
        return _locked_contacts(cursor.fetchall())


def _claim_and_lock(workspace: Workspace, messages: list[SegmentMessage]) -> tuple[set[str], dict[str, _LockedContact]]:
    """Claim the chunk's messageIds and create or lock the contacts of the messages it
    claimed (a message's first copy in the chunk), each first seen at its earliest such
    message. Returns (claimed messageIds, locked contacts by email)."""
    if connection.vendor == "postgresql":
        return _claim_and_lock_in_one(workspace, messages)
    claimed = _claim_message_ids(workspace, [message.message_id for message in messages])
    first_seen, copied = {}, set()
    for message in messages:
        if message.message_id in claimed and message.message_id not in copied:
            copied.add(message.message_id)
            if message.email not in first_seen or message.timestamp < first_seen[message.email]:
                first_seen[message.email] = message.timestamp
    return claimed, _lock_contacts(workspace, first_seen) if first_seen else {}


def _claim_and_lock_in_one(workspace, messages) -> tuple[set[str], dict[str, _LockedContact]]:
    """PostgreSQL: _claim_message_ids and _lock_contacts in one statement (a data-modifying
    WITH), one round trip instead of two; SQLite cannot put an INSERT in a WITH clause."""
    now = timezone.now()
    source, params = _rows(
        {"seq": "integer", "message_id": "text", "email": "text", "seen_at": "timestamptz"},
        [(position, m.message_id, m.email, m.timestamp) for position, m in enumerate(messages)],
    )
    sql = (
        f"WITH m AS (SELECT * FROM {source}), "
        f"claimed AS (INSERT INTO {_table(ProcessedMessage)} (workspace_id, message_id, received_at) "
        "SELECT DISTINCT %s::bigint, message_id, %s::timestamptz FROM m ORDER BY message_id "
        "ON CONFLICT (workspace_id, message_id) DO NOTHING RETURNING message_id), "
        "first_copies AS (SELECT DISTINCT ON (message_id) message_id, email, seen_at FROM m "
        "ORDER BY message_id, seq), "
        "locked AS ("
        + _contact_lock_sql(
            "SELECT %s::bigint, f.email, '', '', '{}', '{}', min(f.seen_at), %s::timestamptz "
            "FROM first_copies f JOIN claimed USING (message_id) GROUP BY f.email ORDER BY f.email"
        )
        + ") "
        "SELECT NULL, message_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM claimed "
        f"UNION ALL SELECT {_CONTACT_COLUMNS} FROM locked"
    )
    with prepared_cursor() as cursor:
        cursor.execute(sql, [*params, workspace.pk, now, workspace.pk, now])
        rows = cursor.fetchall()
    claimed = {row[1] for row in rows if row[0] is None}
    return claimed, _locked_contacts(row for row in rows if row[0] is not None)


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


def _merge_interactions(workspace: Workspace, days: dict[tuple[int, dt.date], _DayMerge]) -> set[tuple[int, dt.date]]:
    """Add each day's messages to its interaction (creating it when new), in one
    statement; returns the (contact id, day) pairs whose interaction it created."""
    collate, adapt_time = _description_collation(), _time_adapter()
    adapt_day = connection.ops.adapt_datefield_value
    source, params = _rows(
        {
            "contact_id": "bigint", "day": "date", "occurred_at": "timestamptz", "last_occurred_at": "timestamptz",
            "description": "text", "url": "text", "event_count": "integer",
        },
        [
            (contact_id, adapt_day(day), adapt_time(merge.occurred_at), adapt_time(merge.last_occurred_at),
             merge.description, merge.url, merge.event_count)
            for (contact_id, day), merge in sorted(days.items())
        ],
    )
    table = _table(Interaction)
    defines = (
        f"excluded.occurred_at < {table}.occurred_at OR (excluded.occurred_at = {table}.occurred_at "
        f"AND excluded.description{collate} < {table}.description{collate})"
    )
    sql = (
        f"INSERT INTO {table} "
        "(workspace_id, contact_id, day, occurred_at, last_occurred_at, description, url, event_count) "
        f"SELECT %s, contact_id, day, occurred_at, last_occurred_at, description, url, event_count FROM {source} "
        "WHERE true ON CONFLICT (contact_id, day) DO UPDATE SET "
        f"event_count = {table}.event_count + excluded.event_count, "
        f"description = CASE WHEN {defines} THEN excluded.description ELSE {table}.description END, "
        f"url = CASE WHEN {defines} THEN excluded.url ELSE {table}.url END, "
        f"occurred_at = CASE WHEN excluded.occurred_at < {table}.occurred_at "
        f"THEN excluded.occurred_at ELSE {table}.occurred_at END, "
        f"last_occurred_at = CASE WHEN excluded.last_occurred_at > {table}.last_occurred_at "
        f"THEN excluded.last_occurred_at ELSE {table}.last_occurred_at END "
        "RETURNING contact_id, day, event_count"
    )
    with prepared_cursor() as cursor:
        cursor.execute(sql, [workspace.pk, *params])
        rows = cursor.fetchall()
    # An interaction that existed already had at least one event before these were added.
    created = set()
    for contact_id, day, event_count in rows:
        key = (contact_id, _day_of(day))
        if event_count == days[key].event_count:
            created.add(key)
    return created


def _write_contacts(contacts: list[_LockedContact]) -> None:
    """Write the contacts' merged state in one UPDATE ... FROM."""
    if not contacts:
        return
    postgres = connection.vendor == "postgresql"
    encode = (lambda value: value) if postgres else json.dumps  # jsonb columns take the JSON as it is
    adapt_day, adapt_time = connection.ops.adapt_datefield_value, _time_adapter()
    source, params = _rows(
        {
            "id": "bigint", "name": "text", "user_id": "text", "traits": "jsonb", "trait_times": "jsonb",
            "first_seen_at": "timestamptz", "last_interaction_day": "date", "closeness_log": "float8",
            "last_interaction_log_strength": "float8",
        },
        [
            (contact.pk, contact.name, contact.user_id, encode(contact.traits), encode(contact.trait_times),
             adapt_time(contact.first_seen_at), adapt_day(contact.last_interaction_day), contact.closeness_log,
             contact.last_interaction_log_strength)
            for contact in sorted(contacts, key=lambda contact: contact.pk)
        ],
    )
    table = _table(Contact)
    with prepared_cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET name = v.name, user_id = v.user_id, traits = v.traits, trait_times = v.trait_times, "
            "first_seen_at = v.first_seen_at, last_interaction_day = v.last_interaction_day, "
            "closeness_log = v.closeness_log, last_interaction_log_strength = v.last_interaction_log_strength "
            f"FROM {source} WHERE {table}.id = v.id",
            params,
        )


def _apply_identity(contact: _LockedContact, message: SegmentMessage) -> bool:
    """Merge one identify's userId, traits and first-seen time into the contact, in
    memory; returns whether the contact changed."""
    moment = message.timestamp
    changed = False
    if message.user_id:
        # userId is ordered like a trait: the newest message's userId is kept.
        stamp, previous = timestamp_key(moment), contact.trait_times.get(USER_ID_TIME)
        if previous is None or stamp > previous or (stamp == previous and message.user_id > contact.user_id):
            contact.trait_times[USER_ID_TIME] = stamp
            contact.user_id = message.user_id
            changed = True
    if merge_traits(contact.traits, contact.trait_times, message.traits, moment):
        contact.name = name_from_traits(contact.traits)
        changed = True
    if contact.first_seen_at is None or moment < contact.first_seen_at:
        contact.first_seen_at = moment
        changed = True
    return changed


def _record_identifies(workspace: Workspace, messages: list[SegmentMessage]) -> list[Result]:
    """Record a run of identifies in the caller's transaction, with the outcome of
    recording them one at a time in this order: the same statements whatever their number."""
    tzinfo = workspace.tzinfo
    days_of = [message.timestamp.astimezone(tzinfo).date() for message in messages]
    results: list[Result | None] = [None] * len(messages)

    claimed, contacts = _claim_and_lock(workspace, messages)
    fresh = []
    for index, message in enumerate(messages):
        if message.message_id in claimed:
            claimed.discard(message.message_id)  # a second copy in this chunk is a duplicate
            fresh.append(index)
        else:
            results[index] = Result(status="duplicate", email=message.email, day=days_of[index])
    if not fresh:
        return results

    changed = set()
    days: dict[tuple[int, dt.date], _DayMerge] = {}
    for index in fresh:
        message = messages[index]
        contact = contacts[message.email]
        if _apply_identity(contact, message):
            changed.add(contact.pk)
        if message.is_engage:
            results[index] = Result(status="traits_updated", email=message.email)
            continue
        key = (contact.pk, days_of[index])
        if key in days:
            days[key].add(message)
        else:
            days[key] = _DayMerge(
                first=index, occurred_at=message.timestamp, description=message.description, url=message.url,
                last_occurred_at=message.timestamp,
            )

    created = _merge_interactions(workspace, days) if days else set()
    by_id = {contact.pk: contact for contact in contacts.values()}
    # New days join closeness_log in the order their first messages came, so the float
    # sum is the very one that recording the messages one at a time would make.
    for contact_id, day in sorted(created, key=lambda key: days[key].first):
        contact = by_id[contact_id]
        contact.closeness_log = closeness.add_day(contact.closeness_log, day)
        contact.last_interaction_day = max(day, contact.last_interaction_day or day)
        contact.last_interaction_log_strength = contact.closeness_log - closeness.day_weight_log(
            contact.last_interaction_day
        )
        changed.add(contact_id)
    for index in fresh:
        if results[index] is None:
            message = messages[index]
            key = (contacts[message.email].pk, days_of[index])
            status = "created" if key in created and days[key].first == index else "merged"
            results[index] = Result(status=status, email=message.email, day=days_of[index])

    _write_contacts([by_id[contact_id] for contact_id in changed])
    return results


def record_delete(*, workspace: Workspace, message: SegmentMessage) -> Result:
    """Segment's user-deletion request: the user's contacts go, with their interactions."""
    match = Q(pk__in=[])
    if message.user_id:
        match |= Q(user_id=message.user_id)
    if message.email:
        match |= Q(email=message.email)
    _, per_model = Contact.objects.filter(workspace=workspace).filter(match).delete()
    count = per_model.get(Contact._meta.label, 0)
    return Result(status="deleted", email=message.email, deleted=count)


def _record_delete_once(workspace: Workspace, messages: list[SegmentMessage]) -> list[Result]:
    (message,) = messages
    if not _claim_message_ids(workspace, [message.message_id]):
        return [Result(status="duplicate", email=message.email)]
    return [record_delete(workspace=workspace, message=message)]


def _is_transient(error: DatabaseError) -> bool:
    return getattr(error.__cause__, "sqlstate", None) in TRANSIENT_SQLSTATES


def _in_transaction(record, workspace: Workspace, messages: list[SegmentMessage]) -> list[Result]:
    """record(workspace, messages) in one transaction, tried again after losing a deadlock."""
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


def ingest_messages(*, workspace: Workspace, raw_messages, now=None) -> list[Result]:
    """Validate and record a list of decoded JSON messages; one bad message never
    loses the good ones. Database errors propagate (the webhook answers 503)."""
    now = now or timezone.now()
    results: list[Result | None] = []
    valid, positions = [], []
    for raw in raw_messages:
        try:
            message = normalize(raw, now=now)
        except MessageRejected as rejected:
            results.append(Result(status="rejected", code=rejected.status, message=rejected.message))
            continue
        positions.append(len(results))
        results.append(None)
        valid.append(message)
    for position, result in zip(positions, record_messages(workspace=workspace, messages=valid)):
        results[position] = result
    return results


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
