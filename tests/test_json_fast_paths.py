"""orjson reads bodies, tells clean messages and measures them where it gives the json
module's very answer (ingest.bodies.decode_json, ingest.serializers._is_clean and
oversized); everything else goes the json module's way. These tests hold the two ways
side by side, over arbitrary JSON values and bytes, and over the values where they part:
integers past 64 bits, NaN and 1e999, lone surrogates, NUL, byte order marks, UTF-16,
deep nesting, numbers that orjson writes shorter.

Results are compared by repr(), which tells 1 from 1.0 and True, -0.0 from 0.0, and
shows the keys' order.
"""

import json

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ingest import serializers, services
from ingest.bodies import STRICT_JSON, decode_json
from ingest.serializers import COMPACT_JSON, MAX_DEPTH, MessageRejected, oversized

PROPERTIES = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NASTY_TEXT = ["\x00", "a\x00b", "\\u0000", "\ud800", "\udfff", "x\ud83d", "\ufeff", "", "☃", "𝕏", "{[", "1234567890" * 2]
text = st.one_of(st.text(st.characters(exclude_categories=()), max_size=20), st.sampled_from(NASTY_TEXT))
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**18, 10**19]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e16, 1e-7, 1.5e300, 5e-324, -0.0, 0.1, 1e22, 123456789012345680.0]),
    text,
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4), max_leaves=20
)


def the_json_modules_reading(data: bytes):
    """What decode_json gave before orjson read bodies: the answer, or the error's type."""
    try:
        return repr(STRICT_JSON.decode(data.decode(json.detect_encoding(data), "surrogatepass")))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        return type(error)


def reading(data: bytes):
    try:
        return repr(decode_json(data))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        return type(error)


@PROPERTIES
@given(value=json_values, ascii_only=st.booleans(), compact=st.booleans())
def test_a_body_reads_as_the_json_module_reads_it(value, ascii_only, compact):
    separators = (",", ":") if compact else None
    data = json.dumps(value, ensure_ascii=ascii_only, separators=separators).encode("utf-8", "surrogatepass")
    assert reading(data) == the_json_modules_reading(data)


@PROPERTIES
@given(data=st.binary(max_size=60) | st.text(st.sampled_from('{}[]":,-+.eE0123456789 \\ud8truefalsnNIy'), max_size=40).map(str.encode))
@example(data=b"1e999")
@example(data=b"[-1e400]")
@example(data=b"NaN")
@example(data=b'{"a": Infinity}')
@example(data=b"18446744073709551616")
@example(data=b"-9223372036854775809")
@example(data=b"[1234567890123456789.5]")
@example(data=b'"\\ud800"')
@example(data=b'"\xed\xa0\x80"')
@example(data=b"\xef\xbb\xbf{}")
@example(data='{"a": 1}'.encode("utf-16"))
@example(data='{"a": 1}'.encode("utf-32-le"))
@example(data=b'{"a": 1, "a": 2, "b": 3}')
@example(data=b"[" * 1500 + b"]" * 1500)
@example(data=b"{} {}")
@example(data=b'"a\tb"')
def test_any_bytes_read_as_the_json_module_reads_them(data):
    assert reading(data) == the_json_modules_reading(data)


def test_an_integer_past_64_bits_keeps_every_digit():
    # orjson would read it as a float: nineteen digits in a row send the body to the json module.
    assert decode_json(b'{"n": 123456789012345678901234567890}') == {"n": 123456789012345678901234567890}
    assert decode_json(b'{"n": -9223372036854775809}')["n"] == -9223372036854775809
    assert type(decode_json(b'{"n": 18446744073709551615}')["n"]) is int


def walked(value, depth=0):
    try:
        return serializers._is_clean_walked(value, depth)
    except MessageRejected as refused:
        return refused.message


def told(value, depth=0):
    try:
        return serializers._is_clean(value, depth)
    except MessageRejected as refused:
        return refused.message


def nested(depth, leaf):
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@PROPERTIES
@given(value=json_values, depth=st.sampled_from([0, 1, MAX_DEPTH - 3, MAX_DEPTH]))
@example(value={"a\x00": 1}, depth=0)
@example(value=["\\u0000"], depth=0)
@example(value={"k": "\ud800"}, depth=0)
@example(value=[2**64], depth=0)
@example(value="x", depth=MAX_DEPTH + 1)
def test_orjson_tells_a_clean_message_as_the_walk_does(value, depth):
    assert told(value, depth) == walked(value, depth)


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 2])
@pytest.mark.parametrize("leaf", ["x", 1, [], {}, "\x00"])
def test_deep_messages_are_refused_at_the_same_depth_either_way(depth, leaf):
    value = nested(depth, leaf)
    assert told(value) == walked(value)


def test_subclasses_go_the_walks_way():
    # orjson is told to refuse them (OPT_PASSTHROUGH_SUBCLASS): the walk leaves a dict
    # subclass to clean_json, which rebuilds it as a plain dict.
    class Mapping(dict):
        pass

    class Text(str):
        pass

    for value in ({"k": Text("v")}, [Mapping(k="v")], Mapping(k="v")):
        assert serializers._is_clean(value) is serializers._is_clean_walked(value) is False
    assert type(serializers.clean_json([Mapping(k="v")])[0]) is dict


def measured_by_the_json_module(value, limit):
    return len(COMPACT_JSON.encode(value).encode("utf-8", "surrogatepass")) > limit


@PROPERTIES
@given(value=json_values, limit=st.integers(min_value=1, max_value=400))
@example(value=[1e16] * 20, limit=100)
@example(value={"a": [1e-7, 1.5e300, -1e16]}, limit=40)
@example(value=[float("inf"), float("nan")] * 8, limit=90)
@example(value=["\ud800" * 30], limit=95)
@example(value=[2**70] * 5, limit=110)
def test_a_message_is_measured_as_the_json_module_writes_it(value, limit):
    with override_settings(INGEST_MAX_MESSAGE_BYTES=limit):
        assert oversized(value) is measured_by_the_json_module(value, limit)


@pytest.mark.parametrize("limit", [30, 89, 90, 91, 120, 400])
def test_numbers_orjson_writes_shorter_are_measured_at_their_json_module_length(limit):
    # 1e+16 and Infinity by the json module, 1e16 and null by orjson.
    value = [1e16, 1e-7, float("inf"), float("-inf"), 1.5e300, 2.5e-300]
    with override_settings(INGEST_MAX_MESSAGE_BYTES=limit):
        assert oversized(value) is measured_by_the_json_module(value, limit)


@PROPERTIES
@given(value=json_values, ascii_only=st.booleans())
@example(value={"n": 2**70, "s": "\ud800"}, ascii_only=False)
def test_a_json_columns_text_reads_as_the_json_module_reads_it(value, ascii_only):
    # Django has PostgreSQL's jsonb come as text, and SQLite stores text.
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert repr(services._json_of(text)) == repr(json.loads(text))
    if ascii_only:
        assert repr(services._json_of(text.encode())) == repr(json.loads(text))
    read = {"traits": value}  # a value the driver has read already comes back as it is
    assert services._json_of(read) is read
