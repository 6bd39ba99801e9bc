"""Local stand-in for Mixpanel's Import API (`POST /import`), for tests and the demo.

It checks credentials, undoes gzip, enforces the request limits, validates
events as strict mode does, and stores the valid ones deduplicated on
(event, time, distinct_id, $insert_id). Scripted Fault responses play the
failures that the real API and the proxies in front of it return: 429, 5xx
with plain-text or HTML bodies, and responses slow enough to time a client out.

Without `strict=1` the stand-in skips invalid events silently and returns 200
with the count of valid events. NOTE: Mixpanel does not document which count
non-strict mode returns, so clients should not rely on this one.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import hmac
import io
import json
import logging
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request, Response

from local._server import LOOPBACK_HOST, LocalServer

logger = logging.getLogger(__name__)

# Fixed test credentials that only this stand-in accepts.
DEFAULT_PROJECT_ID = "3141592"
DEFAULT_SERVICE_ACCOUNTS: Mapping[str, str] = {
    "standin-sa.mp-service-account": "standin-sa-secret"
}
DEFAULT_PROJECT_TOKEN = "standin-project-token"  # noqa: S105

# Values Mixpanel rejects as distinct_id or $insert_id, compared case-insensitively.
PLACEHOLDER_VALUES = frozenset(
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

# 1971-01-01T00:00:00Z in seconds since the epoch.
EARLIEST_TIME_SECONDS = 31_536_000

# A time at or above this is in milliseconds. As seconds it would be the year 5138.
MILLISECONDS_THRESHOLD = 100_000_000_000

# NOTE: Mixpanel documents "1MB" per event without saying whether it means 10**6
# or 2**20 bytes. The stand-in takes 2**20.
MAX_EVENT_BYTES = 1024 * 1024
MAX_PROPERTIES = 254
MAX_NESTING_DEPTH = 3
MAX_ARRAY_LENGTH = 254
MAX_STRING_LENGTH = 255

_INSERT_ID_PATTERN = re.compile(r"[A-Za-z0-9-]{1,36}")

_STATUS_TEXT = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
}

_VALIDATION_FAILED = "some data points in the request failed validation"
_RATE_LIMITED = (
    "Project exceeded rate limits. Please retry the request with exponential backoff."
)


@dataclass(frozen=True)
class Fault:
    """One scripted response to the next /import request."""

    status: int
    body: bytes | str = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "text/plain"
    store_first: bool = False
    delay_seconds: float = 0.0

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"Fault status must be 100-599, got {self.status}")
        if self.delay_seconds < 0:
            raise ValueError(
                f"Fault delay_seconds must be >= 0, got {self.delay_seconds}"
            )

    @classmethod
    def rate_limited(cls, retry_after: int | None = None) -> Fault:
        """Build the 429 that Mixpanel sends, with a Retry-After header if given."""
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        return cls(
            status=429,
            body=json.dumps(_error_payload(429, _RATE_LIMITED)),
            headers=headers,
            content_type="application/json",
        )


@dataclass
class RecordedRequest:
    """One request as the stand-in received it, and the status it responded with.

    `body` is empty when Content-Encoding could not be undone, and contains at
    most max_request_bytes + 1 bytes when the decompressed body was over the
    limit. `headers` keeps Authorization, because the record stays in memory.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw_body: bytes
    body: bytes
    events: list | None
    status: int


class _Rejected(Exception):
    """A whole request rejected with an HTTP status and an error message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _DecodedBody:
    body: bytes
    events: list | None
    error: _Rejected | None


class MixpanelStandin(LocalServer):
    """Mixpanel Import API stand-in served on 127.0.0.1.

    Args:
        project_id: the project that service-account requests must name.
        service_accounts: accepted service-account usernames and their secrets.
        project_tokens: accepted project tokens (Basic username, empty password).
        max_request_bytes: maximum decompressed body size; larger gets 413.
        max_events_per_request: maximum events per request; more gets 400.
        clock: current time in seconds since the epoch, for the time checks.
        retention_days: events older than this many days are invalid.
    """

    def __init__(
        self,
        *,
        project_id: str = DEFAULT_PROJECT_ID,
        service_accounts: Mapping[str, str] | None = None,
        project_tokens: Iterable[str] = (DEFAULT_PROJECT_TOKEN,),
        max_request_bytes: int = 10 * 1024 * 1024,
        max_events_per_request: int = 2000,
        clock: Callable[[], float] = time.time,
        retention_days: int = 5 * 365,
    ) -> None:
        super().__init__()
        if max_request_bytes < 1:
            raise ValueError(f"max_request_bytes must be >= 1, got {max_request_bytes}")
        if max_events_per_request < 1:
            raise ValueError(
                f"max_events_per_request must be >= 1, got {max_events_per_request}"
            )
        if retention_days < 1:
            raise ValueError(f"retention_days must be >= 1, got {retention_days}")

        self._project_id = project_id
        if service_accounts is None:
            service_accounts = DEFAULT_SERVICE_ACCOUNTS
        self._service_accounts = dict(service_accounts)
        self._project_tokens = frozenset(project_tokens)
        self._max_request_bytes = max_request_bytes
        self._max_events_per_request = max_events_per_request
        self._clock = clock
        self._retention_days = retention_days

        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._requests: list[RecordedRequest] = []
        self._store: dict[tuple[str, int, str, str], dict] = {}

    @property
    def project_id(self) -> str:
        """Project id that service-account requests must send as `project_id`."""
        return self._project_id

    @property
    def url(self) -> str:
        """Base URL, such as http://127.0.0.1:PORT, once started."""
        return self.address()

    def address(self) -> str:
        """Base URL of the running stand-in."""
        return f"http://{LOOPBACK_HOST}:{self.port}"

    def enqueue(self, *faults: Fault) -> None:
        """Queue responses for the next /import requests, one per request, in order."""
        with self._lock:
            self._faults.extend(faults)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Copy of the list of requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def imported_events(self) -> list[dict]:
        """Return copies of the stored events, deduplicated, in first-stored order."""
        with self._lock:
            return [copy.deepcopy(event) for event in self._store.values()]

    def reset(self) -> None:
        """Clear the stored events, the recorded requests and the fault queue."""
        with self._lock:
            self._store.clear()
            self._requests.clear()
            self._faults.clear()

    def handle(self, request: Request) -> Response:
        """Serve POST /import, and return 404 or 405 for other paths and methods."""
        raw_body = request.get_data()
        decoded = _decode_body(
            raw_body,
            request.headers.get("Content-Encoding", ""),
            request.mimetype,
            self._max_request_bytes,
        )

        if request.path != "/import":
            response = _error_response(404, f"no such endpoint: {request.path}")
            self._record(request, raw_body, decoded, response.status_code)
            return response

        if request.method != "POST":
            response = _error_response(
                405, f"method {request.method} is not allowed, use POST"
            )
            response.headers["Allow"] = "POST"
            self._record(request, raw_body, decoded, response.status_code)
            return response

        fault = self._next_fault()
        if fault is None:
            response = self._import(request, decoded)
            self._record(request, raw_body, decoded, response.status_code)
            return response

        if fault.store_first:
            self._import(request, decoded)
        self._record(request, raw_body, decoded, fault.status)
        logger.info("sending scripted %d response to /import", fault.status)

        self._sleep(fault.delay_seconds)
        return Response(
            fault.body,
            status=fault.status,
            headers=dict(fault.headers),
            content_type=fault.content_type,
        )

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _record(
        self,
        request: Request,
        raw_body: bytes,
        decoded: _DecodedBody,
        status: int,
    ) -> None:
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.args),
            headers=dict(request.headers),
            raw_body=raw_body,
            body=decoded.body,
            events=decoded.events,
            status=status,
        )
        with self._lock:
            self._requests.append(record)

    def _import(self, request: Request, decoded: _DecodedBody) -> Response:
        """Build the response to one /import request, storing its valid events."""
        if not self._credentials_valid(request):
            logger.info("rejected /import request: invalid credentials")
            return _error_response(401, "Invalid credentials")

        if decoded.error is not None:
            logger.info("rejected /import request: %s", decoded.error.message)
            return _error_response(decoded.error.status, decoded.error.message)

        events = decoded.events or []
        if len(events) > self._max_events_per_request:
            message = (
                f"request contains {len(events)} events, more than the maximum of "
                f"{self._max_events_per_request} per request"
            )
            logger.info("rejected /import request: %s", message)
            return _error_response(400, message)

        strict = request.args.get("strict") == "1"
        imported, failed_records = self._store_valid_events(events)
        if failed_records:
            logger.info(
                "%d of %d events failed validation (strict=%s)",
                len(failed_records),
                len(events),
                strict,
            )

        if strict and failed_records:
            payload = _error_payload(400, _VALIDATION_FAILED)
            payload["failed_records"] = failed_records
            payload["num_records_imported"] = imported
            return _json_response(400, payload)
        return _json_response(
            200, {"code": 200, "num_records_imported": imported, "status": "OK"}
        )

    def _credentials_valid(self, request: Request) -> bool:
        """Check HTTP Basic credentials and the project_id query parameter."""
        auth = request.authorization
        if auth is None or auth.type != "basic":
            return False

        username = auth.username or ""
        password = auth.password or ""
        project_id = request.args.get("project_id")

        # A service account must name the project, because one account can
        # belong to several projects.
        secret = self._service_accounts.get(username)
        if secret is not None and password:
            secret_matches = hmac.compare_digest(password.encode(), secret.encode())
            return secret_matches and project_id == self._project_id

        # A project token identifies its project, so project_id is optional.
        if username in self._project_tokens and not password:
            return project_id is None or project_id == self._project_id
        return False

    def _store_valid_events(self, events: list) -> tuple[int, list[dict]]:
        """Store the valid events and return the imported count and failed records."""
        now_seconds = self._clock()
        imported = 0
        failed_records: list[dict] = []

        for index, event in enumerate(events):
            problem = _find_event_problem(event, now_seconds, self._retention_days)
            if problem is not None:
                failed_field, message = problem
                failed_records.append(
                    {
                        "index": index,
                        "insert_id": _insert_id_of(event),
                        "field": failed_field,
                        "message": message,
                    }
                )
                continue

            stored = _truncate_strings(event)
            with self._lock:
                self._store.setdefault(_dedup_key(stored), stored)
            imported += 1

        return imported, failed_records


def _decode_body(
    raw_body: bytes, content_encoding: str, mimetype: str, max_bytes: int
) -> _DecodedBody:
    """Undo Content-Encoding and parse the events, keeping the first error."""
    try:
        body = _decompress(raw_body, content_encoding, max_bytes)
    except _Rejected as err:
        return _DecodedBody(body=b"", events=None, error=err)

    if len(body) > max_bytes:
        error = _Rejected(413, f"request exceeds max limit of {max_bytes} bytes")
        return _DecodedBody(body=body, events=None, error=error)

    try:
        events = _parse_events(body, mimetype)
    except _Rejected as err:
        return _DecodedBody(body=body, events=None, error=err)
    return _DecodedBody(body=body, events=events, error=None)


def _decompress(raw_body: bytes, content_encoding: str, max_bytes: int) -> bytes:
    """Return the body with Content-Encoding undone, cut at max_bytes + 1 bytes."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw_body
    if encoding != "gzip":
        raise _Rejected(
            400, f"unsupported Content-Encoding {encoding!r}, expected gzip or none"
        )

    # Reading one byte past the limit is enough to detect an oversized body
    # without inflating all of it.
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw_body)) as stream:
            return stream.read(max_bytes + 1)
    except (OSError, EOFError, zlib.error) as err:
        raise _Rejected(400, f"request body is not valid gzip: {err}") from err


def _parse_events(body: bytes, mimetype: str) -> list:
    """Parse a JSON array or NDJSON body into a list of events."""
    if not body.strip():
        raise _Rejected(400, "request body is empty, expected a JSON array or NDJSON")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _Rejected(400, f"request body is not valid UTF-8: {err}") from err

    if mimetype == "application/x-ndjson":
        return _parse_ndjson(text)
    if mimetype not in ("", "application/json"):
        raise _Rejected(
            400,
            f"unsupported Content-Type {mimetype!r}, expected application/json "
            "or application/x-ndjson",
        )

    try:
        parsed = json.loads(text, parse_constant=_reject_constant)
    except ValueError as err:
        raise _Rejected(400, f"request body is not valid JSON: {err}") from err
    if not isinstance(parsed, list):
        raise _Rejected(400, "request body must be a JSON array of events")
    return parsed


def _parse_ndjson(text: str) -> list:
    # Split on "\n" only: str.splitlines() also splits on U+2028, which JSON
    # allows unescaped inside strings.
    events = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line, parse_constant=_reject_constant))
        except ValueError as err:
            raise _Rejected(
                400, f"request body line {number} is not valid JSON: {err}"
            ) from err
    return events


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _find_event_problem(
    event: Any, now_seconds: float, retention_days: int
) -> tuple[str, str] | None:
    """Return (field, message) for the first strict-mode rule the event breaks.

    Returns None for a valid event. The checks run in a fixed order, so one
    event yields one failure.
    """
    if not isinstance(event, dict):
        return "", f"event must be a JSON object, not {_json_type(event)}"

    unexpected = sorted(set(event) - {"event", "properties"})
    if unexpected:
        key = unexpected[0]
        return key, (
            f"unexpected top-level key {key!r}: an event contains only "
            "'event' and 'properties'"
        )

    name = event.get("event")
    if not isinstance(name, str) or not name:
        return "event", "'event' is required and must be a non-empty string"
    if not _is_utf8(name):
        return "event", "'event' is invalid: not valid UTF-8"

    properties = event.get("properties")
    if not isinstance(properties, dict):
        return "properties", "'properties' is required and must be a JSON object"

    problem = (
        _check_time(properties, now_seconds, retention_days)
        or _check_distinct_id(properties)
        or _check_insert_id(properties)
        or _check_property_values(properties)
    )
    if problem is not None:
        return problem

    serialized = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    size = len(serialized.encode("utf-8"))
    if size >= MAX_EVENT_BYTES:
        return "", (
            f"event is {size} bytes of JSON, but must be under {MAX_EVENT_BYTES} bytes"
        )
    return None


def _check_time(
    properties: dict, now_seconds: float, retention_days: int
) -> tuple[str, str] | None:
    if "time" not in properties:
        return "properties.time", "'properties.time' is required"

    value = properties["time"]
    if isinstance(value, bool) or not isinstance(value, int):
        return "properties.time", (
            "'properties.time' is invalid: must be an integer number of seconds "
            "or milliseconds since the epoch"
        )

    time_ms = _to_milliseconds(value)
    oldest_ms = (now_seconds - retention_days * 86_400) * 1000
    if time_ms < EARLIEST_TIME_SECONDS * 1000:
        return "properties.time", (
            "'properties.time' is invalid: must not be before 1971-01-01"
        )
    if time_ms > now_seconds * 1000:
        return "properties.time", (
            "'properties.time' is invalid: must not be in the future"
        )
    if time_ms < oldest_ms:
        return "properties.time", (
            "'properties.time' is invalid: older than the project's retention of "
            f"{retention_days} days"
        )
    return None


def _check_distinct_id(properties: dict) -> tuple[str, str] | None:
    # Projects on Simplified ID merge derive the distinct_id from $user_id or
    # $device_id, so either one makes distinct_id optional.
    if "distinct_id" not in properties:
        if "$device_id" in properties or "$user_id" in properties:
            return None
        return "properties.distinct_id", (
            "'properties.distinct_id' is required unless '$device_id' or "
            "'$user_id' is set"
        )

    value = properties["distinct_id"]
    if isinstance(value, bool) or not isinstance(value, str | int):
        return "properties.distinct_id", (
            "'properties.distinct_id' is invalid: must be a string or an integer"
        )
    if str(value).lower() in PLACEHOLDER_VALUES:
        return "properties.distinct_id", (
            f"'properties.distinct_id' is invalid: {value!r} is a placeholder value"
        )
    return None


def _check_insert_id(properties: dict) -> tuple[str, str] | None:
    if "$insert_id" not in properties:
        return "properties.$insert_id", "'properties.$insert_id' is required"

    value = properties["$insert_id"]
    if not isinstance(value, str) or not _INSERT_ID_PATTERN.fullmatch(value):
        return "properties.$insert_id", (
            "'properties.$insert_id' is invalid: must be a string of 1 to 36 "
            "characters from A-Z, a-z, 0-9 and '-'"
        )
    if value.lower() in PLACEHOLDER_VALUES:
        return "properties.$insert_id", (
            f"'properties.$insert_id' is invalid: {value!r} is a placeholder value"
        )
    return None


def _check_property_values(properties: dict) -> tuple[str, str] | None:
    if len(properties) > MAX_PROPERTIES:
        return "properties", (
            f"'properties' has {len(properties)} keys, more than the maximum of "
            f"{MAX_PROPERTIES}"
        )
    return _check_object(properties, "properties", depth=0)


def _check_object(value: dict, path: str, depth: int) -> tuple[str, str] | None:
    for key, item in value.items():
        item_path = f"{path}.{key}"
        if not _is_utf8(key):
            return item_path, f"key of '{path}' is invalid: not valid UTF-8"
        problem = _check_value(item, item_path, depth)
        if problem is not None:
            return problem
    return None


def _check_value(value: Any, path: str, depth: int) -> tuple[str, str] | None:
    """Check one property value; `depth` counts the objects and arrays around it.

    A top-level property has depth 0, so a property whose value is
    {"a": {"b": {"c": 1}}} nests 3 levels, the most that Mixpanel accepts.
    """
    if isinstance(value, str):
        if not _is_utf8(value):
            return path, f"'{path}' is invalid: not valid UTF-8"
        return None
    if not isinstance(value, list | dict):
        return None

    depth += 1
    if depth > MAX_NESTING_DEPTH:
        return path, (
            f"'{path}' is invalid: objects and arrays nest more than "
            f"{MAX_NESTING_DEPTH} levels deep"
        )
    if isinstance(value, dict):
        return _check_object(value, path, depth)

    if len(value) > MAX_ARRAY_LENGTH:
        return path, (
            f"'{path}' is invalid: the array has {len(value)} elements, more than "
            f"the maximum of {MAX_ARRAY_LENGTH}"
        )
    for index, item in enumerate(value):
        problem = _check_value(item, f"{path}[{index}]", depth)
        if problem is not None:
            return problem
    return None


def _is_utf8(text: str) -> bool:
    # A JSON escape such as "\ud800" decodes to a lone surrogate, which has no
    # UTF-8 encoding.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _to_milliseconds(value: int) -> int:
    return value if value >= MILLISECONDS_THRESHOLD else value * 1000


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _insert_id_of(event: Any) -> str:
    if isinstance(event, dict) and isinstance(event.get("properties"), dict):
        insert_id = event["properties"].get("$insert_id")
        if isinstance(insert_id, str):
            return insert_id
    return ""


def _truncate_strings(value: Any) -> Any:
    """Copy an event, cutting each string inside `properties` to 255 characters."""
    if isinstance(value, dict) and "properties" in value:
        return {**value, "properties": _truncate_value(value["properties"])}
    return value


def _truncate_value(value: Any) -> Any:
    if isinstance(value, str):
        return value[:MAX_STRING_LENGTH]
    if isinstance(value, list):
        return [_truncate_value(item) for item in value]
    if isinstance(value, dict):
        return {key: _truncate_value(item) for key, item in value.items()}
    return value


def _dedup_key(event: dict) -> tuple[str, int, str, str]:
    """Return (event, time in ms, distinct_id, $insert_id) for a valid event."""
    properties = event["properties"]

    # Without distinct_id, Simplified ID merge takes $user_id, else $device_id.
    distinct_id = properties.get(
        "distinct_id", properties.get("$user_id", properties.get("$device_id", ""))
    )
    return (
        event["event"],
        _to_milliseconds(properties["time"]),
        str(distinct_id),
        properties["$insert_id"],
    )


def _error_payload(status: int, message: str) -> dict[str, Any]:
    return {"code": status, "error": message, "status": _STATUS_TEXT[status]}


def _error_response(status: int, message: str) -> Response:
    return _json_response(status, _error_payload(status, message))


def _json_response(status: int, payload: dict[str, Any]) -> Response:
    return Response(
        json.dumps(payload, sort_keys=True),
        status=status,
        content_type="application/json",
    )


def main(argv: list[str] | None = None) -> int:
    """Serve the stand-in on 127.0.0.1 until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m local.mixpanel_standin",
        description="Serve the Mixpanel Import API stand-in on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="TCP port to listen on (default: 0, which picks a free port)",
    )
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    standin = MixpanelStandin()
    url = standin.start(port=args.port)

    print(f"Mixpanel stand-in listening on {url}")
    print(f"  endpoint: {url}/import?strict=1&project_id={standin.project_id}")
    for username in DEFAULT_SERVICE_ACCOUNTS:
        print(f"  service account username: {username}")
    print(f"  project token: {DEFAULT_PROJECT_TOKEN}", flush=True)

    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
