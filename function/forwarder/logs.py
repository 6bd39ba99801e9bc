"""Structured logging in the JSON line format that Cloud Logging parses.

Each record becomes one JSON object on stderr with `severity` and `message`,
plus the fields passed as `extra={"fields": {...}}`. Known credential values
are replaced before a line is written, as a second guard behind the rule
that no credential is ever passed to a logger.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time

_SEVERITY = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARNING": "WARNING",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL",
}
_REDACTED = "[redacted]"
_secrets: tuple[str, ...] = ()


class CloudLoggingFormatter(logging.Formatter):
    """Formats a record as one Cloud Logging JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "severity": _SEVERITY.get(record.levelname, "DEFAULT"),
            "message": record.getMessage(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, ensure_ascii=False, default=str))


def redact(text: str) -> str:
    """Replace every registered credential value in `text`."""
    for secret in _secrets:
        text = text.replace(secret, _REDACTED)
    return text


def register_secrets(values: tuple[str, ...]) -> None:
    """Remember credential values so that log lines never contain them."""
    global _secrets
    forms = set()
    for value in values:
        if value:
            forms.add(value)
            # Log lines are JSON, where a quote or backslash appears escaped.
            forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    # Longer values first, so that one containing another is replaced whole.
    _secrets = tuple(sorted(forms, key=len, reverse=True))


def configure(logger_name: str = "forwarder") -> None:
    """Send the package's logs to stderr as JSON lines, once per process."""
    logger = logging.getLogger(logger_name)
    if any(isinstance(h.formatter, CloudLoggingFormatter) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CloudLoggingFormatter())
    logger.addHandler(handler)
    level = os.environ.get("LOG_LEVEL", "INFO").strip().upper()
    logger.setLevel(level if level in _SEVERITY else "INFO")
    logger.propagate = False


class RateLimiter:
    """Allows one log line per key and interval, counting those held back."""

    def __init__(self, interval_seconds: float = 60.0) -> None:
        self._interval = interval_seconds
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> int | None:
        """Return how many lines were held back since the last one, or None."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._suppressed.pop(key, 0)
