"""Checks and normalisation of one event before it is sent to Mixpanel.

The checks mirror Mixpanel's strict-mode validation where it can be done
without the server, so an event that can never be accepted is dead-lettered
at once instead of costing a request. Normalisation is deterministic: the
same event in the same message always gives the same output, so a
redelivered message produces byte-identical requests.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from . import codec
from .errors import InvalidEvent
from .records import ErrorCode

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Integers from 1e11 up are taken as milliseconds: 1e11 seconds lies in the
# year 5138, and 1e11 milliseconds in 1973.
_MILLISECONDS_FROM = 100_000_000_000
# Strict mode rejects times before 1971-01-01, and no project keeps events
# older than 5 years. The local minimum is 1e11 ms (1973-03-03T09:46:40Z),
# because an earlier time sent in milliseconds would be read as seconds.
MIN_TIME_MS = _MILLISECONDS_FROM
_MIN_SECONDS = MIN_TIME_MS // 1000
# Strict mode also rejects times in the future. The local check allows this
# much clock skew between this function and Mixpanel. An event up to this far
# ahead is sent for Mixpanel to decide, and one further ahead is dead-lettered
# at once.
FUTURE_ALLOWANCE_MS = 5 * 60 * 1000

INSERT_ID_PATTERN = re.compile(r"[A-Za-z0-9-]{1,36}")
_INSERT_ID_MATCH = INSERT_ID_PATTERN.fullmatch

# Values that Mixpanel treats as "no id" for distinct_id and $insert_id,
# compared case-insensitively.
PLACEHOLDER_IDS = frozenset(
    {
        "00000000-0000-0000-0000-000000000000",
        "anon",
        "anonymous",
        "nil",
        "none",
        "null",
        "n/a",
        "na",
        "undefined",
        "unknown",
        "<nil>",
        "0",
        "-1",
        "true",
        "false",
        "[]",
        "{}",
    }
)

_PLACEHOLDER_LENGTHS = frozenset(len(text) for text in PLACEHOLDER_IDS)

MAX_EVENT_BYTES = 1024 * 1024
MAX_PROPERTIES = 254
# `codec.loads_event` checks property values against these as it parses.
MAX_ARRAY_LENGTH = codec.MAX_ARRAY_LENGTH
MAX_NESTING_DEPTH = codec.MAX_NESTING_DEPTH

_NOT_UTF8 = "{where} is not valid UTF-8: it contains a lone surrogate escape"
_EVENT_KEYS = frozenset({"event", "properties"})


def normalise_event(
    value: Any, publish_time_ms: int, now_ms: int | None = None
) -> dict[str, Any]:
    """Return the event as Mixpanel will receive it, or raise InvalidEvent.

    `time` is sent in milliseconds. An event without one takes the message's
    publish time, never the wall clock. A valid `$insert_id` is kept, an
    invalid one is replaced by a hash of it, and a missing one is derived
    from the event's content, so redeliveries and replays deduplicate.
    `now_ms` (default: the wall clock) only bounds how far in the future a
    time may lie. It never changes the output of an accepted event.
    """
    event, _ = _normalise(value, publish_time_ms, now_ms)
    return event


def encode_event(
    value: Any,
    publish_time_ms: int,
    now_ms: int | None = None,
    adjust: Callable[[dict[str, Any]], None] | None = None,
    parsed: bool = False,
) -> tuple[str, bytes]:
    """Normalise an event as `normalise_event` does and serialise it.

    Returns the `$insert_id` and the JSON that goes into a request body,
    which is what `batching.serialise_event` returns for the normalised
    event. The event is serialised once, for the size check and the body.
    `adjust`, if given, receives the event's own copy of its properties, or
    with `parsed` the parsed properties, before the checks of the
    properties, and may change them in place. The handler passes the IP
    rule, `privacy.PropertyPrivacy.set_ip`.
    `parsed` states that the value is the forwarder's own parse of a record,
    which `codec.loads_event` found within the limits on property values,
    and that only strings have been put in place of values since. Its
    properties are then changed in place instead of copied, and their values
    are not checked again.

    Raises:
        InvalidEvent: as `normalise_event` does.
    """
    event, body = _normalise(value, publish_time_ms, now_ms, adjust, parsed)
    return event["properties"]["$insert_id"], body


def _normalise(
    value: Any,
    publish_time_ms: int,
    now_ms: int | None,
    adjust: Callable[[dict[str, Any]], None] | None = None,
    parsed: bool = False,
) -> tuple[dict[str, Any], bytes]:
    # Each check tests the common case first, in line, because this runs
    # for every event, and calls a helper only for the rest.
    if not isinstance(value, dict):
        raise InvalidEvent(
            ErrorCode.INVALID_EVENT,
            f"event is a JSON {_json_type(value)}, expected an object",
        )
    if not value.keys() <= _EVENT_KEYS:
        extra = sorted(set(value) - _EVENT_KEYS)
        raise InvalidEvent(
            ErrorCode.INVALID_EVENT,
            f"unexpected top-level keys {extra}; only 'event' and 'properties' "
            "are allowed",
        )
    name = value.get("event")
    if not isinstance(name, str) or not name:
        raise InvalidEvent(ErrorCode.INVALID_EVENT, "'event' is missing or empty")
    if not name.isascii() and not _is_utf8(name):
        raise InvalidEvent(ErrorCode.INVALID_EVENT, _NOT_UTF8.format(where="'event'"))
    properties = value.get("properties", {})
    if not isinstance(properties, dict):
        raise InvalidEvent(
            ErrorCode.INVALID_EVENT,
            f"'properties' is a JSON {_json_type(properties)}, expected an object",
        )

    if not parsed:
        properties = dict(properties)
    if adjust is not None:
        adjust(properties)
    time_ms = properties.get("time")
    # Whole seconds after 1973 are the common case.
    if type(time_ms) is int and _MIN_SECONDS <= time_ms < _MILLISECONDS_FROM:
        time_ms *= 1000
    else:
        time_ms = _time_ms(time_ms, publish_time_ms)
    properties["time"] = time_ms
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    if time_ms > now_ms + FUTURE_ALLOWANCE_MS:
        raise InvalidEvent(
            ErrorCode.INVALID_EVENT,
            f"'properties.time' {time_ms} ms is more than "
            f"{FUTURE_ALLOWANCE_MS // 1000} s in the future",
        )
    distinct_id = properties.get("distinct_id")
    if type(distinct_id) is not str or len(distinct_id) in _PLACEHOLDER_LENGTHS:
        _check_identity(properties)
    # The values are checked before the insert id is derived from them,
    # because hashing needs them to be encodable JSON. The quick test passes
    # most events, and the full check finds the first problem of the rest.
    if not parsed and not _plainly_valid(properties):
        _check_values(properties)
    current = properties.get("$insert_id")
    if (
        type(current) is not str
        or len(current) in _PLACEHOLDER_LENGTHS
        or not _INSERT_ID_MATCH(current)
    ):
        properties["$insert_id"] = _insert_id(name, properties)

    event = {"event": name, "properties": properties}
    # The checks above leave no NaN or Infinity, which the serialisation
    # would write as null.
    try:
        body = codec.dumps(event)
    except UnicodeEncodeError:
        # A lone surrogate, which `_check_values` finds and reports, as it
        # would have before the property count.
        _check_values(properties)
        raise
    if len(properties) > MAX_PROPERTIES:
        raise InvalidEvent(
            ErrorCode.INVALID_EVENT,
            f"event has {len(properties)} properties, Mixpanel accepts under 255",
        )
    if len(body) >= MAX_EVENT_BYTES:
        raise InvalidEvent(
            ErrorCode.TOO_LARGE,
            f"event is {len(body)} bytes, Mixpanel accepts under {MAX_EVENT_BYTES}",
        )
    return event, body


# Bounds that keep the conversions finite and cheap. A time this far out is
# rejected later anyway, as before 1973 or in the future.
_MAX_TIME_MAGNITUDE = 1e16
_MAX_TIME_DIGITS = 16


def _time_ms(value: Any, publish_time_ms: int) -> int:
    """Convert `properties.time` to integer milliseconds since the epoch."""
    if type(value) is int:
        # The common case, tested before the others.
        value = value * 1000 if value < _MILLISECONDS_FROM else value
    elif value is None:
        return publish_time_ms
    elif isinstance(value, bool):
        raise InvalidEvent(ErrorCode.INVALID_EVENT, "'properties.time' is a boolean")
    elif isinstance(value, str):
        value = _parse_time_string(value)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidEvent(
                ErrorCode.INVALID_EVENT, "'properties.time' is not finite"
            )
        if not -_MAX_TIME_MAGNITUDE < value < _MAX_TIME_MAGNITUDE:
            raise InvalidEvent(
                ErrorCode.INVALID_EVENT, "'properties.time' is out of range"
            )
        value = round(value * 1000) if value < _MILLISECONDS_FROM else round(value)
    elif isinstance(value, int):
        value = value * 1000 if value < _MILLISECONDS_FROM else value
    else:
        raise InvalidEvent(
            ErrorCode.INVALID_EVENT,
            f"'properties.time' is a JSON {_json_type(value)}, expected a number "
            "or an ISO-8601 string",
        )
    if value < MIN_TIME_MS:
        raise InvalidEvent(
            ErrorCode.INVALID_EVENT,
            f"'properties.time' {value} ms is before 1973-03-03T09:46:40Z, "
            "older than any Mixpanel project keeps",
        )
    return value


def _parse_time_string(text: str) -> int:
    stripped = text.strip()
    # str.isdigit() is also true for digits such as "²" that int() rejects.
    if stripped.isascii() and stripped.isdigit():
        if len(stripped) > _MAX_TIME_DIGITS:
            raise InvalidEvent(
                ErrorCode.INVALID_EVENT, "'properties.time' is out of range"
            )
        number = int(stripped)
        return number * 1000 if number < _MILLISECONDS_FROM else number
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise InvalidEvent(
            ErrorCode.INVALID_EVENT,
            f"'properties.time' {text[:64]!r} is not an ISO-8601 time",
        ) from None
    if moment.tzinfo is None:
        raise InvalidEvent(
            ErrorCode.INVALID_EVENT,
            f"'properties.time' {text[:64]!r} has no time zone",
        )
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _check_identity(properties: dict[str, Any]) -> None:
    if "distinct_id" not in properties:
        # Projects on Simplified ID merge identify events by these instead.
        if "$device_id" in properties or "$user_id" in properties:
            return
        raise InvalidEvent(
            ErrorCode.INVALID_EVENT, "'properties.distinct_id' is missing"
        )
    distinct_id = properties["distinct_id"]
    if _is_placeholder(distinct_id):
        # A string in quotes, anything else as JSON, such as null or true.
        if isinstance(distinct_id, str):
            rendered = repr(distinct_id[:64])
        else:
            rendered = json.dumps(distinct_id, default=str)[:64]
        raise InvalidEvent(
            ErrorCode.INVALID_EVENT,
            f"'properties.distinct_id' {rendered} is a placeholder value that "
            "Mixpanel rejects",
        )


def _is_placeholder(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    text = str(value)
    # Most ids differ in length from every placeholder, which is cheaper to
    # test than a lower-cased copy. Lower-casing keeps the length of every
    # character but U+0130, which becomes two characters that are not ASCII,
    # so no text of another length lowers to one of these ASCII values.
    return len(text) in _PLACEHOLDER_LENGTHS and text.lower() in PLACEHOLDER_IDS


def _insert_id(name: str, properties: dict[str, Any]) -> str:
    current = properties.get("$insert_id")
    if (
        isinstance(current, str)
        and INSERT_ID_PATTERN.fullmatch(current)
        and not _is_placeholder(current)
    ):
        return current
    if current is not None:
        # Stripping characters could map two ids onto one, and a hash cannot.
        # The id may contain NaN, which this JSON text allows, or a lone
        # surrogate, which only "surrogatepass" encodes.
        text = json.dumps(
            current, sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
        source = "id:" + text
    else:
        content = {key: val for key, val in properties.items() if key != "$insert_id"}
        source = "event:" + _canonical({"event": name, "properties": content})
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _check_values(properties: dict[str, Any]) -> None:
    for key, value in properties.items():
        if key == "$insert_id":
            # An invalid id only feeds the hash that replaces it, so its
            # content is never sent.
            continue
        # A key that is not a string is left to the serialisation.
        if isinstance(key, str) and not key.isascii() and not _is_utf8(key):
            raise InvalidEvent(
                ErrorCode.INVALID_EVENT, _NOT_UTF8.format(where="a property name")
            )
        # Most values are integers, booleans, null or ASCII strings, which
        # need no further check. The test is inline because it runs for
        # every property of every event.
        kind = type(value)
        if kind is str:
            if value.isascii():
                continue
        elif kind is int or kind is bool or value is None:
            continue
        _check_value(value, 1, key)


def _plainly_valid(properties: dict[str, Any]) -> bool:
    """Tell quickly whether `_check_values` passes, but for lone surrogates.

    False means that `_check_values` must decide. Strings and keys are not
    looked at, because serialising the event fails on a lone surrogate, and
    `_normalise` then runs `_check_values`.
    """
    return _plainly_valid_values(properties.values(), 1)


def _plainly_valid_values(values: Any, depth: int) -> bool:
    """`_plainly_valid` for values at `depth`, 1 for those of `properties`.

    The loop is written out inline, because it runs for every value of every
    event.
    """
    for value in values:
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None:
            continue
        if kind is float:
            # Infinity minus itself is NaN, and NaN is unequal to everything.
            if value - value != 0.0:
                return False
        elif depth > MAX_NESTING_DEPTH:
            return False
        elif kind is dict:
            if not _plainly_valid_values(value.values(), depth + 1):
                return False
        elif kind is list:
            if len(value) > MAX_ARRAY_LENGTH:
                return False
            if not _plainly_valid_values(value, depth + 1):
                return False
        else:
            return False
    return True


def _check_value(value: Any, depth: int, path: str) -> None:
    if isinstance(value, str):
        if not _is_utf8(value):
            raise InvalidEvent(
                ErrorCode.INVALID_EVENT,
                _NOT_UTF8.format(where=f"'properties.{path}'"),
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEvent(
                ErrorCode.INVALID_EVENT,
                f"'properties.{path}' is NaN or Infinity, which JSON forbids",
            )
    elif isinstance(value, dict):
        if depth > MAX_NESTING_DEPTH:
            raise InvalidEvent(
                ErrorCode.INVALID_EVENT,
                f"'properties.{path}' is nested deeper than {MAX_NESTING_DEPTH} levels",
            )
        for key, item in value.items():
            if isinstance(key, str) and not key.isascii() and not _is_utf8(key):
                raise InvalidEvent(
                    ErrorCode.INVALID_EVENT,
                    _NOT_UTF8.format(where=f"a key in 'properties.{path}'"),
                )
            kind = type(item)
            if kind is str:
                if item.isascii():
                    continue
            elif kind is int or kind is bool or item is None:
                continue
            _check_value(item, depth + 1, f"{path}.{key}")
    elif isinstance(value, list):
        if len(value) > MAX_ARRAY_LENGTH:
            raise InvalidEvent(
                ErrorCode.INVALID_EVENT,
                f"'properties.{path}' has {len(value)} elements, Mixpanel accepts "
                "under 255",
            )
        if depth > MAX_NESTING_DEPTH:
            raise InvalidEvent(
                ErrorCode.INVALID_EVENT,
                f"'properties.{path}' is nested deeper than {MAX_NESTING_DEPTH} levels",
            )
        for item in value:
            kind = type(item)
            if kind is str:
                if item.isascii():
                    continue
            elif kind is int or kind is bool or item is None:
                continue
            _check_value(item, depth + 1, path)
    elif value is not None and not isinstance(value, int):
        # Only JSON's own types are sent. orjson would also write a tuple,
        # datetime, UUID, enum or dataclass, and json.dumps, which derives a
        # missing $insert_id, raises on most of them, so such an event would
        # otherwise be sent or not depending on its $insert_id.
        kind = type(value).__name__
        raise TypeError(f"'properties.{path}' is of type {kind}, which is not JSON")


def _is_utf8(text: str) -> bool:
    # A JSON escape such as "\ud800" parses to a lone surrogate, which has no
    # UTF-8 encoding and which Mixpanel rejects as invalid UTF-8. An ASCII
    # string, the common case, is known to be ASCII without a scan.
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _canonical(value: Any) -> str:
    # The derived $insert_id hashes this text, so it stays exactly what it
    # always was: other text would give a replayed event a new id, which
    # Mixpanel would not deduplicate against the first import.
    return json.dumps(
        value,
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        allow_nan=False,
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
