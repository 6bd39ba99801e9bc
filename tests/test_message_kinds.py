"""Each kind of push request and message, through the real function over HTTP.

docs/DELIVERY.md lists the outcome that each test checks.
"""

from __future__ import annotations

import base64
import json
import re
import time

import pytest
import requests

from conftest import (
    DEAD_LETTER_TOPIC,
    SUBSCRIPTION,
    envelope_for,
    load_envelope,
    make_event,
    ndjson,
    stored_insert_ids,
)
from local.pubsub_standin import MAX_MESSAGE_BYTES

INSERT_ID = re.compile(r"^[A-Za-z0-9-]{1,36}$")
OWN_ATTRIBUTES = {
    "error",
    "error_detail",
    "source_message_id",
    "source_subscription",
    "source_publish_time",
}
MAX_BATCH_BYTES = 2 * 1024 * 1024


def _message_data(name: str) -> bytes:
    """Return the decoded data of a golden push body's message."""
    return base64.b64decode(load_envelope(name)["message"]["data"])


# Bodies that are not push envelopes


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[" * 100_000,
        b"[]",
        b'{"message": "text"}',
        b'{"message": {"data": ""}}',
        b'{"message": {"messageId": "1"}}',
        b'{"message": {"messageId": "1", "publishTime": "2026-12-01T10:00:00"}}',
        b'{"message": {"messageId": "1", "publishTime": "2026-12-01T10:00:00Z", '
        b'"data": 5}}',
        b'{"message": {"messageId": "1", "publishTime": "2026-12-01T10:00:00Z", '
        b'"attributes": {"a": 1}}}',
        b'{"message": {"messageId": "1", "publishTime": "2026-12-01T10:00:00Z", '
        b'"attributes": {"a": "\\ud800"}}}',
    ],
    ids=[
        "empty",
        "not-json",
        "not-utf8",
        "nested-too-deeply",
        "array",
        "message-not-object",
        "no-message-id",
        "no-publish-time",
        "publish-time-without-zone",
        "data-not-string",
        "attribute-not-string",
        "attribute-lone-surrogate",
    ],
)
def test_not_an_envelope_answers_400(forwarder, mixpanel, pubsub, body):
    response = forwarder.push(body)

    assert response.status_code == 400, response.text
    assert "error" in response.json()
    assert mixpanel.requests == []
    assert pubsub.published(DEAD_LETTER_TOPIC) == []


def test_cloudevent_body_answers_400(forwarder, mixpanel, pubsub):
    response = forwarder.push(load_envelope("not-push-envelope.json"))

    assert response.status_code == 400, response.text
    assert mixpanel.requests == []
    assert pubsub.published(DEAD_LETTER_TOPIC) == []


def test_get_answers_405(forwarder, mixpanel):
    response = requests.get(forwarder.url, timeout=10)

    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert mixpanel.requests == []


# Messages whose data cannot be decoded


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        ("push-invalid-base64.json", "not valid base64"),
        ("push-not-utf8.json", "not UTF-8"),
        ("push-empty-data.json", "empty"),
        ("push-attributes-only.json", "no data"),
    ],
    ids=["invalid-base64", "not-utf8", "empty-data", "attributes-only"],
)
def test_undecodable_data_is_invalid_payload(forwarder, mixpanel, pubsub, name, detail):
    envelope = load_envelope(name)
    message = envelope["message"]

    response = forwarder.push(envelope)

    assert response.status_code == 200, response.text
    assert mixpanel.requests == []
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].attributes["error"] == "invalid_payload"
    assert detail in dead[0].attributes["error_detail"]
    assert dead[0].attributes["source_message_id"] == message["messageId"]
    assert dead[0].attributes["source_subscription"] == envelope["subscription"]
    for key, value in message["attributes"].items():
        assert dead[0].attributes[key] == value


def test_invalid_base64_keeps_data_text(forwarder, pubsub):
    envelope = load_envelope("push-invalid-base64.json")

    forwarder.push(envelope)

    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert dead[0].data == envelope["message"]["data"].encode()


def test_not_utf8_keeps_decoded_bytes(forwarder, pubsub):
    forwarder.push(load_envelope("push-not-utf8.json"))

    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert dead[0].data == _message_data("push-not-utf8.json")


def test_whitespace_data_is_invalid_payload(forwarder, mixpanel, pubsub):
    response = forwarder.push(envelope_for(b" \n\t "))

    assert response.status_code == 200, response.text
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].data == b" \n\t "
    assert dead[0].attributes["error"] == "invalid_payload"
    assert mixpanel.requests == []


# Messages whose data is not events


def test_not_json_is_invalid_json(forwarder, mixpanel, pubsub):
    response = forwarder.push(load_envelope("push-not-json.json"))

    assert response.status_code == 200, response.text
    assert mixpanel.requests == []
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].data == _message_data("push-not-json.json")
    assert dead[0].attributes["error"] == "invalid_json"


def test_json_number_is_invalid_event(forwarder, mixpanel, pubsub):
    response = forwarder.push(load_envelope("push-json-number.json"))

    assert response.status_code == 200, response.text
    assert mixpanel.requests == []
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].data == _message_data("push-json-number.json")
    assert dead[0].attributes["error"] == "invalid_event"
    assert "number" in dead[0].attributes["error_detail"]


@pytest.mark.parametrize("data", [b'"signup"', b"true", b"null"])
def test_json_scalar_is_invalid_event(forwarder, mixpanel, pubsub, data):
    response = forwarder.push(envelope_for(data))

    assert response.status_code == 200, response.text
    assert mixpanel.requests == []
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].data == data
    assert dead[0].attributes["error"] == "invalid_event"


def test_deeply_nested_line_is_invalid_json(forwarder, mixpanel, pubsub):
    nested = b"[" * 100_000
    data = ndjson([make_event(0)]) + b"\n" + nested

    response = forwarder.push(envelope_for(data))

    assert response.status_code == 200, response.text
    assert stored_insert_ids(mixpanel) == ["id-0"]
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].data == nested
    assert dead[0].attributes["error"] == "invalid_json"


def test_array_element_nested_1000_levels_dead_lettered(forwarder, mixpanel, pubsub):
    # orjson parses it, and writing it back needs a raised recursion limit,
    # as would json.loads on Python 3.11, so the test builds the text itself.
    deep = "[" * 1000 + "]" * 1000
    compact = json.dumps(make_event(1), separators=(",", ":"))
    event = compact.replace('"properties":{', '"properties":{"deep":' + deep + ",", 1)
    data = f"[{json.dumps(make_event(0))}, {event}]".encode()

    response = forwarder.push(envelope_for(data))

    assert response.status_code == 200, response.text
    assert stored_insert_ids(mixpanel) == ["id-0"]
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].attributes["error"] == "invalid_event"
    assert dead[0].data == event.encode()


# Messages of events


def test_array_of_events_imported_in_order(forwarder, mixpanel, pubsub):
    events = [make_event(number) for number in range(3)]

    response = forwarder.push(envelope_for(json.dumps(events).encode()))

    assert response.status_code == 200, response.text
    assert stored_insert_ids(mixpanel) == ["id-0", "id-1", "id-2"]
    assert pubsub.published(DEAD_LETTER_TOPIC) == []


def test_empty_array_acknowledged(forwarder, mixpanel, pubsub):
    response = forwarder.push(envelope_for(b"[]"))

    assert response.status_code == 200, response.text
    assert response.json()["received"] == 0
    assert mixpanel.requests == []
    assert pubsub.published(DEAD_LETTER_TOPIC) == []


def test_pretty_object_dead_lettered_on_one_line(forwarder, mixpanel, pubsub):
    event = {"event": "signup", "properties": {"time": 1764583200}}
    data = json.dumps(event, indent=2).encode()

    response = forwarder.push(envelope_for(data))

    assert response.status_code == 200, response.text
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert b"\n" not in dead[0].data
    assert json.loads(dead[0].data) == event
    assert "distinct_id" in dead[0].attributes["error_detail"]


def test_no_attributes_imported(forwarder, mixpanel, pubsub):
    response = forwarder.push(load_envelope("push-no-attributes.json"))

    assert response.status_code == 200, response.text
    assert stored_insert_ids(mixpanel) == ["no-attributes-1"]
    assert pubsub.published(DEAD_LETTER_TOPIC) == []


def test_no_attributes_dead_letter_has_own_only(forwarder, pubsub):
    envelope = envelope_for(b"{broken", attributes={})
    del envelope["message"]["attributes"]

    response = forwarder.push(envelope)

    assert response.status_code == 200, response.text
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert set(dead[0].attributes) == OWN_ATTRIBUTES
    assert dead[0].attributes["source_subscription"] == SUBSCRIPTION


def test_lone_surrogate_line_is_invalid_event(forwarder, mixpanel, pubsub):
    bad = (
        b'{"event": "signup", "properties": {"distinct_id": "u-1", "name": "\\ud800"}}'
    )
    data = ndjson([make_event(0)]) + b"\n" + bad

    response = forwarder.push(envelope_for(data))

    assert response.status_code == 200, response.text
    assert stored_insert_ids(mixpanel) == ["id-0"]
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].data == bad
    assert dead[0].attributes["error"] == "invalid_event"
    assert "'properties.name' is not valid UTF-8" in dead[0].attributes["error_detail"]


def test_lone_surrogate_array_element_escaped(forwarder, mixpanel, pubsub):
    bad = b'{"event": "signup", "properties": {"distinct_id": "u-1", "\\udc00": 1}}'
    data = b"[" + json.dumps(make_event(0)).encode() + b"," + bad + b"]"

    response = forwarder.push(envelope_for(data))

    assert response.status_code == 200, response.text
    assert stored_insert_ids(mixpanel) == ["id-0"]
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert json.loads(dead[0].data) == json.loads(bad)
    assert dead[0].attributes["error"] == "invalid_event"


def test_future_times_checked_with_allowance(forwarder, mixpanel, pubsub):
    # A day ahead is past the 5-minute allowance and never sent. A minute
    # ahead is within it, so the stand-in decides and rejects it.
    now = int(time.time())
    far = make_event(1, time=now + 86_400)
    near = make_event(2, time=now + 60)
    events = [make_event(0), far, near]

    response = forwarder.push(envelope_for(ndjson(events)))

    assert response.status_code == 200, response.text
    assert [len(request.events) for request in mixpanel.requests] == [2]
    assert stored_insert_ids(mixpanel) == ["id-0"]
    dead = {m.attributes["error"]: m for m in pubsub.published(DEAD_LETTER_TOPIC)}
    assert set(dead) == {"invalid_event", "rejected"}
    assert dead["invalid_event"].data == json.dumps(far).encode()
    assert "in the future" in dead["invalid_event"].attributes["error_detail"]
    assert dead["rejected"].data == json.dumps(near).encode()
    assert "in the future" in dead["rejected"].attributes["error_detail"]


def test_seconds_and_milliseconds_sent_as_milliseconds(forwarder, mixpanel):
    events = [
        make_event(0, time=1700000000),
        make_event(1, time=1700000000123),
    ]

    response = forwarder.push(envelope_for(ndjson(events)))

    assert response.status_code == 200, response.text
    sent = [event["properties"]["time"] for event in mixpanel.requests[0].events]
    assert sent == [1700000000000, 1700000000123]
    stored = [event["properties"]["time"] for event in mixpanel.imported_events()]
    assert stored == [1700000000000, 1700000000123]


def test_4001_events_sent_as_2000_2000_1(forwarder, mixpanel, pubsub):
    events = [make_event(number) for number in range(4001)]

    response = forwarder.push(envelope_for(ndjson(events)))

    assert response.status_code == 200, response.text
    assert [len(request.events) for request in mixpanel.requests] == [2000, 2000, 1]
    assert stored_insert_ids(mixpanel) == [f"id-{number}" for number in range(4001)]
    assert pubsub.published(DEAD_LETTER_TOPIC) == []


def test_invalid_insert_id_hashed_the_same_twice(forwarder, mixpanel):
    envelope = envelope_for(ndjson([make_event(0, **{"$insert_id": "abc:def-1"})]))

    first = forwarder.push(envelope)
    second = forwarder.push(envelope)

    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    sent = [
        request.events[0]["properties"]["$insert_id"] for request in mixpanel.requests
    ]
    assert len(sent) == 2
    assert INSERT_ID.match(sent[0])
    assert sent[0] == sent[1]
    assert len(mixpanel.imported_events()) == 1


# A message at Pub/Sub's size limit


def _filled_data(size: int) -> tuple[bytes, int]:
    """Return NDJSON of about 1 KB events of exactly `size` bytes, and the count."""
    lines = []
    total = 0
    number = 0
    while True:
        line = json.dumps(make_event(number, note="n" * 900)).encode()
        if total + len(line) + 1 + 1100 > size:
            break
        lines.append(line)
        total += len(line) + 1
        number += 1
    last = make_event(number, note="")
    padding = size - total - len(json.dumps(last).encode())
    lines.append(json.dumps(make_event(number, note="n" * padding)).encode())
    return b"\n".join(lines), number + 1


def test_message_at_size_limit_imported(forwarder, mixpanel, pubsub):
    attributes = {"source": "web"}
    size = MAX_MESSAGE_BYTES - len("source") - len("web")
    data, count = _filled_data(size)

    response = forwarder.push(envelope_for(data, attributes=attributes), timeout=120)

    assert len(data) == size
    assert response.status_code == 200, response.text
    assert response.json()["imported"] == count
    assert stored_insert_ids(mixpanel) == [f"id-{number}" for number in range(count)]
    for request in mixpanel.requests:
        assert len(request.events) <= 2000
        assert len(request.body) <= MAX_BATCH_BYTES
    assert pubsub.published(DEAD_LETTER_TOPIC) == []


def test_undecodable_message_at_limit_in_parts(forwarder, mixpanel, pubsub):
    size = MAX_MESSAGE_BYTES - len("source") - len("web")
    data = b"\xff" + b"x" * (size - 1)

    response = forwarder.push(envelope_for(data, attributes={"source": "web"}))

    assert response.status_code == 200, response.text
    assert mixpanel.requests == []
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert [message.attributes.get("data_part") for message in dead] == ["1/2", "2/2"]
    assert b"".join(message.data for message in dead) == data
    for message in dead:
        assert message.attributes["error"] == "invalid_payload"
        assert message.attributes["source"] == "web"
        assert message.attributes["source_message_id"] == "1000000000000001"
