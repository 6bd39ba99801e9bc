"""Replay and export of the messages on the dead-letter subscription.

Both read through a `LeasedReader`, which keeps every pulled message leased
until the run ends. A message is acknowledged only after its republish succeeded, and
every other message is released (ack deadline 0) when the run ends, even
after an error. A run that dies before that loses nothing either: its leases
expire and Pub/Sub delivers the messages again.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import TextIO

from .pacing import RateLimiter
from .pubsub import OutgoingMessage, PubSubClient, PubSubError, ReceivedMessage

logger = logging.getLogger(__name__)

# Messages per pull, and per publish request when no rate limit applies.
PULL_BATCH = 100

# Pulled messages stay leased this long (Pub/Sub's maximum ack deadline), and
# the reader renews the leases of held messages after half of it, so that no
# message comes back during a run.
LEASE_SECONDS = 600

# The service may return no messages from a pull while some are still
# available, so the reader stops only after this many empty pulls in a row.
EMPTY_PULLS_TO_FINISH = 2

# Attributes the function adds to a dead letter (`source_publish_time` aside,
# which replay keeps), and the prefix of those Pub/Sub adds when it moves a
# message after the last delivery attempt.
FUNCTION_ATTRIBUTES = frozenset(
    {"error", "error_detail", "source_message_id", "source_subscription"}
)
PUBSUB_ATTRIBUTE_PREFIX = "CloudPubSubDeadLetter"
PUBSUB_PUBLISH_TIME = "CloudPubSubDeadLetterSourceTopicPublishTime"
SOURCE_PUBLISH_TIME = "source_publish_time"

# The function cuts a line too long for one message into parts, each with a
# `data_part` attribute such as "2/3". A part alone is no event, so replay
# never republishes one.
DATA_PART = "data_part"

# The `error` code this tool reports for messages without one: those Pub/Sub
# moved after maxDeliveryAttempts because the function kept failing.
NO_ERROR_CODE = "delivery_attempts_exhausted"


def error_code(message: ReceivedMessage) -> str:
    """Return the message's `error` attribute, or NO_ERROR_CODE without one."""
    return message.attributes.get("error") or NO_ERROR_CODE


def original_publish_time(message: ReceivedMessage) -> str:
    """Return the publish time of the message that was dead-lettered.

    The function's dead letters carry it as `source_publish_time`, and
    Pub/Sub's as CloudPubSubDeadLetterSourceTopicPublishTime. The dead letter's
    own publish time is the last resort, and stays the same across replays.
    """
    return (
        message.attributes.get(SOURCE_PUBLISH_TIME)
        or message.attributes.get(PUBSUB_PUBLISH_TIME)
        or message.publish_time
    )


def republished(message: ReceivedMessage) -> OutgoingMessage:
    """Return the message to publish to the events topic for a dead letter.

    The data stays as received. The attributes are the producer's own plus
    `source_publish_time`, from which the function takes the time of events
    that have none, so their time and derived $insert_id do not change.
    """
    attributes = {
        key: value
        for key, value in message.attributes.items()
        if key not in FUNCTION_ATTRIBUTES
        and not key.startswith(PUBSUB_ATTRIBUTE_PREFIX)
    }
    attributes[SOURCE_PUBLISH_TIME] = original_publish_time(message)
    return OutgoingMessage(message.data, attributes)


class LeasedReader:
    """Pulls every message of a subscription once and leases it until the end.

    Args:
        client: the Pub/Sub client.
        subscription: full name, projects/P/subscriptions/S.
        batch_size: maximum messages per pull.
        clock: monotonic seconds, for renewing leases.
    """

    def __init__(
        self,
        client: PubSubClient,
        subscription: str,
        batch_size: int = PULL_BATCH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._subscription = subscription
        self._batch_size = batch_size
        self._clock = clock
        self._ack_ids: dict[str, list[str]] = {}
        self._acknowledged: set[str] = set()
        self._renewed_at = clock()

    def batches(self) -> Iterator[list[ReceivedMessage]]:
        """Yield the messages not seen before, one pulled batch at a time."""
        empty_pulls = 0
        while empty_pulls < EMPTY_PULLS_TO_FINISH:
            self._renew_if_due()
            received = self._client.pull(self._subscription, self._batch_size)
            if not received:
                empty_pulls += 1
                continue
            empty_pulls = 0
            self._client.modify_ack_deadline(
                self._subscription, [m.ack_id for m in received], LEASE_SECONDS
            )

            fresh: list[ReceivedMessage] = []
            redelivered_done: list[str] = []
            for message in received:
                if message.message_id in self._acknowledged:
                    redelivered_done.append(message.ack_id)
                    continue
                known = message.message_id in self._ack_ids
                self._ack_ids.setdefault(message.message_id, []).append(message.ack_id)
                if not known:
                    fresh.append(message)
            if redelivered_done:
                self._client.acknowledge(self._subscription, redelivered_done)
            if not fresh:
                # Only messages this run has already leased came back, so the
                # ones it has not seen are used up.
                return
            logger.info(
                "pulled %d messages from %s, leased for %d s",
                len(fresh),
                self._subscription,
                LEASE_SECONDS,
            )
            yield fresh

    def acknowledge(self, messages: Collection[ReceivedMessage]) -> None:
        """Acknowledge the messages, with every ack id they were delivered with."""
        ack_ids = [
            ack_id
            for message in messages
            for ack_id in self._ack_ids.get(message.message_id, [message.ack_id])
        ]
        self._client.acknowledge(self._subscription, ack_ids)
        for message in messages:
            self._ack_ids.pop(message.message_id, None)
            self._acknowledged.add(message.message_id)

    def release(self) -> None:
        """Release every message still held, so it is available again at once.

        A failure here is logged and not raised: the leases then expire and
        Pub/Sub delivers the messages again all the same.
        """
        held = self._held_ack_ids()
        if not held:
            return
        try:
            self._client.modify_ack_deadline(self._subscription, held, 0)
        except PubSubError as err:
            logger.warning(
                "releasing %d messages on %s failed; they come back within %d s: %s",
                len(held),
                self._subscription,
                LEASE_SECONDS,
                err,
            )
        self._ack_ids.clear()

    def _held_ack_ids(self) -> list[str]:
        return [ack_id for ids in self._ack_ids.values() for ack_id in ids]

    def _renew_if_due(self) -> None:
        now = self._clock()
        if now - self._renewed_at < LEASE_SECONDS / 2:
            return
        held = self._held_ack_ids()
        if held:
            self._client.modify_ack_deadline(self._subscription, held, LEASE_SECONDS)
        self._renewed_at = now


@dataclass
class ReplaySummary:
    """Counts of one replay run, by `error` code."""

    dry_run: bool
    replayed: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    parts: int = 0
    # Messages republished whose acknowledgement then failed: they stay on
    # the subscription, and a later replay republishes them again.
    unacknowledged: int = 0
    stopped_by: str | None = None

    @property
    def replayed_total(self) -> int:
        return sum(self.replayed.values())


def replay(
    client: PubSubClient,
    *,
    subscription: str,
    topic: str,
    limit: int | None = None,
    errors: Collection[str] | None = None,
    rate: float | None = None,
    dry_run: bool = False,
    progress: Callable[[int], object] | None = None,
) -> ReplaySummary:
    """Republish dead letters to the events topic, acknowledging each after.

    Args:
        client: the Pub/Sub client.
        subscription: the dead-letter subscription, projects/P/subscriptions/S.
        topic: the events topic, projects/P/topics/T.
        limit: the maximum number of messages to replay, or None for all.
        errors: the `error` codes to replay (NO_ERROR_CODE for messages
            without one), or None for every code.
        rate: the maximum messages per second, or None for no limit.
        dry_run: pull and release without publishing or acknowledging.
        progress: called with the number of messages each step handled.

    Returns:
        The summary. `stopped_by` is set when a Pub/Sub call failed for good
        or the run was interrupted; every message not replayed by then stays
        on the subscription.
    """
    summary = ReplaySummary(dry_run=dry_run)
    limiter = RateLimiter(rate)
    reader = LeasedReader(client, subscription, _pull_size(limiter, limit))
    try:
        for batch in reader.batches():
            selected = _select(batch, errors, summary)
            if limit is not None:
                selected = selected[: limit - summary.replayed_total]
            for chunk in _chunks(selected, limiter.batch_size(PULL_BATCH)):
                limiter.wait(len(chunk))
                if not dry_run:
                    client.publish(topic, [republished(m) for m in chunk])
                    try:
                        reader.acknowledge(chunk)
                    except PubSubError:
                        summary.unacknowledged = len(chunk)
                        raise
                    logger.info(
                        "republished and acknowledged message ids %s",
                        ", ".join(m.message_id for m in chunk),
                    )
                summary.replayed.update(error_code(m) for m in chunk)
                if progress is not None:
                    progress(len(chunk))
            if limit is not None and summary.replayed_total >= limit:
                break
    except PubSubError as err:
        summary.stopped_by = str(err)
    except KeyboardInterrupt:
        summary.stopped_by = "interrupted"
    finally:
        reader.release()
    return summary


@dataclass
class ExportSummary:
    """Counts of one export run, by `error` code."""

    written: Counter[str] = field(default_factory=Counter)
    stopped_by: str | None = None

    @property
    def written_total(self) -> int:
        return sum(self.written.values())


def export(
    client: PubSubClient,
    *,
    subscription: str,
    output: TextIO,
    limit: int | None = None,
    errors: Collection[str] | None = None,
    progress: Callable[[int], object] | None = None,
) -> ExportSummary:
    """Write the dead letters to `output` as JSON lines, acknowledging none.

    Each line has messageId, publishTime, attributes, data (base64, as the
    REST API sends it) and text: the data as UTF-8, or null when it is not.
    """
    summary = ExportSummary()
    reader = LeasedReader(client, subscription, _pull_size(RateLimiter(None), limit))
    try:
        for batch in reader.batches():
            selected = [m for m in batch if errors is None or error_code(m) in errors]
            if limit is not None:
                selected = selected[: limit - summary.written_total]
            for message in selected:
                output.write(json.dumps(export_record(message), ensure_ascii=False))
                output.write("\n")
                summary.written[error_code(message)] += 1
            if progress is not None and selected:
                progress(len(selected))
            if limit is not None and summary.written_total >= limit:
                break
    except PubSubError as err:
        summary.stopped_by = str(err)
    except KeyboardInterrupt:
        summary.stopped_by = "interrupted"
    finally:
        reader.release()
    return summary


def export_record(message: ReceivedMessage) -> dict[str, object]:
    """Return the JSON object that export writes for one message."""
    try:
        text: str | None = message.data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "messageId": message.message_id,
        "publishTime": message.publish_time,
        "attributes": message.attributes,
        "data": base64.b64encode(message.data).decode("ascii"),
        "text": text,
    }


def _select(
    batch: list[ReceivedMessage],
    errors: Collection[str] | None,
    summary: ReplaySummary,
) -> list[ReceivedMessage]:
    """Return the messages to replay, counting the others in the summary."""
    selected = []
    for message in batch:
        if DATA_PART in message.attributes:
            summary.parts += 1
        elif errors is not None and error_code(message) not in errors:
            summary.skipped[error_code(message)] += 1
        else:
            selected.append(message)
    return selected


def _pull_size(limiter: RateLimiter, limit: int | None) -> int:
    """Return the messages per pull that the run can handle within one lease."""
    size = PULL_BATCH
    if limiter.rate is not None:
        size = min(size, max(1, int(limiter.rate * LEASE_SECONDS / 2)))
    if limit is not None:
        size = min(size, limit)
    return size


def _chunks(
    messages: list[ReceivedMessage], size: int
) -> Iterator[list[ReceivedMessage]]:
    for start in range(0, len(messages), size):
        yield messages[start : start + size]
