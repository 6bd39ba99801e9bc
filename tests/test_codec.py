"""The JSON codec: orjson's speed with the standard library's results."""

from __future__ import annotations

import json
import math
import tracemalloc

import pytest

from forwarder import codec

# Inputs where orjson alone would reject the text or read it differently.
ORJSON_DIFFERS = [
    b"NaN",
    b"[1, Infinity, -Infinity]",
    b'{"x": NaN}',
    b"1e400",
    b'"\\ud800"',
    b'{"\\udc00": 1}',
    b"\xef\xbb\xbf{}",
    b"18446744073709551616",
    b"-9223372036854775809",
    b'{"id": 123456789012345678901234567890}',
]


def _same(first, second) -> bool:
    if type(first) is not type(second):
        return False
    if isinstance(first, float):
        return (math.isnan(first) and math.isnan(second)) or first == second
    if isinstance(first, list):
        return len(first) == len(second) and all(map(_same, first, second))
    if isinstance(first, dict):
        return list(first) == list(second) and all(
            _same(first[key], second[key]) for key in first
        )
    return first == second


@pytest.mark.parametrize("text", ORJSON_DIFFERS)
def test_loads_matches_json(text):
    assert _same(codec.loads(text), json.loads(text))


@pytest.mark.parametrize("text", [*ORJSON_DIFFERS, b'{"a": 1, "a": 2}'])
def test_loads_document_matches_json(text):
    assert _same(codec.loads_document(text), json.loads(text))
    if not text.startswith(b"\xef\xbb\xbf"):
        # main.py passes text, decoded as it would be, except with a BOM.
        decoded = text.decode("utf-8", "surrogatepass")
        assert _same(codec.loads_document(decoded), json.loads(text))


def test_loads_document_long_integer_kept():
    text = json.dumps({"data": "x" * (100 * 1024), "attempt": 2**70})

    assert codec.loads_document(text)["attempt"] == 2**70


def test_loads_document_large_body_not_copied():
    # The data of a message near Pub/Sub's 10 MB limit, as in a push body.
    text = json.dumps({"message": {"data": "A" * (6 * 1024 * 1024)}})

    tracemalloc.start()
    try:
        value = codec.loads_document(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert len(value["message"]["data"]) == 6 * 1024 * 1024
    assert peak < 1.2 * len(text)


def test_loads_keeps_long_integer_in_large_document():
    padding = "x" * (100 * 1024)
    text = json.dumps({"pad": padding, "big": 2**70, "small": -(2**63) - 1}).encode()

    value = codec.loads(text)

    assert value["big"] == 2**70
    assert isinstance(value["big"], int)
    assert value["small"] == -(2**63) - 1


def test_loads_text_rejects_byte_order_mark():
    with pytest.raises(ValueError) as caught:
        codec.loads_text(b"\xef\xbb\xbf{}")

    assert "BOM" in str(caught.value)


@pytest.mark.parametrize("text", [b"{oops", b"[1,]", b"", b'{"a": "\x01"}'])
def test_loads_error_is_json_error(text):
    with pytest.raises(json.JSONDecodeError) as caught:
        codec.loads(text)

    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    assert str(caught.value) == str(expected.value)


def test_loads_nesting_limit_is_orjson_limit():
    parsed = codec.loads(b"[" * 1000 + b"]" * 1000)

    assert isinstance(parsed, list)


def test_loads_deeper_than_orjson_left_to_json():
    # json.loads raises at this depth on Python 3.11 and parses it on 3.12.
    text = b"[" * 1025 + b"]" * 1025
    try:
        expected = json.loads(text)
    except RecursionError:
        with pytest.raises(RecursionError):
            codec.loads(text)
    else:
        assert codec.loads(text) == expected


# A caller may claim digits_checked only for text without 19 digits in a row.
WITHOUT_LONG_DIGITS = [
    text for text in ORJSON_DIFFERS if not codec.has_long_digit_run(text)
]


@pytest.mark.parametrize("text", [*WITHOUT_LONG_DIGITS, b'[{"a": 1}, {"b": [2]}]'])
def test_loads_text_digits_checked_matches_json(text):
    try:
        expected = json.loads(text.decode("utf-8", "surrogatepass"))
    except ValueError:
        with pytest.raises(ValueError):
            codec.loads_text(text, digits_checked=True)
        return

    assert _same(codec.loads_text(text, digits_checked=True), expected)


def test_loads_digits_checked_skips_scan():
    line = b'{"n": 12345}'

    assert codec.loads(line, digits_checked=True) == {"n": 12345}


@pytest.mark.parametrize("run", [18, 19, 25])
@pytest.mark.parametrize("offset", [0, 7, 64 * 1024 - 10])
def test_long_digit_run_found_in_short_text(run, offset):
    data = b"a" * offset + b"9" * run + b"a" * 10

    assert codec.has_long_digit_run(data) is (run >= 19)


def test_long_digit_run_found_across_scan_pieces():
    chunk = codec._SCAN_CHUNK
    for start in (chunk - 19, chunk - 10, chunk - 1, chunk, 2 * chunk - 5):
        data = bytearray(b"a" * (2 * chunk + 100))
        data[start : start + 19] = b"1" * 19

        assert codec.has_long_digit_run(bytes(data)), start
        data[start + 18] = ord("a")
        assert not codec.has_long_digit_run(bytes(data)), start


def test_dumps_compact_utf8():
    assert codec.dumps({"a": [1, "é"], "b": None}) == '{"a":[1,"é"],"b":null}'.encode()


def test_dumps_long_integer_exact():
    assert codec.dumps({"n": 2**70}) == b'{"n":1180591620717411303424}'


def test_dumps_lone_surrogate_raises():
    with pytest.raises(UnicodeEncodeError):
        codec.dumps({"a": "\ud800"})


def test_dumps_nan_written_as_null():
    # The contract that callers reject NaN first rests on this.
    assert codec.dumps([math.nan, math.inf]) == b"[null,null]"


def test_dumps_result_has_exact_size():
    event = {"event": "e", "properties": {"text": "x" * 500}}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        bodies = [codec.dumps(event) for _ in range(200)]
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    assert used < len(bodies) * (len(bodies[0]) + 200)


# The parse that checks an event's property values as it reads them.


def _nested(kinds: str, leaf):
    """Return `leaf` inside one container per letter of `kinds`, l for a
    list and o for an object, the first letter outermost."""
    for kind in reversed(kinds):
        leaf = [leaf] if kind == "l" else {"k": leaf}
    return leaf


def _event_line(value) -> bytes:
    return json.dumps({"event": "e", "properties": {"p": value}}).encode()


@pytest.mark.parametrize(
    ("value", "within"),
    [
        (_nested("ooo", 1), True),
        (_nested("lll", "x"), True),
        (_nested("olo", None), True),
        (_nested("oooo", 1), False),
        (_nested("llll", 1), False),
        (_nested("lolo", 1), False),
        (_nested("ooo", {}), False),
        (_nested("oo", ["a"] * 254), True),
        (_nested("oo", ["a"] * 255), False),
        (["a"] * 254, True),
        (["a"] * 255, False),
        (1.5, True),
        (10**30, True),
    ],
)
def test_loads_event_nesting_and_length(value, within):
    line = _event_line(value)

    parsed = codec.loads_event(line)

    assert (parsed is not None) is within
    if within:
        assert _same(parsed, json.loads(line))


@pytest.mark.parametrize(
    "line",
    [
        b'{"event": "e", "properties": {"p": NaN}}',
        b'{"event": "e", "properties": {"p": -Infinity}}',
        b'{"event": "e", "properties": {"p": 1e400}}',
        b'{"event": "e", "properties": {"p": "\\ud800"}}',
        b'{"event": "e", "properties": {"\\udc00": 1}}',
        b'{"event": "\\ud800", "properties": {}}',
        b'{"event": "e", "properties": {}, "extra": [1]}',
        b'{"event": 1, "properties": {}}',
        b'[{"event": "e"}]',
        b'"e"',
    ],
)
def test_loads_event_rest_to_loads(line):
    assert codec.loads_event(line) is None


@pytest.mark.parametrize("line", [b'{"event": "e",', b"", b"{oops"])
def test_loads_event_none_for_invalid_json(line):
    assert codec.loads_event(line) is None
