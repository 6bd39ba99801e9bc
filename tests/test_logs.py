"""Redaction of credential values in the function's JSON log lines."""

from __future__ import annotations

import logging

from forwarder import logs


def _format(message: str) -> str:
    record = logging.LogRecord(
        "forwarder", logging.ERROR, __file__, 1, message, (), None
    )
    return logs.CloudLoggingFormatter().format(record)


def test_secret_with_quote_redacted():
    secret = 'pa"ss\\word-123'
    logs.register_secrets((secret,))
    try:
        line = _format(f"upstream said {secret}")
    finally:
        logs.register_secrets(())

    assert "pa" + '\\"' + "ss" not in line
    assert "[redacted]" in line


def test_plain_secret_redacted():
    logs.register_secrets(("plain-secret-value",))
    try:
        line = _format("value plain-secret-value here")
    finally:
        logs.register_secrets(())

    assert "plain-secret-value" not in line
