"""Shared fixtures: both stand-ins and the real function under functions-framework."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from local.function_runner import FunctionProcess
from local.mixpanel_standin import MixpanelStandin
from local.pubsub_standin import PubSubStandin

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"

DEAD_LETTER_TOPIC = "projects/test-project/topics/mp-test-dead-letter"
SUBSCRIPTION = "projects/test-project/subscriptions/mp-test-events-push"
SA_USERNAME = "standin-sa.mp-service-account"
SA_SECRET = "standin-sa-secret"
PROJECT_ID = "3141592"
# The sample events date from August 2021, older than the 2 or 5 years a real
# Mixpanel project keeps, so the stand-in is given a longer retention.
SAMPLE_RETENTION_DAYS = 10 * 365

# Short backoffs keep the retry tests fast; the production defaults are 2 s
# doubling up to 60 s.
FAST_RETRY_ENV = {
    "RETRY_DEADLINE_SECONDS": "8",
    "MIXPANEL_REQUEST_TIMEOUT_SECONDS": "1.5",
    "RETRY_INITIAL_BACKOFF_SECONDS": "0.05",
    "RETRY_MAX_BACKOFF_SECONDS": "0.2",
}


@pytest.fixture(scope="session")
def mixpanel_server() -> Iterator[MixpanelStandin]:
    with MixpanelStandin(
        project_id=PROJECT_ID,
        service_accounts={SA_USERNAME: SA_SECRET},
        retention_days=SAMPLE_RETENTION_DAYS,
    ) as server:
        yield server


@pytest.fixture(scope="session")
def pubsub_server() -> Iterator[PubSubStandin]:
    with PubSubStandin(topics=[DEAD_LETTER_TOPIC]) as server:
        yield server


@pytest.fixture
def mixpanel(mixpanel_server: MixpanelStandin) -> MixpanelStandin:
    mixpanel_server.reset()
    return mixpanel_server


@pytest.fixture
def pubsub(pubsub_server: PubSubStandin) -> PubSubStandin:
    pubsub_server.reset()
    pubsub_server.create_topic(DEAD_LETTER_TOPIC)
    return pubsub_server


def start_function(env: Mapping[str, str], log_path: Path) -> FunctionProcess:
    """Start the function with `env`; the caller stops it."""
    server = FunctionProcess(env, log_path)
    server.start()
    return server


def stop_function(server: FunctionProcess) -> None:
    server.stop()


def function_env(
    mixpanel: MixpanelStandin, pubsub: PubSubStandin, **overrides: str
) -> dict[str, str]:
    """Environment for a function that talks to the two stand-ins."""
    env = {
        "MIXPANEL_PROJECT_ID": PROJECT_ID,
        "MIXPANEL_SERVICE_ACCOUNT_USERNAME": SA_USERNAME,
        "MIXPANEL_SERVICE_ACCOUNT_SECRET": SA_SECRET,
        "MIXPANEL_API_URL": mixpanel.url,
        "DEAD_LETTER_TOPIC": DEAD_LETTER_TOPIC,
        "PUBSUB_EMULATOR_HOST": pubsub.host,
        **FAST_RETRY_ENV,
    }
    env.update(overrides)
    return {key: value for key, value in env.items() if value is not None}


@pytest.fixture(scope="session")
def function_server(
    mixpanel_server: MixpanelStandin,
    pubsub_server: PubSubStandin,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FunctionProcess]:
    log_path = tmp_path_factory.mktemp("function") / "function.log"
    server = start_function(function_env(mixpanel_server, pubsub_server), log_path)
    yield server
    stop_function(server)


@pytest.fixture
def forwarder(
    function_server: FunctionProcess, mixpanel: MixpanelStandin, pubsub: PubSubStandin
) -> FunctionProcess:
    """The session's function with both stand-ins emptied."""
    return function_server


def load_envelope(name: str) -> dict:
    return json.loads((DATA / "pubsub" / name).read_text(encoding="utf-8"))


def envelope_for(
    data: bytes | None,
    *,
    message_id: str = "1000000000000001",
    publish_time: str = "2026-12-01T10:00:00.123Z",
    attributes: Mapping[str, str] | None = None,
) -> dict:
    """A push envelope in the same shape as the golden files, around `data`."""
    envelope = load_envelope("push-seed-events.json")
    message = envelope["message"]
    message.update(
        messageId=message_id,
        message_id=message_id,
        publishTime=publish_time,
        publish_time=publish_time,
    )
    if data is None:
        del message["data"]
    else:
        message["data"] = base64.b64encode(data).decode()
    if attributes is not None:
        message["attributes"] = dict(attributes)
    envelope["subscription"] = SUBSCRIPTION
    return envelope


# A time in seconds older than the stand-in's retention but after the
# function's minimum of 1973-03-03T09:46:40Z: the function accepts it and the
# stand-in rejects it, as Mixpanel would.
OLDER_THAN_RETENTION = 100_086_400  # 1973-03-04T09:46:40Z


def make_event(number: int, **properties) -> dict:
    """Return a valid event with `$insert_id` "id-NUMBER" and a time in Dec 2025."""
    return {
        "event": "page_view",
        "properties": {
            "distinct_id": f"user-{number}",
            "$insert_id": f"id-{number}",
            "time": 1764583200 + number,
            **properties,
        },
    }


def ndjson(events: list) -> bytes:
    """Serialise events as newline-delimited JSON, one per line."""
    return b"\n".join(json.dumps(event).encode() for event in events)


def stored_insert_ids(mixpanel: MixpanelStandin) -> list[str]:
    """Return the `$insert_id` of each event the stand-in stored, in stored order."""
    return [event["properties"]["$insert_id"] for event in mixpanel.imported_events()]


def log_entries_after(server: FunctionProcess, count: int) -> list[dict]:
    """Return the function's JSON log lines after the first `count`."""
    return server.log_entries()[count:]
