"""The real function over HTTP, against the Mixpanel and Pub/Sub stand-ins."""

from __future__ import annotations

import base64
import json
import time

from conftest import (
    DATA,
    DEAD_LETTER_TOPIC,
    SA_SECRET,
    SUBSCRIPTION,
    envelope_for,
    function_env,
    load_envelope,
    start_function,
    stop_function,
)
from local.mixpanel_standin import Fault

SEED = (DATA / "seed-events.ndjson").read_bytes()
SEED_EVENTS = [json.loads(line) for line in SEED.splitlines()]


def _event(number: int, **properties) -> dict:
    return {
        "event": "page_view",
        "properties": {
            "distinct_id": f"user-{number}",
            "$insert_id": f"id-{number}",
            "time": 1764583200 + number,
            **properties,
        },
    }


def _ndjson(events: list) -> bytes:
    return b"\n".join(json.dumps(event).encode() for event in events)


def test_seed_events_imported_unchanged(forwarder, mixpanel, pubsub):
    response = forwarder.push(load_envelope("push-seed-events.json"))

    assert response.status_code == 200, response.text
    imported = mixpanel.imported_events()
    assert len(imported) == len(SEED_EVENTS)
    for sent, stored in zip(SEED_EVENTS, imported, strict=True):
        assert stored["properties"]["$insert_id"] == sent["properties"]["$insert_id"]
        # One unit on the wire: the same instant in milliseconds.
        assert stored["properties"]["time"] == sent["properties"]["time"] * 1000
        assert stored["properties"]["distinct_id"] == sent["properties"]["distinct_id"]
    assert pubsub.published(DEAD_LETTER_TOPIC) == []


def test_seed_events_sent_as_one_gzip_request(forwarder, mixpanel):
    forwarder.push(load_envelope("push-seed-events.json"))

    assert len(mixpanel.requests) == 1
    request = mixpanel.requests[0]
    assert request.method == "POST"
    assert request.path == "/import"
    assert request.query.get("strict") == "1"
    assert request.query.get("project_id") == "3141592"
    assert request.headers.get("Content-Encoding") == "gzip"
    assert request.raw_body[:2] == b"\x1f\x8b"


def test_partial_rejection_dead_letters_exactly_failed(forwarder, mixpanel, pubsub):
    events = [_event(0), _event(1), _event(2)]
    body = json.loads((DATA / "mixpanel" / "partial-400-index-1.json").read_text())
    mixpanel.enqueue(
        Fault(
            status=400,
            body=json.dumps(body),
            content_type="application/json",
            store_first=False,
        )
    )

    response = forwarder.push(envelope_for(_ndjson(events)))

    assert response.status_code == 200, response.text
    assert len(mixpanel.requests) == 1, "the accepted events must not be resent"
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert json.loads(dead[0].data) == events[1]
    assert dead[0].attributes["error"] == "rejected"
    failed = body["failed_records"][0]
    assert failed["field"] in dead[0].attributes["error_detail"]
    assert failed["message"] in dead[0].attributes["error_detail"]
    assert dead[0].attributes["source_message_id"] == "1000000000000001"
    assert dead[0].attributes["source_subscription"] == SUBSCRIPTION


def test_503_then_200_imports_each_once(forwarder, mixpanel, pubsub):
    mixpanel.enqueue(
        Fault(
            status=503, body="upstream connect error or disconnect/reset before headers"
        )
    )

    response = forwarder.push(load_envelope("push-seed-events.json"))

    assert response.status_code == 200, response.text
    assert len(mixpanel.requests) == 2
    assert mixpanel.requests[0].body == mixpanel.requests[1].body
    assert len(mixpanel.imported_events()) == len(SEED_EVENTS)
    assert pubsub.published(DEAD_LETTER_TOPIC) == []


def test_unparsable_line_dead_lettered_rest_imported(forwarder, mixpanel, pubsub):
    lines = SEED.splitlines()
    broken = b'{"event": "test_event", "properties": {'
    data = b"\n".join([lines[0], broken, b"", lines[1]])

    response = forwarder.push(envelope_for(data, attributes={"source": "web"}))

    assert response.status_code == 200, response.text
    assert len(mixpanel.imported_events()) == 2
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].data == broken
    assert dead[0].attributes["error"] == "invalid_json"
    assert dead[0].attributes["source"] == "web"
    counts = response.json()
    assert counts["received"] == 3
    assert counts["imported"] == 2
    assert counts["dead_lettered"] == 1
    assert counts["filtered"] == 0
    assert counts["added"] == 0


def test_retry_after_429_sends_identical_bodies(forwarder, mixpanel):
    mixpanel.enqueue(
        Fault(status=429, headers={"Retry-After": "1"}),
        Fault(status=429, headers={"Retry-After": "1"}),
    )

    response = forwarder.push(load_envelope("push-seed-events.json"))

    assert response.status_code == 200, response.text
    assert len(mixpanel.requests) == 3
    bodies = {request.body for request in mixpanel.requests}
    assert len(bodies) == 1


def test_4001_events_make_three_requests(forwarder, mixpanel):
    events = [_event(number) for number in range(4001)]

    response = forwarder.push(envelope_for(_ndjson(events)))

    assert response.status_code == 200, response.text
    sizes = [len(request.events) for request in mixpanel.requests]
    assert sizes == [2000, 2000, 1]
    assert len(mixpanel.imported_events()) == 4001


def test_timeout_after_store_redelivery_counts_once(mixpanel, pubsub, tmp_path):
    # One attempt fits in the deadline, so the timeout goes back to Pub/Sub,
    # which delivers the message a second time.
    env = function_env(
        mixpanel,
        pubsub,
        RETRY_DEADLINE_SECONDS="0.5",
        MIXPANEL_REQUEST_TIMEOUT_SECONDS="1",
    )
    server = start_function(env, tmp_path / "function.log")
    mixpanel.enqueue(Fault(status=200, store_first=True, delay_seconds=2))
    envelope = load_envelope("push-seed-events.json")
    try:
        first = server.push(envelope)
        second = server.push(envelope)
    finally:
        stop_function(server)

    assert first.status_code == 503, first.text
    assert second.status_code == 200, second.text
    assert len(mixpanel.requests) == 2
    assert mixpanel.requests[0].body == mixpanel.requests[1].body
    assert len(mixpanel.imported_events()) == len(SEED_EVENTS)


def test_401_not_dead_lettered(forwarder, mixpanel, pubsub):
    mixpanel.enqueue(
        Fault(
            status=401,
            body='{"code":401,"error":"Invalid credentials","status":"Unauthorized"}',
            content_type="application/json",
        )
    )

    response = forwarder.push(load_envelope("push-seed-events.json"))

    assert response.status_code >= 300
    assert pubsub.published(DEAD_LETTER_TOPIC) == []
    assert SA_SECRET not in response.text
    assert SA_SECRET not in forwarder.log_text()


def test_missing_credential_fails_without_secret(mixpanel, pubsub, tmp_path):
    env = function_env(mixpanel, pubsub, MIXPANEL_SERVICE_ACCOUNT_USERNAME=None)
    server = start_function(env, tmp_path / "function.log")
    try:
        response = server.push(load_envelope("push-seed-events.json"))
    finally:
        stop_function(server)

    assert response.status_code == 500
    errors = [e for e in server.log_entries() if e["severity"] == "ERROR"]
    assert len(errors) == 1
    assert "MIXPANEL_SERVICE_ACCOUNT_USERNAME" in errors[0]["message"]
    assert SA_SECRET not in server.log_text()
    assert SA_SECRET not in response.text
    assert mixpanel.requests == []


def test_not_an_envelope_answers_400(forwarder, mixpanel):
    response = forwarder.push(b'{"hello": "world"}')

    assert response.status_code == 400
    assert mixpanel.requests == []


def test_attributes_only_message_dead_lettered(forwarder, mixpanel, pubsub):
    response = forwarder.push(load_envelope("push-attributes-only.json"))

    assert response.status_code == 200, response.text
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].attributes["error"] == "invalid_payload"
    assert dead[0].attributes["kind"] == "heartbeat"
    assert mixpanel.requests == []


def test_dead_letter_publish_failure_answers_503(forwarder, mixpanel, pubsub):
    pubsub.fail_next(count=1000, status=500)
    data = b"not json at all"

    response = forwarder.push(envelope_for(data))

    assert response.status_code == 503, response.text


def test_logs_are_json_with_message_id(forwarder, mixpanel):
    forwarder.push(load_envelope("push-seed-events.json"))

    entries = [
        entry
        for entry in forwarder.log_entries()
        if entry.get("message_id") == "2070443601311540"
        and entry["message"] == "message forwarded"
    ]
    assert entries, "no summary log line for the message"
    assert entries[-1]["severity"] == "INFO"
    assert entries[-1]["imported"] == len(SEED_EVENTS)
    assert SA_SECRET not in forwarder.log_text()


def test_dead_letter_sent_without_credentials(forwarder, pubsub):
    forwarder.push(envelope_for(b"][", message_id="1000000000000099"))

    publishes = [r for r in pubsub.requests if r.path.endswith(":publish")]
    assert publishes
    assert all("Authorization" not in r.headers for r in publishes)
    assert base64.b64decode(publishes[0].body["messages"][0]["data"]) == b"]["


def test_redelivery_sends_identical_gzip_bytes(forwarder, mixpanel, pubsub):
    envelope = load_envelope("push-seed-events.json")

    first = forwarder.push(envelope)
    # A gzip header may carry a time in whole seconds, which would differ.
    time.sleep(1.1)
    second = forwarder.push(envelope)

    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    assert len(mixpanel.requests) == 2
    assert mixpanel.requests[0].raw_body == mixpanel.requests[1].raw_body
