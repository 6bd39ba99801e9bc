"""Tests for the Mixpanel Import API stand-in, driven over HTTP with requests."""

import gzip
import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from local.mixpanel_standin import MAX_EVENT_BYTES, Fault, MixpanelStandin

DATA = Path(__file__).parent / "data" / "mixpanel"
REPO_ROOT = Path(__file__).parent.parent

# Fixed "now" for the stand-in's clock (2026-05-28T20:26:40Z). The times in
# the golden inputs are relative to it.
NOW = 1_780_000_000
DAY = 86_400

SERVICE_ACCOUNT = ("standin-sa.mp-service-account", "standin-sa-secret")
PROJECT_TOKEN = ("standin-project-token", "")
PROJECT_ID = "3141592"

# The placeholder values Mixpanel rejects as distinct_id and $insert_id.
PLACEHOLDERS = [
    "00000000-0000-0000-0000-000000000000",
    "anon",
    "anonymous",
    "nil",
    "none",
    "null",
    "n/a",
    "na",
    "undefined",
    "unknown",
    "<nil>",
    "0",
    "-1",
    "true",
    "false",
    "[]",
    "{}",
]


def load(name: str):
    return json.loads((DATA / name).read_text())


def make_event(insert_id: str = "evt-0001", **properties) -> dict:
    event_properties = {
        "time": NOW - 60,
        "distinct_id": "user-1",
        "$insert_id": insert_id,
    }
    event_properties.update(properties)
    return {"event": "Signed Up", "properties": event_properties}


def post_import(
    standin: MixpanelStandin,
    events=None,
    *,
    data: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    auth=SERVICE_ACCOUNT,
    timeout: float = 5,
) -> requests.Response:
    if params is None:
        params = {"strict": "1", "project_id": PROJECT_ID}
    return requests.post(
        f"{standin.url}/import",
        params=params,
        auth=auth,
        json=events if data is None else None,
        data=data,
        headers=headers,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def server():
    with MixpanelStandin(clock=lambda: NOW) as standin:
        yield standin


@pytest.fixture
def standin(server):
    server.reset()
    yield server
    server.reset()


# Successful imports


def test_valid_batch_matches_golden(standin):
    response = post_import(standin, load("events-valid.json"))

    assert response.status_code == 200
    assert response.json() == load("response-200.json")


def test_valid_batch_stored_in_order(standin):
    post_import(standin, load("events-valid.json"))

    assert standin.imported_events() == load("events-valid.json")


def test_empty_array_imports_nothing(standin):
    response = post_import(standin, [])

    assert response.status_code == 200
    assert response.json()["num_records_imported"] == 0


def test_ndjson_body_accepted(standin):
    events = load("events-valid.json")
    body = "\n".join(json.dumps(event) for event in events) + "\n"

    response = post_import(
        standin, data=body, headers={"Content-Type": "application/x-ndjson"}
    )

    assert response.status_code == 200
    assert response.json() == load("response-200.json")
    assert standin.imported_events() == events


def test_ndjson_keeps_line_separator_in_string(standin):
    event = make_event(label="before\u2028after")
    body = json.dumps(event, ensure_ascii=False).encode("utf-8")

    response = post_import(
        standin, data=body, headers={"Content-Type": "application/x-ndjson"}
    )

    assert response.status_code == 200
    assert standin.imported_events() == [event]


def test_gzip_body_decompressed(standin):
    body = json.dumps(load("events-valid.json")).encode()
    compressed = gzip.compress(body)

    response = post_import(
        standin,
        data=compressed,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )

    assert response.status_code == 200
    assert standin.requests[0].raw_body == compressed
    assert standin.requests[0].body == body
    assert len(standin.imported_events()) == 3


# Whole-request rejections


def test_bad_gzip_returns_400(standin):
    response = post_import(
        standin,
        data=b"not gzip at all",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )

    assert response.status_code == 400
    assert "gzip" in response.json()["error"]
    assert "failed_records" not in response.json()


def test_unsupported_encoding_returns_400(standin):
    response = post_import(
        standin,
        data=b"[]",
        headers={"Content-Type": "application/json", "Content-Encoding": "br"},
    )

    assert response.status_code == 400
    assert "Content-Encoding" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b'[{"event": ', "application/json", id="truncated-json"),
        pytest.param(b'{"event": "a"}', "application/json", id="object-not-array"),
        pytest.param(b"", "application/json", id="empty-body"),
        pytest.param(b"[NaN]", "application/json", id="nan"),
        pytest.param(b"[\xff]", "application/json", id="invalid-utf8"),
        pytest.param(b'{"event": "a"}\n{"eve', "application/x-ndjson", id="bad-ndjson"),
        pytest.param(b"[]", "text/csv", id="unsupported-type"),
    ],
)
def test_unparseable_body_returns_400(standin, body, content_type):
    response = post_import(standin, data=body, headers={"Content-Type": content_type})

    assert response.status_code == 400
    assert response.json()["code"] == 400
    assert response.json()["status"] == "Bad Request"
    assert "failed_records" not in response.json()
    assert standin.requests[0].events is None


def test_oversized_body_matches_golden():
    events = [make_event(insert_id=f"big-{i}", note="x" * 100) for i in range(10)]

    with MixpanelStandin(clock=lambda: NOW, max_request_bytes=1024) as standin:
        response = post_import(standin, events)
        stored = standin.imported_events()

    assert response.status_code == 413
    assert response.json() == load("response-413.json")
    assert stored == []


def test_gzip_limit_applies_uncompressed():
    body = json.dumps([make_event(note="x" * 2000)]).encode()

    with MixpanelStandin(clock=lambda: NOW, max_request_bytes=1024) as standin:
        response = post_import(
            standin,
            data=gzip.compress(body),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )

    assert len(gzip.compress(body)) < 1024
    assert response.status_code == 413


def test_body_at_limit_accepted():
    body = json.dumps([make_event()])
    body += " " * (1024 - len(body))

    with MixpanelStandin(clock=lambda: NOW, max_request_bytes=1024) as standin:
        response = post_import(
            standin, data=body, headers={"Content-Type": "application/json"}
        )

    assert len(body) == 1024
    assert response.status_code == 200


def test_too_many_events_returns_400():
    events = [make_event(insert_id=f"evt-{i}") for i in range(4)]

    with MixpanelStandin(clock=lambda: NOW, max_events_per_request=3) as standin:
        response = post_import(standin, events)
        stored = standin.imported_events()

    assert response.status_code == 400
    assert "maximum of 3" in response.json()["error"]
    assert "failed_records" not in response.json()
    assert stored == []


def test_max_events_accepted():
    events = [make_event(insert_id=f"evt-{i}") for i in range(3)]

    with MixpanelStandin(clock=lambda: NOW, max_events_per_request=3) as standin:
        response = post_import(standin, events)

    assert response.status_code == 200
    assert response.json()["num_records_imported"] == 3


# Authentication

AUTH_CASES = [
    pytest.param(SERVICE_ACCOUNT, {"project_id": PROJECT_ID}, 200, id="sa"),
    pytest.param(SERVICE_ACCOUNT, {}, 401, id="sa-without-project"),
    pytest.param(SERVICE_ACCOUNT, {"project_id": "999"}, 401, id="sa-other-project"),
    pytest.param(
        (SERVICE_ACCOUNT[0], "wrong"),
        {"project_id": PROJECT_ID},
        401,
        id="sa-wrong-secret",
    ),
    pytest.param(
        ("someone-else", "standin-sa-secret"),
        {"project_id": PROJECT_ID},
        401,
        id="unknown-account",
    ),
    pytest.param(
        (SERVICE_ACCOUNT[0], ""), {"project_id": PROJECT_ID}, 401, id="sa-no-secret"
    ),
    pytest.param(PROJECT_TOKEN, {}, 200, id="token"),
    pytest.param(PROJECT_TOKEN, {"project_id": PROJECT_ID}, 200, id="token-project"),
    pytest.param(PROJECT_TOKEN, {"project_id": "999"}, 401, id="token-other-project"),
    pytest.param((PROJECT_TOKEN[0], "x"), {}, 401, id="token-with-password"),
    pytest.param(("other-token", ""), {}, 401, id="unknown-token"),
    pytest.param(None, {"project_id": PROJECT_ID}, 401, id="no-credentials"),
]


@pytest.mark.parametrize(("auth", "params", "expected_status"), AUTH_CASES)
def test_credentials_checked(standin, auth, params, expected_status):
    response = post_import(
        standin, [make_event()], params={"strict": "1", **params}, auth=auth
    )

    assert response.status_code == expected_status
    assert len(standin.imported_events()) == (1 if expected_status == 200 else 0)


def test_invalid_credentials_match_golden(standin):
    response = post_import(standin, [make_event()], auth=("nobody", "nothing"))

    assert response.status_code == 401
    assert response.json() == load("response-401.json")


def test_bearer_token_rejected(standin):
    response = post_import(
        standin,
        [make_event()],
        auth=None,
        headers={"Authorization": "Bearer standin-sa-secret"},
    )

    assert response.status_code == 401


def test_credentials_checked_before_body(standin):
    response = post_import(
        standin,
        data=b"not json",
        headers={"Content-Type": "application/json"},
        auth=None,
    )

    assert response.status_code == 401


def test_custom_credentials_accepted():
    accounts = {"ci.mp-service-account": "ci-secret"}

    with MixpanelStandin(
        clock=lambda: NOW, project_id="42", service_accounts=accounts
    ) as standin:
        accepted = post_import(
            standin,
            [make_event()],
            params={"project_id": "42"},
            auth=("ci.mp-service-account", "ci-secret"),
        )
        default_rejected = post_import(
            standin, [make_event()], params={"project_id": "42"}
        )

    assert accepted.status_code == 200
    assert default_rejected.status_code == 401


# Strict validation

BIG_STRING = "x" * MAX_EVENT_BYTES

INVALID_CASES = [
    pytest.param(["not", "an", "object"], "", id="not-object"),
    pytest.param({**make_event(), "time": NOW}, "time", id="extra-top-level-key"),
    pytest.param({"properties": make_event()["properties"]}, "event", id="no-name"),
    pytest.param({**make_event(), "event": ""}, "event", id="empty-name"),
    pytest.param({**make_event(), "event": 7}, "event", id="name-not-string"),
    pytest.param({"event": "a"}, "properties", id="no-properties"),
    pytest.param({"event": "a", "properties": []}, "properties", id="properties-list"),
    pytest.param(make_event(time=None), "properties.time", id="time-null"),
    pytest.param(make_event(time=NOW - 0.5), "properties.time", id="time-float"),
    pytest.param(make_event(time=str(NOW)), "properties.time", id="time-string"),
    pytest.param(make_event(time=True), "properties.time", id="time-bool"),
    pytest.param(make_event(time=31_535_999), "properties.time", id="time-1970"),
    pytest.param(make_event(time=-1), "properties.time", id="time-negative"),
    pytest.param(make_event(time=NOW + 1), "properties.time", id="time-future-s"),
    pytest.param(
        make_event(time=NOW * 1000 + 1), "properties.time", id="time-future-ms"
    ),
    pytest.param(
        make_event(time=NOW - 5 * 365 * DAY - 1),
        "properties.time",
        id="time-past-retention",
    ),
    pytest.param(make_event(distinct_id=None), "properties.distinct_id", id="did-null"),
    pytest.param(
        make_event(distinct_id=["a"]), "properties.distinct_id", id="did-list"
    ),
    pytest.param(
        make_event(distinct_id=False), "properties.distinct_id", id="did-bool"
    ),
    pytest.param(
        make_event(**{"$insert_id": ""}), "properties.$insert_id", id="iid-empty"
    ),
    pytest.param(
        make_event(**{"$insert_id": "a" * 37}),
        "properties.$insert_id",
        id="iid-37-chars",
    ),
    pytest.param(
        make_event(**{"$insert_id": "abc_def"}),
        "properties.$insert_id",
        id="iid-underscore",
    ),
    pytest.param(
        make_event(**{"$insert_id": "abc def"}),
        "properties.$insert_id",
        id="iid-space",
    ),
    pytest.param(
        make_event(**{"$insert_id": 12345}), "properties.$insert_id", id="iid-int"
    ),
    pytest.param(
        make_event(**{f"p{i}": i for i in range(252)}),
        "properties",
        id="255-properties",
    ),
    pytest.param(
        make_event(nested={"a": {"b": {"c": {"d": 1}}}}),
        "properties.nested.a.b.c",
        id="object-depth-4",
    ),
    pytest.param(
        make_event(nested=[[[[1]]]]),
        "properties.nested[0][0][0]",
        id="array-depth-4",
    ),
    pytest.param(
        make_event(items=list(range(255))), "properties.items", id="array-255"
    ),
    pytest.param(
        make_event(nested={"items": list(range(255))}),
        "properties.nested.items",
        id="nested-array-255",
    ),
    pytest.param(
        make_event(label="bad \ud800"), "properties.label", id="lone-surrogate"
    ),
    pytest.param(make_event(blob=BIG_STRING), "", id="event-1mib"),
]


@pytest.mark.parametrize(("event", "expected_field"), INVALID_CASES)
def test_invalid_event_reported(standin, event, expected_field):
    response = post_import(standin, [event])
    body = response.json()

    assert response.status_code == 400
    assert body["num_records_imported"] == 0
    assert len(body["failed_records"]) == 1
    assert body["failed_records"][0]["index"] == 0
    assert body["failed_records"][0]["field"] == expected_field
    assert body["failed_records"][0]["message"]
    assert standin.imported_events() == []


@pytest.mark.parametrize(
    "missing", ["time", "distinct_id", "$insert_id"], ids=lambda key: key
)
def test_missing_required_property_reported(standin, missing):
    event = make_event()
    del event["properties"][missing]

    response = post_import(standin, [event])
    failure = response.json()["failed_records"][0]

    assert response.status_code == 400
    assert failure["field"] == f"properties.{missing}"
    assert "required" in failure["message"]


def test_future_time_message(standin):
    response = post_import(standin, [make_event(time=NOW + 60)])
    failure = response.json()["failed_records"][0]

    assert failure["message"] == (
        "'properties.time' is invalid: must not be in the future"
    )
    assert failure["insert_id"] == "evt-0001"


@pytest.mark.parametrize("placeholder", PLACEHOLDERS)
def test_placeholder_distinct_id_rejected(standin, placeholder):
    response = post_import(standin, [make_event(distinct_id=placeholder.upper())])
    failure = response.json()["failed_records"][0]

    assert response.status_code == 400
    assert failure["field"] == "properties.distinct_id"
    assert "placeholder" in failure["message"]


@pytest.mark.parametrize("value", [0, -1], ids=["zero", "minus-one"])
def test_placeholder_integer_distinct_id_rejected(standin, value):
    response = post_import(standin, [make_event(distinct_id=value)])

    assert response.status_code == 400
    assert response.json()["failed_records"][0]["field"] == "properties.distinct_id"


@pytest.mark.parametrize(
    "placeholder",
    [
        value
        for value in PLACEHOLDERS
        if value.replace("-", "").isalnum() and len(value) <= 36
    ],
)
def test_placeholder_insert_id_rejected(standin, placeholder):
    response = post_import(standin, [make_event(**{"$insert_id": placeholder})])
    failure = response.json()["failed_records"][0]

    assert response.status_code == 400
    assert failure["field"] == "properties.$insert_id"
    assert "placeholder" in failure["message"]


VALID_CASES = [
    pytest.param(make_event(distinct_id=""), id="empty-distinct-id"),
    pytest.param(make_event(distinct_id=42), id="integer-distinct-id"),
    pytest.param(make_event(distinct_id="anon-user"), id="placeholder-prefix"),
    pytest.param(make_event(time=NOW), id="time-now"),
    pytest.param(make_event(time=NOW * 1000), id="time-now-ms"),
    pytest.param(make_event(time=NOW - 5 * 365 * DAY), id="time-at-retention"),
    pytest.param(make_event(**{"$insert_id": "A" * 36}), id="iid-36-chars"),
    pytest.param(make_event(**{"$insert_id": "Ab-9"}), id="iid-mixed"),
    pytest.param(make_event(**{f"p{i}": i for i in range(251)}), id="254-properties"),
    pytest.param(make_event(nested={"a": {"b": {"c": 1}}}), id="object-depth-3"),
    pytest.param(make_event(nested=[[[1]]]), id="array-depth-3"),
    pytest.param(make_event(items=list(range(254))), id="array-254"),
    pytest.param(make_event(label="caf\u00e9 \u2603"), id="non-ascii"),
]


@pytest.mark.parametrize("event", VALID_CASES)
def test_valid_event_stored(standin, event):
    response = post_import(standin, [event])

    assert response.status_code == 200
    assert response.json()["num_records_imported"] == 1
    assert standin.imported_events() == [event]


@pytest.mark.parametrize("key", ["$device_id", "$user_id"])
def test_identity_key_replaces_distinct_id(standin, key):
    event = make_event(**{key: "someone"})
    del event["properties"]["distinct_id"]

    response = post_import(standin, [event])

    assert response.status_code == 200
    assert standin.imported_events() == [event]


def test_earliest_time_accepted():
    event = make_event(time=31_536_000)

    with MixpanelStandin(clock=lambda: NOW, retention_days=100 * 365) as standin:
        response = post_import(standin, [event])

    assert response.status_code == 200


def test_retention_days_configurable():
    event = make_event(time=NOW - 3 * DAY)

    with MixpanelStandin(clock=lambda: NOW, retention_days=2) as standin:
        response = post_import(standin, [event])

    assert response.status_code == 400
    assert "retention of 2 days" in response.json()["failed_records"][0]["message"]


def test_mixed_batch_matches_golden(standin):
    response = post_import(standin, load("events-mixed.json"))

    assert response.status_code == 400
    assert response.json() == load("response-400-failed-records.json")


def test_mixed_batch_stores_valid_events(standin):
    post_import(standin, load("events-mixed.json"))
    stored_ids = [e["properties"]["$insert_id"] for e in standin.imported_events()]

    assert stored_ids == ["mixed-0000", "mixed-0004"]


def test_non_strict_skips_invalid_events(standin):
    response = post_import(
        standin, load("events-mixed.json"), params={"project_id": PROJECT_ID}
    )
    stored_ids = [e["properties"]["$insert_id"] for e in standin.imported_events()]

    assert response.status_code == 200
    assert response.json() == {"code": 200, "num_records_imported": 2, "status": "OK"}
    assert stored_ids == ["mixed-0000", "mixed-0004"]


def test_long_strings_truncated(standin):
    event = make_event(note="n" * 300, tags=["t" * 300], meta={"k": "m" * 300})

    response = post_import(standin, [event])
    stored = standin.imported_events()[0]["properties"]

    assert response.status_code == 200
    assert stored["note"] == "n" * 255
    assert stored["tags"] == ["t" * 255]
    assert stored["meta"] == {"k": "m" * 255}


# Deduplication


def test_duplicate_counted_not_stored(standin):
    response = post_import(standin, [make_event(), make_event()])

    assert response.json()["num_records_imported"] == 2
    assert len(standin.imported_events()) == 1


def test_seconds_and_milliseconds_deduplicated(standin):
    in_seconds = make_event(time=NOW - 60)
    in_milliseconds = make_event(time=(NOW - 60) * 1000)

    post_import(standin, [in_seconds, in_milliseconds])

    assert standin.imported_events() == [in_seconds]


def test_retried_batch_not_stored_twice(standin):
    first = post_import(standin, load("events-valid.json"))
    second = post_import(standin, load("events-valid.json"))

    assert first.json() == load("response-200.json")
    assert second.json() == load("response-200.json")
    assert standin.imported_events() == load("events-valid.json")


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param({"$insert_id": "evt-0002"}, id="insert-id"),
        pytest.param({"distinct_id": "user-2"}, id="distinct-id"),
        pytest.param({"time": NOW - 61}, id="time"),
    ],
)
def test_different_dedup_key_stored_separately(standin, changed):
    post_import(standin, [make_event(), make_event(**changed)])

    assert len(standin.imported_events()) == 2


def test_different_event_name_stored_separately(standin):
    renamed = {**make_event(), "event": "Logged In"}

    post_import(standin, [make_event(), renamed])

    assert len(standin.imported_events()) == 2


def test_imported_events_returns_copies(standin):
    post_import(standin, [make_event()])

    standin.imported_events()[0]["properties"]["distinct_id"] = "changed"

    assert standin.imported_events() == [make_event()]


# Routing


def test_other_path_returns_404(standin):
    response = requests.post(f"{standin.url}/track", json=[], timeout=5)

    assert response.status_code == 404
    assert standin.requests[0].status == 404


def test_get_import_returns_405(standin):
    response = requests.get(f"{standin.url}/import", timeout=5)

    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


def test_url_is_loopback(standin):
    assert standin.url == f"http://127.0.0.1:{standin.port}"


# Scripted faults


def test_faults_consumed_in_order(standin):
    standin.enqueue(
        Fault.rate_limited(retry_after=1),
        Fault(503, body="upstream connect error or disconnect/reset before headers"),
    )

    first = post_import(standin, [make_event()])
    second = post_import(standin, [make_event()])
    third = post_import(standin, [make_event()])

    assert first.status_code == 429
    assert first.headers["Retry-After"] == "1"
    assert second.status_code == 503
    assert second.text == "upstream connect error or disconnect/reset before headers"
    assert second.headers["Content-Type"].startswith("text/plain")
    assert third.status_code == 200


def test_rate_limited_fault_matches_golden(standin):
    standin.enqueue(Fault.rate_limited())

    response = post_import(standin, [make_event()])

    assert response.status_code == 429
    assert response.json() == load("response-429.json")
    assert "Retry-After" not in response.headers


def test_fault_stores_nothing(standin):
    standin.enqueue(Fault(500))

    response = post_import(standin, load("events-valid.json"))

    assert response.status_code == 500
    assert response.content == b""
    assert standin.imported_events() == []
    assert standin.requests[0].status == 500
    assert standin.requests[0].events == load("events-valid.json")


def test_store_first_fault_stores_events(standin):
    standin.enqueue(
        Fault(
            502,
            body="<html><body>Bad Gateway</body></html>",
            content_type="text/html",
            store_first=True,
        )
    )

    response = post_import(standin, load("events-valid.json"))

    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text == "<html><body>Bad Gateway</body></html>"
    assert standin.imported_events() == load("events-valid.json")


def test_store_first_fault_still_checks_credentials(standin):
    standin.enqueue(Fault(503, store_first=True))

    response = post_import(standin, [make_event()], auth=("nobody", "nothing"))

    assert response.status_code == 503
    assert standin.imported_events() == []


def test_fault_overrides_credentials_check(standin):
    standin.enqueue(
        Fault(
            401,
            body=json.dumps(load("response-401.json")),
            content_type="application/json",
        )
    )

    response = post_import(standin, [make_event()])

    assert response.status_code == 401
    assert response.json() == load("response-401.json")
    assert standin.imported_events() == []


def test_fault_ignores_other_paths(standin):
    standin.enqueue(Fault(503))

    other = requests.post(f"{standin.url}/track", json=[], timeout=5)
    imported = post_import(standin, [make_event()])

    assert other.status_code == 404
    assert imported.status_code == 503


def test_delayed_fault_times_client_out():
    events = load("events-valid.json")

    with MixpanelStandin(clock=lambda: NOW) as standin:
        standin.enqueue(Fault(504, store_first=True, delay_seconds=5))
        with pytest.raises(requests.Timeout):
            post_import(standin, events, timeout=0.3)
        stored = standin.imported_events()
        recorded = standin.requests

    assert stored == events
    assert recorded[0].status == 504


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"status": 99}, id="status-too-low"),
        pytest.param({"status": 600}, id="status-too-high"),
        pytest.param({"status": 503, "delay_seconds": -1}, id="negative-delay"),
    ],
)
def test_fault_rejects_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        Fault(**kwargs)


# Recording, reset and logging


def test_request_recorded(standin):
    post_import(standin, [make_event()])
    recorded = standin.requests[0]

    assert recorded.method == "POST"
    assert recorded.path == "/import"
    assert recorded.query == {"strict": "1", "project_id": PROJECT_ID}
    assert recorded.headers["Authorization"].startswith("Basic ")
    assert recorded.events == [make_event()]
    assert recorded.status == 200


def test_requests_property_returns_copy(standin):
    post_import(standin, [make_event()])

    standin.requests.clear()

    assert len(standin.requests) == 1


def test_reset_clears_state(standin):
    standin.enqueue(Fault(503, store_first=True), Fault(503))
    post_import(standin, [make_event()])

    standin.reset()
    response = post_import(standin, [make_event(insert_id="evt-0002")])

    assert response.status_code == 200
    assert len(standin.requests) == 1
    assert standin.imported_events() == [make_event(insert_id="evt-0002")]


def test_logs_omit_credentials(standin, caplog):
    caplog.set_level(logging.DEBUG, logger="local")
    invalid = make_event(time=NOW + 5)

    post_import(standin, [make_event(), invalid])
    post_import(standin, [make_event()], auth=(SERVICE_ACCOUNT[0], "wrong-secret"))
    authorization = standin.requests[0].headers["Authorization"]

    assert caplog.records
    assert "standin-sa-secret" not in caplog.text
    assert "wrong-secret" not in caplog.text
    assert authorization.split()[1] not in caplog.text


def test_stop_interrupts_delay():
    standin = MixpanelStandin(clock=lambda: NOW)
    standin.start()
    standin.enqueue(Fault(503, delay_seconds=30))

    with pytest.raises(requests.Timeout):
        post_import(standin, [make_event()], timeout=0.2)
    standin.stop()

    assert standin.requests[0].status == 503


# Command line


def test_cli_serves_until_interrupted():
    process = subprocess.Popen(
        [sys.executable, "-m", "local.mixpanel_standin", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The banner ends with the project token line. Read all of it here,
        # because communicate() skips what readline() has buffered.
        banner = [process.stdout.readline()]
        while banner[-1] and "project token" not in banner[-1]:
            banner.append(process.stdout.readline())
        url = banner[0].split()[-1]
        response = requests.post(
            f"{url}/import",
            params={"strict": "1", "project_id": PROJECT_ID},
            auth=SERVICE_ACCOUNT,
            json=[make_event()],
            timeout=5,
        )
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert url.startswith("http://127.0.0.1:")
    assert response.status_code == 200
    assert "standin-sa.mp-service-account" in "".join(banner)
    assert process.returncode == 0
