"""The retry policy shared by the calls to Mixpanel and to Pub/Sub.

Retryable outcomes (429, 500, 502, 503, 504, timeouts, connection errors) are
retried here with exponential backoff and jitter, until the per-message
deadline. A `Retry-After` header sets the minimum wait, so the wait is the
longer of it and the backoff, and a repeated `Retry-After: 0` cannot make a
tight loop. When the wait would end past the deadline, retrying stops at
once, the caller responds non-2xx and Pub/Sub redelivers the message with
its own backoff.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TypeVar

from .errors import DeadlineExceeded, RetryableError

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})

T = TypeVar("T")


def call_with_retry(
    call: Callable[[], T],
    *,
    deadline: float,
    initial_backoff: float,
    max_backoff: float,
    what: str,
) -> T:
    """Run `call`, retrying RetryableError until `deadline` (time.monotonic()).

    The first attempt runs without tenacity, which is imported only when a
    retry is needed, so that it does not add to the cold start.

    Raises:
        DeadlineExceeded: the next attempt would start after the deadline.
    """
    # A message of many batches checks the deadline before each call too, so
    # the deadline bounds the whole message and not only the retries.
    if time.monotonic() >= deadline:
        raise DeadlineExceeded(f"{what} not started: the retry deadline is spent")
    try:
        return call()
    except RetryableError as err:
        first_error = err
    return _retry(
        call,
        first_error,
        deadline=deadline,
        initial_backoff=initial_backoff,
        max_backoff=max_backoff,
        what=what,
    )


def _retry(
    call: Callable[[], T],
    first_error: RetryableError,
    *,
    deadline: float,
    initial_backoff: float,
    max_backoff: float,
    what: str,
) -> T:
    """Go on after a first attempt that raised `first_error`."""
    import tenacity

    backoff = tenacity.wait_exponential_jitter(
        multiplier=initial_backoff, max=max_backoff, jitter=initial_backoff
    )

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetryableError) and error.retry_after is not None:
            return max(error.retry_after, backoff(state))
        return backoff(state)

    def stop(state: tenacity.RetryCallState) -> bool:
        return time.monotonic() + state.upcoming_sleep >= deadline

    def log_retry(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        logger.warning(
            "%s failed, retrying in %.1f s: %s",
            what,
            state.upcoming_sleep,
            error,
            extra={
                "fields": {
                    "attempt": state.attempt_number,
                    "status": getattr(error, "status", None),
                    "retry": what,
                }
            },
        )

    # tenacity's first attempt reports the outcome of the attempt already
    # made, so the waits, the deadline and the attempt numbers are the same
    # as if tenacity had made it.
    pending = [first_error]

    def attempt() -> T:
        if pending:
            raise pending.pop()
        return call()

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(RetryableError),
        wait=wait,
        stop=stop,
        before_sleep=log_retry,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except RetryableError as err:
        raise DeadlineExceeded(
            f"{what} still failing at the retry deadline: {err}"
        ) from err


def parse_retry_after(value: str | None) -> float | None:
    """Return the delay that a `Retry-After` header requests, in seconds.

    The header contains either a number of seconds or an HTTP date. A value
    that is neither, or not finite, gives None.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        # The "-0000" zone parses without tzinfo. HTTP dates are in GMT.
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - time.time())
