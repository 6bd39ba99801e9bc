"""Local stand-in for the Pub/Sub REST API's topic and subscription calls.

It is addressed like the emulator: set PUBSUB_EMULATOR_HOST to the value start()
returns and send the REST calls to http://$PUBSUB_EMULATOR_HOST/v1/. The
stand-in serves topics.create (PUT), topics.get and topics.publish, and for pull
subscriptions subscriptions.create (PUT), subscriptions.get, pull, acknowledge
and modifyAckDeadline. It validates requests against the service's documented
limits and returns errors as Google-style JSON bodies
({"error": {"code", "message", "status"}}).

A message published to a topic goes to every subscription the topic had at
that moment. A pulled message is leased to the puller until its ack deadline
passes, and comes back on a later pull unless it is acknowledged first.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import itertools
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from local._server import LocalServer

logger = logging.getLogger(__name__)

MAX_MESSAGES_PER_REQUEST = 1000
MAX_ATTRIBUTES = 100

# Pub/Sub's default ack deadline, and the range that subscriptions.create and
# modifyAckDeadline accept (0 in modifyAckDeadline releases a message at once).
DEFAULT_ACK_DEADLINE_SECONDS = 10
MIN_ACK_DEADLINE_SECONDS = 10
MAX_ACK_DEADLINE_SECONDS = 600

# The calls that fail_next() can script a failure for.
SCRIPTABLE_CALLS = ("publish", "pull", "acknowledge", "modifyAckDeadline")
MAX_ATTRIBUTE_KEY_BYTES = 256
MAX_ATTRIBUTE_VALUE_BYTES = 1024

# NOTE: Google documents both limits as "10 MB" and the stand-in takes 10 MiB.
# The request limit applies to the decoded data plus attributes of all its
# messages, while the real service measures the serialized request, which is
# slightly larger.
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
MAX_REQUEST_BYTES = 10 * 1024 * 1024

# Topic IDs: 3 to 255 characters, starting with a letter, not starting with "goog".
_TOPIC_ID_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")
_TOPIC_NAME_PATTERN = re.compile(r"projects/([^/]+)/topics/([^/]+)")
# Subscription IDs follow the same rules as topic IDs.
_SUBSCRIPTION_NAME_PATTERN = re.compile(r"projects/([^/]+)/subscriptions/([^/]+)")

# Standard and URL-safe base64, with or without padding, as proto3 JSON accepts.
_BASE64_PATTERN = re.compile(r"[A-Za-z0-9+/\-_]*={0,2}")

# Fields of PubsubMessage in both spellings that proto3 JSON accepts. The
# service ignores messageId and publishTime on publish.
_MESSAGE_FIELDS = frozenset(
    {
        "data",
        "attributes",
        "orderingKey",
        "ordering_key",
        "messageId",
        "message_id",
        "publishTime",
        "publish_time",
    }
)

# google.rpc.Code names for the HTTP statuses that Google APIs map them to.
_RPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_ROUTES = Map(
    [
        Rule(
            "/v1/projects/<project>/topics/<topic>:publish",
            endpoint="publish",
            methods=["POST"],
        ),
        Rule(
            "/v1/projects/<project>/topics/<topic>",
            endpoint="topic",
            methods=["GET", "PUT"],
        ),
        Rule(
            "/v1/projects/<project>/subscriptions/<subscription>:<call>",
            endpoint="subscription_call",
            methods=["POST"],
        ),
        Rule(
            "/v1/projects/<project>/subscriptions/<subscription>",
            endpoint="subscription",
            methods=["GET", "PUT"],
        ),
    ]
)


@dataclass(frozen=True)
class PublishedMessage:
    """One message as published: decoded data, attributes and the assigned id."""

    topic: str
    data: bytes
    attributes: dict[str, str]
    message_id: str
    ordering_key: str = ""


@dataclass(frozen=True)
class PubSubRequest:
    """One request as the stand-in received it, and the status it responded with.

    `body` is the parsed JSON body, or None when the body was empty or not JSON.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int

    @property
    def has_authorization(self) -> bool:
        """Whether the request carried an Authorization header."""
        return "Authorization" in self.headers


@dataclass(frozen=True)
class _StoredMessage:
    sequence: int
    message: PublishedMessage
    publish_time: datetime


@dataclass
class _Delivery:
    """One message's state on one subscription.

    `lease_expires` is the clock time at which a pulled message becomes
    available again, or None while no puller has it leased. `ack_id` belongs
    to the latest pull only, so an ack id from an expired lease matches nothing.
    """

    stored: _StoredMessage
    attempts: int = 0
    ack_id: str | None = None
    lease_expires: float | None = None


@dataclass
class _Subscription:
    """A pull subscription and the messages it has not had acknowledged."""

    name: str
    topic: str
    ack_deadline_seconds: int
    pending: list[_Delivery] = field(default_factory=list)
    leases: dict[str, _Delivery] = field(default_factory=dict)

    def resource(self) -> dict[str, Any]:
        """Return the subscription as the REST API represents it."""
        return {
            "name": self.name,
            "topic": self.topic,
            "ackDeadlineSeconds": self.ack_deadline_seconds,
        }


@dataclass
class _Topic:
    """A topic, its messages in publish order, and its subscriptions.

    Every message enters through append(), which hands it to each subscription
    the topic has at that moment.
    """

    name: str
    messages: list[_StoredMessage] = field(default_factory=list)
    subscriptions: list[_Subscription] = field(default_factory=list)

    def append(self, stored: _StoredMessage) -> None:
        """Add one message to the topic's log and to each of its subscriptions."""
        self.messages.append(stored)
        for subscription in self.subscriptions:
            subscription.pending.append(_Delivery(stored))


@dataclass(frozen=True)
class _NewMessage:
    data: bytes
    attributes: dict[str, str]
    ordering_key: str


class _InvalidArgument(Exception):
    """A request that breaks one of the service's rules."""


class PubSubStandin(LocalServer):
    """Pub/Sub REST stand-in for topics and pull subscriptions, on 127.0.0.1.

    Args:
        topics: full names, projects/P/topics/T, of the topics that exist.
        subscriptions: full subscription names, projects/P/subscriptions/S,
            each mapped to the full name of its topic, which `topics` lists.
        clock: current time in seconds, for ack deadlines; tests can pass
            their own to let a lease expire without waiting.
    """

    def __init__(
        self,
        *,
        topics: Iterable[str] = (),
        subscriptions: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._initial_topics = tuple(topics)
        for name in self._initial_topics:
            _validate_topic_name(name)
        self._initial_subscriptions = dict(subscriptions or {})
        for name, topic in self._initial_subscriptions.items():
            _validate_subscription_name(name)
            if topic not in self._initial_topics:
                raise ValueError(
                    f"subscription {name!r} names topic {topic!r}, which is not "
                    "in the topics argument"
                )

        self._clock = clock
        self._lock = threading.Lock()
        self._topics: dict[str, _Topic] = {}
        self._subscriptions: dict[str, _Subscription] = {}
        self._requests: list[PubSubRequest] = []
        self._pending_failures: dict[str, deque[int]] = {
            call: deque() for call in SCRIPTABLE_CALLS
        }
        self._restore_initial_resources()

        # Ids keep counting across reset(), so an id is never reused.
        self._message_ids = itertools.count(1)
        self._ack_ids = itertools.count(1)
        self._sequence = itertools.count()

    @property
    def host(self) -> str:
        """Value for PUBSUB_EMULATOR_HOST, such as 127.0.0.1:PORT, once started."""
        return self.address()

    def create_topic(self, name: str) -> None:
        """Create topic `name` (projects/P/topics/T), or do nothing if it exists.

        Raises:
            ValueError: the name is not a valid topic name.
        """
        _validate_topic_name(name)
        with self._lock:
            self._topics.setdefault(name, _Topic(name))

    def create_subscription(
        self,
        name: str,
        topic: str,
        ack_deadline_seconds: int = DEFAULT_ACK_DEADLINE_SECONDS,
    ) -> None:
        """Create pull subscription `name` on `topic`, or do nothing if it exists.

        The subscription receives the messages published from now on.

        Raises:
            ValueError: the name or the ack deadline is invalid, or the
                subscription exists on another topic.
            KeyError: `topic` does not exist.
        """
        _validate_subscription_name(name)
        _check_ack_deadline(ack_deadline_seconds)
        with self._lock:
            existing = self._subscriptions.get(name)
            if existing is not None:
                if existing.topic != topic:
                    raise ValueError(
                        f"subscription {name!r} exists on topic {existing.topic!r}, "
                        f"not {topic!r}"
                    )
                return
            if topic not in self._topics:
                raise KeyError(
                    f"topic {topic!r} not found. Create it with create_topic() "
                    "or the topics argument"
                )
            self._add_subscription(name, topic, ack_deadline_seconds)

    def fail_next(
        self, count: int = 1, status: int = 503, call: str = "publish"
    ) -> None:
        """Make the next `count` calls of `call` return `status` and change nothing.

        `call` is one of SCRIPTABLE_CALLS: publish, pull, acknowledge or
        modifyAckDeadline. Each has its own queue of scripted failures.
        """
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an error status (400-599), got {status}")
        if call not in SCRIPTABLE_CALLS:
            raise ValueError(
                f"call must be one of {', '.join(SCRIPTABLE_CALLS)}, got {call!r}"
            )
        with self._lock:
            self._pending_failures[call].extend([status] * count)

    def unacknowledged(self, subscription: str) -> list[PublishedMessage]:
        """Return the messages of `subscription` not yet acknowledged, in order.

        Messages leased to a puller count, because they come back when their
        ack deadline passes.

        Raises:
            KeyError: `subscription` does not exist.
        """
        with self._lock:
            found = self._subscriptions.get(subscription)
            if found is None:
                raise KeyError(
                    f"subscription {subscription!r} not found. Create it with "
                    "create_subscription() or the subscriptions argument"
                )
            return [delivery.stored.message for delivery in found.pending]

    def published(self, topic: str | None = None) -> list[PublishedMessage]:
        """Return the messages published to `topic`, or to all topics, in order.

        Raises:
            KeyError: `topic` does not exist.
        """
        with self._lock:
            if topic is None:
                stored = [m for t in self._topics.values() for m in t.messages]
                stored.sort(key=lambda message: message.sequence)
            elif topic in self._topics:
                stored = list(self._topics[topic].messages)
            else:
                raise KeyError(
                    f"topic {topic!r} not found. Create it with create_topic() "
                    "or the topics argument"
                )
        return [entry.message for entry in stored]

    @property
    def requests(self) -> list[PubSubRequest]:
        """Copy of the list of requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        """Restore the constructor's topics and subscriptions, all empty.

        Recorded requests and scripted failures are cleared too.
        """
        with self._lock:
            self._restore_initial_resources()
            self._requests.clear()
            for failures in self._pending_failures.values():
                failures.clear()

    def handle(self, request: Request) -> Response:
        """Route a request to a topic or subscription call."""
        body = _parse_json(request.get_data())
        try:
            endpoint, args = _ROUTES.bind_to_environ(request.environ).match()
        except HTTPException:
            # An unsupported method gets a 404 as well, so every routing error
            # has the same Google-style body.
            response = _error_response(
                404, f"no such resource or method: {request.method} {request.path}"
            )
        else:
            response = self._dispatch(request.method, endpoint, args, body)

        record = PubSubRequest(
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            body=body,
            status=response.status_code,
        )
        with self._lock:
            self._requests.append(record)
        return response

    def _dispatch(
        self, method: str, endpoint: str, args: dict[str, str], body: Any
    ) -> Response:
        """Call the handler of one routed request."""
        if endpoint in ("publish", "topic"):
            name = f"projects/{args['project']}/topics/{args['topic']}"
            if endpoint == "publish":
                return self._publish(name, body)
            if method == "PUT":
                return self._create_topic(name)
            return self._get_topic(name)

        name = f"projects/{args['project']}/subscriptions/{args['subscription']}"
        if endpoint == "subscription":
            if method == "PUT":
                return self._create_subscription(name, body)
            return self._get_subscription(name)

        call = args["call"]
        if call not in SCRIPTABLE_CALLS or call == "publish":
            return _error_response(404, f"no such method: POST /v1/{name}:{call}")
        failure = self._scripted_failure(call)
        if failure is not None:
            return failure
        if call == "pull":
            return self._pull(name, body)
        if call == "acknowledge":
            return self._acknowledge(name, body)
        return self._modify_ack_deadline(name, body)

    def _scripted_failure(self, call: str) -> Response | None:
        """Return the next scripted failure of `call`, if one is queued."""
        with self._lock:
            queue = self._pending_failures[call]
            status = queue.popleft() if queue else None
        if status is None:
            return None
        logger.info("sending scripted %d response to %s", status, call)
        return _error_response(status, "Scripted failure from the Pub/Sub stand-in")

    def _publish(self, topic_name: str, body: Any) -> Response:
        failure = self._scripted_failure("publish")
        if failure is not None:
            return failure
        with self._lock:
            topic_exists = topic_name in self._topics
        if not topic_exists:
            logger.info("rejected publish to %s: topic not found", topic_name)
            return _error_response(404, "Topic not found")

        try:
            new_messages = _validate_publish_body(body)
        except _InvalidArgument as err:
            logger.info("rejected publish to %s: %s", topic_name, err)
            return _error_response(400, str(err))

        message_ids = self._store(topic_name, new_messages)
        if message_ids is None:
            return _error_response(404, "Topic not found")
        return _json_response(200, {"messageIds": message_ids})

    def _store(
        self, topic_name: str, new_messages: list[_NewMessage]
    ) -> list[str] | None:
        """Append the messages and return their ids, or None if the topic is gone."""
        publish_time = datetime.now(UTC)
        with self._lock:
            topic = self._topics.get(topic_name)
            if topic is None:
                return None

            message_ids = []
            for new in new_messages:
                message_id = str(next(self._message_ids))
                message = PublishedMessage(
                    topic=topic_name,
                    data=new.data,
                    attributes=new.attributes,
                    message_id=message_id,
                    ordering_key=new.ordering_key,
                )
                topic.append(
                    _StoredMessage(next(self._sequence), message, publish_time)
                )
                message_ids.append(message_id)
        return message_ids

    def _create_topic(self, name: str) -> Response:
        try:
            _validate_topic_name(name)
        except ValueError as err:
            logger.info("rejected topic creation: %s", err)
            return _error_response(400, str(err))

        with self._lock:
            if name in self._topics:
                return _error_response(409, "Topic already exists")
            self._topics[name] = _Topic(name)
        logger.info("created topic %s", name)
        return _json_response(200, {"name": name})

    def _get_topic(self, name: str) -> Response:
        with self._lock:
            exists = name in self._topics
        if not exists:
            return _error_response(404, "Topic not found")
        return _json_response(200, {"name": name})

    # Subscriptions. Every helper below that touches self._subscriptions or
    # self._topics expects the caller to hold self._lock.

    def _restore_initial_resources(self) -> None:
        self._topics = {name: _Topic(name) for name in self._initial_topics}
        self._subscriptions = {}
        for name, topic in self._initial_subscriptions.items():
            self._add_subscription(name, topic, DEFAULT_ACK_DEADLINE_SECONDS)

    def _add_subscription(self, name: str, topic: str, ack_deadline: int) -> None:
        subscription = _Subscription(name, topic, ack_deadline)
        self._subscriptions[name] = subscription
        self._topics[topic].subscriptions.append(subscription)

    def _create_subscription(self, name: str, body: Any) -> Response:
        try:
            _validate_subscription_name(name)
            topic, ack_deadline = _validate_subscription_body(body)
        except (ValueError, _InvalidArgument) as err:
            logger.info("rejected subscription creation: %s", err)
            return _error_response(400, str(err))
        if isinstance(body.get("pushConfig"), dict) and body["pushConfig"].get(
            "pushEndpoint"
        ):
            return _error_response(
                501, "The Pub/Sub stand-in serves pull subscriptions only"
            )

        with self._lock:
            if name in self._subscriptions:
                return _error_response(409, "Subscription already exists")
            if topic not in self._topics:
                return _error_response(404, "Topic not found")
            self._add_subscription(name, topic, ack_deadline)
            resource = self._subscriptions[name].resource()
        logger.info("created subscription %s on %s", name, topic)
        return _json_response(200, resource)

    def _get_subscription(self, name: str) -> Response:
        with self._lock:
            subscription = self._subscriptions.get(name)
            resource = subscription.resource() if subscription else None
        if resource is None:
            return _error_response(404, "Subscription not found")
        return _json_response(200, resource)

    def _pull(self, name: str, body: Any) -> Response:
        max_messages = body.get("maxMessages") if isinstance(body, dict) else None
        if (
            not isinstance(max_messages, int)
            or isinstance(max_messages, bool)
            or max_messages < 1
        ):
            return _error_response(400, "maxMessages must be a positive integer")

        now = self._clock()
        received = []
        with self._lock:
            subscription = self._subscriptions.get(name)
            if subscription is None:
                return _error_response(404, "Subscription not found")
            for delivery in subscription.pending:
                if len(received) >= min(max_messages, MAX_MESSAGES_PER_REQUEST):
                    break
                if delivery.lease_expires is not None and now < delivery.lease_expires:
                    continue
                if delivery.ack_id is not None:
                    subscription.leases.pop(delivery.ack_id, None)
                delivery.ack_id = f"ack-{next(self._ack_ids)}"
                delivery.attempts += 1
                delivery.lease_expires = now + subscription.ack_deadline_seconds
                subscription.leases[delivery.ack_id] = delivery
                received.append(_received_message(delivery))

        # A pull without messages returns an empty object, as the service does.
        return _json_response(200, {"receivedMessages": received} if received else {})

    def _acknowledge(self, name: str, body: Any) -> Response:
        """Remove the messages whose ack ids hold a current lease.

        An ack id whose lease has expired is ignored, so its message comes back
        on a later pull.
        """
        try:
            ack_ids = _validate_ack_ids(body)
        except _InvalidArgument as err:
            return _error_response(400, str(err))

        now = self._clock()
        with self._lock:
            subscription = self._subscriptions.get(name)
            if subscription is None:
                return _error_response(404, "Subscription not found")
            for ack_id in ack_ids:
                delivery = subscription.leases.pop(ack_id, None)
                if delivery is None or delivery.lease_expires is None:
                    continue
                if now < delivery.lease_expires:
                    subscription.pending.remove(delivery)
        return _json_response(200, {})

    def _modify_ack_deadline(self, name: str, body: Any) -> Response:
        """Extend the leases of current ack ids, or release them with 0 seconds."""
        try:
            ack_ids = _validate_ack_ids(body)
            seconds = body.get("ackDeadlineSeconds")
            if (
                not isinstance(seconds, int)
                or isinstance(seconds, bool)
                or not 0 <= seconds <= MAX_ACK_DEADLINE_SECONDS
            ):
                raise _InvalidArgument(
                    f"ackDeadlineSeconds must be an integer from 0 to "
                    f"{MAX_ACK_DEADLINE_SECONDS}"
                )
        except _InvalidArgument as err:
            return _error_response(400, str(err))

        now = self._clock()
        with self._lock:
            subscription = self._subscriptions.get(name)
            if subscription is None:
                return _error_response(404, "Subscription not found")
            for ack_id in ack_ids:
                delivery = subscription.leases.get(ack_id)
                if delivery is None or delivery.lease_expires is None:
                    continue
                if now >= delivery.lease_expires:
                    continue
                if seconds == 0:
                    subscription.leases.pop(ack_id)
                    delivery.ack_id = None
                    delivery.lease_expires = None
                else:
                    delivery.lease_expires = now + seconds
        return _json_response(200, {})


def _validate_topic_name(name: str) -> None:
    """Raise ValueError unless `name` is projects/P/topics/T with a valid topic ID."""
    match = _TOPIC_NAME_PATTERN.fullmatch(name)
    topic_id = match.group(2) if match else ""
    if (
        match is None
        or not _TOPIC_ID_PATTERN.fullmatch(topic_id)
        or topic_id.lower().startswith("goog")
    ):
        raise ValueError(
            f"invalid topic name {name!r}: expected projects/PROJECT/topics/TOPIC, "
            "where TOPIC is 3-255 characters of letters, digits and - _ . ~ + %, "
            "starts with a letter and does not start with 'goog'"
        )


def _validate_subscription_name(name: str) -> None:
    """Raise ValueError unless `name` is projects/P/subscriptions/S with a valid ID."""
    match = _SUBSCRIPTION_NAME_PATTERN.fullmatch(name)
    subscription_id = match.group(2) if match else ""
    if (
        match is None
        or not _TOPIC_ID_PATTERN.fullmatch(subscription_id)
        or subscription_id.lower().startswith("goog")
    ):
        raise ValueError(
            f"invalid subscription name {name!r}: expected "
            "projects/PROJECT/subscriptions/SUBSCRIPTION, where SUBSCRIPTION is "
            "3-255 characters of letters, digits and - _ . ~ + %, starts with a "
            "letter and does not start with 'goog'"
        )


def _check_ack_deadline(seconds: Any) -> None:
    """Raise ValueError unless `seconds` is a subscription's valid ack deadline."""
    if (
        not isinstance(seconds, int)
        or isinstance(seconds, bool)
        or not MIN_ACK_DEADLINE_SECONDS <= seconds <= MAX_ACK_DEADLINE_SECONDS
    ):
        raise ValueError(
            f"ackDeadlineSeconds must be an integer from {MIN_ACK_DEADLINE_SECONDS} "
            f"to {MAX_ACK_DEADLINE_SECONDS}, got {seconds!r}"
        )


def _validate_subscription_body(body: Any) -> tuple[str, int]:
    """Return the topic and ack deadline of a subscriptions.create body."""
    if not isinstance(body, dict):
        raise _InvalidArgument("Invalid JSON payload: the body must be a JSON object")
    topic = body.get("topic")
    if not isinstance(topic, str) or not topic:
        raise _InvalidArgument("The subscription must name its topic")
    _validate_topic_name(topic)
    ack_deadline = body.get("ackDeadlineSeconds", DEFAULT_ACK_DEADLINE_SECONDS)
    _check_ack_deadline(ack_deadline)
    return topic, ack_deadline


def _validate_ack_ids(body: Any) -> list[str]:
    ack_ids = body.get("ackIds") if isinstance(body, dict) else None
    if (
        not isinstance(ack_ids, list)
        or not ack_ids
        or not all(isinstance(ack_id, str) and ack_id for ack_id in ack_ids)
    ):
        raise _InvalidArgument("ackIds must be a non-empty list of strings")
    return ack_ids


def _received_message(delivery: _Delivery) -> dict[str, Any]:
    """Return one entry of a pull response's receivedMessages."""
    stored = delivery.stored
    message: dict[str, Any] = {
        "messageId": stored.message.message_id,
        "publishTime": _timestamp(stored.publish_time),
    }
    # Like the service, the response leaves out empty fields.
    if stored.message.data:
        message["data"] = base64.b64encode(stored.message.data).decode("ascii")
    if stored.message.attributes:
        message["attributes"] = dict(stored.message.attributes)
    if stored.message.ordering_key:
        message["orderingKey"] = stored.message.ordering_key
    # NOTE: the service sends deliveryAttempt only on a subscription with a
    # dead-letter policy, which the stand-in does not model, so it always
    # sends it.
    return {
        "ackId": delivery.ack_id,
        "message": message,
        "deliveryAttempt": delivery.attempts,
    }


def _timestamp(moment: datetime) -> str:
    """Format a UTC time as RFC 3339 with a Z suffix, as the service does."""
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _validate_publish_body(body: Any) -> list[_NewMessage]:
    """Decode and check the messages of a publish request.

    Raises:
        _InvalidArgument: the request breaks a rule, so none of it may be stored.
    """
    if not isinstance(body, dict):
        raise _InvalidArgument("Invalid JSON payload: the body must be a JSON object")

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _InvalidArgument("The request must contain at least one message")
    if len(messages) > MAX_MESSAGES_PER_REQUEST:
        raise _InvalidArgument(
            f"The request contains {len(messages)} messages, more than the maximum of "
            f"{MAX_MESSAGES_PER_REQUEST}"
        )

    decoded = [
        _validate_message(index, message) for index, message in enumerate(messages)
    ]
    total_bytes = sum(_message_size(message) for message in decoded)
    if total_bytes > MAX_REQUEST_BYTES:
        raise _InvalidArgument(
            f"Request payload size {total_bytes} bytes exceeds the limit of "
            f"{MAX_REQUEST_BYTES} bytes"
        )
    return decoded


def _validate_message(index: int, message: Any) -> _NewMessage:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _InvalidArgument(f"{where} must be a JSON object")
    unknown = sorted(set(message) - _MESSAGE_FIELDS)
    if unknown:
        raise _InvalidArgument(f"{where} has unknown field {unknown[0]!r}")

    data = _decode_data(where, message.get("data"))
    attributes = _validate_attributes(where, message.get("attributes"))
    ordering_key = message.get("orderingKey", message.get("ordering_key", ""))
    if not isinstance(ordering_key, str):
        raise _InvalidArgument(f"{where}.orderingKey must be a string")
    _utf8_length(f"{where}.orderingKey", ordering_key)

    if not data and not attributes:
        raise _InvalidArgument(
            f"{where} is empty: a message must contain non-empty data or at least "
            "one attribute"
        )
    new = _NewMessage(data=data, attributes=attributes, ordering_key=ordering_key)
    size = _message_size(new)
    if size > MAX_MESSAGE_BYTES:
        raise _InvalidArgument(
            f"{where} is {size} bytes, but data plus attributes must be at most "
            f"{MAX_MESSAGE_BYTES} bytes"
        )
    return new


def _decode_data(where: str, data: Any) -> bytes:
    if data is None:
        return b""
    if not isinstance(data, str):
        raise _InvalidArgument(f"{where}.data must be a base64 string")

    # Map URL-safe characters to standard ones and restore the padding, so one
    # strict decoder covers every accepted spelling.
    standard = data.replace("-", "+").replace("_", "/")
    unpadded = standard.rstrip("=")
    if not _BASE64_PATTERN.fullmatch(data) or len(unpadded) % 4 == 1:
        raise _InvalidArgument(f"{where}.data is not valid base64")
    try:
        return base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except binascii.Error as err:
        raise _InvalidArgument(f"{where}.data is not valid base64: {err}") from err


def _validate_attributes(where: str, attributes: Any) -> dict[str, str]:
    if attributes is None:
        return {}
    if not isinstance(attributes, dict):
        raise _InvalidArgument(f"{where}.attributes must be a JSON object")
    if len(attributes) > MAX_ATTRIBUTES:
        raise _InvalidArgument(
            f"{where} has {len(attributes)} attributes, more than the maximum of "
            f"{MAX_ATTRIBUTES}"
        )

    for key, value in attributes.items():
        if not key:
            raise _InvalidArgument(f"{where}.attributes has an empty key")
        key_bytes = _utf8_length(f"{where}.attributes key", key)
        if key_bytes > MAX_ATTRIBUTE_KEY_BYTES:
            raise _InvalidArgument(
                f"{where}.attributes key {key[:40]!r}... is {key_bytes} bytes, more "
                f"than the maximum of {MAX_ATTRIBUTE_KEY_BYTES}"
            )
        if not isinstance(value, str):
            raise _InvalidArgument(
                f"{where}.attributes[{key!r}] must be a string, not "
                f"{type(value).__name__}"
            )
        value_bytes = _utf8_length(f"{where}.attributes[{key!r}]", value)
        if value_bytes > MAX_ATTRIBUTE_VALUE_BYTES:
            raise _InvalidArgument(
                f"{where}.attributes[{key!r}] is {value_bytes} bytes, more than the "
                f"maximum of {MAX_ATTRIBUTE_VALUE_BYTES}"
            )
    return dict(attributes)


def _utf8_length(where: str, text: str) -> int:
    """Return the UTF-8 size of `text`, which JSON escapes can make unencodable."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as err:
        raise _InvalidArgument(f"{where} is not valid UTF-8: {err}") from err


def _message_size(message: _NewMessage) -> int:
    attribute_bytes = sum(
        len(key.encode("utf-8")) + len(value.encode("utf-8"))
        for key, value in message.attributes.items()
    )
    return len(message.data) + attribute_bytes


def _parse_json(raw_body: bytes) -> Any:
    if not raw_body.strip():
        return None
    try:
        return json.loads(raw_body)
    except ValueError:
        return None


def _error_response(status: int, message: str) -> Response:
    payload = {
        "error": {
            "code": status,
            "message": message,
            "status": _RPC_STATUS.get(status, "UNKNOWN"),
        }
    }
    return _json_response(status, payload)


def _json_response(status: int, payload: dict[str, Any]) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")


def main(argv: list[str] | None = None) -> int:
    """Serve the stand-in on 127.0.0.1 until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m local.pubsub_standin",
        description="Serve the Pub/Sub REST stand-in on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="TCP port to listen on (default: 0, which picks a free port)",
    )
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="projects/P/topics/T",
        help="topic to create at start; repeat for several",
    )
    parser.add_argument(
        "--subscription",
        action="append",
        default=[],
        metavar="projects/P/subscriptions/S=projects/P/topics/T",
        help="pull subscription to create at start on one of the topics",
    )
    args = parser.parse_args(argv)

    subscriptions = {}
    for item in args.subscription:
        name, separator, topic = item.partition("=")
        if not separator:
            parser.error(f"--subscription {item!r}: expected NAME=TOPIC")
        subscriptions[name] = topic
    try:
        standin = PubSubStandin(topics=args.topic, subscriptions=subscriptions)
    except ValueError as err:
        parser.error(str(err))

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    host = standin.start(port=args.port)
    print(f"Pub/Sub stand-in listening on http://{host}")
    print(f"  export PUBSUB_EMULATOR_HOST={host}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
