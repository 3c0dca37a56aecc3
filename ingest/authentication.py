"""API-key authentication for the webhook: Basic (key as user name, as Segment sends
it) or Bearer, against keyed hashes, compared in constant time."""

import base64
import binascii
import datetime as dt
import functools
import hmac
import re
import weakref

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed

from contacts.models import Workspace
from ingest.models import ApiKey, hash_key, prefix_of
from natsite.db import first_statement, prepared_cursor

REALM = 'Basic realm="natsite"'
# last_used_at is written at most this often per key: no write per event.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)
# Issued keys are "nat_" + URL-safe base64 (ApiKey.issue): nothing else can match.
KEY_CHARACTERS = re.compile(r"[A-Za-z0-9_-]{1,200}")


# The key must not reach an error report (whose HTML lists each frame's variables).
@sensitive_variables("header", "credentials", "decoded", "user", "password")
def key_from_header(header: str) -> str | None:
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials or None
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, _, password = decoded.partition(":")
    return user.strip() or password.strip() or None


@sensitive_variables("raw_key")
def find_api_key(raw_key: str) -> ApiKey | None:
    """The key whose hash matches, looked up by its shown prefix and compared in constant time."""
    if not KEY_CHARACTERS.fullmatch(raw_key):
        return None  # not a key we issued (and a NUL would not even reach PostgreSQL)
    wanted = hash_key(raw_key)
    for candidate in keys_with_prefix(prefix_of(raw_key)):
        if hmac.compare_digest(candidate.key_hash, wanted):
            return candidate
    return None


@functools.cache
def _keys_with_prefix_sql(vendor: str) -> str:
    quote = connection.ops.quote_name
    columns = [f"k.{quote(f.column)}" for f in ApiKey._meta.concrete_fields]
    columns += [f"w.{quote(f.column)}" for f in Workspace._meta.concrete_fields]
    return (
        f"SELECT {', '.join(columns)} FROM {quote(ApiKey._meta.db_table)} k "
        f"JOIN {quote(Workspace._meta.db_table)} w ON w.id = k.workspace_id WHERE k.prefix = %s"
    )


def _converters(model, alias, db) -> list[tuple[str, list]]:
    """(attname, converters) per concrete field, as the ORM converts that column's values."""
    out = []
    for field in model._meta.concrete_fields:
        column = field.get_col(alias)
        converters = db.ops.get_db_converters(column) + field.get_db_converters(db)
        out.append((field.attname, [(convert, column) for convert in converters]))
    return out


# Per connection object (one per thread): the converters of the look-up's two models,
# worked out on its first request rather than on every one.
_row_converters = weakref.WeakKeyDictionary()


def _key_and_workspace_converters(db):
    try:
        return _row_converters[db]
    except KeyError:
        converters = (
            _converters(ApiKey, ApiKey._meta.db_table, db),
            _converters(Workspace, Workspace._meta.db_table, db),
        )
        _row_converters[db] = converters
        return converters


def _from_row(model, values, converters, db):
    """A model instance from raw column values, converted as the ORM converts them."""
    converted = []
    for (_, field_converters), value in zip(converters, values):
        for convert, column in field_converters:
            value = convert(value, column, db)
        converted.append(value)
    return model.from_db(db.alias, [attname for attname, _ in converters], converted)


# Per process: for a prefix, the rows its look-up last returned and the keys built from
# them. The look-up runs on every request all the same (a key revoked or a workspace
# changed is seen at once); only when it returns exactly the rows it returned before are
# those keys handed out again, instead of two model instances built anew per key. Callers
# treat them as read-only (touch() only sets last_used_at, which the next look-up reads
# back changed, so those rows no longer match). Entries exist only for prefixes that
# matched a key, and the table is cleared past BUILT_KEYS_KEPT of them.
_built_keys: dict[tuple[str, str], tuple[list, list[ApiKey]]] = {}
BUILT_KEYS_KEPT = 1000


def keys_with_prefix(prefix: str) -> list[ApiKey]:
    """The keys with this shown prefix, each with its workspace: what
    ApiKey.objects.select_related("workspace").filter(prefix=...) returns, from SQL built
    once, since compiling that query on every request cost more than running it."""
    db = connections[DEFAULT_DB_ALIAS]  # looked up once: `connection` does it per attribute

    def look_up():
        with prepared_cursor() as cursor:
            cursor.execute(_keys_with_prefix_sql(db.vendor), [prefix])
            return cursor.fetchall()

    # The webhook's first statement: it checks the kept connection too (natsite/db.py).
    rows = first_statement(look_up)
    if not rows:
        return []
    built = _built_keys.get((db.alias, prefix))
    if built is not None and built[0] == rows:
        return list(built[1])
    key_converters, workspace_converters = _key_and_workspace_converters(db)
    split = len(key_converters)
    keys = []
    for row in rows:
        api_key = _from_row(ApiKey, row[:split], key_converters, db)
        api_key.workspace = _from_row(Workspace, row[split:], workspace_converters, db)
        keys.append(api_key)
    if len(_built_keys) >= BUILT_KEYS_KEPT:
        _built_keys.clear()
    _built_keys[db.alias, prefix] = (rows, keys)
    return list(keys)


def touch(api_key: ApiKey, now: dt.datetime) -> None:
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now


class ApiKeyAuthentication(BaseAuthentication):
    @sensitive_variables("header", "raw_key")
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            raise AuthenticationFailed("Missing API key: send it as the Basic user name or a Bearer token")
        raw_key = key_from_header(header)
        if raw_key is None:
            raise AuthenticationFailed("Malformed Authorization header")
        api_key = find_api_key(raw_key)
        if api_key is None:
            raise AuthenticationFailed("Invalid API key")
        now = timezone.now()
        status = api_key.status(now)
        if status != "active":
            raise AuthenticationFailed(f"API key {status}")
        touch(api_key, now)
        return (None, api_key)

    def authenticate_header(self, request):
        return REALM
