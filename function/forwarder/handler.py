"""Handling of one push request: decode, transform, check, import, dead-letter.

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
from collections.abc import Iterable

import msgspec
import requests

from . import logs
from .batching import Item, build_batches
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
from .events import encode_event
from .hook import (
    Transform,
    context_for,
    load_transform,
    passes_records_on,
    run_transform,
)
from .mixpanel import MixpanelClient
from .privacy import PropertyPrivacy
from .pubsub import Publisher
from .records import ErrorCode, Failure, Record, RecordStream

logger = logging.getLogger(__name__)

# Repeated configuration and credential errors are logged once a minute, so a
# backlog of redeliveries does not flood the log.
_error_log = logs.RateLimiter(60.0)
_settings: Settings | None = None
_settings_lock = threading.Lock()
_session = requests.Session()
_dead_letter_publisher: Publisher | None = None


class Reply(msgspec.Struct):
    """HTTP status and JSON body of the response to a push request."""

    status: int
    body: dict = msgspec.field(default_factory=dict)

    def encode(self) -> bytes:
        return logs.redact(json.dumps(self.body, ensure_ascii=False)).encode()


def handle_push(body: bytes | str, settings: Settings | None = None) -> Reply:
    """Forward the message in one push request body and return the reply.

    The body is the bytes of the request, or the text that `json.loads`
    would decode from them.
    """
    try:
        settings = settings or _cached_settings()
        transform = load_transform(settings.transform)
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

    # The body and the base64 text are each larger than the message data, so
    # neither is kept while the events are forwarded.
    del body
    records = RecordStream(message.data, check_values=passes_records_on(transform))
    message = msgspec.structs.replace(message, data=None)

    ids = {"message_id": message.message_id, "subscription": message.subscription}
    if message.delivery_attempt is not None:
        ids["delivery_attempt"] = message.delivery_attempt
    try:
        summary = forward_message(message, settings, transform, records)
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


def forward_message(
    message: PushMessage,
    settings: Settings,
    transform: Transform | None = None,
    records: RecordStream | None = None,
) -> dict:
    """Import the message's events and dead-letter those that failed.

    `transform` defaults to the hook that `settings.transform` names, and
    `records` to the records of `message.data`.
    Returns counts for the log line and the reply.

    Raises:
        AuthenticationError, UnexpectedResponse, DeadlineExceeded: nothing
            was dead-lettered and the message must be redelivered.
        PublishError: the dead-letter topic could not be reached.
    """
    if transform is None:
        transform = load_transform(settings.transform)
    deadline = time.monotonic() + settings.retry_deadline_seconds
    if records is None:
        records = RecordStream(message.data, check_values=passes_records_on(transform))

    prepared = _prepare_events(records, message, settings, transform)
    items = prepared.items
    failures = [*records.failures, *prepared.failures]
    # Each parsed value and each undecodable part counts as one received
    # record. The transform returns no event for a `filtered` record, and
    # for others one event each plus `added` ones, so that
    # received + added == imported + dead_lettered + filtered.
    received = records.count + len(records.failures)

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
        "filtered": prepared.filtered,
        "added": prepared.added,
        "imported": len(items) - len(oversized) - rejected,
        "dead_lettered": len(failures),
        "batches": len(batches),
    }


class _Prepared(msgspec.Struct):
    """The events of a message ready to batch, and the records that failed."""

    items: list[Item] = msgspec.field(default_factory=list)
    failures: list[Failure] = msgspec.field(default_factory=list)
    filtered: int = 0
    added: int = 0


def _prepare_events(
    records: Iterable[Record],
    message: PushMessage,
    settings: Settings,
    transform: Transform,
) -> _Prepared:
    """Transform each record, then drop, hash and check each event it returns.

    The default hook, whose code is `return record`, is not called, with the
    same result.

    A failure of any step dead-letters the record's bytes as received, once
    for each of its events that failed, and the other records go on.
    """
    context = context_for(message)
    privacy = PropertyPrivacy(settings.privacy)
    rewrite, set_ip = privacy.rewrite, privacy.set_ip
    # One reading of the clock per message bounds how far ahead a time may be.
    now_ms = int(time.time() * 1000)
    publish_time_ms = message.publish_time_ms
    prepared = _Prepared()
    # Bound once, because the loop runs for every event of the message.
    add_item, add_failure = prepared.items.append, prepared.failures.append
    unchanged = passes_records_on(transform)

    for record in records:
        value = record.value
        if unchanged:
            events = (value,)
        else:
            try:
                events = run_transform(transform, value, context, record)
            except InvalidEvent as err:
                add_failure(Failure(record.raw, err.code, err.detail))
                continue
            if not events:
                prepared.filtered += 1
                continue
            if len(events) > 1:
                prepared.added += len(events) - 1
        # A record that reaches the checks as parsed keeps the parse's check
        # of its property values. The check stays valid after the PII rules,
        # which drop values or put strings in their place, and the IP rule,
        # which adds a string.
        parsed = unchanged and record.values_checked

        for event in events:
            # Privacy runs first, so a dropped value never reaches a check's
            # error detail, and a derived $insert_id never hashes one.
            try:
                insert_id, body = encode_event(
                    rewrite(event), publish_time_ms, now_ms, set_ip, parsed
                )
            except InvalidEvent as err:
                add_failure(Failure(record.raw, err.code, err.detail))
                continue
            except (TypeError, ValueError, OverflowError) as err:
                # A hook that passes its record on can leave a value in it that
                # JSON cannot hold, such as a datetime or a set.
                detail = f"the event is not JSON: {type(err).__name__}"
                add_failure(Failure(record.raw, ErrorCode.TRANSFORM_FAILED, detail))
                continue
            add_item(Item(record, insert_id, body))
    return prepared


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
