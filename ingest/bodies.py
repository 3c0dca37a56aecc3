"""The webhook's rules for a body's JSON and for its messages' sizes, which import_events
applies too: kept apart from the webhook's view, so that the command loads no HTTP
framework for them (a tenth of a second at its start)."""

import json
import math

from django.conf import settings

from ingest.serializers import oversized, read_by_orjson, too_large_message
from ingest.services import Checked, Result, check_messages


class IngestError(Exception):
    """A whole-request rejection with its own status code (and headers, such as a 429's
    Retry-After): the webhook answers {"message": detail} with it."""

    def __init__(self, status_code: int, message: str, headers=None):
        super().__init__(message)
        self.status_code = status_code
        self.detail = message
        self.headers = headers or {}


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text):
    # 1e999 parses to inf, which JSON columns cannot store: refuse it like NaN.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:40]} is out of range")
    return value


# The webhook's JSON rules (no NaN, no 1e999) as one decoder, made once: json.loads with
# hooks builds a decoder on every call, which costs three times the decoding of a message.
STRICT_JSON = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def decode_json(data: bytes):
    """json.loads(data) with the webhook's rules.

    orjson reads it first, in a fifth of the time, where it gives what the json module
    gives: it refuses what the rules refuse (NaN, 1e999), lone surrogates, byte order
    marks and text that is not UTF-8, and those go to the json module, which decides as
    it always did. Integers past 64 bits, which orjson turns into floats, do too: a body
    with nineteen digits in a row (in a number or a string) is read by the json module."""
    try:
        return read_by_orjson(data)
    except ValueError:
        return STRICT_JSON.decode(data.decode(json.detect_encoding(data), "surrogatepass"))


def parse_messages(data: bytes):
    """(messages, is_batch) from a JSON object, array, or {"batch": [...]}."""
    try:
        payload = decode_json(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise IngestError(400, f"Body is not valid JSON: {str(error)[:120]}") from None
    if isinstance(payload, list):
        messages = payload
    elif isinstance(payload, dict) and isinstance(payload.get("batch"), list):
        messages = payload["batch"]
    elif isinstance(payload, dict):
        return [payload], False
    else:
        raise IngestError(400, "Body must be a JSON object, an array of messages or {\"batch\": [...]}")
    if len(messages) > settings.INGEST_MAX_BATCH_MESSAGES:
        raise IngestError(413, f"Batch of {len(messages)} messages; at most {settings.INGEST_MAX_BATCH_MESSAGES}")
    return messages, True


def check_within_limits(messages, measured=False, rejected=None) -> Checked:
    """check_messages, with each message over the per-message size cap rejected alone
    (413): the webhook's batches and import_events check messages through this. With
    `measured`, the caller has measured the one message already; `rejected` as for
    check_messages."""
    rejected = dict(rejected or {})
    if not measured:
        for position, raw in enumerate(messages):
            if position not in rejected and oversized(raw):
                rejected[position] = Result(status="rejected", code=413, message=too_large_message())
    return check_messages(messages, rejected=rejected)
