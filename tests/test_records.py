"""Decoding of message data into records, for every kind of message."""

from __future__ import annotations

import base64
import json

import pytest

from forwarder.records import RecordStream, decode_records


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_ndjson_lines_blank_skipped():
    records, failures = decode_records(_b64(b'{"a": 1}\n\n  \n{"b": 2}\n'))

    assert [record.value for record in records] == [{"a": 1}, {"b": 2}]
    assert failures == []


def test_single_object_accepted():
    records, failures = decode_records(_b64(b'{\n  "event": "x"\n}'))

    assert [record.value for record in records] == [{"event": "x"}]
    assert failures == []


def test_array_gives_one_record_each():
    records, _ = decode_records(_b64(b'[{"event": "a"}, {"event": "b"}]'))

    assert [record.value["event"] for record in records] == ["a", "b"]
    assert json.loads(records[1].raw) == {"event": "b"}


def test_bad_line_keeps_original_bytes():
    records, failures = decode_records(_b64(b'{"a": 1}\n{oops\n{"b": 2}'))

    assert len(records) == 2
    assert len(failures) == 1
    assert failures[0].raw == b"{oops"
    assert failures[0].code == "invalid_json"


def test_invalid_base64_is_invalid_payload():
    records, failures = decode_records("not*base64!")

    assert records == []
    assert failures[0].code == "invalid_payload"
    assert failures[0].raw == b"not*base64!"


def test_not_utf8_is_invalid_payload():
    records, failures = decode_records(_b64(b"\xff\xfe\x00"))

    assert records == []
    assert failures[0].code == "invalid_payload"
    assert failures[0].raw == b"\xff\xfe\x00"


def test_empty_data_is_invalid_payload():
    records, failures = decode_records("")

    assert records == []
    assert failures[0].code == "invalid_payload"


def test_missing_data_is_invalid_payload():
    records, failures = decode_records(None)

    assert records == []
    assert failures[0].code == "invalid_payload"


def test_json_scalar_becomes_record():
    records, failures = decode_records(_b64(b"42"))

    assert [record.value for record in records] == [42]
    assert failures == []


def test_deeply_nested_line_is_invalid_json():
    nested = b"[" * 100_000
    records, failures = decode_records(_b64(b'{"a": 1}\n' + nested))

    assert [record.value for record in records] == [{"a": 1}]
    assert failures[0].raw == nested
    assert failures[0].code == "invalid_json"


def test_surrogate_array_element_raw_escaped():
    records, failures = decode_records(_b64(b'[{"a": "\\ud800"}]'))

    assert failures == []
    assert records[0].raw == b'{"a":"\\ud800"}'
    assert json.loads(records[0].raw) == records[0].value


@pytest.mark.parametrize(
    ("element", "raw"),
    [
        (b'{"a": NaN, "b": null}', b'{"a":NaN,"b":null}'),
        (b'{"a": [Infinity, 1]}', b'{"a":[Infinity,1]}'),
        (
            b'{"id": 123456789012345678901234567890}',
            b'{"id":123456789012345678901234567890}',
        ),
        (b'{"a": "\\u00e9t\\u00e9", "n": 1.5}', '{"a":"été","n":1.5}'.encode()),
    ],
)
def test_array_element_raw_parses_back(element, raw):
    records, _ = decode_records(_b64(b"[" + element + b", {}]"))

    assert records[0].raw == raw
    assert repr(json.loads(records[0].raw)) == repr(records[0].value)


def test_pretty_object_raw_on_one_line():
    records, _ = decode_records(_b64(b'{\n  "event": "x"\n}\n'))

    assert records[0].raw == b'{"event":"x"}'


def test_one_line_object_raw_kept():
    records, _ = decode_records(_b64(b'{"event": "x"}\n'))

    assert records[0].raw == b'{"event": "x"}'


def test_stream_counts_and_fails_in_order():
    stream = RecordStream(_b64(b'{"a": 1}\n{oops\n[{"b": 2}, {"c": 3}]\n'))

    values = [record.value for record in stream]

    assert values == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert stream.count == 3
    assert [failure.raw for failure in stream.failures] == [b"{oops"]


def test_stream_record_refers_to_line():
    stream = RecordStream(_b64(b'{"a": 1}\r\n  \r\n{"b": 2}'))

    records = list(stream)

    assert [record.raw for record in records] == [b'{"a": 1}', b'{"b": 2}']
    assert [record.index for record in records] == [0, 1]


def test_stream_value_parsed_again_after_moving_on():
    stream = RecordStream(_b64(b'{"a": [1]}\n{"b": 2}'))
    iterator = iter(stream)

    first = next(iterator)
    current = first.value
    assert first.value is current
    next(iterator)

    assert first.value == {"a": [1]}
    assert first.value is not current


def test_stream_long_integer_exact():
    records = list(RecordStream(_b64(b'{"n": 123456789012345678901}\n{"m": 1}')))

    assert records[0].value == {"n": 123456789012345678901}


def test_stream_nan_line_parsed_as_json_does():
    records = list(RecordStream(_b64(b'{"x": NaN}\n{"y": 1}')))

    assert records[0].value["x"] != records[0].value["x"]


def test_stream_iterates_once():
    stream = RecordStream(_b64(b'{"a": 1}'))

    assert len(list(stream)) == 1
    assert list(stream) == []


def test_stream_first_line_alone_then_document():
    # The first line is not JSON alone, so the data is parsed whole.
    records = list(RecordStream(_b64(b'[\n{"a": 1},\n{"b": 2}\n]')))

    assert [record.value for record in records] == [{"a": 1}, {"b": 2}]


def test_array_element_nested_1000_levels_kept():
    # orjson parses this, and json.dumps needs more than Python 3.11's
    # default recursion limit to write it back.
    deep = b"[" * 1000 + b"]" * 1000
    records, failures = decode_records(_b64(b"[" + deep + b", {}]"))

    assert failures == []
    assert records[0].raw == deep
    assert len(records) == 2
