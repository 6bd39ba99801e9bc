"""Loading and calling of the transform hook that maps records to events.

The hook is `transform` in `function/transform.py` unless the variable
FORWARDER_TRANSFORM names another `module:function`, which the tests use.
It receives one record, the parsed JSON of one line of a message, and a
`TransformContext`, and returns the Mixpanel events for that record.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import re
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from inspect import CO_VARARGS, CO_VARKEYWORDS
from types import FunctionType, MappingProxyType
from typing import Any

import msgspec

from .envelope import PushMessage
from .errors import ConfigError, InvalidEvent
from .records import ErrorCode, Record

TRANSFORM_VARIABLE = "FORWARDER_TRANSFORM"
DEFAULT_TRANSFORM = "transform:transform"
TRANSFORM_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

# A generator that never ends would hold the request until the function
# times out, so a record yields at most this many events.
MAX_EVENTS_PER_RECORD = 100_000
# Mixpanel accepts 3 levels inside `properties`, so deeper output is a bug in
# the transform, and the check stops there instead of recursing without end.
MAX_OUTPUT_DEPTH = 32

# An exception's message can quote the record. Every string or number of the
# record and every attribute value at least this long is replaced in it.
MIN_REDACTED_LENGTH = 3
MAX_MESSAGE_CHARS = 4096
REDACTED = "[redacted]"
_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")

Transform = Callable[[Any, "TransformContext"], Any]


class TransformContext(msgspec.Struct, frozen=True):
    """The message that a record came in, as passed to the transform.

    `publish_time` is the RFC 3339 text and `publish_time_ms` the same
    instant in milliseconds. On a replayed message both are those of the
    original message. `attributes` is read-only.
    """

    message_id: str
    publish_time: str
    publish_time_ms: int
    attributes: Mapping[str, str]


def context_for(message: PushMessage) -> TransformContext:
    """Build the context that the transform receives for each record of a message."""
    return TransformContext(
        message_id=message.message_id,
        publish_time=message.publish_time,
        publish_time_ms=message.publish_time_ms,
        attributes=MappingProxyType(dict(message.attributes)),
    )


_loaded: dict[str, Transform] = {}
_load_lock = threading.Lock()


def load_transform(spec: str = DEFAULT_TRANSFORM) -> Transform:
    """Import the hook named `module:function`, once per process, and return it.

    Raises:
        ConfigError: the module fails to import, or has no such function.
    """
    with _load_lock:
        transform = _loaded.get(spec)
        if transform is None:
            transform = _import_transform(spec)
            _loaded[spec] = transform
        return transform


def _import_transform(spec: str) -> Transform:
    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        # Any error of the user's module, a SyntaxError included, stops
        # every message alike, so it is reported as configuration.
        raise ConfigError(
            TRANSFORM_VARIABLE,
            f"the transform module {module_name!r} failed to import: "
            f"{_exception_name(err)}: {err}; fix function/{module_name}.py "
            "and deploy again",
        ) from err
    transform = getattr(module, function_name, None)
    if not callable(transform):
        raise ConfigError(
            TRANSFORM_VARIABLE,
            f"the module {module_name!r} has no function {function_name!r}; "
            "define it as def transform(record, context)",
        )
    return transform


def _pass_on(record: Any, context: TransformContext) -> Any:
    return record


def passes_records_on(transform: Transform) -> bool:
    """Tell whether the hook is a function of (record, context) whose code is
    `return record`.

    Such a hook, like the default one, returns each record as it is and
    changes nothing, so the handler need not call it. Any other code, even
    code that returns the record, may have changed the record on the way.
    The same code with other parameters, such as `*args`, returns something
    else.
    """
    if not isinstance(transform, FunctionType):
        return False
    code, reference = transform.__code__, _pass_on.__code__
    return (
        code.co_code == reference.co_code
        and code.co_argcount == reference.co_argcount
        and code.co_kwonlyargcount == 0
        and not code.co_flags & (CO_VARARGS | CO_VARKEYWORDS)
    )


def run_transform(
    transform: Transform,
    value: Any,
    context: TransformContext,
    raw: bytes | Record = b"",
) -> list[Any]:
    """Call the hook on one record and return its events, possibly none.

    `raw` is the record's bytes as received, or the `Record` that holds
    them, which are read only when the hook fails.

    The hook may return None or an empty list for no event, a dict for one,
    and a list, tuple or iterator of dicts for several. A hook that returns
    the record object itself passes it on as one event whatever its type,
    so that the identity leaves every check to `events.normalise_event`.

    Raises:
        InvalidEvent: with code `transform_failed`, when the hook raised or
            returned something else. The detail names the exception's type
            and message, with the record's values replaced by "[redacted]".
    """
    try:
        output = transform(value, context)
        if output is value:
            return [value]
        # A generator runs here, so its exceptions are caught below too.
        return _as_events(output, value)
    except _InvalidOutput as err:
        detail = str(err)
    except (Exception, SystemExit) as err:
        # SystemExit too, so that a hook calling sys.exit() costs its record
        # and not the whole instance.
        detail = _describe(err, transform)
    # The hook may have changed the record before it failed, so the values
    # to redact come from the record as received as well.
    detail = redact_record(detail, value, context.attributes)
    original = _parse_quietly(raw.raw if isinstance(raw, Record) else raw)
    if original is not None:
        detail = redact_record(detail, original, {})
    raise InvalidEvent(ErrorCode.TRANSFORM_FAILED, detail)


def _parse_quietly(raw: bytes) -> Any | None:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


class _InvalidOutput(Exception):
    """The hook returned a value that is not events."""


def _as_events(output: Any, record: Any) -> list[dict[str, Any]]:
    """Return the hook's output as a list of events, or raise _InvalidOutput."""
    if output is None:
        return []
    if isinstance(output, dict):
        events = [output]
    elif isinstance(output, list | tuple):
        events = list(output)
    elif isinstance(output, Iterator):
        events = list(itertools.islice(output, MAX_EVENTS_PER_RECORD + 1))
    else:
        raise _InvalidOutput(
            f"the transform returned {_python_type(output)}; expected a dict, "
            "a list, tuple or iterator of dicts, or None"
        )
    if len(events) > MAX_EVENTS_PER_RECORD:
        raise _InvalidOutput(
            f"the transform returned more than {MAX_EVENTS_PER_RECORD} events "
            "for one record"
        )
    for number, event in enumerate(events, start=1):
        if not isinstance(event, dict):
            raise _InvalidOutput(
                f"the transform's event {number} is {_python_type(event)}; "
                "expected a dict"
            )
        if event is record:
            # The record itself is parsed JSON, so it needs no check.
            continue
        problem = _json_problem(event, "", 0)
        if problem is not None:
            raise _InvalidOutput(f"the transform's event {number} {problem}")
    return events


def _json_problem(value: Any, path: str, depth: int) -> str | None:
    """Describe the first part of an output event that JSON cannot carry."""
    if value is None or isinstance(value, str | bool | int | float):
        return None
    if depth >= MAX_OUTPUT_DEPTH:
        return f"is nested deeper than {MAX_OUTPUT_DEPTH} levels at {path!r}"
    if isinstance(value, list):
        for item in value:
            problem = _json_problem(item, f"{path}[]", depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"has a key of {_python_type(key)} at {path or 'the top'!r}"
            problem = _json_problem(item, f"{path}.{key}" if path else key, depth + 1)
            if problem is not None:
                return problem
        return None
    return (
        f"has {_python_type(value)} at {path!r}; expected a JSON value (dict, "
        "list, str, int, float, bool or None)"
    )


def _describe(err: BaseException, transform: Transform) -> str:
    """Return the exception's type, message and line in the transform's file."""
    try:
        message = str(err)
    except Exception:  # noqa: BLE001 - a broken __str__ must not fail the message
        message = "(the exception's message could not be read)"
    if len(message) > MAX_MESSAGE_CHARS:
        message = f"(a message of {len(message)} characters, left out)"
    text = f"{_exception_name(err)}: {message}" if message else _exception_name(err)
    location = _location(err, transform)
    return f"{text} ({location})" if location else text


def _location(err: BaseException, transform: Transform) -> str:
    """Return `file:line` of the innermost frame in the transform's own file."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return ""
    source = getattr(getattr(transform, "__code__", None), "co_filename", None)
    own = [frame for frame in frames if frame.filename == source]
    frame = (own or frames)[-1]
    return f"at {os.path.basename(frame.filename)}:{frame.lineno}"


def redact_record(text: str, value: Any, attributes: Mapping[str, str]) -> str:
    """Replace in `text` each string and number in the record and its attributes.

    Values shorter than MIN_REDACTED_LENGTH stay, as they would match too
    much of the text. A string is also found in its `repr` and JSON forms.
    NOTE: a value that the transform derived from the record, such as an
    email in lower case, is not found unless it also occurs in the record.
    """
    for candidate in _record_texts(value, attributes):
        text = text.replace(candidate, REDACTED)
    return text


def _record_texts(value: Any, attributes: Mapping[str, str]) -> list[str]:
    found: set[str] = set()
    pending: list[Any] = [value, *attributes.values()]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            # Keys too, as a record can use an email address as a key, but not
            # plain identifiers such as "properties", which fixed text shares.
            pending.extend(key for key in item if not _IDENTIFIER.match(str(key)))
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            forms = (item, repr(item)[1:-1], json.dumps(item)[1:-1])
            found.update(form for form in forms if len(form) >= MIN_REDACTED_LENGTH)
        elif isinstance(item, int | float) and not isinstance(item, bool):
            form = repr(item)
            if len(form) >= MIN_REDACTED_LENGTH:
                found.add(form)
    # Longer values first, so that one containing another is replaced whole.
    return sorted(found, key=len, reverse=True)


def _exception_name(err: BaseException) -> str:
    cls = type(err)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _python_type(value: Any) -> str:
    name = type(value).__name__
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return f"{article} {name}"
