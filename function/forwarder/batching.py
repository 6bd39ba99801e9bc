"""Grouping of normalised events into Mixpanel import requests."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import InvalidEvent
from .records import ErrorCode, Failure, Record


@dataclass(frozen=True)
class Item:
    """A record with its normalised event serialised for the request body."""

    record: Record
    insert_id: str
    body: bytes


@dataclass(frozen=True)
class Batch:
    """Events for one import request, in message order."""

    items: tuple[Item, ...]

    @property
    def body(self) -> bytes:
        """The request body: a JSON array of the events."""
        return b"[" + b",".join(item.body for item in self.items) + b"]"

    def halves(self) -> tuple[Batch, Batch]:
        """Split the batch in two, for a resend after 413."""
        middle = len(self.items) // 2
        return Batch(self.items[:middle]), Batch(self.items[middle:])


def serialise_event(event: dict[str, Any]) -> bytes:
    """Serialise one event the way it appears in a request body.

    Raises:
        InvalidEvent: the event contains a lone surrogate, which has no UTF-8
            form. `events.normalise_event` rejects such events first.
    """
    text = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise InvalidEvent(
            ErrorCode.INVALID_EVENT,
            "event is not valid UTF-8: it contains a lone surrogate escape",
        ) from None


def build_batches(
    items: Iterable[Item], max_events: int, max_bytes: int
) -> tuple[list[Batch], list[Failure]]:
    """Group items in order into batches within both limits.

    An item that alone exceeds `max_bytes` cannot be sent and is returned as
    a failure instead.
    """
    batches: list[Batch] = []
    failures: list[Failure] = []
    current: list[Item] = []
    size = 2  # the array's brackets

    for item in items:
        if len(item.body) + 2 > max_bytes:
            failures.append(
                Failure(
                    item.record.raw,
                    ErrorCode.TOO_LARGE,
                    f"event is {len(item.body)} bytes, above the request limit of "
                    f"{max_bytes} bytes",
                )
            )
            continue
        added = len(item.body) + (1 if current else 0)
        if current and (len(current) >= max_events or size + added > max_bytes):
            batches.append(Batch(tuple(current)))
            current, size = [], 2
            added = len(item.body)
        current.append(item)
        size += added

    if current:
        batches.append(Batch(tuple(current)))
    return batches, failures
