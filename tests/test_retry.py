"""The retry policy in process, on a fake clock that sleeping advances."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from email.utils import formatdate
from pathlib import Path

import pytest

from forwarder.errors import DeadlineExceeded, RetryableError
from forwarder.retry import call_with_retry, parse_retry_after

START = 1000.0
FUNCTION_DIR = Path(__file__).resolve().parent.parent / "function"


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Record each sleep of the retry loop and advance a fake monotonic clock."""
    clock = [START]
    recorded: list[float] = []

    def sleep(seconds: float) -> None:
        recorded.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(time, "sleep", sleep)
    return recorded


def _failing(calls: list[int], retry_after: float | None = None):
    def call() -> None:
        calls.append(1)
        raise RetryableError("Mixpanel responded 503", retry_after=retry_after)

    return call


def test_backoff_doubles_with_jitter_to_cap(sleeps):
    calls: list[int] = []

    with pytest.raises(DeadlineExceeded):
        call_with_retry(
            _failing(calls),
            deadline=START + 100,
            initial_backoff=1,
            max_backoff=16,
            what="test",
        )

    for attempt, low in enumerate([1, 2, 4, 8]):
        assert low <= sleeps[attempt] <= low + 1
    assert all(wait == 16 for wait in sleeps[4:])
    assert len(calls) == len(sleeps) + 1
    assert sum(sleeps) < 100


def test_jitter_varies_the_waits(sleeps):
    for _ in range(2):
        with pytest.raises(DeadlineExceeded):
            call_with_retry(
                _failing([]),
                deadline=time.monotonic() + 10,
                initial_backoff=1,
                max_backoff=16,
                what="test",
            )

    assert len(set(sleeps)) == len(sleeps)


def test_retry_after_is_minimum_wait(sleeps):
    with pytest.raises(DeadlineExceeded):
        call_with_retry(
            _failing([], retry_after=5),
            deadline=START + 12,
            initial_backoff=1,
            max_backoff=16,
            what="test",
        )

    assert sleeps == [5, 5]


def test_retry_after_zero_keeps_backoff(sleeps):
    with pytest.raises(DeadlineExceeded):
        call_with_retry(
            _failing([], retry_after=0),
            deadline=START + 20,
            initial_backoff=1,
            max_backoff=16,
            what="test",
        )

    assert sleeps[0] >= 1
    assert sleeps[1] >= 2


def test_retry_after_past_deadline_stops_at_once(sleeps):
    calls: list[int] = []

    with pytest.raises(DeadlineExceeded):
        call_with_retry(
            _failing(calls, retry_after=30),
            deadline=START + 10,
            initial_backoff=1,
            max_backoff=16,
            what="test",
        )

    assert sleeps == []
    assert len(calls) == 1


def test_success_after_retry_returns_value(sleeps):
    outcomes = [RetryableError("429", retry_after=1), "imported"]

    def call() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    result = call_with_retry(
        call, deadline=START + 10, initial_backoff=0.5, max_backoff=2, what="test"
    )

    assert result == "imported"
    assert sleeps == [1]


def test_policy_emits_no_deprecation_warning(sleeps):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        call_with_retry(
            lambda: "ok",
            deadline=START + 1,
            initial_backoff=2,
            max_backoff=60,
            what="x",
        )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("-4", 0.0),
        ("nan", None),
        ("inf", None),
        ("1e400", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(header, expected):
    assert parse_retry_after(header) == expected


def test_parse_retry_after_future_date():
    header = formatdate(time.time() + 120, usegmt=True)

    delay = parse_retry_after(header)

    assert delay is not None
    assert 118 <= delay <= 120


def test_parse_retry_after_minus_zero_zone_is_gmt():
    header = formatdate(time.time() + 120, usegmt=True).replace("GMT", "-0000")

    delay = parse_retry_after(header)

    assert delay is not None
    assert 118 <= delay <= 120


def test_first_attempt_imports_no_tenacity():
    # A fresh interpreter, because other tests import tenacity.
    code = (
        "import sys\n"
        "from forwarder.retry import call_with_retry\n"
        "call_with_retry(lambda: 1, deadline=float('inf'), initial_backoff=1,"
        " max_backoff=1, what='x')\n"
        "import main\n"
        "print('tenacity' in sys.modules)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=FUNCTION_DIR,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    assert completed.stdout.strip() == "False"


def test_retry_after_first_attempt_counts_it(sleeps, caplog):
    calls: list[int] = []
    outcomes = [RetryableError("Mixpanel responded 503"), None]

    def call() -> str:
        calls.append(1)
        error = outcomes.pop(0)
        if error is not None:
            raise error
        return "ok"

    with caplog.at_level("WARNING", logger="forwarder.retry"):
        result = call_with_retry(
            call, deadline=START + 100, initial_backoff=1, max_backoff=16, what="t"
        )

    assert result == "ok"
    assert len(calls) == 2
    assert len(sleeps) == 1
    assert 1 <= sleeps[0] <= 2
    assert [record.fields["attempt"] for record in caplog.records] == [1]


def test_spent_deadline_stops_before_first_call():
    calls = []

    with pytest.raises(DeadlineExceeded):
        call_with_retry(
            lambda: calls.append(1),
            deadline=time.monotonic() - 1,
            initial_backoff=0,
            max_backoff=0,
            what="test call",
        )

    assert calls == []
