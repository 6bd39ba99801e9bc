"""Grouping of normalised events into Mixpanel import requests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import codec
from .errors import InvalidEvent
from .records import ErrorCode, Failure, Record


class Item:
    """A record with its normalised event serialised for the request body."""

    # A plain class with slots costs less per event than a frozen dataclass,
    # and a message can hold tens of thousands of items.
    __slots__ = ("record", "insert_id", "body")

    def __init__(self, record: Record, insert_id: str, body: bytes) -> None:
        self.record = record
        self.insert_id = insert_id
        self.body = body

    def __repr__(self) -> str:
        return f"Item(index={self.record.index}, insert_id={self.insert_id!r})"


class Batch:
    """Events for one import request, in message order."""

    __slots__ = ("items",)

    def __init__(self, items: tuple[Item, ...]) -> None:
        self.items = items

    def __repr__(self) -> str:
        return f"Batch({len(self.items)} items)"

    @property
    def body(self) -> bytes:
        """The request body: a JSON array of the events."""
        bodies = [item.body for item in self.items]
        if not bodies:
            return b"[]"
        # Brackets joined onto the first and last element only, so the body
        # is built with one large allocation instead of three.
        bodies[0] = b"[" + bodies[0]
        bodies[-1] = bodies[-1] + b"]"
        return b",".join(bodies)

    def halves(self) -> tuple[Batch, Batch]:
        """Split the batch in two, for a resend after 413."""
        middle = len(self.items) // 2
        return Batch(self.items[:middle]), Batch(self.items[middle:])


def serialise_event(event: dict[str, Any]) -> bytes:
    """Serialise one event the way it appears in a request body.

    NaN and Infinity must be rejected first, because they would be written as
    null. `events.normalise_event` rejects them, and lone surrogates too.

    Raises:
        InvalidEvent: the event contains a lone surrogate, which has no UTF-8
            form.
    """
    try:
        return codec.dumps(event)
    except UnicodeEncodeError:
        raise InvalidEvent(
            ErrorCode.INVALID_EVENT,
            "event is not valid UTF-8: it contains a lone surrogate escape",
        ) from None


def build_batches(
    items: Iterable[Item], max_events: int, max_bytes: int
) -> tuple[list[Batch], list[Failure]]:
    """Group items in order into batches within both limits.

    An item whose request alone, with the array's brackets, exceeds
    `max_bytes` cannot be sent and is returned as a failure instead.
    """
    batches: list[Batch] = []
    failures: list[Failure] = []
    current: list[Item] = []
    size = 2  # the array's brackets

    for item in items:
        length = len(item.body)
        if length + 2 > max_bytes:
            failures.append(
                Failure(
                    item.record.raw,
                    ErrorCode.TOO_LARGE,
                    f"event is {length} bytes, {length + 2} in a request of its "
                    f"own, above the request limit of {max_bytes} bytes",
                )
            )
            continue
        if current:
            # A comma before the item.
            length += 1
            if len(current) >= max_events or size + length > max_bytes:
                batches.append(Batch(tuple(current)))
                current, size = [], 2
                length -= 1
        current.append(item)
        size += length

    if current:
        batches.append(Batch(tuple(current)))
    return batches, failures
