"""Transform and PII rules in the real function, over HTTP, against the stand-ins.

The function runs with a transform module that the tests write to a temporary
directory and name in FORWARDER_TRANSFORM, so `function/transform.py` stays as
it is. The checks search every Mixpanel request body, the function's log, the
replies and the dead-letter attributes for the values that must not leave.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (
    DATA,
    DEAD_LETTER_TOPIC,
    OLDER_THAN_RETENTION,
    envelope_for,
    function_env,
    make_event,
    ndjson,
    start_function,
    stop_function,
)
from local.function_runner import FunctionProcess
from local.mixpanel_standin import MixpanelStandin
from local.pubsub_standin import PubSubStandin

KEY = "9c41e7a0b2d35f86c1e0a9b8d7f6e5c4b3a29180f7e6d5c4b3a2918076f5e4d3"
EMAIL = "ada.lovelace@example.com"
NAME = "Ada Lovelace"
STREET = "12 Elm Row"
PHONE = "+44 20 7946 0958"
USER_ID = "user-5521"
IP = "203.0.113.9"
DROPPED = (EMAIL, NAME, STREET, IP)
HASHED = (USER_ID, PHONE)

PII_ENV = {
    "PII_DROP_PROPERTIES": "email,name,address.street",
    "PII_HASH_PROPERTIES": "distinct_id,contact.phone",
    "PII_HASH_KEY": KEY,
}

# Returns the record, except that a record marked "explode" raises with
# personal values in the message.
TEST_TRANSFORM = textwrap.dedent(
    """
    def transform(record, context):
        properties = record["properties"]
        if properties.get("explode"):
            raise ValueError(
                f"cannot map {properties['email']} of {properties['distinct_id']}"
            )
        return record
    """
)


def keyed_hash(text: str) -> str:
    return hmac.new(KEY.encode(), text.encode(), hashlib.sha256).hexdigest()


def personal_event(insert_id: str, **properties) -> dict:
    """Return a valid event carrying every personal value of this module."""
    return {
        "event": "signup",
        "properties": {
            "distinct_id": USER_ID,
            "$insert_id": insert_id,
            "time": 1764583200,
            "email": EMAIL,
            "name": NAME,
            "address": {"street": STREET, "city": "Leeds"},
            "contact": {"phone": PHONE},
            "ip": IP,
            "plan": "team",
            **properties,
        },
    }


def transform_dir(parent: Path) -> Path:
    directory = parent / "transforms"
    directory.mkdir()
    (directory / "pii_test_transform.py").write_text(TEST_TRANSFORM, encoding="utf-8")
    return directory


def start(
    mixpanel: MixpanelStandin, pubsub: PubSubStandin, directory: Path, **env: str
) -> FunctionProcess:
    """Start a function with the test transform's directory on its path."""
    overrides = {"PYTHONPATH": str(directory), **env}
    return start_function(
        function_env(mixpanel, pubsub, **overrides), directory / "function.log"
    )


@pytest.fixture(scope="module")
def pii_server(
    mixpanel_server: MixpanelStandin,
    pubsub_server: PubSubStandin,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FunctionProcess]:
    directory = transform_dir(tmp_path_factory.mktemp("pii"))
    server = start(
        mixpanel_server,
        pubsub_server,
        directory,
        FORWARDER_TRANSFORM="pii_test_transform:transform",
        **PII_ENV,
    )
    yield server
    stop_function(server)


@pytest.fixture
def pii(
    pii_server: FunctionProcess, mixpanel: MixpanelStandin, pubsub: PubSubStandin
) -> FunctionProcess:
    """The module's function with both stand-ins emptied."""
    return pii_server


def mixed_message() -> list[dict]:
    """Return one event to import and three that fail at different steps."""
    return [
        personal_event("imported-1"),
        # normalise_event rejects a boolean time.
        personal_event("invalid-1", time=True),
        # The stand-in rejects it as older than the project's retention.
        personal_event("rejected-1", time=OLDER_THAN_RETENTION),
        # The test transform raises for it.
        personal_event("exploded-1", explode=True),
    ]


def test_request_bodies_carry_no_personal_value(pii, mixpanel):
    response = pii.push(envelope_for(ndjson(mixed_message())))

    assert response.status_code == 200, response.text
    assert mixpanel.requests, "nothing was sent to Mixpanel"
    for request in mixpanel.requests:
        for value in (*DROPPED, *HASHED):
            assert value.encode() not in request.body, f"{value!r} was sent"


def test_stored_event_dropped_and_hashed(pii, mixpanel):
    pii.push(envelope_for(ndjson(mixed_message())))

    stored = mixpanel.imported_events()
    assert len(stored) == 1
    properties = stored[0]["properties"]
    assert properties["distinct_id"] == keyed_hash(USER_ID)
    assert properties["contact"] == {"phone": keyed_hash(PHONE)}
    assert properties["address"] == {"city": "Leeds"}
    assert "email" not in properties
    assert "name" not in properties
    assert properties["ip"] == "0"
    assert properties["plan"] == "team"


def test_invalid_dropped_property_imported(pii, mixpanel, pubsub):
    # Nested 4 levels deep, the street alone would make the event invalid.
    deep = {"street": {"line": {"part": {"text": STREET}}}, "city": "Leeds"}

    response = pii.push(envelope_for(ndjson([personal_event("deep-1", address=deep)])))

    assert response.status_code == 200, response.text
    assert pubsub.published(DEAD_LETTER_TOPIC) == []
    stored = mixpanel.imported_events()
    assert len(stored) == 1
    assert stored[0]["properties"]["address"] == {"city": "Leeds"}


def test_log_and_reply_carry_no_personal_value(pii, mixpanel, pubsub):
    before = len(pii.log_text())

    response = pii.push(envelope_for(ndjson(mixed_message())))

    log = pii.log_text()[before:]
    assert "message forwarded" in log
    for value in (*DROPPED, *HASHED, KEY):
        assert value not in log, f"{value!r} is in the function's log"
        assert value not in response.text, f"{value!r} is in the reply"


def test_dead_letter_attributes_carry_no_personal_value(pii, mixpanel, pubsub):
    pii.push(envelope_for(ndjson(mixed_message()), attributes={"source": "web"}))

    dead = pubsub.published(DEAD_LETTER_TOPIC)
    codes = sorted(message.attributes["error"] for message in dead)
    assert codes == ["invalid_event", "rejected", "transform_failed"]
    for message in dead:
        for name, text in message.attributes.items():
            for value in (*DROPPED, *HASHED, KEY):
                assert value not in text, f"{value!r} is in attribute {name}"


def test_dead_letter_data_keeps_record_as_received(pii, mixpanel, pubsub):
    events = mixed_message()

    pii.push(envelope_for(ndjson(events)))

    by_code = {m.attributes["error"]: m.data for m in pubsub.published()}
    assert by_code["invalid_event"] == json.dumps(events[1]).encode()
    assert by_code["rejected"] == json.dumps(events[2]).encode()
    assert by_code["transform_failed"] == json.dumps(events[3]).encode()


def test_transform_exception_dead_lettered(pii, mixpanel, pubsub):
    events = [personal_event("exploded-2", explode=True), personal_event("kept-2")]

    response = pii.push(envelope_for(ndjson(events)))

    assert response.status_code == 200, response.text
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].attributes["error"] == "transform_failed"
    detail = dead[0].attributes["error_detail"]
    assert detail.startswith("ValueError: cannot map [redacted] of [redacted]")
    assert "(at pii_test_transform.py:" in detail
    assert [e["properties"]["$insert_id"] for e in mixpanel.imported_events()] == [
        "kept-2"
    ]


def test_counts_balance_with_failures(pii, mixpanel, pubsub):
    response = pii.push(envelope_for(ndjson(mixed_message())))

    counts = response.json()
    assert counts["received"] == 4
    assert counts["filtered"] == 0
    assert counts["added"] == 0
    assert counts["imported"] == 1
    assert counts["dead_lettered"] == 3


def test_redelivery_hashes_alike(pii, mixpanel):
    envelope = envelope_for(ndjson([personal_event("again-1")]))

    pii.push(envelope)
    pii.push(envelope)

    assert len(mixpanel.requests) == 2
    assert mixpanel.requests[0].body == mixpanel.requests[1].body
    assert len(mixpanel.imported_events()) == 1


def test_default_rules_remove_ip(forwarder, mixpanel):
    event = personal_event("ip-default-1")

    response = forwarder.push(envelope_for(ndjson([event])))

    assert response.status_code == 200, response.text
    assert IP.encode() not in mixpanel.requests[0].body
    assert mixpanel.imported_events()[0]["properties"]["ip"] == "0"


def test_keep_ip_sends_own_address(mixpanel, pubsub, tmp_path):
    server = start(mixpanel, pubsub, transform_dir(tmp_path), PII_KEEP_IP="true")
    without_ip = personal_event("ip-kept-2")
    del without_ip["properties"]["ip"]
    try:
        response = server.push(
            envelope_for(ndjson([personal_event("ip-kept-1"), without_ip]))
        )
    finally:
        stop_function(server)

    assert response.status_code == 200, response.text
    stored = {
        event["properties"]["$insert_id"]: event["properties"]
        for event in mixpanel.imported_events()
    }
    assert stored["ip-kept-1"]["ip"] == IP
    assert stored["ip-kept-2"]["ip"] == "0"


def test_hash_without_key_answers_500(mixpanel, pubsub, tmp_path):
    server = start(
        mixpanel, pubsub, transform_dir(tmp_path), PII_HASH_PROPERTIES="distinct_id"
    )
    try:
        response = server.push(envelope_for(ndjson([personal_event("no-key-1")])))
    finally:
        stop_function(server)

    assert response.status_code == 500
    assert response.json()["variable"] == "PII_HASH_KEY"
    assert mixpanel.requests == []


# The example in-house transform, deployed as the hook.


@pytest.fixture
def inhouse_server(mixpanel, pubsub, tmp_path) -> Iterator[FunctionProcess]:
    server = start(
        mixpanel,
        pubsub,
        transform_dir(tmp_path),
        FORWARDER_TRANSFORM="examples.transforms.inhouse:transform",
        PII_DROP_PROPERTIES="name",
        PII_HASH_PROPERTIES="distinct_id,email",
        PII_HASH_KEY=KEY,
    )
    yield server
    stop_function(server)


def inhouse_envelope() -> dict:
    data = (DATA / "transform" / "inhouse-input.ndjson").read_bytes()
    untyped = b'{"user": "u-1842", "ts": 1764494130000}'
    return envelope_for(
        data.rstrip(b"\n") + b"\n" + untyped,
        attributes={"source": "checkout-service"},
    )


def test_inhouse_events_imported(inhouse_server, mixpanel, pubsub):
    response = inhouse_server.push(inhouse_envelope())

    assert response.status_code == 200, response.text
    names = [event["event"] for event in mixpanel.imported_events()]
    assert names == [
        "Page Viewed",
        "Sign Up",
        "Order Completed",
        "Product Purchased",
        "Product Purchased",
        "Product Purchased",
        "Search Performed",
        "Page Viewed",
    ]
    insert_ids = [e["properties"]["$insert_id"] for e in mixpanel.imported_events()]
    assert len(set(insert_ids)) == len(insert_ids)


def test_inhouse_counts_balance(inhouse_server, mixpanel, pubsub):
    counts = inhouse_server.push(inhouse_envelope()).json()

    assert counts["received"] == 7
    assert counts["filtered"] == 1
    assert counts["added"] == 3
    assert counts["imported"] == 8
    assert counts["dead_lettered"] == 1
    assert (
        counts["received"] + counts["added"]
        == counts["imported"] + counts["dead_lettered"] + counts["filtered"]
    )


def test_inhouse_rules_apply_after_transform(inhouse_server, mixpanel, pubsub):
    inhouse_server.push(inhouse_envelope())

    for request in mixpanel.requests:
        assert b"Ada Lovelace" not in request.body
        assert b"ada.lovelace@example.com" not in request.body
        assert b'"u-1842"' not in request.body
    first = mixpanel.imported_events()[0]["properties"]
    assert first["distinct_id"] == keyed_hash("u-1842")
    assert first["email"] == keyed_hash("ada.lovelace@example.com")
    assert first["source"] == "checkout-service"


def test_inhouse_untyped_record_dead_lettered(inhouse_server, mixpanel, pubsub):
    inhouse_server.push(inhouse_envelope())

    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].attributes["error"] == "transform_failed"
    detail = dead[0].attributes["error_detail"]
    assert detail.startswith("ValueError: record has no 'type'")
    assert dead[0].data == b'{"user": "u-1842", "ts": 1764494130000}'


# No JSON library writes a set. orjson writes a datetime as text, but json
# does not, and the forwarder rejects both alike.
NON_JSON_TRANSFORM = """
import datetime


def transform(record, context):
    if record.get("event") == "bad":
        record["properties"]["tags"] = {value}
        return [record]
    return record
"""


@pytest.mark.parametrize(
    "value", ['{"a", "b"}', "datetime.datetime(2026, 12, 4)"], ids=["set", "datetime"]
)
def test_non_json_value_dead_letters_one_record(mixpanel, pubsub, tmp_path, value):
    directory = tmp_path / "hooks"
    directory.mkdir()
    source = NON_JSON_TRANSFORM.replace("{value}", value)
    (directory / "non_json_hook.py").write_text(source, encoding="utf-8")
    server = start(
        mixpanel, pubsub, directory, FORWARDER_TRANSFORM="non_json_hook:transform"
    )
    good = make_event(1)
    bad = {"event": "bad", "properties": dict(make_event(2)["properties"])}
    try:
        response = server.push(envelope_for(ndjson([good, bad])))
    finally:
        stop_function(server)

    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert response.status_code == 200, response.text
    assert len(mixpanel.imported_events()) == 1
    assert len(dead) == 1
    assert dead[0].attributes["error"] == "transform_failed"
