"""JSON decoding and encoding on the forwarding path, in one place.

orjson does the work, with msgspec parsing the lines of events where
`loads_event` is asked to check them, and the standard library's `json`
takes over wherever they would differ, so that the accepted input and the
parsed values are those of `json.loads`. `json.loads` accepts NaN and
Infinity literals, numbers that overflow a double, lone surrogate escapes
such as "\\ud800" and a UTF-8 byte order mark, which orjson rejects. It
also keeps integers beyond 64 bits exact, where orjson reads them as floats.

One difference remains on Python 3.11, in nesting. orjson parses up to
1,024 levels. There, `json.loads` raises RecursionError once the nesting
reaches Python's recursion limit (1,000 by default) less the frames already
in use, which is about 990 levels in the forwarder. A document nested
between the two is parsed, where `json.loads` alone would raise. On Python
3.12, the runtime on Cloud Run, `json.loads` parses about 1,500 levels, and
a document that orjson finds too deep goes to it, so the two agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

import msgspec
import orjson

NAME = f"orjson {orjson.__version__}, msgspec {msgspec.__version__}"
# The library that serialises, for the benchmark that compares the forwarder
# with it, and the plain parse of the library that reads event lines.
LIBRARY = orjson
LINE_LOADS = msgspec.json.Decoder().decode

# Mixpanel's limits on property values, which `loads_event` checks as it
# parses: containers nest at most this deep below `properties`, and an array
# contains at most this many elements.
MAX_NESTING_DEPTH = 3
MAX_ARRAY_LENGTH = 254

# The shortest integer literal that orjson reads as a float has 19 digits
# (-9223372036854775809), so text without 19 digits in a row has none.
_LONG_DIGIT_RUN = 19
_DIGITS_AS_ZERO = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
# A run of 19 digits covers at least 6 positions that are multiples of 3, so
# text whose every third byte never shows 6 digits in a row has no such run.
_SAMPLE_STEP = 3
_SAMPLED_RUN = b"0" * (_LONG_DIGIT_RUN // _SAMPLE_STEP)
_FULL_RUN = b"0" * _LONG_DIGIT_RUN
# Text up to this size is checked for long integers before parsing. A larger
# document is parsed first and its numbers checked, which costs less than a
# scan of all its text when most of it is one long string.
_MAX_SCANNED_BYTES = 64 * 1024
# orjson keeps a copy of a long string while it parses it, which for the
# data of a 10 MB message is 13 MB more at the peak of memory, and json reads
# the text in place. loads_document leaves a larger document to json.
_MAX_COPIED_BYTES = 4 * 1024 * 1024
# has_long_digit_run scans this much at a time, a multiple of _SAMPLE_STEP.
_SCAN_CHUNK = _SAMPLE_STEP * 349_525
# A float parsed from an integer literal outside int64 and uint64 is at
# least this large in magnitude.
_INT64_LIMIT = 2.0**63


def loads(data: bytes, *, digits_checked: bool = False) -> Any:
    """Parse one JSON document as `json.loads(data)` does.

    With `digits_checked`, the caller states that `has_long_digit_run` is
    false for text that contains `data`, and the check is not repeated.

    Raises:
        ValueError: `json.JSONDecodeError` or `UnicodeDecodeError` from
            `json.loads`, with its message.
        RecursionError: the document nests too deeply for `json.loads`.
    """
    if digits_checked or (
        len(data) <= _MAX_SCANNED_BYTES and not has_long_digit_run(data)
    ):
        try:
            return orjson.loads(data)
        except (orjson.JSONDecodeError, RecursionError):
            return json.loads(data)
    value = _loads_checking_numbers(data)
    if value is _FAILED:
        return json.loads(data)
    return value


def loads_text(data: bytes, *, digits_checked: bool = False) -> Any:
    """Parse UTF-8 bytes as `json.loads(data.decode())` does.

    Parsing the text differs from parsing the bytes in one way: `json.loads`
    of bytes skips a UTF-8 byte order mark and detects UTF-16 and UTF-32,
    and `json.loads` of text rejects them. `digits_checked` is as for
    `loads`, and spares a large document the check of its parsed numbers,
    which for 2,000 events costs more than parsing them.

    Raises:
        ValueError, RecursionError: as for `loads`. The data must be UTF-8.
    """
    if digits_checked:
        try:
            return orjson.loads(data)
        except (orjson.JSONDecodeError, RecursionError):
            return json.loads(data.decode("utf-8"))
    value = _loads_checking_numbers(data)
    if value is _FAILED:
        return json.loads(data.decode("utf-8"))
    return value


def loads_document(data: bytes | bytearray | str) -> Any:
    """Parse a JSON document as `json.loads(data)` does, without a scan of it.

    Meant for a document of few values, such as a push request body whose
    message data is one long string. Its numbers are checked after the
    parse, which costs less than a scan of the text for long integers. A
    document above _MAX_COPIED_BYTES goes to `json.loads` at once. The
    difference in nesting that the module docstring describes applies.

    Raises:
        ValueError, RecursionError: as for `loads`.
    """
    if len(data) > _MAX_COPIED_BYTES:
        return json.loads(data)
    try:
        value = orjson.loads(data)
    except (orjson.JSONDecodeError, RecursionError):
        return json.loads(data)
    if _has_large_float(value):
        return json.loads(data)
    return value


def _event_type(max_depth: int, max_length: int) -> Any:
    """Return the type of an event whose property values are within the limits.

    Property values are JSON values whose containers nest at most
    `max_depth` levels, with at most `max_length` elements in each array.
    The top level is an object of strings and objects, which admits every
    event that `events.normalise_event` may accept, but for one whose
    `$insert_id` is outside these limits, and some that it rejects.
    """
    scalar = str | int | float | bool | None
    bounded = msgspec.Meta(max_length=max_length)
    value: Any = scalar
    for _ in range(max_depth):
        value = scalar | Annotated[list[value], bounded] | dict[str, value]
    return dict[str, str | dict[str, value]]


_decode_event = msgspec.json.Decoder(
    _event_type(MAX_NESTING_DEPTH, MAX_ARRAY_LENGTH)
).decode


def loads_event(data: bytes) -> dict[str, Any] | None:
    """Parse one JSON document as an event within the limits, or return None.

    The value is that of `json.loads`: an object of strings and objects
    whose property values keep within MAX_NESTING_DEPTH and
    MAX_ARRAY_LENGTH. It contains only JSON's own types, finite floats and
    strings without lone surrogates, because msgspec accepts no NaN,
    Infinity, overflowing number or lone surrogate escape, and its integers
    are exact. None means that `loads` must parse the document, which may
    not be JSON at all. The caller makes that call, so that a deep document
    reaches `json.loads` with no more frames on the stack than before.
    """
    try:
        return _decode_event(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def has_long_digit_run(data: bytes) -> bool:
    """Tell whether `data` may hold an integer literal that orjson misreads.

    True for 19 or more digits in a row, also inside strings. Every third
    byte is looked at first, and the bytes around each stretch where that
    sample shows 6 digits in a row are then checked in full. The scan goes
    piece by piece, so it never copies much of a long text.
    """
    overlap = _LONG_DIGIT_RUN - 1
    for start in range(0, len(data), _SCAN_CHUNK):
        piece = data[start : start + _SCAN_CHUNK + overlap : _SAMPLE_STEP]
        sample = piece.translate(_DIGITS_AS_ZERO)
        found = sample.find(_SAMPLED_RUN)
        while found >= 0:
            end = sample.find(b" ", found)
            if end < 0:
                end = len(sample)
            # A run that covers the sampled digits found..end-1 lies between
            # the sampled bytes just outside them.
            first = max(start + _SAMPLE_STEP * (found - 1), 0)
            last = start + _SAMPLE_STEP * end
            if _FULL_RUN in data[first:last].translate(_DIGITS_AS_ZERO):
                return True
            found = sample.find(_SAMPLED_RUN, end)
    return False


def dumps(value: Any) -> bytes:
    """Serialise compactly as UTF-8, with non-ASCII characters unescaped.

    NaN and Infinity are written as `null`, because orjson does so, and the
    caller rejects them first (`events.normalise_event` does). The caller
    also rejects values that are not JSON but that orjson writes, such as
    tuples, datetimes, UUIDs, enums and dataclasses. Integers beyond 64 bits,
    which orjson rejects, are written by `json.dumps`.

    Raises:
        UnicodeEncodeError: a string contains a lone surrogate.
        TypeError: a value that neither library writes, such as a set, or a
            key that is not a string, which `json.dumps` would turn into one
            and so could make two keys alike.
        ValueError: NaN or Infinity in a value that only `json.dumps` can
            write.
    """
    try:
        text = orjson.dumps(value)
    except TypeError:
        # orjson.JSONEncodeError is a TypeError.
        pass
    else:
        # orjson 3.13 returns its text in a buffer that can be 10 or more
        # times larger (4 KiB or more for a 500-byte event), and events are
        # kept until their batch is sent. A copy has the exact size.
        return memoryview(text).tobytes()
    if _has_key_not_text(value):
        raise TypeError("a key is not a string, which JSON requires")
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode()


_FAILED = object()


def _loads_checking_numbers(data: bytes) -> Any:
    """Return orjson's parse of `data`, or _FAILED where `json` must decide."""
    small = len(data) <= _MAX_SCANNED_BYTES
    if small and has_long_digit_run(data):
        return _FAILED
    try:
        value = orjson.loads(data)
    except (orjson.JSONDecodeError, RecursionError):
        return _FAILED
    if not small and _has_large_float(value):
        return _FAILED
    return value


def _has_large_float(value: Any) -> bool:
    return any(
        isinstance(item, float) and not -_INT64_LIMIT < item < _INT64_LIMIT
        for item in _nodes(value)
    )


def _has_key_not_text(value: Any) -> bool:
    # It runs only where orjson failed to serialise the value.
    return any(
        isinstance(item, dict) and not all(isinstance(key, str) for key in item)
        for item in _nodes(value)
    )


def _nodes(value: Any) -> Iterator[Any]:
    """Yield the value and everything inside it, in no particular order.

    Iterative, because orjson accepts nesting deeper than the stack allows.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        yield item
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
