"""Publishing to the dead-letter topic through the Pub/Sub REST API.

With PUBSUB_EMULATOR_HOST set, calls go over plain HTTP to that host without
credentials, as Google's emulator accepts. Otherwise they go to
pubsub.googleapis.com with an access token from google-auth, which is
imported only on that path to keep the cold start light.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator, Sequence

import msgspec
import requests

from .config import Settings
from .errors import DeadlineExceeded, PublishError, RetryableError
from .retry import RETRYABLE_STATUSES, call_with_retry, parse_retry_after

logger = logging.getLogger(__name__)

PUBSUB_SCOPE = "https://www.googleapis.com/auth/pubsub"
PUBSUB_API = "https://pubsub.googleapis.com"

# Pub/Sub accepts at most 1,000 messages and 10 MB per publish request. The
# byte budget leaves room for the JSON around the base64 data.
MAX_MESSAGES_PER_PUBLISH = 1000
MAX_PUBLISH_BYTES = 9 * 1024 * 1024


class OutgoingMessage(msgspec.Struct, frozen=True):
    """A message to publish: raw data bytes and string attributes."""

    data: bytes
    attributes: dict[str, str]

    def to_json(self) -> dict:
        return {
            "data": base64.b64encode(self.data).decode("ascii"),
            "attributes": self.attributes,
        }


class Publisher:
    """Publishes messages to one topic, retrying within the caller's deadline."""

    def __init__(self, settings: Settings, session: requests.Session) -> None:
        self.settings = settings
        self._auth_errors: tuple[type[Exception], ...] = ()
        if settings.pubsub_emulator_host:
            self._base = f"http://{settings.pubsub_emulator_host}/v1"
            self._session = session
        else:
            import google.auth.exceptions

            self._auth_errors = (google.auth.exceptions.GoogleAuthError,)
            self._base = f"{PUBSUB_API}/v1"
            try:
                self._session = _authorized_session()
            except self._auth_errors as err:
                raise PublishError(f"no Google credentials for Pub/Sub: {err}") from err

    def publish(
        self, topic: str, messages: Sequence[OutgoingMessage], deadline: float
    ) -> list[str]:
        """Publish the messages and return their ids.

        Raises:
            PublishError: a request failed for good or past the deadline.
        """
        url = f"{self._base}/{topic}:publish"
        ids: list[str] = []
        for chunk in _chunks(messages):
            body = {"messages": [message.to_json() for message in chunk]}
            try:
                ids.extend(
                    call_with_retry(
                        lambda body=body: self._post(url, body),
                        deadline=deadline,
                        initial_backoff=self.settings.initial_backoff_seconds,
                        max_backoff=self.settings.max_backoff_seconds,
                        what="Pub/Sub publish",
                    )
                )
            except DeadlineExceeded as err:
                raise PublishError(f"publishing to {topic} failed: {err}") from err
        return ids

    def _post(self, url: str, body: dict) -> list[str]:
        try:
            response = self._session.post(
                url, json=body, timeout=self.settings.request_timeout_seconds
            )
        except requests.Timeout as err:
            raise RetryableError(f"Pub/Sub publish timed out: {err}") from err
        except requests.ConnectionError as err:
            raise RetryableError(f"connection to Pub/Sub failed: {err}") from err
        except self._auth_errors as err:
            raise PublishError(f"Google credentials failed: {err}") from err

        if response.status_code in RETRYABLE_STATUSES:
            raise RetryableError(
                f"Pub/Sub responded {response.status_code}",
                status=response.status_code,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if response.status_code != 200:
            excerpt = response.content[:300].decode("utf-8", "replace")
            raise PublishError(
                f"Pub/Sub responded {response.status_code}: {' '.join(excerpt.split())}"
            )
        try:
            ids = response.json()["messageIds"]
        except (ValueError, KeyError, TypeError) as err:
            raise PublishError("Pub/Sub responded 200 without messageIds") from err
        return list(ids)


def _chunks(messages: Sequence[OutgoingMessage]) -> Iterator[list[OutgoingMessage]]:
    chunk: list[OutgoingMessage] = []
    size = 0
    for message in messages:
        # base64 grows data by a third; attributes count at their raw size.
        cost = (
            len(message.data) * 4 // 3
            + 4
            + sum(
                len(key) + len(value) + 8 for key, value in message.attributes.items()
            )
        )
        if chunk and (
            len(chunk) >= MAX_MESSAGES_PER_PUBLISH or size + cost > MAX_PUBLISH_BYTES
        ):
            yield chunk
            chunk, size = [], 0
        chunk.append(message)
        size += cost
    if chunk:
        yield chunk


def _authorized_session() -> requests.Session:
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _ = google.auth.default(scopes=[PUBSUB_SCOPE])
    return AuthorizedSession(credentials)
