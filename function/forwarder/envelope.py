"""Decoding of the JSON body that a Pub/Sub push subscription sends."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import msgspec

from . import codec
from .errors import InvalidEnvelope

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The attribute that carries the publish time of the original message: the
# function sets it on dead letters, and `python -m ops replay` keeps it on the
# messages it republishes.
SOURCE_PUBLISH_TIME = "source_publish_time"


class PushMessage(msgspec.Struct, frozen=True):
    """One Pub/Sub message as delivered by a push subscription.

    `publish_time` is the message's publishTime, except on a replayed message
    whose `source_publish_time` attribute is a valid time: then it is that.
    """

    message_id: str
    publish_time_ms: int
    publish_time: str
    subscription: str
    data: str | None
    attributes: dict[str, str] = msgspec.field(default_factory=dict)
    delivery_attempt: int | None = None


def parse_push_request(body: bytes) -> PushMessage:
    """Parse a push request body in Pub/Sub's default (wrapped) format.

    Raises:
        InvalidEnvelope: the body is not such an envelope. Pub/Sub never sends
            one, so the caller responds 400.
    """
    try:
        envelope = codec.loads_document(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidEnvelope(f"request body is not JSON: {err}") from err
    except RecursionError:
        raise InvalidEnvelope("request body is not JSON: nested too deeply") from None
    if not isinstance(envelope, dict):
        raise InvalidEnvelope("request body is not a JSON object")

    message = envelope.get("message")
    if not isinstance(message, dict):
        raise InvalidEnvelope("request body has no 'message' object")

    message_id = message.get("messageId", message.get("message_id"))
    if not isinstance(message_id, str) or not message_id:
        raise InvalidEnvelope("message has no 'messageId'")

    publish_time = message.get("publishTime", message.get("publish_time"))
    if not isinstance(publish_time, str):
        raise InvalidEnvelope("message has no 'publishTime'")
    publish_time_ms = _parse_publish_time(publish_time)

    data = message.get("data")
    if data is not None and not isinstance(data, str):
        raise InvalidEnvelope("message 'data' is not a base64 string")

    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict) or not all(
        isinstance(key, str) and isinstance(value, str)
        for key, value in attributes.items()
    ):
        raise InvalidEnvelope("message 'attributes' is not a map of strings")

    subscription = envelope.get("subscription", "")
    if not isinstance(subscription, str):
        raise InvalidEnvelope("'subscription' is not a string")

    # These strings are copied into dead-letter attributes, which Pub/Sub
    # accepts only as UTF-8. A "\ud800" escape parses to a lone surrogate that
    # has none, and Pub/Sub itself never sends one.
    texts = [message_id, subscription, *attributes, *attributes.values()]
    if not all(_is_utf8(text) for text in texts):
        raise InvalidEnvelope(
            "messageId, subscription or an attribute is not valid UTF-8"
        )

    attempt = envelope.get("deliveryAttempt")
    if not isinstance(attempt, int) or isinstance(attempt, bool):
        attempt = None

    # A replayed message keeps the original publish time, so an event without
    # `time` gets the same time and the same derived $insert_id on every
    # delivery and replay, and Mixpanel deduplicates it. An invalid value is
    # ignored and the message's own publishTime applies.
    original_time = attributes.get(SOURCE_PUBLISH_TIME)
    if original_time is not None:
        with contextlib.suppress(InvalidEnvelope):
            publish_time_ms = _parse_publish_time(original_time)
            publish_time = original_time

    return PushMessage(
        message_id=message_id,
        publish_time_ms=publish_time_ms,
        publish_time=publish_time,
        subscription=subscription,
        data=data,
        attributes=dict(attributes),
        delivery_attempt=attempt,
    )


def _parse_publish_time(value: str) -> int:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as err:
        raise InvalidEnvelope(f"invalid 'publishTime' {value!r}") from err
    if moment.tzinfo is None:
        raise InvalidEnvelope(f"'publishTime' {value!r} has no time zone")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
