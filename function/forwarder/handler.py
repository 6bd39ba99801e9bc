"""Handling of one push request: decode, check, import, dead-letter, respond.

The response is 2xx only when every event of the message was imported or
published to the dead-letter topic. Every other outcome is non-2xx, so
Pub/Sub redelivers the message and nothing is lost. Redelivery is safe
because the requests a message produces are the same on every delivery and
Mixpanel deduplicates on `$insert_id`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import requests

from . import logs
from .batching import Item, build_batches, serialise_event
from .config import MAX_EVENTS_PER_REQUEST, Settings, load_settings
from .deadletter import build_dead_letters
from .envelope import PushMessage, parse_push_request
from .errors import (
    AuthenticationError,
    ConfigError,
    DeadlineExceeded,
    InvalidEnvelope,
    InvalidEvent,
    PublishError,
    UnexpectedResponse,
)
from .events import normalise_event
from .mixpanel import MixpanelClient
from .pubsub import Publisher
from .records import Failure, decode_records

logger = logging.getLogger(__name__)

# Repeated configuration and credential errors are logged once a minute, so a
# backlog of redeliveries does not flood the log.
_error_log = logs.RateLimiter(60.0)
_settings: Settings | None = None
_settings_lock = threading.Lock()
_session = requests.Session()
_dead_letter_publisher: Publisher | None = None


@dataclass
class Reply:
    """HTTP status and JSON body of the response to a push request."""

    status: int
    body: dict = field(default_factory=dict)

    def encode(self) -> bytes:
        return logs.redact(json.dumps(self.body, ensure_ascii=False)).encode()


def handle_push(body: bytes, settings: Settings | None = None) -> Reply:
    """Forward the message in one push request body and return the reply."""
    try:
        settings = settings or _cached_settings()
    except ConfigError as err:
        _log_limited(
            f"config:{err.variable}",
            "invalid configuration, responding 500 until it is fixed: %s",
            err,
            {"variable": err.variable},
        )
        return Reply(500, {"error": "invalid configuration", "variable": err.variable})

    try:
        message = parse_push_request(body)
    except InvalidEnvelope as err:
        logger.warning("rejected a request that is not a push envelope: %s", err)
        return Reply(400, {"error": str(err)})

    ids = {"message_id": message.message_id, "subscription": message.subscription}
    if message.delivery_attempt is not None:
        ids["delivery_attempt"] = message.delivery_attempt
    try:
        summary = forward_message(message, settings)
    except AuthenticationError as err:
        _log_limited("auth", "Mixpanel rejected the credential: %s", err, ids)
        return Reply(500, {"error": "Mixpanel rejected the credential", **ids})
    except UnexpectedResponse as err:
        logger.error("Mixpanel import failed: %s", err, extra={"fields": ids})
        return Reply(502, {"error": str(err), **ids})
    except DeadlineExceeded as err:
        logger.error("retry deadline spent: %s", err, extra={"fields": ids})
        return Reply(503, {"error": "retry deadline spent", **ids})
    except PublishError as err:
        logger.error("dead-lettering failed: %s", err, extra={"fields": ids})
        return Reply(503, {"error": "dead-letter publish failed", **ids})

    logger.info("message forwarded", extra={"fields": {**ids, **summary}})
    return Reply(200, {**ids, **summary})


def forward_message(message: PushMessage, settings: Settings) -> dict:
    """Import the message's events and dead-letter those that failed.

    Returns counts for the log line and the reply.

    Raises:
        AuthenticationError, UnexpectedResponse, DeadlineExceeded: nothing
            was dead-lettered and the message must be redelivered.
        PublishError: the dead-letter topic could not be reached.
    """
    deadline = time.monotonic() + settings.retry_deadline_seconds
    records, failures = decode_records(message.data)
    # Each parsed value and each undecodable part counts as one received
    # event, so that received == imported + dead_lettered.
    received = len(records) + len(failures)

    # One reading of the clock per message bounds how far ahead a time may be.
    now_ms = int(time.time() * 1000)
    items: list[Item] = []
    for record in records:
        try:
            event = normalise_event(record.value, message.publish_time_ms, now_ms)
            body = serialise_event(event)
        except InvalidEvent as err:
            failures.append(Failure(record.raw, err.code, err.detail))
            continue
        insert_id = event["properties"]["$insert_id"]
        items.append(Item(record, insert_id, body))

    batches, oversized = build_batches(
        items, MAX_EVENTS_PER_REQUEST, settings.max_batch_bytes
    )
    failures.extend(oversized)

    client = MixpanelClient(settings, _session)
    rejected = 0
    for batch in batches:
        refused = client.import_batch(batch, deadline)
        rejected += len(refused)
        failures.extend(refused)

    if failures:
        dead_letters = build_dead_letters(message, failures)
        _publisher(settings).publish(settings.dead_letter_topic, dead_letters, deadline)
        _log_dead_letters(message, failures)

    return {
        "received": received,
        "imported": len(items) - len(oversized) - rejected,
        "dead_lettered": len(failures),
        "batches": len(batches),
    }


def _log_dead_letters(message: PushMessage, failures: list[Failure]) -> None:
    """Log one line per error code, which a log-based metric counts by code."""
    details: dict[str, str] = {}
    for failure in failures:
        details.setdefault(failure.code, failure.detail)
    for code, count in Counter(failure.code for failure in failures).items():
        logger.warning(
            "events dead-lettered by error code",
            extra={
                "fields": {
                    "message_id": message.message_id,
                    "error": code,
                    "dead_lettered": count,
                    "error_detail": details[code],
                }
            },
        )


def _publisher(settings: Settings) -> Publisher:
    """Return the process's dead-letter publisher, created on first use.

    Creating it looks up Google credentials, which is worth doing once per
    instance rather than once per message.
    """
    global _dead_letter_publisher
    with _settings_lock:
        if (
            _dead_letter_publisher is None
            or _dead_letter_publisher.settings != settings
        ):
            _dead_letter_publisher = Publisher(settings, _session)
        return _dead_letter_publisher


def _cached_settings() -> Settings:
    global _settings
    with _settings_lock:
        if _settings is None:
            settings = load_settings()
            logs.register_secrets(settings.secrets)
            _settings = settings
        return _settings


def _log_limited(key: str, text: str, err: Exception, fields: dict) -> None:
    suppressed = _error_log.allow(key)
    if suppressed is None:
        return
    logger.error(text, err, extra={"fields": {**fields, "suppressed": suppressed}})
