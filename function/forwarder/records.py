"""Decoding of a message's data into records, one per event it carries."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any


class ErrorCode:
    """Values of the `error` attribute on dead-letter messages."""

    # The message data is missing, empty, not base64 or not UTF-8.
    INVALID_PAYLOAD = "invalid_payload"
    # A line of the data is not JSON.
    INVALID_JSON = "invalid_json"
    # A JSON value is not an event that Mixpanel can ever accept.
    INVALID_EVENT = "invalid_event"
    # An event is larger than Mixpanel accepts in one request.
    TOO_LARGE = "too_large"
    # Mixpanel rejected the event with a 400 response.
    REJECTED = "rejected"


@dataclass(frozen=True)
class Record:
    """One event as received, with the bytes to dead-letter if it fails."""

    index: int
    raw: bytes
    value: Any


@dataclass(frozen=True)
class Failure:
    """Bytes that go to the dead-letter topic, with the reason."""

    raw: bytes
    code: str
    detail: str


def decode_records(data: str | None) -> tuple[list[Record], list[Failure]]:
    """Split base64 message data into parsed records and undecodable parts.

    The data is newline-delimited JSON with one value per line, and blank
    lines are skipped. Data that parses as one JSON document (an object, or
    an array of events) is accepted too. A line that is not JSON becomes a
    `Failure` with its original bytes, and the other lines go on. JSON
    nested too deeply for the parser counts as not JSON.
    """
    if data is None:
        return [], [Failure(b"", ErrorCode.INVALID_PAYLOAD, "message has no data")]
    try:
        payload = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        return [], [
            Failure(
                data.encode("utf-8", "replace"),
                ErrorCode.INVALID_PAYLOAD,
                f"data is not valid base64: {err}",
            )
        ]
    if not payload.strip():
        return [], [
            Failure(payload, ErrorCode.INVALID_PAYLOAD, "message data is empty")
        ]
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as err:
        return [], [
            Failure(payload, ErrorCode.INVALID_PAYLOAD, f"data is not UTF-8: {err}")
        ]

    whole = _parse_whole(text)
    if isinstance(whole, list):
        return _expand(whole, payload, 0), []
    if whole is not None:
        return [Record(0, _one_line(payload, whole), whole)], []

    records: list[Record] = []
    failures: list[Failure] = []
    for line in payload.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as err:
            failures.append(
                Failure(line, ErrorCode.INVALID_JSON, f"line is not JSON: {err}")
            )
            continue
        except RecursionError:
            failures.append(
                Failure(
                    line, ErrorCode.INVALID_JSON, "line is not JSON: nested too deeply"
                )
            )
            continue
        records.extend(_expand(value, line, len(records)))
    return records, failures


def _parse_whole(text: str) -> Any | None:
    """Return the data parsed as one JSON document, or None if it is several."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _one_line(payload: bytes, value: Any) -> bytes:
    """Return the bytes that stand for a one-value payload in a dead letter.

    A value on one line keeps its bytes. A value spread over several lines is
    serialised on one line, so that dead-letter data stays NDJSON.
    """
    stripped = payload.strip()
    if b"\n" in stripped or b"\r" in stripped:
        return _serialise(value)
    return stripped


def _expand(value: Any, raw: bytes, start: int) -> list[Record]:
    """Turn one parsed JSON value into records; an array gives one per element."""
    if not isinstance(value, list):
        return [Record(start, raw, value)]
    return [
        Record(start + offset, _serialise(item), item)
        for offset, item in enumerate(value)
    ]


def _serialise(value: Any) -> bytes:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate from a "\ud800" escape has no UTF-8 form, so the
        # value is written with escapes, which parse back to the same value.
        return json.dumps(value, separators=(",", ":")).encode()
