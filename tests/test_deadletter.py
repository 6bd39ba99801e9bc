"""Attributes of the dead-letter messages built for one source message."""

from __future__ import annotations

from forwarder.deadletter import build_dead_letters
from forwarder.envelope import PushMessage
from forwarder.records import Failure


def _message(attributes: dict[str, str]) -> PushMessage:
    return PushMessage(
        message_id="42",
        publish_time_ms=1764583200123,
        publish_time="2026-12-01T10:00:00.123Z",
        subscription="projects/p/subscriptions/s",
        data=None,
        attributes=attributes,
    )


def test_source_data_part_not_copied():
    message = _message({"data_part": "1/1", "source": "web"})

    [dead] = build_dead_letters(message, [Failure(b"{}", "rejected", "no")])

    assert "data_part" not in dead.attributes
    assert dead.attributes["source"] == "web"


def test_own_attributes_win_over_source():
    message = _message({"error": "mine", "source_message_id": "7"})

    [dead] = build_dead_letters(message, [Failure(b"{}", "rejected", "no")])

    assert dead.attributes["error"] == "rejected"
    assert dead.attributes["source_message_id"] == "42"
