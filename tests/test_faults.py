"""Faults scripted in the stand-ins, against the real function over HTTP.

Each test checks the function's response, the Mixpanel stand-in's
deduplicated store and the dead-letter records exactly.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate

import pytest

from conftest import (
    DATA,
    DEAD_LETTER_TOPIC,
    OLDER_THAN_RETENTION,
    PROJECT_ID,
    SA_SECRET,
    SA_USERNAME,
    SAMPLE_RETENTION_DAYS,
    SUBSCRIPTION,
    envelope_for,
    function_env,
    log_entries_after,
    make_event,
    ndjson,
    start_function,
    stop_function,
    stored_insert_ids,
)
from local.function_runner import FunctionProcess
from local.mixpanel_standin import Fault, MixpanelStandin

MIXPANEL_DATA = DATA / "mixpanel"
PLAIN_503 = "upstream connect error or disconnect/reset before headers"


def _body(name: str) -> str:
    return (MIXPANEL_DATA / name).read_text(encoding="utf-8")


def _json_fault(status: int, name: str, **options) -> Fault:
    return Fault(
        status=status, body=_body(name), content_type="application/json", **options
    )


def _three_events() -> list[dict]:
    return [make_event(number) for number in range(3)]


def _line(event: dict) -> bytes:
    """Return the NDJSON line that `ndjson` writes for `event`."""
    return json.dumps(event).encode()


class _BrokenHttpServer:
    """A TCP server on 127.0.0.1 that reads each request and closes the connection.

    It sends `reply` before closing. With an empty reply the client gets no
    response at all, and with a response whose body is shorter than its
    Content-Length the client gets a body cut off.
    """

    def __init__(self, reply: bytes) -> None:
        self._reply = reply
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.1)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def __enter__(self) -> _BrokenHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._socket.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            with connection:
                self.connections += 1
                connection.settimeout(2)
                _read_request(connection)
                if self._reply:
                    connection.sendall(self._reply)


def _read_request(connection: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            return
        body += chunk


@pytest.fixture(scope="module")
def short_deadline(
    mixpanel_server: MixpanelStandin, pubsub_server, tmp_path_factory
) -> Iterator[FunctionProcess]:
    """A function whose retry deadline (0.5 s) is shorter than a timeout (1 s)."""
    env = function_env(
        mixpanel_server,
        pubsub_server,
        RETRY_DEADLINE_SECONDS="0.5",
        MIXPANEL_REQUEST_TIMEOUT_SECONDS="1",
    )
    server = start_function(env, tmp_path_factory.mktemp("short") / "function.log")
    yield server
    stop_function(server)


# Retryable responses


def test_429_without_retry_after_retried(forwarder, mixpanel, pubsub):
    mixpanel.enqueue(Fault.rate_limited())

    response = forwarder.push(envelope_for(ndjson(_three_events())))

    assert response.status_code == 200, response.text
    assert len(mixpanel.requests) == 2
    assert mixpanel.requests[0].body == mixpanel.requests[1].body
    assert stored_insert_ids(mixpanel) == ["id-0", "id-1", "id-2"]
    assert pubsub.published(DEAD_LETTER_TOPIC) == []


def test_429_retry_after_twice_sends_same_body(forwarder, mixpanel, pubsub):
    mixpanel.enqueue(
        Fault.rate_limited(retry_after=1), Fault.rate_limited(retry_after=1)
    )

    started = time.monotonic()
    response = forwarder.push(envelope_for(ndjson(_three_events())))
    elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert len(mixpanel.requests) == 3
    assert len({request.body for request in mixpanel.requests}) == 1
    assert elapsed >= 2.0, "Retry-After: 1 was not honoured twice"
    assert stored_insert_ids(mixpanel) == ["id-0", "id-1", "id-2"]
    assert pubsub.published(DEAD_LETTER_TOPIC) == []


def test_retry_after_http_date_honoured(forwarder, mixpanel):
    # An HTTP date has whole seconds, so two seconds ahead is at least one.
    retry_at = formatdate(time.time() + 2, usegmt=True)
    mixpanel.enqueue(Fault(status=429, headers={"Retry-After": retry_at}))

    started = time.monotonic()
    response = forwarder.push(envelope_for(ndjson(_three_events())))
    elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert len(mixpanel.requests) == 2
    assert elapsed >= 1.0


def test_retry_after_past_deadline_responds_503(forwarder, mixpanel, pubsub):
    # The session function's deadline is 8 s, far below the 60 s requested.
    mixpanel.enqueue(Fault.rate_limited(retry_after=60))
    envelope = envelope_for(ndjson(_three_events()))

    started = time.monotonic()
    first = forwarder.push(envelope)
    elapsed = time.monotonic() - started
    second = forwarder.push(envelope)

    assert first.status_code == 503, first.text
    assert elapsed < 5, "the function waited for a Retry-After past its deadline"
    assert second.status_code == 200, second.text
    assert len(mixpanel.requests) == 2
    assert stored_insert_ids(mixpanel) == ["id-0", "id-1", "id-2"]
    assert pubsub.published(DEAD_LETTER_TOPIC) == []


def test_503_plain_text_then_200_imports_once(forwarder, mixpanel, pubsub):
    mixpanel.enqueue(Fault(status=503, body=_body("response-503-plain.txt")))
    log_count = len(forwarder.log_entries())

    response = forwarder.push(envelope_for(ndjson(_three_events())))

    assert response.status_code == 200, response.text
    assert len(mixpanel.requests) == 2
    assert stored_insert_ids(mixpanel) == ["id-0", "id-1", "id-2"]
    assert pubsub.published(DEAD_LETTER_TOPIC) == []
    entries = log_entries_after(forwarder, log_count)
    retries = [entry for entry in entries if "retrying" in entry["message"]]
    assert len(retries) == 1
    assert PLAIN_503 in retries[0]["message"]
    assert [entry for entry in entries if "exception" in entry] == []
    assert [entry for entry in entries if entry["severity"] == "ERROR"] == []


@pytest.mark.parametrize(
    ("status", "name", "content_type"),
    [
        (500, "response-500-plain.txt", "text/plain"),
        (502, "response-502-html.html", "text/html"),
        (503, None, "text/plain"),
        (504, "response-504-plain.txt", "text/plain"),
    ],
)
def test_5xx_bodies_retried(forwarder, mixpanel, pubsub, status, name, content_type):
    body = _body(name) if name else ""
    mixpanel.enqueue(Fault(status=status, body=body, content_type=content_type))

    response = forwarder.push(envelope_for(ndjson(_three_events())))

    assert response.status_code == 200, response.text
    assert [request.status for request in mixpanel.requests] == [status, 200]
    assert mixpanel.requests[0].body == mixpanel.requests[1].body
    assert stored_insert_ids(mixpanel) == ["id-0", "id-1", "id-2"]
    assert pubsub.published(DEAD_LETTER_TOPIC) == []


def test_5xx_past_deadline_then_redelivery(short_deadline, mixpanel, pubsub):
    mixpanel.enqueue(*[Fault(status=503, body=PLAIN_503)] * 100)
    envelope = envelope_for(ndjson(_three_events()))

    first = short_deadline.push(envelope)
    attempts = len(mixpanel.requests)
    stored_after_first = stored_insert_ids(mixpanel)
    mixpanel.reset()
    second = short_deadline.push(envelope)

    assert first.status_code == 503, first.text
    assert attempts > 1, "a 503 was not retried within the deadline"
    assert stored_after_first == []
    assert second.status_code == 200, second.text
    assert stored_insert_ids(mixpanel) == ["id-0", "id-1", "id-2"]
    assert pubsub.published(DEAD_LETTER_TOPIC) == []


def test_timeout_after_store_retried_once(forwarder, mixpanel, pubsub):
    # The session function times out after 1.5 s and retries within 8 s.
    mixpanel.enqueue(Fault(status=200, store_first=True, delay_seconds=2.5))

    response = forwarder.push(envelope_for(ndjson(_three_events())))

    assert response.status_code == 200, response.text
    assert len(mixpanel.requests) == 2
    assert mixpanel.requests[0].body == mixpanel.requests[1].body
    assert stored_insert_ids(mixpanel) == ["id-0", "id-1", "id-2"]
    assert pubsub.published(DEAD_LETTER_TOPIC) == []


def test_timeout_after_store_redelivered_once(short_deadline, mixpanel, pubsub):
    mixpanel.enqueue(Fault(status=200, store_first=True, delay_seconds=2))
    envelope = envelope_for(ndjson(_three_events()))

    first = short_deadline.push(envelope)
    second = short_deadline.push(envelope)

    assert first.status_code == 503, first.text
    assert second.status_code == 200, second.text
    assert len(mixpanel.requests) == 2
    assert mixpanel.requests[0].body == mixpanel.requests[1].body
    assert stored_insert_ids(mixpanel) == ["id-0", "id-1", "id-2"]
    assert pubsub.published(DEAD_LETTER_TOPIC) == []


@pytest.mark.parametrize(
    "reply",
    [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"],
    ids=["closed-without-response", "body-cut-off"],
)
def test_connection_errors_retried(mixpanel_server, pubsub, tmp_path, reply):
    with _BrokenHttpServer(reply) as broken:
        env = function_env(
            mixpanel_server,
            pubsub,
            MIXPANEL_API_URL=broken.url,
            RETRY_DEADLINE_SECONDS="1",
        )
        server = start_function(env, tmp_path / "function.log")
        try:
            response = server.push(envelope_for(ndjson(_three_events())))
        finally:
            stop_function(server)

    assert response.status_code == 503, response.text
    assert broken.connections > 1, "the connection error was not retried"
    assert pubsub.published(DEAD_LETTER_TOPIC) == []
    entries = server.log_entries()
    assert any("connection to Mixpanel failed" in e["message"] for e in entries)
    assert [entry for entry in entries if "exception" in entry] == []


# 400 responses


def test_partial_400_dead_letters_index_1(forwarder, mixpanel, pubsub):
    # Event 1 is older than the stand-in's retention, so storing first keeps
    # events 0 and 2, as Mixpanel does when it sends this body.
    events = _three_events()
    events[1] = make_event(1, time=OLDER_THAN_RETENTION, **{"$insert_id": "x1"})
    mixpanel.enqueue(_json_fault(400, "partial-400-index-1.json", store_first=True))
    failed = json.loads(_body("partial-400-index-1.json"))["failed_records"][0]

    response = forwarder.push(envelope_for(ndjson(events)))

    assert response.status_code == 200, response.text
    assert len(mixpanel.requests) == 1, "the imported events were resent"
    assert stored_insert_ids(mixpanel) == ["id-0", "id-2"]
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].data == _line(events[1])
    assert dead[0].attributes["error"] == "rejected"
    assert dead[0].attributes["error_detail"] == (
        f"{failed['field']}: {failed['message']}"
    )
    assert dead[0].attributes["source_message_id"] == "1000000000000001"
    assert dead[0].attributes["source_subscription"] == SUBSCRIPTION
    assert response.json()["imported"] == 2
    assert response.json()["dead_lettered"] == 1


def test_partial_400_matched_by_dollar_insert_id(forwarder, mixpanel, pubsub):
    events = _three_events()
    events[2] = make_event(2, time=OLDER_THAN_RETENTION, **{"$insert_id": "x2"})
    mixpanel.enqueue(
        _json_fault(400, "response-400-dollar-insert-id.json", store_first=True)
    )

    response = forwarder.push(envelope_for(ndjson(events)))

    assert response.status_code == 200, response.text
    assert len(mixpanel.requests) == 1
    assert stored_insert_ids(mixpanel) == ["id-0", "id-1"]
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].data == _line(events[2])
    assert dead[0].attributes["error_detail"].startswith("time: ")


def test_partial_400_bad_index_uses_insert_id(forwarder, mixpanel, pubsub):
    events = _three_events()
    events[0] = make_event(0, time=OLDER_THAN_RETENTION, **{"$insert_id": "x0"})
    mixpanel.enqueue(
        _json_fault(400, "response-400-index-out-of-range.json", store_first=True)
    )

    response = forwarder.push(envelope_for(ndjson(events)))

    assert response.status_code == 200, response.text
    assert stored_insert_ids(mixpanel) == ["id-1", "id-2"]
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].data == _line(events[0])


def test_400_string_records_dead_letter_all(forwarder, mixpanel, pubsub):
    events = _three_events()
    mixpanel.enqueue(_json_fault(400, "response-400-string-records.json"))
    reason = json.loads(_body("response-400-string-records.json"))["failed_records"]

    response = forwarder.push(envelope_for(ndjson(events)))

    assert response.status_code == 200, response.text
    assert len(mixpanel.requests) == 1
    assert stored_insert_ids(mixpanel) == []
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].data == ndjson(events)
    assert dead[0].attributes["error"] == "rejected"
    assert dead[0].attributes["error_detail"] == reason[0]


@pytest.mark.parametrize(
    ("name", "content_type", "detail"),
    [
        (
            "response-400-no-failed-records.json",
            "application/json",
            "request body is not valid JSON",
        ),
        ("response-400-plain.txt", "text/plain", "Bad Request"),
        (None, "text/plain", "(empty body)"),
    ],
    ids=["json", "plain-text", "empty"],
)
def test_400_without_records_dead_letters_all(
    forwarder, mixpanel, pubsub, name, content_type, detail
):
    events = _three_events()
    body = _body(name) if name else ""
    mixpanel.enqueue(Fault(status=400, body=body, content_type=content_type))

    response = forwarder.push(envelope_for(ndjson(events)))

    assert response.status_code == 200, response.text
    assert len(mixpanel.requests) == 1
    assert stored_insert_ids(mixpanel) == []
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].data == ndjson(events)
    assert dead[0].attributes["error"] == "rejected"
    assert detail in dead[0].attributes["error_detail"]


def test_rejection_detail_redacts_credential(forwarder, mixpanel, pubsub):
    mixpanel.enqueue(Fault(status=400, body=f"credential {SA_SECRET} is not allowed"))

    response = forwarder.push(envelope_for(ndjson(_three_events())))

    assert response.status_code == 200, response.text
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert SA_SECRET not in dead[0].attributes["error_detail"]
    assert "[redacted]" in dead[0].attributes["error_detail"]


# 413 responses


def test_413_splits_request_in_half(forwarder, mixpanel, pubsub):
    events = [make_event(number) for number in range(4)]
    mixpanel.enqueue(_json_fault(413, "response-413.json"))

    response = forwarder.push(envelope_for(ndjson(events)))

    assert response.status_code == 200, response.text
    assert [len(request.events) for request in mixpanel.requests] == [4, 2, 2]
    assert stored_insert_ids(mixpanel) == ["id-0", "id-1", "id-2", "id-3"]
    assert pubsub.published(DEAD_LETTER_TOPIC) == []


def test_413_single_event_dead_lettered(forwarder, mixpanel, pubsub):
    event = make_event(0)
    mixpanel.enqueue(_json_fault(413, "response-413.json"))

    response = forwarder.push(envelope_for(ndjson([event])))

    assert response.status_code == 200, response.text
    assert len(mixpanel.requests) == 1, "a one-event request was sent again"
    assert stored_insert_ids(mixpanel) == []
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].data == _line(event)
    assert dead[0].attributes["error"] == "too_large"
    assert "413" in dead[0].attributes["error_detail"]


def test_413_from_limit_splits_until_fit(pubsub_server, pubsub, tmp_path):
    # The stand-in takes 4 KiB a request while the function sends up to
    # 64 KiB, so requests are split by 413 alone, and the 6 KB event never fits.
    limit = 4096
    events = [make_event(number, note="n" * 250) for number in range(20)]
    events[7] = make_event(7, note="n" * 6000)
    mixpanel = MixpanelStandin(
        project_id=PROJECT_ID,
        service_accounts={SA_USERNAME: SA_SECRET},
        retention_days=SAMPLE_RETENTION_DAYS,
        max_request_bytes=limit,
    )
    with mixpanel:
        env = function_env(mixpanel, pubsub_server, MIXPANEL_MAX_BATCH_BYTES="65536")
        server = start_function(env, tmp_path / "function.log")
        try:
            response = server.push(envelope_for(ndjson(events)))
        finally:
            stop_function(server)
        requests = mixpanel.requests
        stored = stored_insert_ids(mixpanel)

    assert response.status_code == 200, response.text
    assert stored == [f"id-{number}" for number in range(20) if number != 7]
    assert 413 in [request.status for request in requests]
    accepted = [request for request in requests if request.status == 200]
    assert all(len(request.body) <= limit for request in accepted)
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].data == _line(events[7])
    assert dead[0].attributes["error"] == "too_large"


# Credentials and other statuses


def test_401_not_dead_lettered_logged_once(mixpanel_server, mixpanel, pubsub, tmp_path):
    wrong_secret = "wrong-secret-for-this-test"
    env = function_env(
        mixpanel_server, pubsub, MIXPANEL_SERVICE_ACCOUNT_SECRET=wrong_secret
    )
    data = ndjson(_three_events()) + b"\n{not json"
    server = start_function(env, tmp_path / "function.log")
    try:
        responses = [server.push(envelope_for(data)) for _ in range(3)]
    finally:
        stop_function(server)

    assert [response.status_code for response in responses] == [500, 500, 500]
    assert [request.status for request in mixpanel.requests] == [401, 401, 401]
    assert stored_insert_ids(mixpanel) == []
    assert pubsub.published(DEAD_LETTER_TOPIC) == []
    errors = [e for e in server.log_entries() if e["severity"] == "ERROR"]
    assert len(errors) == 1
    assert "credential" in errors[0]["message"]
    assert wrong_secret not in server.log_text()
    assert all(wrong_secret not in response.text for response in responses)


def test_403_not_dead_lettered(forwarder, mixpanel, pubsub):
    mixpanel.enqueue(_json_fault(403, "response-403.json"))

    response = forwarder.push(envelope_for(ndjson(_three_events())))

    assert response.status_code == 500, response.text
    assert len(mixpanel.requests) == 1
    assert stored_insert_ids(mixpanel) == []
    assert pubsub.published(DEAD_LETTER_TOPIC) == []


def test_unknown_status_not_dead_lettered(forwarder, mixpanel, pubsub):
    mixpanel.enqueue(Fault(status=404, body="Not Found"))

    response = forwarder.push(envelope_for(ndjson(_three_events())))

    assert response.status_code == 502, response.text
    assert len(mixpanel.requests) == 1
    assert pubsub.published(DEAD_LETTER_TOPIC) == []


# The dead-letter topic


def test_dead_letter_failure_then_redelivery(short_deadline, mixpanel, pubsub):
    events = _three_events()
    broken = b'{"event": "broken", "properties": {'
    envelope = envelope_for(ndjson(events) + b"\n" + broken)
    pubsub.fail_next(count=100, status=503)

    first = short_deadline.push(envelope)
    dead_after_first = pubsub.published(DEAD_LETTER_TOPIC)
    pubsub.reset()
    pubsub.create_topic(DEAD_LETTER_TOPIC)
    second = short_deadline.push(envelope)

    assert first.status_code == 503, first.text
    assert dead_after_first == []
    assert second.status_code == 200, second.text
    assert stored_insert_ids(mixpanel) == ["id-0", "id-1", "id-2"]
    dead = pubsub.published(DEAD_LETTER_TOPIC)
    assert len(dead) == 1
    assert dead[0].data == broken
    assert dead[0].attributes["error"] == "invalid_json"


def test_import_url_carries_no_event_data(forwarder, mixpanel):
    forwarder.push(envelope_for(ndjson(_three_events())))

    request = mixpanel.requests[0]
    assert request.path == "/import"
    assert request.query == {"strict": "1", "project_id": PROJECT_ID}
    assert request.headers["Authorization"].startswith("Basic ")
    assert len(request.events) == 3
