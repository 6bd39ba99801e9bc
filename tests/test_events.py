"""Per-event checks and normalisation, in process."""

from __future__ import annotations

import datetime
import enum
import json
import re
import uuid

import pytest

from forwarder.batching import serialise_event
from forwarder.errors import InvalidEvent
from forwarder.events import encode_event, normalise_event

PUBLISH_MS = 1764583200123  # 2025-12-01T10:00:00.123Z
INSERT_ID = re.compile(r"^[A-Za-z0-9-]{1,36}$")


def _event(**properties) -> dict:
    return {
        "event": "signup",
        "properties": {"distinct_id": "user-1", "$insert_id": "abc-1", **properties},
    }


def test_seconds_and_milliseconds_same_unit():
    seconds = normalise_event(_event(time=1700000000), PUBLISH_MS)
    millis = normalise_event(_event(time=1700000000123), PUBLISH_MS)

    assert seconds["properties"]["time"] == 1700000000000
    assert millis["properties"]["time"] == 1700000000123


def test_iso_time_with_zone_accepted():
    event = normalise_event(_event(time="2023-11-14T22:13:20.5+00:00"), PUBLISH_MS)

    assert event["properties"]["time"] == 1700000000500


def test_iso_time_without_zone_rejected():
    with pytest.raises(InvalidEvent) as caught:
        normalise_event(_event(time="2023-11-14T22:13:20"), PUBLISH_MS)

    assert caught.value.code == "invalid_event"
    assert "time zone" in caught.value.detail


def test_missing_time_takes_publish_time():
    event = normalise_event(
        {"event": "signup", "properties": {"distinct_id": "u", "$insert_id": "a-1"}},
        PUBLISH_MS,
    )

    assert event["properties"]["time"] == PUBLISH_MS


def test_time_before_1971_rejected():
    with pytest.raises(InvalidEvent):
        normalise_event(_event(time=1000), PUBLISH_MS)


def test_invalid_insert_id_hashed_deterministically():
    first = normalise_event(_event(**{"$insert_id": "abc:def-1"}), PUBLISH_MS)
    second = normalise_event(_event(**{"$insert_id": "abc:def-1"}), PUBLISH_MS)
    other = normalise_event(_event(**{"$insert_id": "abc;def-1"}), PUBLISH_MS)

    insert_id = first["properties"]["$insert_id"]
    assert INSERT_ID.match(insert_id)
    assert insert_id == second["properties"]["$insert_id"]
    assert insert_id != other["properties"]["$insert_id"]


def test_missing_insert_id_derived_from_content():
    def without_id(title: str) -> dict:
        return {
            "event": "view",
            "properties": {"distinct_id": "u", "time": 1700000000, "title": title},
        }

    first = normalise_event(without_id("a"), PUBLISH_MS)
    again = normalise_event(without_id("a"), PUBLISH_MS + 5000)
    other = normalise_event(without_id("b"), PUBLISH_MS)

    assert INSERT_ID.match(first["properties"]["$insert_id"])
    assert first["properties"]["$insert_id"] == again["properties"]["$insert_id"]
    assert first["properties"]["$insert_id"] != other["properties"]["$insert_id"]


def test_placeholder_insert_id_replaced():
    event = normalise_event(_event(**{"$insert_id": "undefined"}), PUBLISH_MS)

    assert event["properties"]["$insert_id"] != "undefined"
    assert INSERT_ID.match(event["properties"]["$insert_id"])


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ([1, 2], "expected an object"),
        ("text", "expected an object"),
        ({"properties": {}}, "'event' is missing"),
        ({"event": "", "properties": {}}, "'event' is missing"),
        ({"event": "x", "properties": []}, "'properties' is a JSON array"),
        ({"event": "x", "properties": {}, "extra": 1}, "unexpected top-level keys"),
        ({"event": "x", "properties": {"time": 1700000000}}, "distinct_id"),
        (
            {"event": "x", "properties": {"distinct_id": "null"}},
            "placeholder",
        ),
        ({"event": "x", "properties": {"distinct_id": "u", "time": True}}, "boolean"),
    ],
)
def test_invalid_events_rejected(value, fragment):
    with pytest.raises(InvalidEvent) as caught:
        normalise_event(value, PUBLISH_MS)

    assert fragment in caught.value.detail


def test_empty_distinct_id_allowed():
    event = normalise_event(_event(distinct_id=""), PUBLISH_MS)

    assert event["properties"]["distinct_id"] == ""


def test_device_id_replaces_distinct_id():
    event = normalise_event(
        {"event": "x", "properties": {"$device_id": "d-1", "time": 1700000000}},
        PUBLISH_MS,
    )

    assert "distinct_id" not in event["properties"]


def test_oversized_event_too_large():
    with pytest.raises(InvalidEvent) as caught:
        normalise_event(_event(blob="x" * (1024 * 1024)), PUBLISH_MS)

    assert caught.value.code == "too_large"


def test_too_many_properties_rejected():
    many = {f"p{number}": number for number in range(260)}
    with pytest.raises(InvalidEvent) as caught:
        normalise_event(_event(**many), PUBLISH_MS)

    assert "properties" in caught.value.detail


def test_deep_nesting_rejected():
    with pytest.raises(InvalidEvent) as caught:
        normalise_event(_event(a={"b": {"c": {"d": {"e": 1}}}}), PUBLISH_MS)

    assert "nested deeper" in caught.value.detail


def test_long_array_rejected():
    with pytest.raises(InvalidEvent) as caught:
        normalise_event(_event(tags=list(range(300))), PUBLISH_MS)

    assert "elements" in caught.value.detail


def test_nan_rejected():
    with pytest.raises(InvalidEvent) as caught:
        normalise_event(_event(score=float("nan")), PUBLISH_MS)

    assert "NaN" in caught.value.detail


def test_input_not_modified():
    original = _event(time=1700000000)
    snapshot = repr(original)

    normalise_event(original, PUBLISH_MS)

    assert repr(original) == snapshot


def test_time_past_allowance_rejected():
    now_ms = PUBLISH_MS + 1000
    ahead = now_ms + 5 * 60 * 1000

    kept = normalise_event(_event(time=ahead), PUBLISH_MS, now_ms)
    with pytest.raises(InvalidEvent) as caught:
        normalise_event(_event(time=ahead + 1), PUBLISH_MS, now_ms)

    assert kept["properties"]["time"] == ahead
    assert caught.value.code == "invalid_event"
    assert "in the future" in caught.value.detail


def test_time_before_1973_rejected():
    # 1972-01-01 in seconds, which in milliseconds would read as seconds.
    with pytest.raises(InvalidEvent) as caught:
        normalise_event(_event(time=63072000), PUBLISH_MS)

    assert "1973-03-03" in caught.value.detail


def test_unicode_digit_time_rejected():
    with pytest.raises(InvalidEvent) as caught:
        normalise_event(_event(time="²"), PUBLISH_MS)

    assert "ISO-8601" in caught.value.detail


def test_insert_id_with_newline_hashed():
    event = normalise_event(_event(**{"$insert_id": "abc\n"}), PUBLISH_MS)

    assert event["properties"]["$insert_id"] != "abc\n"
    assert INSERT_ID.match(event["properties"]["$insert_id"])


@pytest.mark.parametrize(
    ("properties", "fragment"),
    [
        ({"name": "\ud800"}, "'properties.name' is not valid UTF-8"),
        ({"tags": [{"\udc00": 1}]}, "a key in 'properties.tags'"),
        ({"\ud800": 1}, "a property name is not valid UTF-8"),
    ],
)
def test_lone_surrogate_rejected(properties, fragment):
    with pytest.raises(InvalidEvent) as caught:
        normalise_event(_event(**properties), PUBLISH_MS)

    assert caught.value.code == "invalid_event"
    assert fragment in caught.value.detail


def test_lone_surrogate_name_rejected():
    event = {"event": "sign\udc00up", "properties": {"distinct_id": "u"}}

    with pytest.raises(InvalidEvent) as caught:
        normalise_event(event, PUBLISH_MS)

    assert "'event' is not valid UTF-8" in caught.value.detail


def test_lone_surrogate_insert_id_hashed():
    event = normalise_event(_event(**{"$insert_id": "a\ud800"}), PUBLISH_MS)

    assert INSERT_ID.match(event["properties"]["$insert_id"])


def test_nan_without_insert_id_rejected():
    event = {"event": "x", "properties": {"distinct_id": "u", "score": [float("inf")]}}

    with pytest.raises(InvalidEvent) as caught:
        normalise_event(event, PUBLISH_MS)

    assert "'properties.score' is NaN or Infinity" in caught.value.detail


def test_padded_placeholder_distinct_id_allowed():
    event = normalise_event(_event(distinct_id=" null "), PUBLISH_MS)

    assert event["properties"]["distinct_id"] == " null "


def test_encode_event_matches_serialise():
    value = _event(time=1700000000, tags=["a", "b"], nested={"x": 1.5})

    insert_id, body = encode_event(value, PUBLISH_MS)

    event = normalise_event(value, PUBLISH_MS)
    assert insert_id == event["properties"]["$insert_id"]
    assert body == serialise_event(event)


def test_encode_event_long_integer_exact():
    _, body = encode_event(_event(big=2**70), PUBLISH_MS)

    assert b'"big":1180591620717411303424' in body


def test_surrogate_reported_before_property_count():
    many = {f"p{number}": number for number in range(300)}

    with pytest.raises(InvalidEvent) as caught:
        normalise_event(_event(name="\ud800", **many), PUBLISH_MS)

    assert "'properties.name' is not valid UTF-8" in caught.value.detail


def test_nested_surrogate_reported_by_path():
    with pytest.raises(InvalidEvent) as caught:
        encode_event(_event(outer={"inner": ["ok", "\udfff"]}), PUBLISH_MS)

    assert caught.value.code == "invalid_event"
    assert "'properties.outer.inner' is not valid UTF-8" in caught.value.detail


def test_nesting_at_limit_accepted():
    event = normalise_event(_event(a={"b": {"c": [1]}}), PUBLISH_MS)

    assert event["properties"]["a"] == {"b": {"c": [1]}}


def test_placeholder_with_kelvin_sign_rejected():
    # "\u212a" is the Kelvin sign, which lower-cases to "k".
    with pytest.raises(InvalidEvent) as caught:
        normalise_event(_event(distinct_id="un\u212anown"), PUBLISH_MS)

    assert "placeholder" in caught.value.detail


def test_huge_float_time_rejected():
    with pytest.raises(InvalidEvent) as caught:
        normalise_event(_event(time=-1e306), PUBLISH_MS)

    assert "out of range" in caught.value.detail


def test_long_digit_string_time_rejected():
    with pytest.raises(InvalidEvent) as caught:
        normalise_event(_event(time="9" * 5000), PUBLISH_MS)

    assert "out of range" in caught.value.detail


@pytest.mark.parametrize(
    "properties",
    [{1: float("nan")}, {"nested": {2: float("inf")}}],
)
def test_non_string_key_still_checked(properties):
    # A hook can leave such a key in the record it passes on.
    event = {"event": "signup", "properties": {"distinct_id": "u-1", **properties}}

    with pytest.raises(InvalidEvent) as caught:
        normalise_event(event, PUBLISH_MS)

    assert "NaN or Infinity" in caught.value.detail


def test_adjust_runs_on_copy_first():
    original = _event(score=float("nan"))
    seen = []

    def drop_score(properties):
        seen.append(properties is original["properties"])
        del properties["score"]

    insert_id, body = encode_event(original, PUBLISH_MS, adjust=drop_score)

    assert seen == [False]
    assert b"score" not in body
    assert "score" in original["properties"]
    assert insert_id == json.loads(body)["properties"]["$insert_id"]


@pytest.mark.parametrize(
    "value",
    [
        datetime.datetime(2026, 12, 4, tzinfo=datetime.UTC),
        uuid.UUID(int=7),
        enum.Enum("Plan", "FREE PRO").PRO,
        {"when": datetime.date(2026, 12, 4)},
        [uuid.UUID(int=8)],
        (float("nan"), 1.0),
        {"nested": (1, 2)},
    ],
)
def test_value_that_is_not_json_rejected(value):
    # orjson would serialise these, and json.dumps, which derives a
    # missing $insert_id, would not.
    with_id = _event(extra=value)
    without_id = _event(extra=value)
    del without_id["properties"]["$insert_id"]

    with pytest.raises(TypeError):
        normalise_event(with_id, PUBLISH_MS)
    with pytest.raises(TypeError):
        normalise_event(without_id, PUBLISH_MS)


@pytest.mark.parametrize(
    ("distinct_id", "shown"),
    [(None, "null"), (True, "true"), (0, "0"), ([], "[]"), ("Anon", "'Anon'")],
)
def test_placeholder_id_shown_as_json(distinct_id, shown):
    with pytest.raises(InvalidEvent) as caught:
        normalise_event(_event(distinct_id=distinct_id), PUBLISH_MS)

    assert caught.value.detail.startswith(f"'properties.distinct_id' {shown} is")


@pytest.mark.parametrize(
    "tags", [{1: "a", "b": 2}, {1: "a", "1": "b"}, {None: 1}, [{2: "x"}]]
)
def test_key_not_text_rejected_alike(tags):
    # json.dumps would write 1 as "1", which can collide with a key "1".
    with_id = _event(tags=tags)
    without_id = _event(tags=tags)
    del without_id["properties"]["$insert_id"]

    with pytest.raises(TypeError):
        encode_event(with_id, PUBLISH_MS)
    with pytest.raises(TypeError):
        encode_event(without_id, PUBLISH_MS)
