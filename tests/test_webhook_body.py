"""What a webhook body may be: one message, an array or {"batch": [...]}, gzip, limits,
and bad bodies answered with a 4xx JSON message (never a 500, nothing stored)."""

import gzip
import http.client
import json
import zlib

import pytest

from contacts.models import Contact, Interaction
from ingest.models import ProcessedMessage
from tests.segment_messages import identify
from tests.servers import free_port, gunicorn, sqlite_site

pytestmark = pytest.mark.django_db

KIB = 1024
MIB = 1024 * KIB


@pytest.fixture(autouse=True)
def _no_rate_limit(settings):
    settings.INGEST_RATE_LIMIT = 0


def assert_nothing_stored():
    assert not Contact.objects.exists()
    assert not Interaction.objects.exists()
    assert not ProcessedMessage.objects.exists()


def assert_json_error(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["message"]


def test_one_message_as_an_object_answers_its_status(webhook):
    response = webhook.post(identify("jane@example.com", "2024-06-01T09:00:00Z"))
    assert response.status_code == 200
    assert response.json() == {"status": "created", "code": 200, "email": "jane@example.com", "day": "2024-06-01"}


def test_a_json_array_is_a_batch(webhook):
    response = webhook.post([identify("a@example.com"), identify("b@example.com")])
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 0)
    assert [r["status"] for r in body["results"]] == ["created", "created"]
    assert set(Contact.objects.values_list("email", flat=True)) == {"a@example.com", "b@example.com"}


def test_a_batch_object_is_a_batch(webhook):
    response = webhook.post({"batch": [identify("a@example.com"), identify("b@example.com")], "sentAt": "x"})
    assert response.status_code == 200
    assert response.json()["accepted"] == 2
    assert Contact.objects.count() == 2


def test_an_empty_batch_accepts_nothing(webhook):
    response = webhook.post([])
    assert response.status_code == 200
    assert response.json() == {"accepted": 0, "rejected": 0, "results": []}


def test_a_batch_answers_per_message_in_order_and_keeps_the_good_ones(webhook):
    batch = [
        identify("a@example.com"),
        identify(None),
        {"type": "track", "event": "x"},
        identify("b@example.com", timestamp="not a date"),
        "not an object",
        identify("c@example.com"),
    ]
    response = webhook.post(batch)
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 4)
    results = body["results"]
    assert [r["status"] for r in results] == ["created", 400, 501, 400, 400, "created"]
    assert [r["index"] for r in results] == list(range(6))
    assert results[1]["message"] == "Missing email"
    assert "identify" in results[2]["message"]
    assert results[3]["message"].startswith("Invalid timestamp")
    assert all(r.get("message") for r in results if r["status"] != "created")
    assert set(Contact.objects.values_list("email", flat=True)) == {"a@example.com", "c@example.com"}
    assert ProcessedMessage.objects.count() == 2


def test_a_gzipped_body_is_accepted(webhook):
    response = webhook.post([identify("a@example.com"), identify("b@example.com")], gzipped=True)
    assert response.status_code == 200
    assert response.json()["accepted"] == 2


def test_the_body_cap_applies_to_the_decompressed_bytes(webhook):
    # Well under 4 MiB on the wire, over it once decompressed.
    padding = "x" * (30 * KIB)
    batch = [identify(f"u{i}@example.com", traits={"email": f"u{i}@example.com", "p": padding}) for i in range(140)]
    raw = json.dumps(batch).encode()
    assert len(raw) > 4 * MIB and len(gzip.compress(raw)) < 4 * MIB
    response = webhook.post(None, raw=raw, gzipped=True)
    assert_json_error(response, 413)
    assert_nothing_stored()


def test_a_gzip_bomb_is_refused_without_being_expanded(webhook):
    bomb = gzip.compress(b"[" + b" " * (64 * MIB) + b"]")
    assert len(bomb) < 128 * KIB  # a 500-fold expansion
    response = webhook.client.generic(
        "POST", "/ingest/segment", bomb, content_type="application/json", HTTP_CONTENT_ENCODING="gzip", **webhook.headers()
    )
    assert_json_error(response, 413)


def test_a_body_over_4_mib_is_refused(webhook):
    raw = json.dumps([identify(traits={"email": "a@example.com", "p": "x" * (4 * MIB)})]).encode()
    assert_json_error(webhook.post(None, raw=raw), 413)
    assert_nothing_stored()


def test_a_body_of_exactly_the_cap_is_read(webhook, settings):
    settings.INGEST_MAX_BODY_BYTES = 2 * KIB
    raw = json.dumps(identify("a@example.com")).encode()
    raw = raw[:-1] + b" " * (2 * KIB - len(raw)) + b"}"
    assert len(raw) == 2 * KIB
    assert webhook.post(None, raw=raw).status_code == 200
    assert_json_error(webhook.post(None, raw=raw + b" "), 413)


def test_one_message_over_32_kib_is_refused(webhook):
    big = identify(traits={"email": "a@example.com", "bio": "x" * (33 * KIB)})
    assert_json_error(webhook.post(big), 413)
    assert_json_error(webhook.post(big, gzipped=True), 413)
    assert_nothing_stored()


def test_one_message_just_under_32_kib_is_accepted(webhook):
    message = identify(traits={"email": "a@example.com", "bio": ""})
    size = len(json.dumps(message, separators=(",", ":")).encode())
    message["traits"]["bio"] = "x" * (32 * KIB - size)
    assert webhook.post(message).status_code == 200


def test_a_message_over_32_kib_in_a_batch_is_refused_alone(webhook):
    batch = [identify("a@example.com"), identify(traits={"email": "b@example.com", "bio": "x" * (33 * KIB)})]
    response = webhook.post(batch)
    assert response.status_code == 200
    results = response.json()["results"]
    assert results[0]["status"] == "created"
    assert results[1]["status"] == 413 and results[1]["message"]
    assert list(Contact.objects.values_list("email", flat=True)) == ["a@example.com"]


def test_a_batch_over_4000_messages_is_refused_whole(webhook):
    batch = [identify(f"u{i}@example.com") for i in range(4001)]
    assert_json_error(webhook.post(batch), 413)
    assert_json_error(webhook.post({"batch": batch}), 413)
    assert_nothing_stored()


def test_the_batch_limit_is_inclusive(webhook, settings):
    settings.INGEST_MAX_BATCH_MESSAGES = 3
    assert webhook.post([identify(f"u{i}@example.com") for i in range(3)]).json()["accepted"] == 3
    assert_json_error(webhook.post([identify(f"v{i}@example.com") for i in range(4)]), 413)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b'{"type": "identify",',
        b'{"type": "identify"} trailing',
        b"\xff\xfe\xfa{}",
        b'{"type": "identify", "email": "\xc3\x28@example.com"}',
        b'{"type": "identify", "traits": {"score": NaN}}',
        b'{"type": "identify", "traits": {"score": Infinity}}',
        b'{"type": "identify", "traits": {"score": -Infinity}}',
        b'{"type": "identify", "traits": {"score": 1e999}}',
        b"[" * 100_000 + b"]" * 100_000,
        b'"a string"',
        b"42",
        b"null",
    ],
    ids=[
        "empty", "text", "truncated", "trailing", "invalid-utf8-start", "invalid-utf8-inside",
        "nan", "infinity", "minus-infinity", "overflowing-float", "deep-nesting", "string", "number", "null",
    ],
)
def test_a_body_that_is_not_a_json_message_is_400(webhook, raw):
    assert_json_error(webhook.post(None, raw=raw), 400)
    assert_nothing_stored()


def test_a_message_nested_too_deep_is_400(webhook):
    deep = {}
    inner = deep
    for _ in range(200):
        inner["x"] = {}
        inner = inner["x"]
    assert_json_error(webhook.post(identify(traits={"email": "a@example.com", "deep": deep})), 400)
    assert_nothing_stored()


def test_broken_gzip_is_400(webhook):
    response = webhook.client.generic(
        "POST", "/ingest/segment", b"not gzip at all", content_type="application/json",
        HTTP_CONTENT_ENCODING="gzip", **webhook.headers(),
    )
    assert_json_error(response, 400)


def test_deflate_is_accepted_and_unknown_encodings_are_415(webhook):
    body = json.dumps(identify()).encode()
    response = webhook.client.generic(
        "POST", "/ingest/segment", zlib.compress(body), content_type="application/json",
        HTTP_CONTENT_ENCODING="deflate", **webhook.headers(),
    )
    assert response.status_code == 200
    response = webhook.client.generic(
        "POST", "/ingest/segment", body, content_type="application/json", HTTP_CONTENT_ENCODING="br", **webhook.headers()
    )
    assert_json_error(response, 415)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
def test_a_declared_content_type_that_is_not_json_is_415(webhook, content_type):
    assert_json_error(webhook.post(identify(), content_type=content_type), 415)
    assert_nothing_stored()


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "text/json", "application/vnd.segment+json"])
def test_json_content_types_are_accepted(webhook, content_type):
    assert webhook.post(identify(), content_type=content_type).status_code == 200


def test_a_utf8_bom_is_tolerated(webhook):
    raw = b"\xef\xbb\xbf" + json.dumps(identify()).encode()
    assert webhook.post(None, raw=raw).status_code == 200


@pytest.mark.parametrize(
    "message, status, text",
    [
        (identify(traits="jane@example.com"), 400, "Missing email"),
        (identify(traits=["jane@example.com"]), 400, "Missing email"),
        (identify(traits={"email": ["jane@example.com"]}), 400, "Invalid email address"),
        (identify(traits={"email": {"address": "jane@example.com"}}), 400, "Invalid email address"),
        (identify(traits={"email": 42}), 400, "Invalid email address"),
        (identify(traits={"email": True}), 400, "Invalid email address"),
        (identify(timestamp=1717232400), 400, "Invalid timestamp"),
        (identify(timestamp=["2024-06-01T09:00:00Z"]), 400, "Invalid timestamp"),
        (identify(timestamp={"at": "2024-06-01T09:00:00Z"}), 400, "Invalid timestamp"),
        (identify(type=1), 400, "type"),
        (identify(type=None), 400, "Missing type"),
        (identify(type=["identify"]), 400, "type"),
        (identify(traits=None, context=[], email=None), 400, "Missing email"),
    ],
    ids=[
        "traits-string", "traits-array", "email-list", "email-object", "email-number", "email-bool",
        "timestamp-number", "timestamp-list", "timestamp-object", "type-number", "type-null", "type-list",
        "context-array-no-email",
    ],
)
def test_wrong_types_are_4xx_json_and_store_nothing(webhook, message, status, text):
    response = webhook.post(message)
    assert_json_error(response, status)
    assert text in response.json()["message"]
    assert_nothing_stored()


@pytest.mark.parametrize(
    "message",
    [
        identify(traits="a string", email="jane@example.com"),
        identify(traits=None, email="jane@example.com"),
        identify(context=[], email="jane@example.com"),
        identify(context="web", properties=[1, 2], page="https://x.example", traits={"email": "jane@example.com"}),
        identify(traits={"email": "jane@example.com"}, userId={"id": 7}, messageId=["x"]),
    ],
    ids=["traits-string", "traits-null", "context-array", "context-page-properties-wrong", "userid-messageid-wrong"],
)
def test_fields_of_the_wrong_type_are_ignored_when_the_message_holds_without_them(webhook, message):
    response = webhook.post(message)
    assert response.status_code == 200, response.content
    assert response.json()["email"] == "jane@example.com"
    contact = Contact.objects.get()
    assert isinstance(contact.traits, dict)
    assert contact.interactions.count() == 1


def test_nul_characters_and_lone_surrogates_are_stored_safely(webhook):
    raw = (
        b'{"type": "identify", "timestamp": "2024-06-01T09:00:00Z", "messageId": "m\\u0000",'
        b' "traits": {"email": "jane@example.com", "bio": "a\\u0000b\\ud800c", "k\\u0000": 1},'
        b' "event": "Log\\u0000in\\udfff"}'
    )
    response = webhook.post(None, raw=raw)
    assert response.status_code == 200, response.content
    contact = Contact.objects.get()
    assert contact.traits["bio"] == "ab\ufffdc"
    assert contact.traits["k"] == 1
    assert contact.interactions.get().description == "Login\ufffd"


def test_a_rejected_body_with_lone_surrogates_is_still_answered_in_json(webhook):
    response = webhook.post(None, raw=b'{"type": "track", "x": "\\ud800"}')
    assert_json_error(response, 501)


def test_every_answer_is_json(webhook):
    for response in (webhook.post(identify()), webhook.post(None, raw=b"{"), webhook.post([identify()])):
        assert response["Content-Type"] == "application/json"
        json.loads(response.content)


def test_a_chunked_body_without_content_length_is_read_under_gunicorn(tmp_path):
    env, key = sqlite_site(tmp_path)
    body = json.dumps(identify("jane@example.com")).encode()
    port = free_port()
    with gunicorn(port=port, env=env, workers=1):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.putrequest("POST", "/ingest/segment")
        conn.putheader("Authorization", "Bearer " + key)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for start in range(0, len(body), 40):
            chunk = body[start:start + 40]
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
        response = conn.getresponse()
        answer = json.loads(response.read())
        conn.close()
    assert (response.status, answer["status"], answer["email"]) == (200, "created", "jane@example.com")
