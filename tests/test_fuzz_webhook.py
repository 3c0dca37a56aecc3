"""Property-based bad input for the webhook: whatever a client sends, the answer is one of
the documented statuses with a JSON body, never a 500, and a rejected message stores
nothing.

Bodies are arbitrary JSON, Segment samples (tests/fixtures/segment/) with fields of the
wrong type, huge strings, deep nesting, bytes that are not UTF-8, NUL characters and
lone surrogates (PostgreSQL stores neither, in keys or in values). Hypothesis runs
derandomized with a bounded number of examples, so the suite stays fast and stable.
"""

import copy
import gzip
import json
import struct
import time
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from contacts.models import Contact, Interaction, Workspace
from ingest.models import ProcessedMessage
from tests.conftest import FIXTURES

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
MIB = 1024 * 1024
DOCUMENTED = {200, 400, 401, 413, 415, 429, 501, 503}
RECORDED = {"created", "merged", "traits_updated", "deleted"}  # statuses that store something
ACCEPTED = RECORDED | {"duplicate"}
SAMPLES = {path.stem: json.loads(path.read_text()) for path in sorted((FIXTURES / "segment").glob("*.json"))}
MESSAGES = {name: sample for name, sample in SAMPLES.items() if isinstance(sample, dict)}

NASTY_TEXT = ["\x00", "a\x00b", "\ud800", "\udfff", "x\ud83d", "\ufeff", "", " ", "null", "☃", "𝕏", "\u202e"]
# The fields the webhook reads, where a wrong type hurts most.
READ_PATHS = [
    ("type",), ("timestamp",), ("messageId",), ("userId",), ("email",), ("event",), ("url",), ("traits",),
    ("traits", "email"), ("traits", "name"), ("traits", "firstName"), ("context",), ("context", "traits"),
    ("context", "traits", "email"), ("context", "page"), ("context", "page", "url"), ("context", "personas"),
    ("page",), ("page", "url"), ("properties",), ("properties", "email"), ("properties", "url"), ("batch",),
]

text = st.one_of(st.text(st.characters(exclude_categories=()), max_size=30), st.sampled_from(NASTY_TEXT))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), text,
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4), max_leaves=16
)


def nested(depth, leaf="x"):
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


wrong_values = st.one_of(
    json_values,
    st.sampled_from(["a string", [], ["a@example.com"], {}, 12345, 1.5e300, True, None, -1]),
    st.integers(min_value=1, max_value=200_000).map(lambda n: "x" * n),  # huge strings
    st.integers(min_value=1, max_value=300).map(nested),  # deep nesting
)


@pytest.fixture(autouse=True)
def _no_rate_limit(settings):
    settings.INGEST_RATE_LIMIT = 0


def stored():
    return (
        Contact.objects.count(),
        Interaction.objects.count(),
        ProcessedMessage.objects.count(),
        sum(Interaction.objects.values_list("event_count", flat=True)),
    )


def assert_documented_answer(response, before):
    """The contract for any body: a documented status, JSON, and nothing stored for a rejection."""
    assert response.status_code in DOCUMENTED, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json"
    body = response.json()
    after = stored()
    if response.status_code != 200:
        assert isinstance(body.get("message"), str) and body["message"]
        assert after == before, "a rejected request stored something"
        return
    if "results" in body:
        results = body["results"]
        assert body["accepted"] + body["rejected"] == len(results)
        assert body["accepted"] == sum(1 for r in results if r["status"] in ACCEPTED)
        for result in results:
            if result["status"] not in ACCEPTED:
                assert result["code"] in DOCUMENTED - {200} and result["message"]
    else:
        results = [body]
        assert body["status"] in ACCEPTED
    recorded = [r["status"] for r in results if r["status"] in RECORDED]
    # Only accepted messages leave a trace: one processed messageId each, one event per interaction.
    assert after[2] - before[2] == len(recorded)
    if "deleted" not in recorded:
        assert after[3] - before[3] == sum(1 for s in recorded if s in ("created", "merged"))


def post(webhook, body: bytes, *, gzipped=False):
    before = stored()
    extra = {}
    if gzipped:
        body, extra = gzip.compress(body), {"HTTP_CONTENT_ENCODING": "gzip"}
    response = webhook.client.generic(
        "POST", "/ingest/segment", body, content_type="application/json", **webhook.headers(**extra)
    )
    assert_documented_answer(response, before)
    if currently_in_test_context():
        event(f"HTTP {response.status_code}")  # shown by --hypothesis-show-statistics
    return response


def encode(value, ascii_only):
    # ensure_ascii=False with a lone surrogate yields bytes that are not UTF-8, on purpose.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def set_path(message, path, value):
    node = message
    for name in path[:-1]:
        if not isinstance(node.get(name), dict):
            node[name] = {}
        node = node[name]
    node[path[-1]] = value


def every_path(value, prefix=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from every_path(item, (*prefix, key))


@st.composite
def mutated_samples(draw):
    """A Segment sample with one to three fields replaced by values of the wrong type, or removed."""
    message = copy.deepcopy(draw(st.sampled_from(sorted(MESSAGES.items())))[1])
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = sorted(set(every_path(message)), key=repr) + READ_PATHS
        path = draw(st.sampled_from(paths))
        if draw(st.integers(min_value=0, max_value=4)) == 0:
            parent = message
            for name in path[:-1]:
                parent = parent.get(name) if isinstance(parent, dict) else None
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
        else:
            set_path(message, path, draw(wrong_values))
    return message


def shaped(shape, message):
    if shape == "array":
        return [message]
    if shape == "batch":
        return {"batch": [message]}
    return message


@FUZZ
@given(value=json_values, ascii_only=st.booleans(), gzipped=st.booleans())
def test_arbitrary_json_gets_a_documented_answer(webhook, value, ascii_only, gzipped):
    post(webhook, encode(value, ascii_only), gzipped=gzipped)


@FUZZ
@given(message=mutated_samples(), shape=st.sampled_from(["single", "array", "batch"]), ascii_only=st.booleans())
def test_segment_samples_with_wrong_types_get_a_documented_answer(webhook, message, shape, ascii_only):
    post(webhook, encode(shaped(shape, message), ascii_only))


@FUZZ
@given(
    sample=st.sampled_from(sorted(MESSAGES)),
    field=st.sampled_from(READ_PATHS),
    noise=st.binary(min_size=1, max_size=64),
)
def test_bytes_that_are_not_utf8_inside_a_message_get_a_documented_answer(webhook, sample, field, noise):
    marker = "MARKER-0b9f"
    message = copy.deepcopy(MESSAGES[sample])
    set_path(message, field, marker)
    body = json.dumps(message).encode().replace(marker.encode(), noise.replace(b"\\", b"").replace(b'"', b""))
    post(webhook, body)


@FUZZ
@given(body=st.binary(max_size=512), gzipped=st.booleans())
def test_arbitrary_bytes_get_a_documented_answer(webhook, body, gzipped):
    post(webhook, body, gzipped=gzipped)


@FUZZ
@given(
    sample=st.sampled_from(sorted(MESSAGES)),
    field=st.sampled_from(READ_PATHS),
    depth=st.integers(min_value=1, max_value=20_000),
)
def test_deep_nesting_anywhere_gets_a_documented_answer(webhook, sample, field, depth):
    message = copy.deepcopy(MESSAGES[sample])
    set_path(message, field, "DEEP")
    opening, closing = "[" * depth, "]" * depth  # written out: json.dumps itself would recurse
    body = json.dumps(message).replace('"DEEP"', f"{opening}1{closing}")
    post(webhook, body.encode())


EXTREME_ZONES = ["UTC", "Pacific/Kiritimati", "Etc/GMT+12", "America/St_Johns", "Asia/Kathmandu", "America/Los_Angeles"]


def timestamp_text(moment, offset_minutes, shape):
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    plain = moment.strftime("%Y-%m-%dT%H:%M:%S.%f").rjust(26, "0")
    return {
        "z": plain + "Z",
        "offset": f"{plain}{sign}{hours:02d}:{minutes:02d}",
        "compact": f"{plain}{sign}{hours:02d}{minutes:02d}",
        "no zone": plain,
        "unpadded": f"{moment.year}-{moment.month}-{moment.day}T{moment.hour}:{moment.minute}Z",
    }[shape]


@FUZZ
@given(
    zone=st.sampled_from(EXTREME_ZONES),
    moment=st.datetimes(),
    offset_minutes=st.integers(min_value=-26 * 60, max_value=26 * 60),
    shape=st.sampled_from(["z", "offset", "compact", "no zone", "unpadded"]),
)
def test_any_timestamp_in_any_workspace_time_zone_gets_a_documented_answer(
    webhook, workspace, zone, moment, offset_minutes, shape
):
    Workspace.objects.filter(pk=workspace.pk).update(timezone=zone)
    message = {"type": "identify", "timestamp": timestamp_text(moment, offset_minutes, shape),
               "traits": {"email": "when@example.com"}}
    post(webhook, json.dumps(message).encode())


@pytest.mark.parametrize("zone", ["America/Los_Angeles", "Etc/GMT+12", "Pacific/Kiritimati"])
@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00Z", "0001-01-01T05:00:00-12:00", "0001-01-01T00:00:00+14:00"])
def test_a_timestamp_at_the_start_of_the_calendar_is_400_in_every_time_zone(webhook, workspace, zone, timestamp):
    Workspace.objects.filter(pk=workspace.pk).update(timezone=zone)
    message = {"type": "identify", "timestamp": timestamp, "traits": {"email": "early@example.com"}}
    response = post(webhook, json.dumps(message).encode())
    assert response.status_code == 400
    assert "Invalid timestamp" in response.json()["message"]


header_text = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=40),  # WSGI headers are Latin-1
    st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=40).map(lambda t: "Bearer nat_" + t),
    st.sampled_from(["text/html", "application/xml", "*/*", "application/json; charset=latin-1", "gzip", "br",
                     "identity", "Basic", "Bearer ", "Basic !!!", "multipart/form-data; boundary=x"]),
)


@FUZZ
@given(
    accept=header_text, content_type=header_text, encoding=header_text, authorization=st.none() | header_text,
    sample=st.sampled_from(sorted(MESSAGES)),
)
def test_arbitrary_headers_get_a_documented_answer(webhook, accept, content_type, encoding, authorization, sample):
    before = stored()
    auth = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    headers = {**webhook.headers(), **auth}
    response = webhook.client.generic(
        "POST", "/ingest/segment", json.dumps(MESSAGES[sample]).encode(), content_type=content_type,
        HTTP_ACCEPT=accept, HTTP_CONTENT_ENCODING=encoding, **headers,
    )
    assert_documented_answer(response, before)
    if currently_in_test_context():
        event(f"HTTP {response.status_code}")


@FUZZ
@given(authorization=header_text)
def test_any_authorization_header_but_a_key_gets_401(webhook, authorization):
    before = stored()
    response = webhook.client.generic(
        "POST", "/ingest/segment", json.dumps(MESSAGES["identify-recommended"]).encode(),
        content_type="application/json", HTTP_AUTHORIZATION=authorization,
    )
    assert_documented_answer(response, before)
    assert response.status_code == 401


@FUZZ
@given(signature=header_text)
def test_any_x_signature_but_the_right_one_gets_401(webhook, workspace, signature):
    Workspace.objects.filter(pk=workspace.pk).update(signing_secret="s3cret")
    before = stored()
    response = webhook.client.generic(
        "POST", "/ingest/segment", json.dumps(MESSAGES["identify-recommended"]).encode(),
        content_type="application/json", HTTP_X_SIGNATURE=signature, **webhook.headers(),
    )
    assert_documented_answer(response, before)
    assert response.status_code == 401


def test_the_answer_is_json_whatever_accept_says(webhook):
    response = webhook.post(
        {"type": "identify", "timestamp": "2024-06-01T09:00:00Z", "traits": {"email": "accept@example.com"}},
        HTTP_ACCEPT="text/html",
    )
    assert response.status_code == 200
    assert response.json()["status"] == "created"


@pytest.mark.parametrize("key", ["na\x00me", "\ud800", "plan\udfff", "\x00"])
def test_nul_characters_and_lone_surrogates_in_trait_keys_are_stored_safely(webhook, key):
    message = {
        "type": "identify",
        "messageId": f"keys-{key!r}",
        "timestamp": "2024-06-01T09:00:00Z",
        "traits": {"email": "keys@example.com", key: {key: f"v{key}"}},
        "context": {key: [key]},
    }
    response = post(webhook, json.dumps(message).encode())  # ASCII escapes: valid JSON, valid UTF-8
    assert response.status_code == 200, response.content
    traits = Contact.objects.get(email="keys@example.com").traits
    stored_text = json.dumps(traits, ensure_ascii=False)
    assert "\x00" not in stored_text
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in stored_text)
    assert len(traits) == 2


def gzip_of_zeros(gibibytes=1):
    """A gzip stream of `gibibytes` GiB of zeros (about 1 MiB), built without compressing
    1 GiB: after a full flush, every MiB of zeros compresses to the same bytes."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(MIB)
    block = deflater.compress(zeros) + deflater.flush(zlib.Z_FULL_FLUSH)
    mebibytes = 1024 * gibibytes
    crc = 0
    for _ in range(mebibytes):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, (mebibytes * MIB) & 0xFFFFFFFF)
    return header + block * mebibytes + deflater.flush(zlib.Z_FINISH) + trailer


def test_a_gzip_bomb_of_1_gib_is_refused_with_413_quickly_and_in_bounded_memory(webhook):
    bomb = gzip_of_zeros()
    assert len(bomb) < 2 * MIB
    before = stored()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        response = webhook.client.generic(
            "POST", "/ingest/segment", bomb, content_type="application/json",
            **webhook.headers(HTTP_CONTENT_ENCODING="gzip"),
        )
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 413
    assert response.json()["message"]
    assert stored() == before
    # Never more than the 4 MiB cap is inflated: memory stays a few times the cap, not 1 GiB.
    assert peak < 32 * MIB, f"peak {peak / MIB:.1f} MiB"
    assert elapsed < 5, "well within Segment's 5-second timeout"
