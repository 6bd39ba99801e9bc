"""Client for Mixpanel's Import API: one call per batch, with retries and splits."""

from __future__ import annotations

import json
import logging
import time
import zlib
from typing import Any

import requests

from .batching import Batch
from .config import Settings
from .errors import (
    AuthenticationError,
    RetryableError,
    UnexpectedResponse,
)
from .records import ErrorCode, Failure
from .retry import RETRYABLE_STATUSES, call_with_retry, parse_retry_after

logger = logging.getLogger(__name__)

GZIP_LEVEL = 2
# zlib writes the gzip format with these window bits, with a zero timestamp,
# so a redelivered message sends byte-identical compressed bodies.
GZIP_WBITS = 31
USER_AGENT = "mixpanel-pubsub/0.1"
_MAX_DETAIL = 300


class MixpanelClient:
    """Sends batches to `POST /import?strict=1` and classifies the responses."""

    def __init__(self, settings: Settings, session: requests.Session) -> None:
        self._settings = settings
        self._session = session
        self._url = f"{settings.api_url}/import"
        self._params = {"strict": "1"}
        if settings.project_id:
            self._params["project_id"] = settings.project_id

    def import_batch(self, batch: Batch, deadline: float) -> list[Failure]:
        """Import a batch and return the events that must be dead-lettered.

        A 413 splits the batch in half and sends the halves, and a single
        event that is still too large is returned as a failure.

        Raises:
            AuthenticationError: Mixpanel rejected the credential.
            DeadlineExceeded: retryable failures lasted until the deadline.
            UnexpectedResponse: a status with no rule, such as 404.
        """
        body = zlib.compress(batch.body, GZIP_LEVEL, wbits=GZIP_WBITS)
        response = self._post(body, deadline)
        status = response.status_code

        if 200 <= status < 300:
            return []
        if status == 400:
            return _rejected(batch, response)
        if status == 413:
            if len(batch.items) == 1:
                return [
                    Failure(
                        batch.items[0].record.raw,
                        ErrorCode.TOO_LARGE,
                        f"Mixpanel responded 413: {_text(response)}",
                    )
                ]
            logger.info(
                "Mixpanel responded 413, splitting the batch",
                extra={"fields": {"events": len(batch.items)}},
            )
            failures: list[Failure] = []
            for half in batch.halves():
                failures.extend(self.import_batch(half, deadline))
            return failures
        if status in (401, 403):
            raise AuthenticationError(
                f"Mixpanel responded {status} ({_text(response)}); check the "
                "credential and MIXPANEL_PROJECT_ID",
                status=status,
            )
        raise UnexpectedResponse(
            f"Mixpanel responded {status}: {_text(response)}", status=status
        )

    def _post(self, body: bytes, deadline: float) -> requests.Response:
        def attempt() -> requests.Response:
            try:
                response = self._session.post(
                    self._url,
                    params=self._params,
                    data=body,
                    headers={
                        "Content-Type": "application/json",
                        "Content-Encoding": "gzip",
                        "Accept": "application/json",
                        "User-Agent": USER_AGENT,
                    },
                    auth=(self._settings.username, self._settings.password),
                    timeout=self._settings.request_timeout_seconds,
                )
            except requests.Timeout as err:
                raise RetryableError(f"request to Mixpanel timed out: {err}") from err
            except (
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
            ) as err:
                # ChunkedEncodingError is a connection closed in the middle of
                # the response body, after Mixpanel may have stored the events.
                raise RetryableError(f"connection to Mixpanel failed: {err}") from err
            if response.status_code in RETRYABLE_STATUSES:
                raise RetryableError(
                    f"Mixpanel responded {response.status_code}: {_text(response)}",
                    status=response.status_code,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                )
            return response

        started = time.monotonic()
        response = call_with_retry(
            attempt,
            deadline=deadline,
            initial_backoff=self._settings.initial_backoff_seconds,
            max_backoff=self._settings.max_backoff_seconds,
            what="Mixpanel import",
        )
        logger.debug(
            "Mixpanel responded %s",
            response.status_code,
            extra={"fields": {"seconds": round(time.monotonic() - started, 3)}},
        )
        return response


def _rejected(batch: Batch, response: requests.Response) -> list[Failure]:
    """Map a 400 response onto the batch's events that Mixpanel refused."""
    body = _json(response)
    failed = body.get("failed_records") if isinstance(body, dict) else None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(failed, list) or not failed:
        detail = f"Mixpanel responded 400: {error or _text(response)}"
        return [
            Failure(item.record.raw, ErrorCode.REJECTED, detail) for item in batch.items
        ]

    # Plain strings mean the whole batch was refused, with those messages.
    if all(isinstance(entry, str) for entry in failed):
        detail = "; ".join(failed)[:_MAX_DETAIL]
        return [
            Failure(item.record.raw, ErrorCode.REJECTED, detail) for item in batch.items
        ]

    by_index: dict[int, str] = {}
    for entry in failed:
        if isinstance(entry, str):
            continue
        positions = _positions_of(entry, batch)
        if not positions:
            logger.warning(
                "Mixpanel reported a failed record that matches no event",
                extra={"fields": {"failed_record": str(entry)[:_MAX_DETAIL]}},
            )
            continue
        field = str(entry.get("field", "")).strip()
        message = str(entry.get("message", "")).strip()
        for index in positions:
            by_index[index] = f"{field}: {message}" if field else message

    if not by_index:
        # The response reports failures but none matches an event, so
        # no event is known to be imported and the whole batch is dead-lettered.
        detail = f"Mixpanel responded 400 without usable failed_records: {error}"
        return [
            Failure(item.record.raw, ErrorCode.REJECTED, detail) for item in batch.items
        ]
    return [
        Failure(batch.items[index].record.raw, ErrorCode.REJECTED, detail[:_MAX_DETAIL])
        for index, detail in sorted(by_index.items())
    ]


def _positions_of(entry: Any, batch: Batch) -> list[int]:
    """Find a failed record's position, by a valid `index`, else by insert id.

    Several events of a batch can share an insert id. Without an index, all
    of them are returned, because any of them may be the one that failed. One
    that was imported after all is deduplicated by Mixpanel on replay.
    """
    if not isinstance(entry, dict):
        return []
    index = entry.get("index")
    if (
        isinstance(index, int)
        and not isinstance(index, bool)
        and 0 <= index < len(batch.items)
    ):
        return [index]
    insert_id = entry.get("insert_id", entry.get("$insert_id"))
    if not isinstance(insert_id, str):
        return []
    return [
        position
        for position, item in enumerate(batch.items)
        if item.insert_id == insert_id
    ]


def _json(response: requests.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _text(response: requests.Response) -> str:
    """Return a short, printable excerpt of an error body, which may not be JSON."""
    body = _json(response)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"][:_MAX_DETAIL]
    text = response.content[:_MAX_DETAIL].decode("utf-8", "replace").strip()
    return " ".join(text.split()) or "(empty body)"
