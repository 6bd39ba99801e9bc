"""Tests for the Pub/Sub REST stand-in, driven over HTTP with requests."""

import base64
import json
from pathlib import Path

import pytest
import requests

from local.pubsub_standin import (
    MAX_MESSAGE_BYTES,
    PublishedMessage,
    PubSubStandin,
)

DATA = Path(__file__).parent / "data" / "pubsub"

EVENTS_TOPIC = "projects/demo-project/topics/mixpanel-events"
DEAD_LETTER_TOPIC = "projects/demo-project/topics/mixpanel-dead-letter"


def load(name: str):
    return json.loads((DATA / name).read_text())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def publish(standin: PubSubStandin, topic: str, body) -> requests.Response:
    return requests.post(
        f"http://{standin.host}/v1/{topic}:publish", json=body, timeout=10
    )


def message(data: bytes = b"payload", **fields) -> dict:
    return {"data": b64(data), **fields}


@pytest.fixture(scope="module")
def server():
    with PubSubStandin(topics=[EVENTS_TOPIC, DEAD_LETTER_TOPIC]) as standin:
        yield standin


@pytest.fixture
def standin(server):
    server.reset()
    yield server
    server.reset()


# Publishing


def test_publish_returns_unique_ids(standin):
    response = publish(standin, EVENTS_TOPIC, load("publish-request.json"))
    message_ids = response.json()["messageIds"]

    assert response.status_code == 200
    assert len(message_ids) == 2
    assert len(set(message_ids)) == 2
    assert all(isinstance(message_id, str) for message_id in message_ids)


def test_publish_stores_decoded_messages(standin):
    request = load("publish-request.json")

    response = publish(standin, EVENTS_TOPIC, request)
    first_id, second_id = response.json()["messageIds"]

    assert standin.published(EVENTS_TOPIC) == [
        PublishedMessage(
            topic=EVENTS_TOPIC,
            data=base64.b64decode(request["messages"][0]["data"]),
            attributes={"source": "web"},
            message_id=first_id,
        ),
        PublishedMessage(
            topic=EVENTS_TOPIC,
            data=base64.b64decode(request["messages"][1]["data"]),
            attributes={"source": "web", "reason": "validation failed"},
            message_id=second_id,
            ordering_key="user-1",
        ),
    ]


def test_published_filters_by_topic(standin):
    publish(standin, EVENTS_TOPIC, {"messages": [message(b"event")]})
    publish(standin, DEAD_LETTER_TOPIC, {"messages": [message(b"dead")]})

    assert [m.data for m in standin.published(EVENTS_TOPIC)] == [b"event"]
    assert [m.data for m in standin.published(DEAD_LETTER_TOPIC)] == [b"dead"]


def test_published_all_topics_in_order(standin):
    publish(standin, EVENTS_TOPIC, {"messages": [message(b"1")]})
    publish(standin, DEAD_LETTER_TOPIC, {"messages": [message(b"2")]})
    publish(standin, EVENTS_TOPIC, {"messages": [message(b"3")]})

    assert [m.data for m in standin.published()] == [b"1", b"2", b"3"]


def test_published_unknown_topic_raises(standin):
    with pytest.raises(KeyError):
        standin.published("projects/demo-project/topics/typo")


def test_message_ids_unique_across_reset(standin):
    first = publish(standin, EVENTS_TOPIC, {"messages": [message()]})
    standin.reset()
    second = publish(standin, DEAD_LETTER_TOPIC, {"messages": [message()]})

    assert first.json()["messageIds"] != second.json()["messageIds"]


def test_unknown_topic_matches_golden(standin):
    response = publish(
        standin, "projects/demo-project/topics/missing", {"messages": [message()]}
    )

    assert response.status_code == 404
    assert response.json() == load("error-topic-not-found.json")


def test_attributes_only_message_accepted(standin):
    response = publish(
        standin, EVENTS_TOPIC, {"messages": [{"attributes": {"kind": "ping"}}]}
    )

    assert response.status_code == 200
    assert standin.published(EVENTS_TOPIC)[0].data == b""
    assert standin.published(EVENTS_TOPIC)[0].attributes == {"kind": "ping"}


def test_snake_case_ordering_key_accepted(standin):
    publish(standin, EVENTS_TOPIC, {"messages": [message(ordering_key="user-7")]})

    assert standin.published(EVENTS_TOPIC)[0].ordering_key == "user-7"


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        pytest.param("-_8=", b"\xfb\xff", id="url-safe"),
        pytest.param("+/8", b"\xfb\xff", id="unpadded"),
        pytest.param("aGVsbG8=", b"hello", id="standard"),
    ],
)
def test_base64_spellings_accepted(standin, encoded, expected):
    response = publish(standin, EVENTS_TOPIC, {"messages": [{"data": encoded}]})

    assert response.status_code == 200
    assert standin.published(EVENTS_TOPIC)[0].data == expected


BOUNDARY_CASES = [
    pytest.param({"messages": [message()] * 1000}, id="1000-messages"),
    pytest.param(
        {"messages": [message(attributes={f"k{i}": "v" for i in range(100)})]},
        id="100-attributes",
    ),
    pytest.param(
        {"messages": [message(attributes={"k" * 256: "v"})]}, id="key-256-bytes"
    ),
    pytest.param(
        {"messages": [message(attributes={"k": "\u00e9" * 512})]},
        id="value-1024-bytes",
    ),
    pytest.param({"messages": [message(attributes={"k": ""})]}, id="empty-value"),
]


@pytest.mark.parametrize("body", BOUNDARY_CASES)
def test_publish_at_limit_accepted(standin, body):
    response = publish(standin, EVENTS_TOPIC, body)

    assert response.status_code == 200
    assert len(standin.published(EVENTS_TOPIC)) == len(body["messages"])


def test_message_at_size_limit_accepted(standin):
    response = publish(
        standin, EVENTS_TOPIC, {"messages": [message(b"x" * MAX_MESSAGE_BYTES)]}
    )

    assert response.status_code == 200
    assert len(standin.published(EVENTS_TOPIC)[0].data) == MAX_MESSAGE_BYTES


# Validation

SIX_MIB = b"x" * (6 * 1024 * 1024)

INVALID_CASES = [
    pytest.param({}, "at least one message", id="no-messages"),
    pytest.param({"messages": []}, "at least one message", id="empty-messages"),
    pytest.param({"messages": {"data": "eA=="}}, "at least one message", id="not-list"),
    pytest.param(
        {"messages": [message()] * 1001}, "maximum of 1000", id="1001-messages"
    ),
    pytest.param({"messages": ["eA=="]}, "JSON object", id="message-not-object"),
    pytest.param(
        {"messages": [message(attribute={"k": "v"})]},
        "unknown field 'attribute'",
        id="unknown-field",
    ),
    pytest.param({"messages": [{}]}, "is empty", id="empty-message"),
    pytest.param({"messages": [{"data": ""}]}, "is empty", id="empty-data"),
    pytest.param(
        {"messages": [{"data": "", "attributes": {}}]}, "is empty", id="empty-both"
    ),
    pytest.param({"messages": [{"data": "not base64!"}]}, "base64", id="bad-chars"),
    pytest.param({"messages": [{"data": "QUJDR"}]}, "base64", id="bad-length"),
    pytest.param({"messages": [{"data": "QQ==QQ=="}]}, "base64", id="inner-padding"),
    pytest.param({"messages": [{"data": 5}]}, "base64", id="data-not-string"),
    pytest.param(
        {"messages": [message(attributes=["k"])]}, "JSON object", id="attrs-list"
    ),
    pytest.param(
        {"messages": [message(attributes={f"k{i}": "v" for i in range(101)})]},
        "maximum of 100",
        id="101-attributes",
    ),
    pytest.param(
        {"messages": [message(attributes={"": "v"})]}, "empty key", id="empty-key"
    ),
    pytest.param(
        {"messages": [message(attributes={"\u00e9" * 129: "v"})]},
        "maximum of 256",
        id="key-258-bytes",
    ),
    pytest.param(
        {"messages": [message(attributes={"k": "v" * 1025})]},
        "maximum of 1024",
        id="value-1025-bytes",
    ),
    pytest.param(
        {"messages": [message(attributes={"k": 5})]},
        "must be a string",
        id="value-not-string",
    ),
    pytest.param(
        {"messages": [message(attributes={"k": "bad \ud800"})]},
        "UTF-8",
        id="value-lone-surrogate",
    ),
    pytest.param(
        {"messages": [message(orderingKey=7)]}, "orderingKey", id="ordering-key-int"
    ),
    pytest.param(
        {"messages": [message(b"x" * (MAX_MESSAGE_BYTES + 1))]},
        "at most 10485760 bytes",
        id="message-over-10mib",
    ),
    pytest.param(
        {"messages": [message(b"x" * MAX_MESSAGE_BYTES, attributes={"k": "v"})]},
        "at most 10485760 bytes",
        id="data-plus-attributes-over-10mib",
    ),
    pytest.param(
        {"messages": [message(SIX_MIB), message(SIX_MIB)]},
        "exceeds the limit of 10485760 bytes",
        id="request-over-10mib",
    ),
]


@pytest.mark.parametrize(("body", "expected_text"), INVALID_CASES)
def test_invalid_publish_rejected(standin, body, expected_text):
    response = publish(standin, EVENTS_TOPIC, body)
    error = response.json()["error"]

    assert response.status_code == 400
    assert error["code"] == 400
    assert error["status"] == "INVALID_ARGUMENT"
    assert expected_text in error["message"]
    assert standin.published(EVENTS_TOPIC) == []


def test_empty_message_matches_golden(standin):
    response = publish(standin, EVENTS_TOPIC, {"messages": [{}]})

    assert response.status_code == 400
    assert response.json() == load("error-empty-message.json")


def test_invalid_json_rejected(standin):
    response = requests.post(
        f"http://{standin.host}/v1/{EVENTS_TOPIC}:publish",
        data=b'{"messages": [',
        headers={"Content-Type": "application/json"},
        timeout=5,
    )

    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_one_bad_message_stores_nothing(standin):
    body = {"messages": [message(b"good"), {"data": "not base64!"}]}

    response = publish(standin, EVENTS_TOPIC, body)

    assert response.status_code == 400
    assert "messages[1]" in response.json()["error"]["message"]
    assert standin.published() == []


# Topics


def test_put_creates_topic(standin):
    name = "projects/demo-project/topics/created-later"

    created = requests.put(f"http://{standin.host}/v1/{name}", json={}, timeout=5)
    published = publish(standin, name, {"messages": [message()]})

    assert created.status_code == 200
    assert created.json() == {"name": name}
    assert published.status_code == 200
    assert len(standin.published(name)) == 1


def test_put_existing_topic_returns_409(standin):
    response = requests.put(f"http://{standin.host}/v1/{EVENTS_TOPIC}", timeout=5)

    assert response.status_code == 409
    assert response.json()["error"]["status"] == "ALREADY_EXISTS"


@pytest.mark.parametrize(
    "topic_id",
    ["ab", "1topic", "goog-topic", "GOOGLE", "has space", "t" * 256],
)
def test_put_invalid_topic_rejected(standin, topic_id):
    response = requests.put(
        f"http://{standin.host}/v1/projects/demo-project/topics/{topic_id}", timeout=5
    )

    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_get_topic(standin):
    found = requests.get(f"http://{standin.host}/v1/{EVENTS_TOPIC}", timeout=5)
    missing = requests.get(
        f"http://{standin.host}/v1/projects/demo-project/topics/missing", timeout=5
    )

    assert found.status_code == 200
    assert found.json() == {"name": EVENTS_TOPIC}
    assert missing.status_code == 404
    assert missing.json() == load("error-topic-not-found.json")


def test_unsupported_method_returns_404(standin):
    response = requests.delete(f"http://{standin.host}/v1/{EVENTS_TOPIC}", timeout=5)

    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


def test_unknown_path_returns_404(standin):
    response = requests.post(
        f"http://{standin.host}/v1/projects/demo-project/subscriptions/s:pull",
        json={"maxMessages": 1},
        timeout=5,
    )

    assert response.status_code == 404


def test_create_topic_method(standin):
    name = "projects/demo-project/topics/from-python"

    standin.create_topic(name)
    standin.create_topic(name)

    assert standin.published(name) == []


@pytest.mark.parametrize(
    "name",
    ["mixpanel-events", "projects/p/topics/", "projects/p/subscriptions/abc"],
)
def test_invalid_topic_name_raises(name):
    with pytest.raises(ValueError):
        PubSubStandin(topics=[name])


def test_reset_restores_topics(standin):
    name = "projects/demo-project/topics/temporary"
    standin.create_topic(name)
    publish(standin, EVENTS_TOPIC, {"messages": [message()]})

    standin.reset()

    assert standin.published(EVENTS_TOPIC) == []
    assert standin.requests == []
    with pytest.raises(KeyError):
        standin.published(name)


# Scripted failures


def test_fail_next_matches_golden(standin):
    standin.fail_next()

    response = publish(standin, EVENTS_TOPIC, {"messages": [message()]})

    assert response.status_code == 503
    assert response.json() == load("error-unavailable.json")
    assert standin.published(EVENTS_TOPIC) == []


def test_fail_next_counts_calls(standin):
    standin.fail_next(count=2)

    statuses = [
        publish(standin, EVENTS_TOPIC, {"messages": [message()]}).status_code
        for _ in range(3)
    ]

    assert statuses == [503, 503, 200]
    assert len(standin.published(EVENTS_TOPIC)) == 1


@pytest.mark.parametrize(
    ("status", "rpc_status"),
    [(429, "RESOURCE_EXHAUSTED"), (500, "INTERNAL"), (504, "DEADLINE_EXCEEDED")],
)
def test_fail_next_status(standin, status, rpc_status):
    standin.fail_next(status=status)

    response = publish(standin, EVENTS_TOPIC, {"messages": [message()]})

    assert response.status_code == status
    assert response.json()["error"]["status"] == rpc_status


def test_fail_next_skips_topic_calls(standin):
    standin.fail_next()

    created = requests.put(
        f"http://{standin.host}/v1/projects/demo-project/topics/during-failure",
        timeout=5,
    )
    published = publish(standin, EVENTS_TOPIC, {"messages": [message()]})

    assert created.status_code == 200
    assert published.status_code == 503


@pytest.mark.parametrize(
    "kwargs",
    [{"count": 0}, {"status": 200}, {"status": 302}, {"status": 600}],
)
def test_fail_next_rejects_invalid_arguments(standin, kwargs):
    with pytest.raises(ValueError):
        standin.fail_next(**kwargs)


# Recording and server lifecycle


def test_request_recorded(standin):
    body = {"messages": [message()]}

    publish(standin, EVENTS_TOPIC, body)
    recorded = standin.requests[0]

    assert recorded.method == "POST"
    assert recorded.path == f"/v1/{EVENTS_TOPIC}:publish"
    assert recorded.body == body
    assert recorded.status == 200


def test_missing_authorization_recorded(standin):
    publish(standin, EVENTS_TOPIC, {"messages": [message()]})

    assert standin.requests[0].has_authorization is False


def test_authorization_recorded(standin):
    requests.post(
        f"http://{standin.host}/v1/{EVENTS_TOPIC}:publish",
        json={"messages": [message()]},
        headers={"Authorization": "Bearer test-access-token"},
        timeout=5,
    )

    assert standin.requests[0].has_authorization is True
    assert standin.requests[0].headers["Authorization"] == "Bearer test-access-token"


def test_requests_property_returns_copy(standin):
    publish(standin, EVENTS_TOPIC, {"messages": [message()]})

    standin.requests.clear()

    assert len(standin.requests) == 1


def test_host_is_loopback(standin):
    assert standin.host == f"127.0.0.1:{standin.port}"


def test_start_twice_raises():
    with PubSubStandin() as standin, pytest.raises(RuntimeError):
        standin.start()


def test_stop_closes_port():
    standin = PubSubStandin(topics=[EVENTS_TOPIC])
    host = standin.start()
    standin.stop()
    standin.stop()

    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{host}/v1/{EVENTS_TOPIC}", timeout=5)


def test_host_before_start_raises():
    with pytest.raises(RuntimeError):
        _ = PubSubStandin().host


# Subscriptions: create, pull, acknowledge, modifyAckDeadline

EVENTS_SUBSCRIPTION = "projects/demo-project/subscriptions/mixpanel-events-pull"
DEAD_LETTER_SUBSCRIPTION = "projects/demo-project/subscriptions/mixpanel-dead-kept"


class FakeClock:
    """A clock that moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def subscription_server(clock):
    with PubSubStandin(
        topics=[EVENTS_TOPIC, DEAD_LETTER_TOPIC],
        subscriptions={
            EVENTS_SUBSCRIPTION: EVENTS_TOPIC,
            DEAD_LETTER_SUBSCRIPTION: DEAD_LETTER_TOPIC,
        },
        clock=clock,
    ) as standin:
        yield standin


@pytest.fixture
def subs(subscription_server):
    subscription_server.reset()
    yield subscription_server
    subscription_server.reset()


def call(standin: PubSubStandin, subscription: str, method: str, body):
    return requests.post(
        f"http://{standin.host}/v1/{subscription}:{method}", json=body, timeout=10
    )


def pull(standin: PubSubStandin, subscription: str, max_messages: int = 10) -> list:
    response = call(standin, subscription, "pull", {"maxMessages": max_messages})
    assert response.status_code == 200, response.text
    return response.json().get("receivedMessages", [])


def test_pull_returns_published_message(subs):
    published = publish(
        subs,
        EVENTS_TOPIC,
        {"messages": [message(b"event", attributes={"source": "web"})]},
    )
    message_id = published.json()["messageIds"][0]

    received = pull(subs, EVENTS_SUBSCRIPTION)

    assert len(received) == 1
    assert received[0]["ackId"]
    assert received[0]["deliveryAttempt"] == 1
    assert received[0]["message"]["messageId"] == message_id
    assert base64.b64decode(received[0]["message"]["data"]) == b"event"
    assert received[0]["message"]["attributes"] == {"source": "web"}
    assert received[0]["message"]["publishTime"].endswith("Z")


def test_pull_leaves_out_empty_fields(subs):
    publish(subs, EVENTS_TOPIC, {"messages": [{"attributes": {"kind": "ping"}}]})
    publish(subs, EVENTS_TOPIC, {"messages": [message(b"no attributes")]})

    first, second = pull(subs, EVENTS_SUBSCRIPTION)

    assert "data" not in first["message"]
    assert "attributes" not in second["message"]
    assert "orderingKey" not in second["message"]


def test_pull_without_messages_returns_empty_object(subs):
    response = call(subs, EVENTS_SUBSCRIPTION, "pull", {"maxMessages": 5})

    assert response.status_code == 200
    assert response.json() == {}


def test_pull_honours_max_messages(subs):
    publish(subs, EVENTS_TOPIC, {"messages": [message(b"%d" % i) for i in range(5)]})

    first = pull(subs, EVENTS_SUBSCRIPTION, max_messages=2)
    rest = pull(subs, EVENTS_SUBSCRIPTION, max_messages=10)

    assert [base64.b64decode(m["message"]["data"]) for m in first] == [b"0", b"1"]
    assert [base64.b64decode(m["message"]["data"]) for m in rest] == [
        b"2",
        b"3",
        b"4",
    ]


@pytest.mark.parametrize(
    "body",
    [{}, {"maxMessages": 0}, {"maxMessages": -1}, {"maxMessages": "5"}, None],
    ids=["missing", "zero", "negative", "string", "no-body"],
)
def test_pull_invalid_max_messages_rejected(subs, body):
    response = call(subs, EVENTS_SUBSCRIPTION, "pull", body)

    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_pull_unknown_subscription_returns_404(subs):
    response = call(
        subs, "projects/demo-project/subscriptions/missing", "pull", {"maxMessages": 1}
    )

    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


def test_unknown_subscription_method_returns_404(subs):
    response = call(subs, EVENTS_SUBSCRIPTION, "seek", {})

    assert response.status_code == 404


def test_pulled_message_hidden_until_deadline(subs, clock):
    publish(subs, EVENTS_TOPIC, {"messages": [message(b"leased")]})
    first = pull(subs, EVENTS_SUBSCRIPTION)

    clock.advance(9.9)
    during_lease = pull(subs, EVENTS_SUBSCRIPTION)
    clock.advance(0.1)
    after_lease = pull(subs, EVENTS_SUBSCRIPTION)

    assert during_lease == []
    assert len(after_lease) == 1
    assert after_lease[0]["deliveryAttempt"] == 2
    assert after_lease[0]["ackId"] != first[0]["ackId"]
    assert after_lease[0]["message"]["messageId"] == first[0]["message"]["messageId"]


def test_acknowledge_removes_message(subs, clock):
    publish(subs, EVENTS_TOPIC, {"messages": [message(b"done")]})
    received = pull(subs, EVENTS_SUBSCRIPTION)

    response = call(
        subs, EVENTS_SUBSCRIPTION, "acknowledge", {"ackIds": [received[0]["ackId"]]}
    )
    clock.advance(60)

    assert response.status_code == 200
    assert response.json() == {}
    assert pull(subs, EVENTS_SUBSCRIPTION) == []
    assert subs.unacknowledged(EVENTS_SUBSCRIPTION) == []


def test_acknowledge_after_deadline_ignored(subs, clock):
    publish(subs, EVENTS_TOPIC, {"messages": [message(b"late")]})
    received = pull(subs, EVENTS_SUBSCRIPTION)
    clock.advance(10)

    response = call(
        subs, EVENTS_SUBSCRIPTION, "acknowledge", {"ackIds": [received[0]["ackId"]]}
    )

    assert response.status_code == 200
    assert [m.data for m in subs.unacknowledged(EVENTS_SUBSCRIPTION)] == [b"late"]
    assert len(pull(subs, EVENTS_SUBSCRIPTION)) == 1


def test_acknowledge_old_ack_id_ignored(subs, clock):
    publish(subs, EVENTS_TOPIC, {"messages": [message(b"twice")]})
    first = pull(subs, EVENTS_SUBSCRIPTION)
    clock.advance(10)
    pull(subs, EVENTS_SUBSCRIPTION)

    call(subs, EVENTS_SUBSCRIPTION, "acknowledge", {"ackIds": [first[0]["ackId"]]})

    assert len(subs.unacknowledged(EVENTS_SUBSCRIPTION)) == 1


@pytest.mark.parametrize(
    "body",
    [{}, {"ackIds": []}, {"ackIds": "ack-1"}, {"ackIds": [1]}, {"ackIds": [""]}],
    ids=["missing", "empty", "string", "number", "empty-id"],
)
def test_acknowledge_invalid_body_rejected(subs, body):
    response = call(subs, EVENTS_SUBSCRIPTION, "acknowledge", body)

    assert response.status_code == 400
    assert "ackIds" in response.json()["error"]["message"]


def test_modify_ack_deadline_zero_releases(subs):
    publish(subs, EVENTS_TOPIC, {"messages": [message(b"release")]})
    received = pull(subs, EVENTS_SUBSCRIPTION)

    response = call(
        subs,
        EVENTS_SUBSCRIPTION,
        "modifyAckDeadline",
        {"ackIds": [received[0]["ackId"]], "ackDeadlineSeconds": 0},
    )
    again = pull(subs, EVENTS_SUBSCRIPTION)

    assert response.status_code == 200
    assert len(again) == 1
    assert again[0]["deliveryAttempt"] == 2


def test_modify_ack_deadline_extends_lease(subs, clock):
    publish(subs, EVENTS_TOPIC, {"messages": [message(b"extend")]})
    received = pull(subs, EVENTS_SUBSCRIPTION)
    call(
        subs,
        EVENTS_SUBSCRIPTION,
        "modifyAckDeadline",
        {"ackIds": [received[0]["ackId"]], "ackDeadlineSeconds": 600},
    )

    clock.advance(599)
    during_lease = pull(subs, EVENTS_SUBSCRIPTION)
    acked = call(
        subs, EVENTS_SUBSCRIPTION, "acknowledge", {"ackIds": [received[0]["ackId"]]}
    )

    assert during_lease == []
    assert acked.status_code == 200
    assert subs.unacknowledged(EVENTS_SUBSCRIPTION) == []


@pytest.mark.parametrize("seconds", [-1, 601, "10", None])
def test_modify_ack_deadline_invalid_seconds_rejected(subs, seconds):
    response = call(
        subs,
        EVENTS_SUBSCRIPTION,
        "modifyAckDeadline",
        {"ackIds": ["ack-1"], "ackDeadlineSeconds": seconds},
    )

    assert response.status_code == 400
    assert "ackDeadlineSeconds" in response.json()["error"]["message"]


def test_publish_fans_out_to_each_subscription(subs):
    second = "projects/demo-project/subscriptions/mixpanel-events-audit"
    subs.create_subscription(second, EVENTS_TOPIC)
    publish(subs, EVENTS_TOPIC, {"messages": [message(b"both")]})

    received = pull(subs, EVENTS_SUBSCRIPTION)
    call(subs, EVENTS_SUBSCRIPTION, "acknowledge", {"ackIds": [received[0]["ackId"]]})

    assert subs.unacknowledged(EVENTS_SUBSCRIPTION) == []
    assert [m.data for m in subs.unacknowledged(second)] == [b"both"]
    assert subs.unacknowledged(DEAD_LETTER_SUBSCRIPTION) == []


def test_subscription_receives_only_later_messages(subs):
    publish(subs, EVENTS_TOPIC, {"messages": [message(b"before")]})
    late = "projects/demo-project/subscriptions/late-subscriber"
    subs.create_subscription(late, EVENTS_TOPIC)
    publish(subs, EVENTS_TOPIC, {"messages": [message(b"after")]})

    assert [m.data for m in subs.unacknowledged(late)] == [b"after"]


def test_put_creates_subscription(subs):
    name = "projects/demo-project/subscriptions/created-by-put"

    created = requests.put(
        f"http://{subs.host}/v1/{name}",
        json={"topic": EVENTS_TOPIC, "ackDeadlineSeconds": 60},
        timeout=5,
    )
    fetched = requests.get(f"http://{subs.host}/v1/{name}", timeout=5)
    publish(subs, EVENTS_TOPIC, {"messages": [message(b"new")]})

    expected = {"name": name, "topic": EVENTS_TOPIC, "ackDeadlineSeconds": 60}
    assert created.status_code == 200
    assert created.json() == expected
    assert fetched.json() == expected
    assert [m.data for m in subs.unacknowledged(name)] == [b"new"]


def test_put_existing_subscription_returns_409(subs):
    response = requests.put(
        f"http://{subs.host}/v1/{EVENTS_SUBSCRIPTION}",
        json={"topic": EVENTS_TOPIC},
        timeout=5,
    )

    assert response.status_code == 409
    assert response.json()["error"]["status"] == "ALREADY_EXISTS"


def test_put_subscription_unknown_topic_returns_404(subs):
    response = requests.put(
        f"http://{subs.host}/v1/projects/demo-project/subscriptions/orphan",
        json={"topic": "projects/demo-project/topics/missing"},
        timeout=5,
    )

    assert response.status_code == 404


@pytest.mark.parametrize(
    ("subscription_id", "body"),
    [
        pytest.param("ok-subscription", {}, id="no-topic"),
        pytest.param("ok-subscription", {"topic": "events"}, id="short-topic"),
        pytest.param(
            "ok-subscription",
            {"topic": EVENTS_TOPIC, "ackDeadlineSeconds": 5},
            id="deadline-5",
        ),
        pytest.param("goog-subscription", {"topic": EVENTS_TOPIC}, id="goog-prefix"),
        pytest.param("ab", {"topic": EVENTS_TOPIC}, id="too-short"),
    ],
)
def test_put_invalid_subscription_rejected(subs, subscription_id, body):
    response = requests.put(
        f"http://{subs.host}/v1/projects/demo-project/subscriptions/{subscription_id}",
        json=body,
        timeout=5,
    )

    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_put_push_subscription_unimplemented(subs):
    response = requests.put(
        f"http://{subs.host}/v1/projects/demo-project/subscriptions/pushed",
        json={
            "topic": EVENTS_TOPIC,
            "pushConfig": {"pushEndpoint": "http://127.0.0.1:9/"},
        },
        timeout=5,
    )

    assert response.status_code == 501
    assert response.json()["error"]["status"] == "UNIMPLEMENTED"


def test_get_missing_subscription_returns_404(subs):
    response = requests.get(
        f"http://{subs.host}/v1/projects/demo-project/subscriptions/missing", timeout=5
    )

    assert response.status_code == 404


def test_create_subscription_method_is_idempotent(subs):
    name = "projects/demo-project/subscriptions/from-python"

    subs.create_subscription(name, EVENTS_TOPIC)
    subs.create_subscription(name, EVENTS_TOPIC)

    assert subs.unacknowledged(name) == []
    with pytest.raises(ValueError):
        subs.create_subscription(name, DEAD_LETTER_TOPIC)
    with pytest.raises(KeyError):
        subs.create_subscription(
            "projects/demo-project/subscriptions/no-topic",
            "projects/demo-project/topics/missing",
        )
    with pytest.raises(ValueError):
        subs.create_subscription(name + "-x", EVENTS_TOPIC, ack_deadline_seconds=601)


def test_unacknowledged_unknown_subscription_raises(subs):
    with pytest.raises(KeyError):
        subs.unacknowledged("projects/demo-project/subscriptions/missing")


def test_reset_restores_subscriptions(subs):
    extra = "projects/demo-project/subscriptions/temporary"
    subs.create_subscription(extra, EVENTS_TOPIC)
    publish(subs, EVENTS_TOPIC, {"messages": [message()]})

    subs.reset()

    assert subs.unacknowledged(EVENTS_SUBSCRIPTION) == []
    with pytest.raises(KeyError):
        subs.unacknowledged(extra)


def test_constructor_rejects_subscription_without_topic():
    with pytest.raises(ValueError):
        PubSubStandin(subscriptions={EVENTS_SUBSCRIPTION: EVENTS_TOPIC})


@pytest.mark.parametrize("method", ["pull", "acknowledge", "modifyAckDeadline"])
def test_fail_next_scripts_subscription_calls(subs, method):
    publish(subs, EVENTS_TOPIC, {"messages": [message(b"kept")]})
    subs.fail_next(status=503, call=method)
    body = {
        "maxMessages": 1,
        "ackIds": ["ack-unknown"],
        "ackDeadlineSeconds": 0,
    }

    failed = call(subs, EVENTS_SUBSCRIPTION, method, body)
    retried = call(subs, EVENTS_SUBSCRIPTION, method, body)

    assert failed.status_code == 503
    assert failed.json()["error"]["status"] == "UNAVAILABLE"
    assert retried.status_code == 200
    assert len(subs.unacknowledged(EVENTS_SUBSCRIPTION)) == 1


def test_fail_next_publish_leaves_pull_alone(subs):
    subs.fail_next(count=1)

    response = call(subs, EVENTS_SUBSCRIPTION, "pull", {"maxMessages": 1})

    assert response.status_code == 200


def test_fail_next_rejects_unknown_call(subs):
    with pytest.raises(ValueError):
        subs.fail_next(call="seek")


def test_cli_creates_topics_and_subscriptions():
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "local.pubsub_standin",
        "--topic",
        "projects/demo/topics/events",
        "--subscription",
        "projects/demo/subscriptions/events-kept=projects/demo/topics/events",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline()
        host = process.stdout.readline().strip().split("=", 1)[1]
        topic = requests.get(f"http://{host}/v1/projects/demo/topics/events", timeout=5)
        subscription = requests.get(
            f"http://{host}/v1/projects/demo/subscriptions/events-kept", timeout=5
        )
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert first.startswith("Pub/Sub stand-in listening on http://127.0.0.1:")
    assert topic.status_code == 200
    assert subscription.json()["topic"] == "projects/demo/topics/events"
