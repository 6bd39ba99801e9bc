"""A rate limit in messages per second for the tools that publish."""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    """Spaces out batches so that at most `rate` messages a second go out.

    The first batch goes at once. Each later batch waits until the messages
    sent before it fit the rate, so the average stays at or below it.
    """

    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be above 0 messages per second, got {rate}")
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None
        self._sent = 0

    def batch_size(self, maximum: int) -> int:
        """Return how many messages one request should carry: a second's worth."""
        if self.rate is None:
            return maximum
        return max(1, min(maximum, int(self.rate)))

    def wait(self, messages: int) -> None:
        """Sleep until a batch of `messages` may go out, and count it as sent."""
        if self.rate is None:
            return
        now = self._clock()
        if self._start is None:
            self._start = now
        delay = self._start + self._sent / self.rate - now
        if delay > 0:
            self._sleep(delay)
        self._sent += messages
