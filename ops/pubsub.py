"""The Pub/Sub REST calls of the operator tools: pull, acknowledge, publish.

With PUBSUB_EMULATOR_HOST set, every call goes over plain HTTP to that host
without credentials, as the emulator expects. Otherwise the calls go to
pubsub.googleapis.com with an access token from google-auth's application
default credentials.

Transient failures (HTTP 429, 500, 502, 503 and 504, timeouts and failed
connections) are retried with exponential backoff and jitter. A publish that
timed out may have stored its messages all the same, so a retry can publish a
message twice. The function then imports its events once, because Mixpanel
deduplicates on $insert_id and time.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
import tenacity

logger = logging.getLogger(__name__)

PUBSUB_API = "https://pubsub.googleapis.com"
PUBSUB_SCOPE = "https://www.googleapis.com/auth/pubsub"

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})

# Pub/Sub accepts at most 1,000 messages and 10 MB per publish request. The
# byte budget leaves room for the JSON around the base64 data.
MAX_MESSAGES_PER_PUBLISH = 1000
MAX_PUBLISH_BYTES = 9 * 1024 * 1024

# Ack ids sent in one acknowledge or modifyAckDeadline request.
ACK_IDS_PER_REQUEST = 100


class PubSubError(Exception):
    """A Pub/Sub call failed for good, or still failed after its retries.

    `status` is the HTTP status of the last response, or None when no
    response arrived.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _TransientError(PubSubError):
    """A failure that the next attempt may not have."""


@dataclass(frozen=True)
class ReceivedMessage:
    """One message from a pull response, with the ack id of this delivery."""

    ack_id: str
    message_id: str
    publish_time: str
    data: bytes
    attributes: dict[str, str] = field(default_factory=dict)
    delivery_attempt: int | None = None

    @classmethod
    def from_json(cls, entry: Any) -> ReceivedMessage:
        """Build a message from one element of `receivedMessages`.

        Raises:
            PubSubError: the element lacks the ack id, message id or publish
                time, or its data is not base64.
        """
        message = entry.get("message") if isinstance(entry, dict) else None
        if not isinstance(message, dict):
            raise PubSubError(f"pull returned an entry without a message: {entry!r}")
        ack_id = entry.get("ackId")
        message_id = message.get("messageId")
        publish_time = message.get("publishTime")
        if not all(isinstance(v, str) for v in (ack_id, message_id, publish_time)):
            raise PubSubError(
                "pull returned a message without ackId, messageId or publishTime"
            )
        try:
            data = base64.b64decode(message.get("data", ""), validate=True)
        except (binascii.Error, ValueError) as err:
            raise PubSubError(
                f"pull returned message {message_id} with data that is not base64"
            ) from err
        attempt = entry.get("deliveryAttempt")
        return cls(
            ack_id=ack_id,
            message_id=message_id,
            publish_time=publish_time,
            data=data,
            attributes=dict(message.get("attributes") or {}),
            delivery_attempt=attempt if isinstance(attempt, int) else None,
        )


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to publish: raw data bytes and string attributes."""

    data: bytes
    attributes: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"data": base64.b64encode(self.data).decode("ascii")}
        if self.attributes:
            body["attributes"] = self.attributes
        return body

    @property
    def request_bytes(self) -> int:
        """Approximate bytes the message adds to a publish request."""
        attribute_bytes = sum(
            len(key.encode()) + len(value.encode()) + 8
            for key, value in self.attributes.items()
        )
        return len(self.data) * 4 // 3 + 4 + attribute_bytes


class PubSubClient:
    """Makes Pub/Sub REST calls, retrying transient failures.

    Args:
        emulator_host: host:port of an emulator, or None for the real service.
        retries: attempts after the first one for a transient failure.
        initial_backoff: seconds before the first retry; the wait doubles up to
            `max_backoff`, plus up to `initial_backoff` of jitter.
        max_backoff: maximum wait in seconds between two attempts.
        timeout: seconds to wait for one response.

    Raises:
        PubSubError: no Google credentials were found for the real service.
    """

    def __init__(
        self,
        emulator_host: str | None,
        *,
        retries: int = 5,
        initial_backoff: float = 0.5,
        max_backoff: float = 10.0,
        timeout: float = 30.0,
    ) -> None:
        self._retries = retries
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._timeout = timeout
        self._auth_errors: tuple[type[Exception], ...] = ()
        if emulator_host:
            self.base_url = f"http://{emulator_host}/v1"
            self._session = requests.Session()
        else:
            self.base_url = f"{PUBSUB_API}/v1"
            self._session = self._authorized_session()

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, **options: Any
    ) -> PubSubClient:
        """Build a client for PUBSUB_EMULATOR_HOST if it is set, else for Google."""
        env = os.environ if environ is None else environ
        host = env.get("PUBSUB_EMULATOR_HOST", "").strip() or None
        return cls(host, **options)

    def pull(self, subscription: str, max_messages: int) -> list[ReceivedMessage]:
        """Pull up to `max_messages` messages; an empty list means none came."""
        body = self._call(f"{subscription}:pull", {"maxMessages": max_messages}, "pull")
        entries = body.get("receivedMessages") or []
        if not isinstance(entries, list):
            raise PubSubError("pull returned receivedMessages that is not a list")
        return [ReceivedMessage.from_json(entry) for entry in entries]

    def acknowledge(self, subscription: str, ack_ids: Sequence[str]) -> None:
        """Acknowledge the deliveries, which removes their messages."""
        for chunk in _ack_chunks(ack_ids):
            self._call(f"{subscription}:acknowledge", {"ackIds": chunk}, "acknowledge")

    def modify_ack_deadline(
        self, subscription: str, ack_ids: Sequence[str], seconds: int
    ) -> None:
        """Set the deliveries' ack deadline to `seconds` from now; 0 releases them."""
        for chunk in _ack_chunks(ack_ids):
            self._call(
                f"{subscription}:modifyAckDeadline",
                {"ackIds": chunk, "ackDeadlineSeconds": seconds},
                "modifyAckDeadline",
            )

    def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Publish the messages, in as few requests as the limits allow.

        Returns the message ids in the order of `messages`.
        """
        message_ids: list[str] = []
        for chunk in _publish_chunks(messages):
            body = {"messages": [message.to_json() for message in chunk]}
            result = self._call(f"{topic}:publish", body, "publish")
            ids = result.get("messageIds")
            if not isinstance(ids, list) or len(ids) != len(chunk):
                raise PubSubError(
                    f"publish to {topic} returned {ids!r} for {len(chunk)} messages"
                )
            message_ids.extend(str(message_id) for message_id in ids)
        return message_ids

    def _call(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        url = f"{self.base_url}/{path}"
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_TransientError),
            stop=tenacity.stop_after_attempt(self._retries + 1),
            wait=tenacity.wait_exponential_jitter(
                multiplier=self._initial_backoff,
                max=self._max_backoff,
                jitter=self._initial_backoff,
            ),
            before_sleep=lambda state: self._log_retry(state, what, path),
            reraise=True,
        )
        try:
            return retrying(self._post, url, body, what)
        except _TransientError as err:
            attempts = self._retries + 1
            raise PubSubError(
                f"{what} on {path} still failing after {attempts} attempts: {err}",
                status=err.status,
            ) from err

    def _post(self, url: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        try:
            response = self._session.post(url, json=body, timeout=self._timeout)
        except requests.Timeout as err:
            raise _TransientError(
                f"{what} timed out after {self._timeout:g} s"
            ) from err
        except requests.ConnectionError as err:
            raise _TransientError(
                f"connection to {self.base_url} failed: {err}"
            ) from err
        except self._auth_errors as err:
            raise PubSubError(f"Google credentials failed: {err}") from err

        status = response.status_code
        if status in RETRYABLE_STATUSES:
            raise _TransientError(
                f"{what} returned HTTP {status}: {_error_text(response)}", status
            )
        if status != 200:
            raise PubSubError(
                f"{what} returned HTTP {status}: {_error_text(response)}", status
            )
        try:
            result = response.json()
        except ValueError as err:
            raise PubSubError(f"{what} returned a body that is not JSON") from err
        if not isinstance(result, dict):
            raise PubSubError(f"{what} returned JSON that is not an object")
        return result

    def _log_retry(self, state: tenacity.RetryCallState, what: str, path: str) -> None:
        error = state.outcome.exception() if state.outcome else None
        logger.warning(
            "%s on %s failed (attempt %d of %d), retrying in %.1f s: %s",
            what,
            path,
            state.attempt_number,
            self._retries + 1,
            state.upcoming_sleep,
            error,
        )

    def _authorized_session(self) -> requests.Session:
        # google-auth is imported here, so the emulator path needs no credentials.
        import google.auth
        import google.auth.exceptions
        from google.auth.transport.requests import AuthorizedSession

        self._auth_errors = (google.auth.exceptions.GoogleAuthError,)
        try:
            credentials, _ = google.auth.default(scopes=[PUBSUB_SCOPE])
        except google.auth.exceptions.GoogleAuthError as err:
            raise PubSubError(
                f"no Google credentials for Pub/Sub: {err}. Run `gcloud auth "
                "application-default login`, or set PUBSUB_EMULATOR_HOST to use "
                "an emulator"
            ) from err
        return AuthorizedSession(credentials)


def _error_text(response: requests.Response) -> str:
    """Return the message of a Google-style error body, or the body's start."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = None
    if isinstance(message, str) and message:
        return message
    excerpt = response.content[:300].decode("utf-8", "replace")
    return " ".join(excerpt.split()) or "(empty body)"


def _ack_chunks(ack_ids: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(ack_ids), ACK_IDS_PER_REQUEST):
        yield list(ack_ids[start : start + ACK_IDS_PER_REQUEST])


def _publish_chunks(
    messages: Sequence[OutgoingMessage],
) -> Iterator[list[OutgoingMessage]]:
    chunk: list[OutgoingMessage] = []
    size = 0
    for message in messages:
        cost = message.request_bytes
        if chunk and (
            len(chunk) >= MAX_MESSAGES_PER_PUBLISH or size + cost > MAX_PUBLISH_BYTES
        ):
            yield chunk
            chunk, size = [], 0
        chunk.append(message)
        size += cost
    if chunk:
        yield chunk
