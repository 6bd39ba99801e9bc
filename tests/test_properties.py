"""Property-based tests of decoding, normalisation, batching and dead letters.

They run in process on `forwarder.records`, `forwarder.events`,
`forwarder.batching` and `forwarder.deadletter`. The Mixpanel stand-in's own
strict-mode check is the reference for what Mixpanel accepts.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import re
import sys
from datetime import UTC, datetime, timedelta, timezone
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

import transform as default_transform
from forwarder import codec, deadletter, handler
from forwarder.batching import Item, build_batches, serialise_event
from forwarder.config import load_settings
from forwarder.deadletter import build_dead_letters
from forwarder.envelope import PushMessage
from forwarder.errors import InvalidEvent
from forwarder.events import (
    FUTURE_ALLOWANCE_MS,
    MAX_ARRAY_LENGTH,
    MAX_NESTING_DEPTH,
    MIN_TIME_MS,
    PLACEHOLDER_IDS,
    normalise_event,
)
from forwarder.hook import passes_records_on
from forwarder.records import (
    ErrorCode,
    Failure,
    Record,
    RecordStream,
    decode_records,
)
from local.mixpanel_standin import _find_event_problem

PUBLISH_MS = 1764583200123  # 2025-12-01T10:00:00.123Z
NOW = datetime(2026, 12, 4, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
MIN_SECONDS = MIN_TIME_MS // 1000
INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")
CODES = {
    ErrorCode.INVALID_PAYLOAD,
    ErrorCode.INVALID_JSON,
    ErrorCode.INVALID_EVENT,
    ErrorCode.TOO_LARGE,
    ErrorCode.REJECTED,
}

SETTINGS = settings(max_examples=150, deadline=None)

# Text with the lone surrogates that a "\ud800" escape produces, and with the
# placeholder values that Mixpanel rejects as ids.
texts = st.text(max_size=12) | st.sampled_from(
    ["\ud800", "a\udfffb", "null", "Anonymous", "", "0", "x" * 300]
)
leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
)
json_values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4)
    ),
    max_leaves=16,
)
finite_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4)
    ),
    max_leaves=16,
)
valid_insert_ids = st.from_regex(r"[A-Za-z0-9-]{1,36}", fullmatch=True)
zones = st.integers(-23 * 60, 23 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
instants = st.datetimes(
    min_value=datetime(1973, 3, 5), max_value=datetime(2026, 12, 1), timezones=zones
)
# Every form of `time` that the forwarder accepts.
valid_times = st.one_of(
    st.integers(MIN_SECONDS, NOW_MS // 1000),
    st.integers(MIN_TIME_MS, NOW_MS),
    st.floats(MIN_SECONDS, NOW_MS / 1000),
    st.integers(MIN_SECONDS, NOW_MS // 1000).map(str),
    instants.map(lambda moment: moment.isoformat()),
)


@st.composite
def events(
    draw,
    identities=json_values,
    values=json_values,
    time_values=None,
    names=texts,
    extra_keys=True,
):
    """Draw an event-shaped dict, valid or not.

    `identities` gives distinct_id, `values` the other properties, `names`
    the event name and `time_values` the time. By default a time may be any
    JSON value. With `extra_keys`, some events get a forbidden top-level key.
    """
    properties = draw(st.dictionaries(names, values, max_size=5))
    if draw(st.booleans()):
        properties["time"] = draw(
            valid_times | json_values if time_values is None else time_values
        )
    if draw(st.sampled_from([True] * 9 + [False])):
        properties["distinct_id"] = draw(identities)
    else:
        properties["$device_id"] = draw(st.text(min_size=1, max_size=8))
    choice = draw(st.sampled_from(["missing", "valid", "any"]))
    if choice == "valid":
        properties["$insert_id"] = draw(valid_insert_ids)
    elif choice == "any":
        properties["$insert_id"] = draw(json_values)
    event = {"event": draw(names), "properties": properties}
    if extra_keys and draw(st.sampled_from([False] * 19 + [True])):
        event["extra"] = 1
    return event


# Strings and integers are what the stand-in accepts as a distinct_id.
plain_ids = st.text(max_size=12) | st.integers(-(2**40), 2**40)
# Events that are mostly valid, so that most of them reach the checks after
# the first ones.
likely_valid_events = events(
    identities=plain_ids,
    values=finite_values,
    time_values=valid_times,
    names=st.text(min_size=1, max_size=12),
    extra_keys=False,
)


def _normalise(value):
    return normalise_event(value, PUBLISH_MS, NOW_MS)


# Normalisation


@SETTINGS
@given(events() | json_values)
def test_normalise_raises_only_invalid_event(value):
    try:
        event = _normalise(value)
    except InvalidEvent as err:
        assert err.code in (ErrorCode.INVALID_EVENT, ErrorCode.TOO_LARGE)
        err.detail.encode("utf-8")
        return

    assert isinstance(event["properties"]["time"], int)
    assert INSERT_ID.fullmatch(event["properties"]["$insert_id"])
    serialise_event(event)


@settings(max_examples=300, deadline=None)
@given(likely_valid_events)
def test_accepted_event_passes_standin_checks(value):
    try:
        event = _normalise(value)
    except InvalidEvent:
        return

    # The stand-in's clock runs at the edge of the allowance, and its
    # retention covers every time the forwarder accepts.
    now_seconds = (NOW_MS + FUTURE_ALLOWANCE_MS) / 1000
    assert _find_event_problem(event, now_seconds, retention_days=100 * 365) is None


@SETTINGS
@given(likely_valid_events | events())
def test_normalise_deterministic_and_idempotent(value):
    try:
        first = _normalise(value)
    except InvalidEvent:
        return
    again = _normalise(copy.deepcopy(value))

    assert serialise_event(again) == serialise_event(first)
    assert _normalise(first) == first


@SETTINGS
@given(st.integers(MIN_SECONDS, NOW_MS // 1000), st.integers(0, 999))
def test_time_forms_give_same_milliseconds(seconds, millis):
    def time_of(value):
        event = {"event": "e", "properties": {"distinct_id": "u", "time": value}}
        return _normalise(event)["properties"]["time"]

    iso = datetime.fromtimestamp(seconds, UTC).isoformat()
    assert time_of(seconds) == seconds * 1000
    assert time_of(seconds * 1000 + millis) == seconds * 1000 + millis
    assert time_of(str(seconds)) == seconds * 1000
    assert time_of(iso) == seconds * 1000
    assert time_of(iso.replace("+00:00", "Z")) == seconds * 1000


@SETTINGS
@given(json_values | valid_insert_ids, json_values | valid_insert_ids)
def test_insert_id_valid_stable_and_distinct(first_id, second_id):
    def insert_id_of(value):
        event = {"event": "e", "properties": {"distinct_id": "u", "$insert_id": value}}
        return _normalise(event)["properties"]["$insert_id"]

    result = insert_id_of(first_id)

    assert INSERT_ID.fullmatch(result)
    assert result.lower() not in PLACEHOLDER_IDS
    assert insert_id_of(copy.deepcopy(first_id)) == result
    keeps_id = (
        isinstance(first_id, str)
        and INSERT_ID.fullmatch(first_id)
        and first_id.lower() not in PLACEHOLDER_IDS
    )
    if keeps_id:
        assert result == first_id
    if json.dumps(first_id, sort_keys=True) != json.dumps(second_id, sort_keys=True):
        assert insert_id_of(second_id) != result


# Batching


def _items(sizes: list[int]) -> list[Item]:
    items = []
    for number, size in enumerate(sizes):
        body = json.dumps({"n": number, "p": "x" * size}, separators=(",", ":"))
        record = Record(number, body.encode(), None)
        items.append(Item(record, f"id-{number}", body.encode()))
    return items


@SETTINGS
@given(
    st.lists(st.integers(0, 400), max_size=60),
    st.integers(1, 25),
    st.integers(16, 2000),
)
def test_batches_within_limits_and_in_order(sizes, max_events, max_bytes):
    items = _items(sizes)

    batches, failures = build_batches(items, max_events, max_bytes)

    for batch in batches:
        assert 1 <= len(batch.items) <= max_events
        assert len(batch.body) <= max_bytes
        assert json.loads(batch.body) == [json.loads(i.body) for i in batch.items]
    sent = [item for batch in batches for item in batch.items]
    oversized = [item for item in items if len(item.body) + 2 > max_bytes]
    assert sent == [item for item in items if item not in oversized]
    assert [failure.raw for failure in failures] == [i.record.raw for i in oversized]
    assert all(failure.code == ErrorCode.TOO_LARGE for failure in failures)


@SETTINGS
@given(st.lists(likely_valid_events | events(), max_size=30), st.integers(200, 4000))
def test_same_message_same_request_bodies(values, max_bytes):
    data = "\n".join(json.dumps(value) for value in values).encode()

    def bodies() -> tuple[list[bytes], list[bytes]]:
        records, failures = decode_records(base64.b64encode(data).decode())
        items = []
        for record in records:
            try:
                event = _normalise(record.value)
            except InvalidEvent as err:
                failures.append(Failure(record.raw, err.code, err.detail))
                continue
            body = serialise_event(event)
            items.append(Item(record, event["properties"]["$insert_id"], body))
        batches, oversized = build_batches(items, 2000, max_bytes)
        sent = [item.body for batch in batches for item in batch.items]
        assert len(sent) + len(oversized) == len(items)
        return [batch.body for batch in batches], sent

    first, first_sent = bodies()
    second, _ = bodies()

    assert second == first
    assert all(len(body) <= max_bytes for body in first)
    expected = []
    for value in values:
        try:
            expected.append(serialise_event(_normalise(json.loads(json.dumps(value)))))
        except InvalidEvent:
            continue
    expected = [body for body in expected if len(body) + 2 <= max_bytes]
    assert first_sent == expected


# Decoding

# Arbitrary bytes, and lines of JSON mixed with text that is not JSON. Text
# with a lone surrogate encodes to bytes that are not UTF-8.
payloads = st.binary(max_size=200) | st.lists(
    json_values.map(json.dumps) | texts, max_size=6
).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
    except (ValueError, RecursionError):
        return False
    return True


@SETTINGS
@given(payloads)
def test_decode_accounts_for_every_line(payload):
    records, failures = decode_records(base64.b64encode(payload).decode())

    if failures and failures[0].code == ErrorCode.INVALID_PAYLOAD:
        assert len(failures) == 1
        assert failures[0].raw == payload
        assert records == []
        return
    assert all(failure.code == ErrorCode.INVALID_JSON for failure in failures)
    lines = [line for line in payload.splitlines() if line.strip()]
    assert [failure.raw for failure in failures] == [
        line for line in lines if not _parses(line)
    ]


@SETTINGS
@given(st.lists(st.dictionaries(texts, finite_values, max_size=4), max_size=8))
def test_ndjson_objects_decode_in_order(objects):
    data = b"\n".join(json.dumps(value).encode() for value in objects)

    records, failures = decode_records(base64.b64encode(data).decode())

    if not objects:
        assert [failure.code for failure in failures] == [ErrorCode.INVALID_PAYLOAD]
        return
    assert failures == []
    assert [record.value for record in records] == objects
    assert [json.loads(record.raw) for record in records] == objects


# Dead letters

OWN_ATTRIBUTES = {
    "error",
    "error_detail",
    "source_message_id",
    "source_subscription",
    "source_publish_time",
    "data_part",
}
failures_lists = st.lists(
    st.builds(
        Failure,
        raw=st.binary(max_size=150).filter(lambda raw: b"\n" not in raw),
        code=st.sampled_from(sorted(CODES)),
        detail=texts | st.text(max_size=700),
    ),
    max_size=12,
)
source_attributes = st.dictionaries(
    st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=5
)


def _reassemble(messages) -> list[bytes]:
    """Return the lines of consecutive dead-letter messages, parts joined."""
    lines = []
    pending = b""
    for message in messages:
        part = message.attributes.get("data_part")
        if part is None:
            lines.extend(message.data.split(b"\n"))
            continue
        number, count = (int(text) for text in part.split("/"))
        pending += message.data
        if number == count:
            lines.append(pending)
            pending = b""
    return lines


def _push_message(data: str | None, attributes: dict | None = None) -> PushMessage:
    return PushMessage(
        message_id="1000000000000001",
        publish_time_ms=PUBLISH_MS,
        publish_time="2025-12-01T10:00:00.123Z",
        subscription="projects/p/subscriptions/s",
        data=data,
        attributes=attributes or {},
    )


@SETTINGS
@given(failures_lists, source_attributes)
def test_dead_letters_fit_and_keep_every_line(failures, attributes):
    message = _push_message(None, attributes)
    with mock.patch.object(deadletter, "MAX_DATA_BYTES", 64):
        outgoing = build_dead_letters(message, failures)

    groups: dict[tuple[str, str], list] = {}
    for dead in outgoing:
        assert len(dead.data) <= 64
        assert len(dead.attributes) <= 100
        for key, value in dead.attributes.items():
            assert len(key.encode("utf-8")) <= 256
            assert len(value.encode("utf-8")) <= 1024
        assert len(dead.attributes["error_detail"].encode("utf-8")) <= 512
        assert dead.attributes["source_message_id"] == message.message_id
        for key, value in attributes.items():
            if key not in OWN_ATTRIBUTES:
                assert dead.attributes[key] == value
        key = (dead.attributes["error"], dead.attributes["error_detail"])
        groups.setdefault(key, []).append(dead)

    expected: dict[tuple[str, str], list[bytes]] = {}
    for failure in failures:
        detail = deadletter.truncate_utf8(failure.detail, deadletter.MAX_DETAIL_BYTES)
        expected.setdefault((failure.code, detail), []).append(failure.raw)
    assert {key: _reassemble(messages) for key, messages in groups.items()} == expected


# The parse that checks property values, and the handler's use of it

# Values nested past Mixpanel's limit, and arrays at either side of its
# length limit, which `json_values` seldom reaches.
deep_values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=2) | st.dictionaries(texts, children, max_size=2)
    ),
    max_leaves=10,
)
edge_arrays = st.integers(MAX_ARRAY_LENGTH - 1, MAX_ARRAY_LENGTH + 2).map(
    lambda length: ["a"] * length
)


def _nest(leaf, kinds: list[bool]):
    for in_list in kinds:
        leaf = [leaf] if in_list else {"k": leaf}
    return leaf


# A leaf inside lists and objects, from 1 to 6 levels, at either side of the
# nesting limit.
chains = st.builds(
    _nest,
    leaves | edge_arrays,
    st.lists(st.booleans(), min_size=1, max_size=MAX_NESTING_DEPTH + 3),
)
# json.dumps writes lone surrogates as escapes and non-finite floats as the
# NaN and Infinity literals that json.loads accepts.
event_lines = (events(values=deep_values | chains | finite_values) | json_values).map(
    lambda value: json.dumps(value).encode()
)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _within_limits(value, depth: int) -> bool:
    if isinstance(value, str):
        return _encodable(value)
    if isinstance(value, float):
        return math.isfinite(value)
    if value is None or isinstance(value, int):
        return True
    if depth > MAX_NESTING_DEPTH:
        return False
    if isinstance(value, list):
        return len(value) <= MAX_ARRAY_LENGTH and all(
            _within_limits(item, depth + 1) for item in value
        )
    return all(
        _encodable(key) and _within_limits(item, depth + 1)
        for key, item in value.items()
    )


def _checked_shape(value) -> bool:
    """Tell whether the value is an object of strings and of objects whose
    values are within the limits."""
    if not isinstance(value, dict):
        return False
    for key, item in value.items():
        if not _encodable(key):
            return False
        if isinstance(item, str):
            if not _encodable(item):
                return False
        elif isinstance(item, dict):
            if not all(
                _encodable(name) and _within_limits(inner, 1)
                for name, inner in item.items()
            ):
                return False
        else:
            return False
    return True


@SETTINGS
@given(event_lines)
def test_checked_parse_matches_json(line):
    value = codec.loads_event(line)

    expected = json.loads(line)
    assert (value is not None) == _checked_shape(expected)
    if value is not None:
        # The text keeps types, key order and the sign of zero apart.
        assert json.dumps(value) == json.dumps(expected)


PREPARE_ENV = {
    "MIXPANEL_PROJECT_TOKEN": "token-for-tests",
    "DEAD_LETTER_TOPIC": "projects/p/topics/dead",
}
PII_ENV = {
    **PREPARE_ENV,
    "PII_DROP_PROPERTIES": "email,a.b",
    "PII_HASH_PROPERTIES": "distinct_id,tags",
    "PII_HASH_KEY": "5" * 64,
}
# Names that the PII rules above list, so that they find something to do.
rule_names = st.sampled_from(["email", "a", "b", "distinct_id", "tags", "x"])


def _prepared(lines: list[bytes], transform, env: dict):
    data = base64.b64encode(b"\n".join(lines)).decode()
    # As the handler does, the lines are checked as they are parsed only
    # for the default hook.
    records = RecordStream(data, check_values=passes_records_on(transform))
    prepared = handler._prepare_events(
        records, _push_message(data), load_settings(env), transform
    )
    items = [(item.record.index, item.insert_id, item.body) for item in prepared.items]
    return items, prepared.failures


def _returns_record(record, context):
    # Returns the record, as the default hook does, but is called, and its
    # records are checked in full.
    assert context.message_id
    return record


def _both_paths(lines: list[bytes], env: dict):
    """Return what the default hook and `_returns_record` give for the lines."""
    assert passes_records_on(default_transform.transform)
    assert not passes_records_on(_returns_record)
    fast = _prepared(lines, default_transform.transform, env)
    slow = _prepared(lines, _returns_record, env)
    return fast, slow


@SETTINGS
@given(
    st.lists(
        events(
            identities=plain_ids,
            values=chains | deep_values | finite_values,
            names=rule_names,
            time_values=valid_times,
        ).map(lambda value: json.dumps(value).encode())
        | event_lines,
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([PREPARE_ENV, PII_ENV]),
)
def test_default_hook_skipped_with_same_result(lines, env):
    # The default hook is not called, and the parse's check replaces the
    # checks of property values.
    fast, slow = _both_paths(lines, env)

    assert fast == slow


def _nan_in_place(record, context):
    record["properties"]["ratio"] = float("nan")
    return record


def test_in_place_change_checked():
    line = json.dumps(
        {"event": "e", "properties": {"distinct_id": "u-1", "time": MIN_SECONDS}}
    ).encode()

    items, failures = _prepared([line], _nan_in_place, PREPARE_ENV)

    assert items == []
    assert [(failure.raw, failure.code) for failure in failures] == [
        (line, ErrorCode.INVALID_EVENT)
    ]
    assert "NaN" in failures[0].detail


def test_valid_line_checked_as_parsed():
    line = json.dumps({"event": "e", "properties": {"distinct_id": "u-1"}}).encode()
    data = base64.b64encode(b"\n".join([line, b'{"event": "e", "x": NaN}'])).decode()

    checked = [
        record.values_checked for record in RecordStream(data, check_values=True)
    ]
    unchecked = [record.values_checked for record in RecordStream(data)]

    assert checked == [True, False]
    assert unchecked == [False, False]


def test_deep_lines_fail_alike():
    # Near the recursion limit, json.loads fails or not depending on the
    # frames below it, which the checking parse must not add to.
    limit = sys.getrecursionlimit()
    lines = [
        b'{"event": "e", "properties": {"distinct_id": "u", "n": NaN, "d": '
        + b"[" * depth
        + b"]" * depth
        + b"}}"
        for depth in range(limit - 300, limit + 30)
    ]

    fast, slow = _both_paths(lines, PREPARE_ENV)

    assert fast == slow
