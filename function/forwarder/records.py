"""Decoding of a message's data into records, one per event it carries."""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import re
import sys
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

from . import codec


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
    # The transform hook raised an exception or returned something other than
    # events for the record.
    TRANSFORM_FAILED = "transform_failed"


class Failure(NamedTuple):
    """Bytes that go to the dead-letter topic, with the reason."""

    raw: bytes
    code: str
    detail: str


_RELEASED = object()

# The position that json and orjson append to a parse error.
_POSITION = re.compile(r":? line \d+ column \d+ \(char \d+\)$")


class Record:
    """One event as received, with the bytes to dead-letter if it fails.

    A record that `RecordStream` read from a line of the data refers to the
    line inside the data instead of holding a copy. Once the stream has moved
    past it, its parsed value is released, and reading `value` again parses
    the line again, so records kept for dead-lettering do not keep every
    parsed event of a large message alive.
    """

    __slots__ = ("index", "values_checked", "_raw", "_value", "_data", "_start", "_end")

    def __init__(
        self,
        index: int,
        raw: bytes,
        value: Any,
        _data: bytes | None = None,
        _start: int = 0,
        _end: int = 0,
        values_checked: bool = False,
    ) -> None:
        # With `_data`, the record is line `_start:_end` of it and `raw` is
        # unused. `values_checked` is true when `codec.loads_event` found the
        # value within Mixpanel's limits on property values.
        self.index = index
        self.values_checked = values_checked
        self._raw = raw
        self._value = value
        self._data = _data
        self._start = _start
        self._end = _end

    @property
    def raw(self) -> bytes:
        """The bytes to dead-letter: the line as received, or the value on one line."""
        if self._data is None:
            return self._raw
        return self._data[self._start : self._end]

    @property
    def value(self) -> Any:
        """The parsed JSON value."""
        if self._value is _RELEASED:
            return codec.loads(self.raw)
        return self._value

    def __repr__(self) -> str:
        return f"Record(index={self.index}, raw={self.raw[:60]!r})"


class RecordStream:
    """The records of one message's data, parsed as the iteration reaches them.

    The base64 data is decoded when the stream is created, so the caller can
    drop the text. Lines are parsed one at a time, and each record's parsed
    value is released when the next record is requested (see `Record`).
    Parts that cannot be decoded are appended to `failures` in order, as the
    iteration reaches them, and `count` is the number of records produced.
    A stream can be iterated once.

    The data is newline-delimited JSON with one value per line, and blank
    lines are skipped. Data that parses as one JSON document (an object, or
    an array of events) is accepted too. A line that is not JSON becomes a
    `Failure` with its original bytes, and the other lines go on. JSON
    nested too deeply for the parser counts as not JSON.

    With `check_values`, each line is parsed by `codec.loads_event`, and a
    record's `values_checked` tells whether its check passed.
    """

    def __init__(self, data: str | None, *, check_values: bool = False) -> None:
        self.failures: list[Failure] = []
        self.count = 0
        self._payload = _decode_payload(data, self.failures)
        self._check_values = check_values

    def __iter__(self) -> Iterator[Record]:
        payload, self._payload = self._payload, None
        if payload is None:
            return
        for record in _records(payload, self.failures, self._check_values):
            self.count += 1
            yield record
            if record._data is not None:
                record._value = _RELEASED


def decode_records(data: str | None) -> tuple[list[Record], list[Failure]]:
    """Split base64 message data into parsed records and undecodable parts.

    This is `RecordStream` read in full, with every parsed value kept.
    """
    stream = RecordStream(data)
    records = []
    payload = stream._payload
    if payload is not None:
        records = list(_records(payload, stream.failures))
    return records, stream.failures


def _decode_payload(data: str | None, failures: list[Failure]) -> bytes | None:
    """Return the decoded data, or None after appending why it is unusable."""
    if data is None:
        failures.append(Failure(b"", ErrorCode.INVALID_PAYLOAD, "message has no data"))
        return None
    try:
        payload = _b64decode(data)
    except ValueError as err:
        # binascii.Error is a ValueError, and so is the error for text
        # that is not ASCII.
        failures.append(
            Failure(
                data.encode("utf-8", "replace"),
                ErrorCode.INVALID_PAYLOAD,
                f"data is not valid base64: {err}",
            )
        )
        return None
    if not payload or payload.isspace():
        failures.append(
            Failure(payload, ErrorCode.INVALID_PAYLOAD, "message data is empty")
        )
        return None
    error = _utf8_error(payload)
    if error is not None:
        failures.append(
            Failure(payload, ErrorCode.INVALID_PAYLOAD, f"data is not UTF-8: {error}")
        )
        return None
    return payload


def _b64decode(data: str) -> bytes:
    """Decode as `base64.b64decode(data, validate=True)` does.

    `binascii.a2b_base64` reads ASCII text in place, where `b64decode` first
    copies the text to bytes, which for a 10 MB message is 13 MB more.
    Strict mode accepts a subset of what `b64decode` accepts, with the same
    result, and `b64decode` decides the rest.
    """
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except ValueError:
        return base64.b64decode(data, validate=True)


# The UTF-8 check decodes this much at a time, so that it never keeps a
# decoded copy of the whole data.
_UTF8_CHECK_CHUNK = 1024 * 1024


def _utf8_error(payload: bytes) -> UnicodeDecodeError | None:
    if payload.isascii():
        return None
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(payload)
    try:
        for start in range(0, len(payload), _UTF8_CHECK_CHUNK):
            decoder.decode(view[start : start + _UTF8_CHECK_CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        # Decoded whole, the error gives its position in the whole data.
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as err:
            return err
    return None


# bytes.splitlines() splits at these, and bytes.strip() strips these bytes.
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_NOT_SPACE = re.compile(rb"[^ \t\n\r\x0b\x0c]")


def _records(
    payload: bytes, failures: list[Failure], check_values: bool = False
) -> Iterator[Record]:
    """Yield the records of decoded, non-blank UTF-8 data, and append failures."""
    lines = _non_blank_lines(payload)
    start, end, line = next(lines)
    # One scan of the data spares each line its own check for long integers.
    # msgspec reads them exactly, so with `check_values` only a line that it
    # refuses is scanned, alone, unless the data is parsed whole.
    digits_checked = not check_values and not codec.has_long_digit_run(payload)

    # The data is one JSON document only if its first non-blank line is not
    # a complete JSON value followed by more lines. That first line is parsed
    # alone, then, so that NDJSON data is never parsed whole.
    value: Any = _NOT_PARSED
    checked = False
    if _NOT_SPACE.search(payload, end) is not None:
        value, checked = _parse_line(line, digits_checked, check_values)
    if value is _NOT_PARSED or isinstance(value, Failure):
        if check_values:
            digits_checked = not codec.has_long_digit_run(payload)
        whole = _parse_whole(payload, digits_checked)
        if isinstance(whole, list):
            # NOTE: data that is one JSON array is parsed whole, so all its
            # events are in memory at once (9 times the message at 10 MB), and
            # each is serialised again for its dead-letter bytes. Only NDJSON
            # data is streamed.
            yield from _expand(whole, 0)
            return
        if whole is not None:
            yield Record(0, _one_line(payload, whole), whole)
            return
        if value is _NOT_PARSED:
            value, checked = _parse_line(line, digits_checked, check_values)

    count = 0
    while True:
        if isinstance(value, Failure):
            failures.append(value)
        elif isinstance(value, list):
            for record in _expand(value, count):
                count += 1
                yield record
        else:
            count += 1
            yield Record(count - 1, b"", value, payload, start, end, checked)
        following = next(lines, None)
        if following is None:
            return
        start, end, line = following
        value, checked = _parse_line(line, digits_checked, check_values)


_NOT_PARSED = object()


def _non_blank_lines(payload: bytes) -> Iterator[tuple[int, int, bytes]]:
    """Yield (start, end, line) for each line of `payload.splitlines()` that
    has a byte other than ASCII whitespace."""
    if b"\r" in payload:
        start = 0
        for match in _LINE_BREAK.finditer(payload):
            line = payload[start : match.start()]
            if line and not line.isspace():
                yield start, match.start(), line
            start = match.end()
        line = payload[start:]
        if line and not line.isspace():
            yield start, len(payload), line
        return
    # Only "\n" breaks lines, and bytes.find is faster than the regex.
    start = 0
    size = len(payload)
    while start < size:
        end = payload.find(b"\n", start)
        if end < 0:
            end = size
        line = payload[start:end]
        if line and not line.isspace():
            yield start, end, line
        start = end + 1


def _parse_line(
    line: bytes, digits_checked: bool, check_values: bool = False
) -> tuple[Any, bool]:
    """Return the line's parsed value, or a Failure for a line that is not
    JSON, and whether it is within the limits on property values. Only with
    `check_values` does `codec.loads_event` parse and check the line."""
    try:
        if check_values:
            value = codec.loads_event(line)
            if value is not None:
                return value, True
        return codec.loads(line, digits_checked=digits_checked), False
    except ValueError as err:
        # Without the position, the failures of one message share a detail and
        # so travel in one dead-letter message per reason.
        reason = _POSITION.sub("", str(err))
        failure = Failure(line, ErrorCode.INVALID_JSON, f"line is not JSON: {reason}")
    except RecursionError:
        failure = Failure(
            line, ErrorCode.INVALID_JSON, "line is not JSON: nested too deeply"
        )
    return failure, False


def _parse_whole(payload: bytes, digits_checked: bool) -> Any | None:
    """Return the data parsed as one JSON document, or None if it is several."""
    try:
        return codec.loads_text(payload, digits_checked=digits_checked)
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


def _expand(values: list[Any], start: int) -> Iterator[Record]:
    """Turn the elements of a parsed JSON array into records, one each."""
    for offset, item in enumerate(values):
        yield Record(start + offset, _serialise(item), item)


# orjson parses up to 1,024 levels of nesting, and on Python 3.11 json.dumps
# writes only as deep as the recursion limit (1,000 by default) allows. A
# value between the two is written again with the limit raised by this much.
_EXTRA_RECURSION = 1100
_recursion_lock = threading.Lock()


def _serialise(value: Any) -> bytes:
    try:
        return _serialise_once(value)
    except RecursionError:
        pass
    with _recursion_lock:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(limit + _EXTRA_RECURSION)
        try:
            return _serialise_once(value)
        finally:
            sys.setrecursionlimit(limit)


def _serialise_once(value: Any) -> bytes:
    # orjson writes NaN and Infinity, which such a value may hold, as null,
    # and the standard library writes them back as the literals it parsed
    # them from. So text with a null, or that orjson cannot write, goes to
    # the standard library, which took 10 times as long for a 550-byte event
    # (timeit, 7.2 against 0.7 µs).
    try:
        fast = codec.dumps(value)
    except ValueError:
        # UnicodeEncodeError, for a lone surrogate, is a ValueError.
        fast = None
    if fast is not None and b"null" not in fast:
        return fast
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate from a "\ud800" escape has no UTF-8 form, so the
        # value is written with escapes, which parse back to the same value.
        return json.dumps(value, separators=(",", ":")).encode()
