"""Turns the many shapes of a Segment message into one normalized SegmentMessage.

Nothing here touches the database: it only reads a decoded JSON value and either
returns a SegmentMessage or raises MessageRejected with the status and message the
webhook answers (PRODUCT.md §2). Field names are matched ignoring case, '_' and '-'
("the casing on these fields will vary by customer").
"""

import datetime as dt
import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator

DESCRIPTION_MAX = 1000
URL_MAX = 2048
MESSAGE_ID_MAX = 255
USER_ID_MAX = 255
EMAIL_MAX = 254  # Contact.email's length, the RFC 5321 path limit
MAX_DEPTH = 64
STANDARD_DESCRIPTION = "Identified via Segment"
UNSUPPORTED_TYPE = "Only identify calls are accepted (and delete requests); got {!r}"

_validate_email = EmailValidator()
# A day away from the ends of datetime's range, so the moment has a date in every time zone.
EARLIEST_TIMESTAMP = dt.datetime.min.replace(tzinfo=dt.timezone.utc) + dt.timedelta(days=1)
LATEST_TIMESTAMP = dt.datetime.max.replace(tzinfo=dt.timezone.utc) - dt.timedelta(days=1)
_SURROGATES = re.compile("[\ud800-\udfff]")
_SPACE_OR_CONTROL = re.compile(r"[\x00-\x1f\s]")  # \s is str.isspace()
_TIMESTAMP = re.compile(
    r"""^\s*(\d{4})-(\d{1,2})-(\d{1,2})
    (?:[Tt\ ](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:[.,](\d{1,9}))?)?)?
    \s*(Z|z|UTC|[+-]\d{1,2}(?::?\d{2})?)?\s*$""",
    re.VERBOSE,
)


class MessageRejected(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def timestamp_key(moment: dt.datetime) -> str:
    """A UTC timestamp as a string that sorts like the moment it names: every field at a
    fixed width, the year too (strftime wrote the year 999 as "999", after "2024")."""
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")[:-6] + "Z"


@dataclass
class SegmentMessage:
    type: str  # "identify" or "delete"
    message_id: str
    email: str = ""
    user_id: str = ""
    timestamp: dt.datetime | None = None
    description: str = ""
    url: str = ""
    traits: dict = field(default_factory=dict)
    is_engage: bool = False
    # timestamp_key(timestamp): what orders messages' traits and userIds, worked out once.
    stamp: str = ""

    def __post_init__(self):
        if not self.stamp and self.timestamp is not None:
            self.stamp = timestamp_key(self.timestamp)

    def __reduce__(self):
        # Pickled as its fields (import_events' reader process sends thousands per chunk):
        # a sixth of the default's cost to load.
        return SegmentMessage, (
            self.type, self.message_id, self.email, self.user_id, self.timestamp, self.description, self.url,
            self.traits, self.is_engage, self.stamp,
        )


@functools.lru_cache(maxsize=4096)  # the same few field names, message after message
def fold(key) -> str:
    """The form in which two field names are the same field: firstName == first_name."""
    return str(key).lower().replace("_", "").replace("-", "").replace(" ", "")


def lookup(container, *path):
    """container[path[0]][path[1]]..., each name matched by fold(); None when absent."""
    value = container
    for name in path:
        if not isinstance(value, dict):
            return None
        if name in value:
            value = value[name]
            continue
        wanted = fold(name)
        for key, item in value.items():
            if fold(key) == wanted:
                value = item
                break
        else:
            return None
    return value


def _is_clean_text(text: str) -> bool:
    return "\x00" not in text and (text.isascii() or _SURROGATES.search(text) is None)


def _is_clean(value, depth=0) -> bool:
    """Whether clean_json would leave `value` as it is; raises as it would on depth.

    Nearly every message is clean, and orjson tells so in a fraction of the walk's time:
    it refuses lone surrogates (and subclasses, with OPT_PASSTHROUGH_SUBCLASS), writes a
    NUL as \\u0000, and the brackets it writes bound how deep the value goes. Anything
    else (a NUL or what reads like one, a bracket too many, a value it refuses) is walked."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_PASSTHROUGH_SUBCLASS)
    except TypeError:  # orjson.JSONEncodeError
        return _is_clean_walked(value, depth)
    if b"\\u0000" not in text and depth + text.count(b"[") + text.count(b"{") <= MAX_DEPTH:
        return True
    return _is_clean_walked(value, depth)


def _is_clean_walked(value, depth=0) -> bool:
    if depth > MAX_DEPTH:
        raise MessageRejected(400, f"Message is nested more than {MAX_DEPTH} levels deep")
    kind = type(value)
    if kind is str:
        return _is_clean_text(value)
    if kind is dict:
        if value and depth + 1 > MAX_DEPTH:
            raise MessageRejected(400, f"Message is nested more than {MAX_DEPTH} levels deep")
        for key, item in value.items():
            if type(key) is str and not _is_clean_text(key):
                return False
            if type(item) is str:
                if not _is_clean_text(item):
                    return False
            elif isinstance(item, (dict, list, str)):
                if not _is_clean_walked(item, depth + 1):
                    return False
        return True
    if kind is list:
        return all(_is_clean_walked(item, depth + 1) for item in value)
    if isinstance(value, (str, dict, list)):
        return False  # a subclass: let clean_json rebuild it as the plain type
    return True


def clean_json(value, depth=0):
    """Drop what the database cannot store (NUL characters, lone surrogates). A clean
    value, nearly every message, is returned as it is rather than copied."""
    if _is_clean(value, depth):
        return value
    return _cleaned(value, depth)


def _cleaned(value, depth=0):
    if depth > MAX_DEPTH:
        raise MessageRejected(400, f"Message is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "")
        if _SURROGATES.search(value):
            value = _SURROGATES.sub("\ufffd", value)
        return value
    if isinstance(value, dict):
        return {_cleaned(k, depth + 1): _cleaned(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_cleaned(v, depth + 1) for v in value]
    return value


# Compact UTF-8 JSON, as the webhook answers and as a message's size is measured; made once,
# not per call.
COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


# Nineteen digits in a row may be an integer past 64 bits, which orjson would read as a
# float. Found as nineteen "0"s once every digit is a "0" and every other byte a space: two
# C loops, where a regular expression took longer than orjson's whole reading.
_DIGITS_ONLY = bytes(ord("0") if ord("0") <= byte <= ord("9") else ord(" ") for byte in range(256))
_LONG_NUMBER = b"0" * 19


def read_by_orjson(data: bytes):
    """orjson.loads(data), where it reads what the json module reads; ValueError (as
    orjson's own errors are) where it might not: text with nineteen digits in a row."""
    if _LONG_NUMBER in data.translate(_DIGITS_ONLY):
        raise ValueError("Nineteen digits in a row: maybe an integer past 64 bits")
    return orjson.loads(data)


def oversized(raw) -> bool:
    """Whether one message is over the per-message cap, measured as compact UTF-8 JSON
    (the webhook's batches and import_events apply the same rule).

    orjson writes the same text, except numbers it writes no longer (1e16 for 1e+16, null
    for Infinity): a message whose orjson text is under a third of the cap is within it.
    The rest, and what orjson refuses, are measured as the json module writes them."""
    limit = settings.INGEST_MAX_MESSAGE_BYTES
    try:
        if 3 * len(orjson.dumps(raw)) <= limit:
            return False
    except TypeError:  # orjson.JSONEncodeError: lone surrogates, integers past 64 bits
        pass
    text = COMPACT_JSON.encode(raw)
    return len(text.encode("utf-8", "surrogatepass")) > limit


def too_large_message() -> str:
    return f"Message larger than {settings.INGEST_MAX_MESSAGE_BYTES} bytes"


def parse_timestamp(value) -> dt.datetime:
    """Every ISO-8601 form Segment's libraries emit; no zone means UTC."""
    if value is None or value == "":
        raise MessageRejected(400, "Missing timestamp")
    if not isinstance(value, str):
        raise MessageRejected(400, "Invalid timestamp: expected an ISO-8601 string")
    match = _TIMESTAMP.match(value)
    if not match:
        raise MessageRejected(400, f"Invalid timestamp: {value[:64]!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or "0").ljust(6, "0")[:6])
    try:
        tz = dt.timezone.utc
        if zone and zone.upper() not in ("Z", "UTC"):
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            hours, minutes = (int(digits[:-2]), int(digits[-2:])) if len(digits) > 2 else (int(digits), 0)
            tz = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
        parsed = dt.datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), micro, tzinfo=tz
        ).astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        raise MessageRejected(400, f"Invalid timestamp: {value[:64]!r}") from None
    if not EARLIEST_TIMESTAMP <= parsed <= LATEST_TIMESTAMP:
        # Its day in the workspace's time zone would fall outside the years 1 to 9999.
        raise MessageRejected(400, f"Invalid timestamp: {value[:64]!r} is out of range")
    return parsed


def is_http_url(value: str) -> bool:
    if len(value) > URL_MAX or _SPACE_OR_CONTROL.search(value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def _text(value) -> str:
    return value.strip() if isinstance(value, str) else ""


def _identifier(value, limit) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return ""
    return str(value).strip()[:limit]


def find_email(raw) -> str:
    """First found of traits.email, context.traits.email, email, properties.email, userId."""
    for path in (("traits", "email"), ("context", "traits", "email"), ("email",), ("properties", "email")):
        value = lookup(raw, *path)
        # null, "" and "   " are what libraries send for "no email here": look further.
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        return normalize_email(value)
    user_id = lookup(raw, "userId")
    if isinstance(user_id, str) and "@" in user_id:
        try:
            return normalize_email(user_id)
        except MessageRejected:
            pass  # a userId such as "twitter:@jane" is simply not an email
    raise MessageRejected(400, "Missing email")


def normalize_email(value) -> str:
    if not isinstance(value, str):
        raise MessageRejected(400, "Invalid email address")
    email = value.strip().lower()
    if not _is_valid_email(email):
        raise MessageRejected(400, "Invalid email address")
    return email


def _compiled(lazy_pattern) -> re.Pattern:
    """A Django validator's pattern compiled here: Django keeps it behind a lazy proxy,
    whose every use costs more than the match itself."""
    return re.compile(lazy_pattern.pattern, lazy_pattern.flags)


def _compiled_for_lowercase(pattern: str, flags: int) -> re.Pattern:
    """re.compile(pattern, flags), for text already in lower case, without IGNORECASE where
    that gives the same verdicts: the domain pattern's wide Unicode ranges cost 50 ms to
    compile with case folding (at every process's start) and 10 without. On lowercased text
    the two agree on every character, once the ASCII class [a-z0-9] also takes the two
    non-ASCII letters that case folding lets it match, dotless ı and long ſ (checked over
    every code point when this was written; tests compare the verdicts with Django's
    validator)."""
    if not flags & re.IGNORECASE or re.search("[A-Z]", pattern.replace("\\Z", "")):
        return re.compile(pattern, flags)
    return re.compile(pattern.replace("[a-z0-9]", "[a-z0-9\u0131\u017f]"), flags & ~re.IGNORECASE)


# EmailValidator.domain_regex's text and flags, made of the plain strings Django makes it
# of: reading the lazy pattern's .pattern would compile it, with IGNORECASE, the very cost
# avoided here. A test checks that the two are the same.
_DOMAIN_PATTERN = "^" + EmailValidator.hostname_re + EmailValidator.domain_re + EmailValidator.tld_no_fqdn_re + r"\Z"
_DOMAIN_FLAGS = re.IGNORECASE

_EMAIL_USER = _compiled(EmailValidator.user_regex)
_EMAIL_DOMAIN = _compiled_for_lowercase(_DOMAIN_PATTERN, _DOMAIN_FLAGS)


@functools.lru_cache(maxsize=8192)
def _is_valid_email(email: str) -> bool:
    """EmailValidator's rule. Cached: a batch or an import names the same contacts again
    and again. The common form (a user part and a domain name) is matched here with the
    validator's own patterns; the rest (an address literal) goes to the validator."""
    if len(email) > EMAIL_MAX or "@" not in email:
        return False
    user, domain = email.rsplit("@", 1)
    if not _EMAIL_USER.match(user):
        return False
    if domain in _validate_email.domain_allowlist or _EMAIL_DOMAIN.match(domain):
        return True
    try:
        _validate_email(email)
    except ValidationError:
        return False
    return True


def find_description(raw) -> tuple[str, str]:
    """(description, url): page.url, context.page.url, url, properties.url, event, standard."""
    for path in (("page", "url"), ("context", "page", "url"), ("url",), ("properties", "url")):
        value = _text(lookup(raw, *path))
        if value:
            return value[:DESCRIPTION_MAX], value if is_http_url(value) else ""
    event = _text(lookup(raw, "event"))
    if event:
        return event[:DESCRIPTION_MAX], ""
    return STANDARD_DESCRIPTION, ""


def message_id_for(raw) -> str:
    """The messageId; for a message without one, a digest of its content, so replays dedupe."""
    message_id = _identifier(lookup(raw, "messageId"), 10_000)
    if not message_id:
        content = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return "content:" + hashlib.sha256(content.encode()).hexdigest()
    if len(message_id) > MESSAGE_ID_MAX:
        return "sha256:" + hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()
    return message_id


def normalize(raw, *, now: dt.datetime) -> SegmentMessage:
    """One decoded JSON value in, one SegmentMessage out (or MessageRejected)."""
    if not isinstance(raw, dict):
        raise MessageRejected(400, "Each message must be a JSON object")
    raw = clean_json(raw)
    kind = lookup(raw, "type")
    if kind is None or kind == "":
        raise MessageRejected(400, "Missing type")
    if not isinstance(kind, str):
        raise MessageRejected(400, "Invalid type: expected a string")
    kind = kind.strip().lower()
    user_id = _identifier(lookup(raw, "userId"), USER_ID_MAX)

    if kind == "delete":
        try:
            email = find_email(raw)
        except MessageRejected:
            email = ""
        if not user_id and not email:
            raise MessageRejected(400, "A delete request needs a userId or an email")
        return SegmentMessage(type="delete", message_id=message_id_for(raw), email=email, user_id=user_id)
    if kind != "identify":
        raise MessageRejected(501, UNSUPPORTED_TYPE.format(kind[:40]))

    email = find_email(raw)
    timestamp = parse_timestamp(lookup(raw, "timestamp"))
    if timestamp > now + dt.timedelta(hours=settings.INGEST_MAX_FUTURE_HOURS):
        raise MessageRejected(
            400, f"Timestamp is more than {settings.INGEST_MAX_FUTURE_HOURS} hours in the future"
        )
    description, url = find_description(raw)
    traits = lookup(raw, "traits")
    personas = lookup(raw, "context", "personas")
    return SegmentMessage(
        type="identify",
        message_id=message_id_for(raw),
        email=email,
        user_id=user_id,
        timestamp=timestamp,
        description=description,
        url=url,
        traits=traits if isinstance(traits, dict) else {},
        is_engage=personas is not None and personas != {} and personas != [],
    )
