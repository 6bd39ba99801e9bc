"""The `python -m ops` tools end to end, against the Pub/Sub stand-in.

A stand-in `pulumi` script on PATH prints the stack outputs, and the replay
tests that need the function deliver messages to the real function the way
the push subscription would.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner, Result

from conftest import DEAD_LETTER_TOPIC, ROOT
from forwarder.envelope import parse_push_request
from local.mixpanel_standin import Fault
from local.pubsub_standin import PubSubStandin
from ops.cli import main
from ops.deadletter import LEASE_SECONDS, LeasedReader
from ops.pacing import RateLimiter
from ops.pubsub import PubSubClient

GCP_PROJECT = "test-project"
EVENTS_TOPIC = f"projects/{GCP_PROJECT}/topics/mp-test-events"
DEAD_LETTER_SUBSCRIPTION = f"projects/{GCP_PROJECT}/subscriptions/mp-test-dead-kept"
# A pull subscription in place of the push subscription, which the tests drain
# into the function themselves.
EVENTS_SUBSCRIPTION = f"projects/{GCP_PROJECT}/subscriptions/mp-test-events-push"

STACK_OUTPUTS = {
    "eventsTopic": EVENTS_TOPIC,
    "deadLetterTopic": DEAD_LETTER_TOPIC,
    "deadLetterSubscription": DEAD_LETTER_SUBSCRIPTION,
    "pushSubscription": EVENTS_SUBSCRIPTION,
}

ORIGINAL_TIME = "2026-11-30T08:15:00.250Z"

FAKE_PULUMI = """#!/bin/sh
printf '%s\\n' "$*" >> "$(dirname "$0")/calls.txt"
if [ "$1 $2 $3" != "stack output --json" ]; then
    echo "unexpected arguments: $*" >&2
    exit 2
fi
cat "$(dirname "$0")/outputs.json"
"""


class FakePulumi:
    """The stand-in `pulumi` executable and what it was called with."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.calls_file = directory / "calls.txt"

    def set_outputs(self, outputs: dict) -> None:
        (self.directory / "outputs.json").write_text(json.dumps(outputs))

    def calls(self) -> list[str]:
        if not self.calls_file.exists():
            return []
        return self.calls_file.read_text().splitlines()


@pytest.fixture
def pulumi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePulumi:
    """Run inside a project directory, with a stand-in pulumi on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "pulumi"
    script.write_text(FAKE_PULUMI)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    fake = FakePulumi(bin_dir)
    fake.set_outputs(STACK_OUTPUTS)

    project = tmp_path / "project"
    (project / "infra").mkdir(parents=True)
    (project / "Pulumi.yaml").write_text("name: mixpanel-pubsub\n")
    monkeypatch.chdir(project / "infra")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return fake


@pytest.fixture
def standin(pubsub: PubSubStandin, monkeypatch: pytest.MonkeyPatch) -> PubSubStandin:
    """The session's Pub/Sub stand-in with the stack's topics and subscriptions."""
    pubsub.create_topic(EVENTS_TOPIC)
    pubsub.create_subscription(DEAD_LETTER_SUBSCRIPTION, DEAD_LETTER_TOPIC)
    pubsub.create_subscription(EVENTS_SUBSCRIPTION, EVENTS_TOPIC)
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub.host)
    return pubsub


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def publish(standin: PubSubStandin, topic: str, messages: list[dict]) -> list[str]:
    response = requests.post(
        f"http://{standin.host}/v1/{topic}:publish",
        json={"messages": messages},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["messageIds"]


def dead_letter(
    standin: PubSubStandin, data: bytes, error: str | None = "rejected", **attributes
) -> str:
    """Publish one dead letter as the function (or, without error, Pub/Sub) would."""
    if error is not None:
        attributes = {
            "error": error,
            "error_detail": f"{error} in a test",
            "source_message_id": "1000000000000001",
            "source_subscription": EVENTS_SUBSCRIPTION,
            "source_publish_time": ORIGINAL_TIME,
            **attributes,
        }
    message = {"data": base64.b64encode(data).decode(), "attributes": attributes}
    return publish(standin, DEAD_LETTER_TOPIC, [message])[0]


def pull(standin: PubSubStandin, subscription: str, max_messages: int = 100) -> list:
    response = requests.post(
        f"http://{standin.host}/v1/{subscription}:pull",
        json={"maxMessages": max_messages},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json().get("receivedMessages", [])


def deliver(standin: PubSubStandin, function) -> list[int]:
    """Push every message of the events subscription to the function.

    A 2xx response acknowledges the message, as with a push subscription.
    """
    statuses = []
    for entry in pull(standin, EVENTS_SUBSCRIPTION):
        message = dict(entry["message"])
        message["message_id"] = message["messageId"]
        message["publish_time"] = message["publishTime"]
        envelope = {
            "message": message,
            "subscription": EVENTS_SUBSCRIPTION,
            "deliveryAttempt": entry["deliveryAttempt"],
        }
        response = function.push(envelope)
        statuses.append(response.status_code)
        if 200 <= response.status_code < 300:
            requests.post(
                f"http://{standin.host}/v1/{EVENTS_SUBSCRIPTION}:acknowledge",
                json={"ackIds": [entry["ackId"]]},
                timeout=10,
            )
    return statuses


def calls_to(standin: PubSubStandin, method: str) -> list:
    return [r for r in standin.requests if r.path.endswith(f":{method}")]


# Replay


def test_replay_republishes_and_acknowledges(standin, pulumi):
    dead_letter(standin, b'{"event": "a"}', error="rejected", source="web")
    dead_letter(standin, b"not json", error="invalid_json")

    result = run("replay")

    assert result.exit_code == 0, result.output
    replayed = standin.published(EVENTS_TOPIC)
    assert [m.data for m in replayed] == [b'{"event": "a"}', b"not json"]
    assert replayed[0].attributes == {
        "source": "web",
        "source_publish_time": ORIGINAL_TIME,
    }
    assert standin.unacknowledged(DEAD_LETTER_SUBSCRIPTION) == []
    assert "Replayed 2 messages" in result.stdout
    assert pulumi.calls() == ["stack output --json"]


def test_replay_keeps_pubsub_dead_letter_time(standin, pulumi):
    pubsub_time = "2026-11-29T23:59:59.999+00:00"
    dead_letter(
        standin,
        b'{"event": "b"}',
        error=None,
        source="app",
        CloudPubSubDeadLetterSourceDeliveryCount="10",
        CloudPubSubDeadLetterSourceSubscription="mp-test-events-push",
        CloudPubSubDeadLetterSourceSubscriptionProject=GCP_PROJECT,
        CloudPubSubDeadLetterSourceTopicPublishTime=pubsub_time,
    )

    result = run("replay")

    assert result.exit_code == 0, result.output
    (replayed,) = standin.published(EVENTS_TOPIC)
    assert replayed.attributes == {"source": "app", "source_publish_time": pubsub_time}
    assert "delivery_attempts_exhausted" in result.stdout


def test_replay_publish_failure_keeps_message(standin, pulumi):
    dead_letter(standin, b'{"event": "kept"}')
    standin.fail_next(count=2, status=503)

    result = run("replay", "--retries", "1")

    assert result.exit_code == 1
    assert "still failing after 2 attempts" in result.stderr
    assert standin.published(EVENTS_TOPIC) == []
    assert calls_to(standin, "acknowledge") == []
    assert [m.data for m in standin.unacknowledged(DEAD_LETTER_SUBSCRIPTION)] == [
        b'{"event": "kept"}'
    ]
    # Released, not left leased: a new pull gets the message at once.
    assert len(pull(standin, DEAD_LETTER_SUBSCRIPTION)) == 1


def test_replay_retries_transient_failure(standin, pulumi):
    dead_letter(standin, b'{"event": "retried"}')
    standin.fail_next(count=1, status=503)

    result = run("replay")

    assert result.exit_code == 0, result.output
    assert [m.data for m in standin.published(EVENTS_TOPIC)] == [
        b'{"event": "retried"}'
    ]
    assert standin.unacknowledged(DEAD_LETTER_SUBSCRIPTION) == []


def test_replay_rejected_publish_not_retried(standin, pulumi):
    dead_letter(standin, b'{"event": "forbidden"}')
    standin.fail_next(count=1, status=403)

    result = run("replay")

    assert result.exit_code == 1
    assert "HTTP 403" in result.stderr
    assert len(calls_to(standin, "publish")) == 2, "one dead letter, one replay"
    assert len(standin.unacknowledged(DEAD_LETTER_SUBSCRIPTION)) == 1


def test_replay_acknowledge_failure_keeps_message(standin, pulumi):
    dead_letter(standin, b'{"event": "twice"}')
    standin.fail_next(count=1, status=503, call="acknowledge")

    result = run("replay", "--retries", "0")

    assert result.exit_code == 1
    assert len(standin.published(EVENTS_TOPIC)) == 1
    assert len(standin.unacknowledged(DEAD_LETTER_SUBSCRIPTION)) == 1
    assert "republished but not acknowledged" in result.stdout


def test_replay_limit(standin, pulumi):
    for number in range(5):
        dead_letter(standin, b'{"n": %d}' % number)

    result = run("replay", "--limit", "2")

    assert result.exit_code == 0, result.output
    assert [m.data for m in standin.published(EVENTS_TOPIC)] == [
        b'{"n": 0}',
        b'{"n": 1}',
    ]
    remaining = standin.unacknowledged(DEAD_LETTER_SUBSCRIPTION)
    assert [m.data for m in remaining] == [b'{"n": 2}', b'{"n": 3}', b'{"n": 4}']
    assert len(pull(standin, DEAD_LETTER_SUBSCRIPTION)) == 3


def test_replay_error_filter(standin, pulumi):
    dead_letter(standin, b"rejected-1", error="rejected")
    dead_letter(standin, b"broken", error="invalid_json")
    dead_letter(standin, b"exhausted", error=None, source="app")
    dead_letter(standin, b"rejected-2", error="rejected")

    result = run(
        "replay", "--error", "rejected", "--error", "delivery_attempts_exhausted"
    )

    assert result.exit_code == 0, result.output
    replayed = [m.data for m in standin.published(EVENTS_TOPIC)]
    assert replayed == [b"rejected-1", b"exhausted", b"rejected-2"]
    remaining = standin.unacknowledged(DEAD_LETTER_SUBSCRIPTION)
    assert [m.data for m in remaining] == [b"broken"]
    assert "Left 1 messages that --error excludes" in result.stdout


def test_replay_unknown_error_code_rejected(standin, pulumi):
    result = run("replay", "--error", "rejectd")

    assert result.exit_code == 2
    assert "rejectd" in result.output
    assert calls_to(standin, "pull") == []


def test_replay_dry_run_acknowledges_nothing(standin, pulumi):
    for number in range(3):
        dead_letter(standin, b'{"n": %d}' % number, error="rejected")

    result = run("replay", "--dry-run")

    assert result.exit_code == 0, result.output
    assert "Dry run: 3 messages" in result.stdout
    assert standin.published(EVENTS_TOPIC) == []
    assert calls_to(standin, "acknowledge") == []
    assert len(standin.unacknowledged(DEAD_LETTER_SUBSCRIPTION)) == 3
    releases = [
        r
        for r in calls_to(standin, "modifyAckDeadline")
        if r.body["ackDeadlineSeconds"] == 0
    ]
    assert len(releases) == 1
    assert len(releases[0].body["ackIds"]) == 3
    assert len(pull(standin, DEAD_LETTER_SUBSCRIPTION)) == 3


def test_replay_leaves_parts_of_split_line(standin, pulumi):
    dead_letter(standin, b'{"event": "lo', error="too_large", data_part="1/2")
    dead_letter(standin, b'ng"}', error="too_large", data_part="2/2")

    result = run("replay")

    assert result.exit_code == 0, result.output
    assert standin.published(EVENTS_TOPIC) == []
    assert len(standin.unacknowledged(DEAD_LETTER_SUBSCRIPTION)) == 2
    assert "Left 2 parts" in result.stdout


def test_replay_rate_limit_spaces_requests(standin, pulumi):
    for number in range(4):
        dead_letter(standin, b'{"n": %d}' % number)

    started = time.monotonic()
    result = run("replay", "--rate", "2")
    elapsed = time.monotonic() - started

    assert result.exit_code == 0, result.output
    publishes = [r.body for r in calls_to(standin, "publish") if EVENTS_TOPIC in r.path]
    assert [len(body["messages"]) for body in publishes] == [2, 2]
    assert elapsed >= 1.0, f"4 messages at 2 a second took {elapsed:.2f} s"


def test_replay_twice_never_double_counts(standin, pulumi, forwarder, mixpanel):
    # Neither event has time or $insert_id, so both depend on the publish time.
    events = [
        {"event": "signup", "properties": {"distinct_id": "user-1"}},
        {"event": "login", "properties": {"distinct_id": "user-2", "plan": "pro"}},
    ]
    data = b"\n".join(json.dumps(event).encode() for event in events)
    publish(standin, EVENTS_TOPIC, [{"data": base64.b64encode(data).decode()}])
    original = standin.published(EVENTS_TOPIC)[0]
    rejection = {
        "code": 400,
        "error": "some data points in the request failed validation",
        "failed_records": [
            {"index": 0, "field": "properties.plan", "message": "schema"},
            {"index": 1, "field": "properties.plan", "message": "schema"},
        ],
        "num_records_imported": 0,
        "status": "Bad Request",
    }
    mixpanel.enqueue(
        Fault(400, body=json.dumps(rejection), content_type="application/json")
    )
    assert deliver(standin, forwarder) == [200]
    (dead,) = standin.unacknowledged(DEAD_LETTER_SUBSCRIPTION)
    original_time = dead.attributes["source_publish_time"]

    # The first replay republishes but loses its acknowledgement, so the
    # second replays the same dead letter again.
    standin.fail_next(count=1, status=503, call="acknowledge")
    first = run("replay", "--retries", "0")
    second = run("replay")
    statuses = deliver(standin, forwarder)

    assert original.message_id != dead.message_id
    assert first.exit_code == 1
    assert second.exit_code == 0, second.output
    assert statuses == [200, 200]
    assert standin.unacknowledged(DEAD_LETTER_SUBSCRIPTION) == []
    imports = [r for r in mixpanel.requests if r.status == 200]
    assert len(imports) == 2, "each replayed copy reached Mixpanel"
    assert imports[0].events == imports[1].events
    stored = mixpanel.imported_events()
    assert len(stored) == 2, "the copies were counted once"
    expected_ms = int(datetime.fromisoformat(original_time).timestamp() * 1000)
    assert {e["properties"]["time"] for e in stored} == {expected_ms}


# Export


def test_export_writes_attributes_and_acknowledges_nothing(standin, pulumi, tmp_path):
    first_id = dead_letter(standin, b'{"event": "a"}', error="rejected", source="web")
    second_id = dead_letter(standin, b"\xff\xfe", error="invalid_payload")
    output = tmp_path / "dead.ndjson"

    result = run("export", "--output", str(output))

    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["messageId"] for line in lines] == [first_id, second_id]
    assert lines[0]["attributes"]["error"] == "rejected"
    assert lines[0]["attributes"]["source"] == "web"
    assert lines[0]["attributes"]["source_publish_time"] == ORIGINAL_TIME
    assert lines[0]["text"] == '{"event": "a"}'
    assert base64.b64decode(lines[1]["data"]) == b"\xff\xfe"
    assert lines[1]["text"] is None
    assert lines[1]["publishTime"]
    assert calls_to(standin, "acknowledge") == []
    assert len(standin.unacknowledged(DEAD_LETTER_SUBSCRIPTION)) == 2
    assert len(pull(standin, DEAD_LETTER_SUBSCRIPTION)) == 2
    assert "Exported 2 messages" in result.stdout


def test_export_filter_and_limit(standin, pulumi, tmp_path):
    dead_letter(standin, b"r1", error="rejected")
    dead_letter(standin, b"j1", error="invalid_json")
    dead_letter(standin, b"r2", error="rejected")
    dead_letter(standin, b"r3", error="rejected")
    output = tmp_path / "rejected.ndjson"

    result = run("export", "-o", str(output), "--error", "rejected", "--limit", "2")

    assert result.exit_code == 0, result.output
    texts = [json.loads(line)["text"] for line in output.read_text().splitlines()]
    assert texts == ["r1", "r2"]
    assert len(standin.unacknowledged(DEAD_LETTER_SUBSCRIPTION)) == 4


def test_export_to_stdout(standin, pulumi):
    dead_letter(standin, b'{"event": "a"}')

    result = run("export", "-o", "-")

    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    assert json.loads(line)["text"] == '{"event": "a"}'
    assert "Exported 1 messages" in result.stderr


# Publish


def test_publish_splits_file_into_messages(standin, pulumi, tmp_path):
    lines = [json.dumps({"event": "load", "properties": {"n": n}}) for n in range(7)]
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:]) + "\n")

    result = run(
        "publish",
        str(path),
        "--events-per-message",
        "3",
        "--attribute",
        "source=backfill",
    )

    assert result.exit_code == 0, result.output
    messages = standin.published(EVENTS_TOPIC)
    assert [m.data.decode().split("\n") for m in messages] == [
        lines[0:3],
        lines[3:6],
        lines[6:7],
    ]
    assert all(m.attributes == {"source": "backfill"} for m in messages)
    assert "Published 7 events in 3 messages" in result.stdout


def test_publish_rejects_invalid_line_before_sending(standin, pulumi, tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_text('{"event": "ok"}\n{"event": \n')

    result = run("publish", str(path))

    assert result.exit_code == 1
    assert f"{path}:2" in result.stderr
    assert "--allow-invalid" in result.stderr
    assert standin.published(EVENTS_TOPIC) == []


def test_publish_allow_invalid_sends_line(standin, pulumi, tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_text('{"event": "ok"}\n{"event": \n')

    result = run("publish", str(path), "--allow-invalid")

    assert result.exit_code == 0, result.output
    (message,) = standin.published(EVENTS_TOPIC)
    assert message.data == b'{"event": "ok"}\n{"event": '


def test_publish_rejects_attribute_without_value(standin, pulumi, tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_text('{"event": "ok"}\n')

    result = run("publish", str(path), "--attribute", "source")

    assert result.exit_code == 2
    assert "KEY=VALUE" in result.output
    assert standin.published(EVENTS_TOPIC) == []


# Where the names come from


def test_options_replace_stack_outputs(standin, pulumi):
    other_topic = f"projects/{GCP_PROJECT}/topics/mp-test-other"
    standin.create_topic(other_topic)
    dead_letter(standin, b'{"event": "elsewhere"}')
    pulumi.set_outputs({})

    result = run(
        "replay",
        "--subscription",
        DEAD_LETTER_SUBSCRIPTION,
        "--topic",
        other_topic,
    )

    assert result.exit_code == 0, result.output
    assert len(standin.published(other_topic)) == 1
    assert pulumi.calls() == [], "full names need no stack outputs"


def test_project_option_places_short_ids(standin, pulumi):
    dead_letter(standin, b'{"event": "short"}')

    result = run(
        "replay",
        "--project",
        GCP_PROJECT,
        "--subscription",
        "mp-test-dead-kept",
        "--topic",
        "mp-test-events",
    )

    assert result.exit_code == 0, result.output
    assert len(standin.published(EVENTS_TOPIC)) == 1
    assert pulumi.calls() == []


def test_stack_option_reaches_pulumi(standin, pulumi):
    result = run("replay", "--dry-run", "--stack", "prod")

    assert result.exit_code == 0, result.output
    assert pulumi.calls() == ["stack output --json --stack prod"]


def test_failing_pulumi_reported(standin, pulumi):
    (pulumi.directory / "outputs.json").unlink()

    result = run("replay")

    assert result.exit_code == 2
    assert "pulumi stack output --json" in result.output
    assert calls_to(standin, "pull") == []


def test_missing_stack_output_reported(standin, pulumi):
    pulumi.set_outputs({"eventsTopic": EVENTS_TOPIC})

    result = run("replay")

    assert result.exit_code == 2
    assert "deadLetterSubscription" in result.output
    assert "--subscription" in result.output


def test_outside_project_asks_for_names(standin, tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    monkeypatch.chdir(outside)

    result = run("export", "-o", "-")

    assert result.exit_code == 2
    assert "Pulumi.yaml" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--topic", "projects/p/topics/x"],
        ["--topic", "projects/test-project/subscriptions/x"],
        ["--project", "Bad_Project", "--topic", "mp-test-events"],
        ["--topic", "1starts-with-digit"],
    ],
    ids=["short-project", "wrong-kind", "invalid-project", "invalid-id"],
)
def test_invalid_names_rejected(standin, pulumi, tmp_path, args):
    path = tmp_path / "events.ndjson"
    path.write_text('{"event": "ok"}\n')

    result = run("publish", str(path), *args)

    assert result.exit_code == 2
    assert standin.published(EVENTS_TOPIC) == []


def test_module_runs_as_script(standin, pulumi, tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_text('{"event": "from-a-process"}\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    completed = subprocess.run(
        [sys.executable, "-m", "ops", "publish", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert "Published 1 events in 1 messages" in completed.stdout
    assert [m.data for m in standin.published(EVENTS_TOPIC)] == [
        b'{"event": "from-a-process"}'
    ]


# The function's side of replay


def _push_body(attributes: dict[str, str]) -> bytes:
    return json.dumps(
        {
            "message": {
                "data": base64.b64encode(b"{}").decode(),
                "attributes": attributes,
                "messageId": "42",
                "publishTime": "2026-12-01T10:00:00.000Z",
            },
            "subscription": EVENTS_SUBSCRIPTION,
        }
    ).encode()


def test_function_takes_source_publish_time():
    message = parse_push_request(
        _push_body({"source_publish_time": "2026-11-30T08:15:00.250Z"})
    )

    assert message.publish_time == "2026-11-30T08:15:00.250Z"
    assert message.publish_time_ms == 1796026500250


@pytest.mark.parametrize("value", ["yesterday", "2026-11-30T08:15:00", ""])
def test_function_ignores_invalid_source_publish_time(value):
    message = parse_push_request(_push_body({"source_publish_time": value}))

    assert message.publish_time == "2026-12-01T10:00:00.000Z"
    assert message.publish_time_ms == 1796119200000


def test_publish_rejects_line_too_long(standin, pulumi, tmp_path):
    path = tmp_path / "events.ndjson"
    long_line = b'{"event": "big", "pad": "' + b"x" * (7 * 1024 * 1024) + b'"}'
    path.write_bytes(b'{"event": "ok"}\n' + long_line + b"\n")

    result = run("publish", str(path), "--allow-invalid")

    assert result.exit_code == 1
    assert f"{path}:2" in result.stderr
    assert standin.published(EVENTS_TOPIC) == []


# Pacing and leases


class FakeClock:
    """A clock that moves only when a test advances it or sleeps on it."""

    def __init__(self) -> None:
        self.now = 5000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_rate_limiter_spaces_batches():
    clock = FakeClock()
    limiter = RateLimiter(4, clock=clock, sleep=clock.sleep)

    for _ in range(3):
        limiter.wait(2)

    assert limiter.batch_size(100) == 4
    assert clock.sleeps == [pytest.approx(0.5), pytest.approx(0.5)]


def test_rate_limiter_without_rate_never_sleeps():
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)

    limiter.wait(1000)

    assert limiter.batch_size(100) == 100
    assert clock.sleeps == []


def test_reader_renews_held_leases():
    clock = FakeClock()
    topic = f"projects/{GCP_PROJECT}/topics/lease-test"
    subscription = f"projects/{GCP_PROJECT}/subscriptions/lease-test"
    with PubSubStandin(
        topics=[topic], subscriptions={subscription: topic}, clock=clock
    ) as server:
        publish(server, topic, [{"data": "YQ=="}, {"data": "Yg=="}])
        client = PubSubClient(server.host, retries=0)
        reader = LeasedReader(client, subscription, batch_size=1, clock=clock)
        batches = reader.batches()

        first = next(batches)
        clock.now += LEASE_SECONDS * 0.6
        second = next(batches)
        clock.now += LEASE_SECONDS * 0.6
        during_run = pull(server, subscription)
        reader.release()
        after_release = pull(server, subscription)

    assert [m.data for m in first + second] == [b"a", b"b"]
    assert during_run == [], "a held message came back during the run"
    assert len(after_release) == 2


def test_retries_logged_to_stderr(standin, pulumi):
    dead_letter(standin, b'{"event": "logged"}')
    standin.fail_next(count=1, status=503)

    result = run("replay")

    assert result.exit_code == 0, result.output
    assert "WARNING publish on" in result.stderr
    assert "attempt 1 of 6" in result.stderr
