"""Building the dead-letter messages for the events of one message that failed."""

from __future__ import annotations

from collections.abc import Sequence

from .envelope import PushMessage
from .pubsub import OutgoingMessage
from .records import Failure

# Pub/Sub allows 100 attributes a message and 1,024 bytes a value.
MAX_ATTRIBUTES = 100
MAX_DETAIL_BYTES = 512
# Raw data per dead-letter message, so that base64 and attributes stay under
# Pub/Sub's 10 MB message limit.
MAX_DATA_BYTES = 7 * 1024 * 1024


def build_dead_letters(
    message: PushMessage, failures: Sequence[Failure]
) -> list[OutgoingMessage]:
    """Group failures by reason into dead-letter messages.

    Each message's data is the failed events as newline-delimited JSON,
    every line exactly as received. Its attributes are the source message's
    own, then `error`, `error_detail`, `source_message_id`,
    `source_subscription` and `source_publish_time`, which win on a clash.
    """
    groups: dict[tuple[str, str], list[bytes]] = {}
    for failure in failures:
        groups.setdefault((failure.code, failure.detail), []).append(failure.raw)

    outgoing: list[OutgoingMessage] = []
    for (code, detail), lines in groups.items():
        attributes = _attributes(message, code, detail)
        for data in _split(lines):
            outgoing.append(OutgoingMessage(data, attributes))
    return outgoing


def _attributes(message: PushMessage, code: str, detail: str) -> dict[str, str]:
    own = {
        "error": code,
        "error_detail": truncate_utf8(detail, MAX_DETAIL_BYTES),
        "source_message_id": message.message_id,
        "source_subscription": message.subscription,
        "source_publish_time": message.publish_time,
    }
    room = MAX_ATTRIBUTES - len(own)
    # NOTE: a source message with more than 95 attributes loses the ones past
    # the 95th here, because Pub/Sub allows no more than 100.
    kept = {key: value for key, value in message.attributes.items() if key not in own}
    attributes = dict(list(kept.items())[:room])
    attributes.update(own)
    return attributes


def _split(lines: list[bytes]) -> list[bytes]:
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and size + len(line) + 1 > MAX_DATA_BYTES:
            chunks.append(b"\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        chunks.append(b"\n".join(current))
    return chunks


def truncate_utf8(text: str, max_bytes: int) -> str:
    """Cut `text` to at most `max_bytes` of UTF-8 without splitting a character."""
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= max_bytes:
        return text
    return encoded[: max_bytes - 3].decode("utf-8", "ignore") + "..."
