"""Publishing a newline-delimited JSON file of events to the events topic.

Each message carries up to a set number of events as newline-delimited JSON,
the format the function reads. A message ends early when the next line would
take its data past MAX_MESSAGE_DATA_BYTES.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .pacing import RateLimiter
from .pubsub import (
    MAX_MESSAGES_PER_PUBLISH,
    MAX_PUBLISH_BYTES,
    OutgoingMessage,
    PubSubClient,
    PubSubError,
)

# Data per message. Pub/Sub takes up to 10 MB of data and attributes, and a
# publish request carries the data as base64, a third larger, within the same
# 10 MB, so 7 MiB of data keeps one message per request possible.
MAX_MESSAGE_DATA_BYTES = 7 * 1024 * 1024


class InvalidFileError(Exception):
    """A line of the events file cannot be published; the message names it."""


@dataclass(frozen=True)
class FileMessage:
    """One message built from the file, with its events and the bytes read."""

    message: OutgoingMessage
    events: int
    bytes_read: int


@dataclass
class PublishSummary:
    """Counts of one publish run."""

    events: int = 0
    messages: int = 0
    stopped_by: str | None = None


def read_messages(
    path: Path,
    events_per_message: int,
    attributes: Mapping[str, str],
    *,
    validate: bool = True,
) -> Iterator[FileMessage]:
    """Group the file's lines into messages of up to `events_per_message` events.

    Blank lines are skipped, and every other line is sent as it is in the
    file, without its line ending.

    Raises:
        InvalidFileError: a line is longer than a message can carry, or, with
            `validate`, a line is not JSON.
    """
    lines: list[bytes] = []
    size = 0
    bytes_read = 0
    with path.open("rb") as source:
        for number, raw in enumerate(source, start=1):
            bytes_read += len(raw)
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            if len(line) > MAX_MESSAGE_DATA_BYTES:
                raise InvalidFileError(
                    f"{path}:{number}: the line is {len(line)} bytes, more than the "
                    f"{MAX_MESSAGE_DATA_BYTES} bytes a message carries"
                )
            if validate:
                _check_json(path, number, line)

            if lines and (
                len(lines) >= events_per_message
                or size + 1 + len(line) > MAX_MESSAGE_DATA_BYTES
            ):
                yield _message(lines, attributes, bytes_read - len(raw))
                lines, size, bytes_read = [], 0, len(raw)
            lines.append(line)
            size += len(line) + (1 if len(lines) > 1 else 0)
    if lines:
        yield _message(lines, attributes, bytes_read)


def publish_file(
    client: PubSubClient,
    *,
    path: Path,
    topic: str,
    events_per_message: int,
    attributes: Mapping[str, str],
    rate: float | None = None,
    validate: bool = True,
    progress: Callable[[int], object] | None = None,
) -> PublishSummary:
    """Publish the events in `path` to `topic`, in order.

    Args:
        client: the Pub/Sub client.
        path: the newline-delimited JSON file.
        topic: the events topic, projects/P/topics/T.
        events_per_message: the maximum number of events in one message.
        attributes: attributes set on every message.
        rate: the maximum messages per second, or None for no limit.
        validate: check that each line is JSON before anything is sent.
        progress: called with the number of file bytes each request covered.

    Returns:
        The summary; `stopped_by` is set when a publish failed for good or the
        run was interrupted, and the messages before it were published.

    Raises:
        InvalidFileError: see read_messages(). The whole file is checked before
            the first publish, so then nothing was sent.
    """
    for _ in read_messages(path, events_per_message, attributes, validate=validate):
        pass

    summary = PublishSummary()
    limiter = RateLimiter(rate)
    per_request = limiter.batch_size(MAX_MESSAGES_PER_PUBLISH)
    pending: list[FileMessage] = []
    pending_bytes = 0
    try:
        for item in read_messages(path, events_per_message, attributes, validate=False):
            pending.append(item)
            pending_bytes += item.message.request_bytes
            # About one publish request at a time, so memory stays bounded.
            if len(pending) >= per_request or pending_bytes >= MAX_PUBLISH_BYTES:
                _send(client, topic, pending, limiter, summary, progress)
                pending, pending_bytes = [], 0
        if pending:
            _send(client, topic, pending, limiter, summary, progress)
    except PubSubError as err:
        summary.stopped_by = str(err)
    except KeyboardInterrupt:
        summary.stopped_by = "interrupted"
    return summary


def _send(
    client: PubSubClient,
    topic: str,
    items: list[FileMessage],
    limiter: RateLimiter,
    summary: PublishSummary,
    progress: Callable[[int], object] | None,
) -> None:
    limiter.wait(len(items))
    client.publish(topic, [item.message for item in items])
    summary.messages += len(items)
    summary.events += sum(item.events for item in items)
    if progress is not None:
        progress(sum(item.bytes_read for item in items))


def _message(
    lines: list[bytes], attributes: Mapping[str, str], bytes_read: int
) -> FileMessage:
    data = b"\n".join(lines)
    return FileMessage(OutgoingMessage(data, dict(attributes)), len(lines), bytes_read)


def _check_json(path: Path, number: int, line: bytes) -> None:
    try:
        json.loads(line)
    except (ValueError, RecursionError) as err:
        raise InvalidFileError(
            f"{path}:{number}: the line is not JSON: {err}"
        ) from None
