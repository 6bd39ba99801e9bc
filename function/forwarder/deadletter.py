"""Building the dead-letter messages for the events of one message that failed."""

from __future__ import annotations

from collections.abc import Sequence

from . import logs
from .envelope import PushMessage
from .pubsub import OutgoingMessage
from .records import Failure

# Attributes that the forwarder sets on dead letters.
RESERVED_ATTRIBUTES = frozenset(
    {
        "error",
        "error_detail",
        "source_message_id",
        "source_subscription",
        "source_publish_time",
        "data_part",
    }
)

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

    A single line longer than MAX_DATA_BYTES is cut into several messages,
    each with a `data_part` attribute such as "2/3". Joining their data in
    part order gives the line back.
    """
    groups: dict[tuple[str, str], list[bytes]] = {}
    for failure in failures:
        groups.setdefault((failure.code, failure.detail), []).append(failure.raw)

    outgoing: list[OutgoingMessage] = []
    for (code, detail), lines in groups.items():
        for data, data_part in _split(lines):
            attributes = _attributes(message, code, detail, data_part)
            outgoing.append(OutgoingMessage(data, attributes))
    return outgoing


def _attributes(
    message: PushMessage, code: str, detail: str, data_part: str | None
) -> dict[str, str]:
    # The detail can quote Mixpanel's response, so it is redacted like a log
    # line and made valid UTF-8, which Pub/Sub requires of attributes.
    own = {
        "error": code,
        "error_detail": truncate_utf8(logs.redact(detail), MAX_DETAIL_BYTES),
        "source_message_id": message.message_id,
        "source_subscription": message.subscription,
        "source_publish_time": message.publish_time,
    }
    if data_part is not None:
        own["data_part"] = data_part
    room = MAX_ATTRIBUTES - len(own)
    # NOTE: a source message with more than 95 attributes (94 beside
    # `data_part`) loses the ones past that here, because Pub/Sub allows no
    # more than 100.
    # The forwarder's own names are never copied from the source, so a
    # producer's `data_part` cannot make a whole line look like a piece.
    kept = {
        key: value
        for key, value in message.attributes.items()
        if key not in RESERVED_ATTRIBUTES
    }
    attributes = dict(list(kept.items())[:room])
    attributes.update(own)
    return attributes


def _split(lines: list[bytes]) -> list[tuple[bytes, str | None]]:
    """Group lines, in order, into data of at most MAX_DATA_BYTES each.

    Returns (data, data_part) pairs. data_part is None except for the pieces
    of a line too long for one message.
    """
    chunks: list[tuple[bytes, str | None]] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and size + len(line) + 1 > MAX_DATA_BYTES:
            chunks.append((b"\n".join(current), None))
            current, size = [], 0
        if len(line) > MAX_DATA_BYTES:
            count = -(-len(line) // MAX_DATA_BYTES)
            for number in range(count):
                piece = line[number * MAX_DATA_BYTES : (number + 1) * MAX_DATA_BYTES]
                chunks.append((piece, f"{number + 1}/{count}"))
            continue
        current.append(line)
        size += len(line) + 1
    if current:
        chunks.append((b"\n".join(current), None))
    return chunks


def truncate_utf8(text: str, max_bytes: int) -> str:
    """Cut `text` to at most `max_bytes` of UTF-8 without splitting a character.

    A lone surrogate, which has no UTF-8 form, becomes "?".
    """
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= max_bytes:
        return encoded.decode("utf-8")
    return encoded[: max_bytes - 3].decode("utf-8", "ignore") + "..."
