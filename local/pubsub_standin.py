"""Local stand-in for the Pub/Sub REST API's topic calls, addressed like the emulator.

Set PUBSUB_EMULATOR_HOST to the value start() returns and send the REST calls
to http://$PUBSUB_EMULATOR_HOST/v1/. The stand-in serves topics.create (PUT),
topics.get and topics.publish, validates publish requests against the service's
documented limits, and returns errors as Google-style JSON bodies
({"error": {"code", "message", "status"}}).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import logging
import re
import threading
from collections import deque
from collections.abc import Iterable
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
class _Topic:
    """A topic and its messages in publish order.

    Every message enters through append(). Subscriptions, when added, belong
    here too: append() would hand each new message to every subscription of the
    topic, and each subscription would keep its own outstanding messages, ack
    ids and ack deadlines for pull, acknowledge and modifyAckDeadline.
    """

    name: str
    messages: list[_StoredMessage] = field(default_factory=list)

    def append(self, stored: _StoredMessage) -> None:
        """Add one message to the topic's log."""
        self.messages.append(stored)


@dataclass(frozen=True)
class _NewMessage:
    data: bytes
    attributes: dict[str, str]
    ordering_key: str


class _InvalidArgument(Exception):
    """A publish or create request that breaks one of the service's rules."""


class PubSubStandin(LocalServer):
    """Pub/Sub REST stand-in for topics, served on 127.0.0.1.

    Args:
        topics: full names, projects/P/topics/T, of the topics that exist.
    """

    def __init__(self, *, topics: Iterable[str] = ()) -> None:
        super().__init__()
        self._initial_topics = tuple(topics)
        for name in self._initial_topics:
            _validate_topic_name(name)

        self._lock = threading.Lock()
        self._topics: dict[str, _Topic] = {
            name: _Topic(name) for name in self._initial_topics
        }
        self._requests: list[PubSubRequest] = []
        self._pending_failures: deque[int] = deque()

        # Ids keep counting across reset(), so an id is never reused.
        self._message_ids = itertools.count(1)
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

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """Make the next `count` publish calls return `status` and store nothing."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an error status (400-599), got {status}")
        with self._lock:
            self._pending_failures.extend([status] * count)

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
        """Restore the constructor's topics, with no messages, requests or failures."""
        with self._lock:
            self._topics = {name: _Topic(name) for name in self._initial_topics}
            self._requests.clear()
            self._pending_failures.clear()

    def handle(self, request: Request) -> Response:
        """Route a request to publish or to the topic resource."""
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
            name = f"projects/{args['project']}/topics/{args['topic']}"
            if endpoint == "publish":
                response = self._publish(name, body)
            elif request.method == "PUT":
                response = self._create_topic(name)
            else:
                response = self._get_topic(name)

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

    def _publish(self, topic_name: str, body: Any) -> Response:
        with self._lock:
            failure = (
                self._pending_failures.popleft() if self._pending_failures else None
            )
            topic_exists = topic_name in self._topics
        if failure is not None:
            logger.info("sending scripted %d response to publish", failure)
            return _error_response(
                failure, "Scripted failure from the Pub/Sub stand-in"
            )
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
