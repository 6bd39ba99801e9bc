"""A quick pass of the benchmark, so that it keeps working.

It checks that every figure is there and has a sane type and range. Whether
the forwarder is fast enough is the benchmark's question, answered in
docs/BENCHMARKS.md, and not a test's, because timings on a shared machine
vary too much for a threshold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ("sample_10", "realistic_2000", "near_10mb")
CONTENDERS = ("forwarder", "floor", "floor_stdlib", "pass_through")


@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> dict:
    output = tmp_path_factory.mktemp("benchmark") / "figures.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--json", str(output)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return json.loads(output.read_text(encoding="utf-8"))


def _assert_summary(summary: dict, where: str) -> None:
    for key in ("median", "min", "max"):
        assert isinstance(summary[key], float), f"{where}.{key}"
        assert summary[key] > 0, f"{where}.{key}"
    assert summary["min"] <= summary["median"] <= summary["max"], where
    assert summary["runs"] >= 2, where


def test_run_describes_itself(figures):
    assert figures["quick"] is True
    assert figures["command"].startswith("python -m benchmarks.run")
    assert figures["json_library"].startswith("orjson ")
    assert 1 <= figures["gzip_level"] <= 9
    assert figures["machine"]["cpus"] >= 1
    assert figures["machine"]["python"].count(".") == 2
    assert len(figures["load_average_before"]) == 3


@pytest.mark.parametrize("shape", SHAPES)
def test_throughput_has_every_contender(figures, shape):
    result = figures["throughput"][shape]

    assert result["events"] > 0
    assert result["message_bytes"] > 0
    for clock in ("events_per_second", "events_per_cpu_second"):
        for contender in CONTENDERS:
            _assert_summary(result[clock][contender], f"{shape}.{clock}.{contender}")
    for name in (
        "ratio_to_floor",
        "ratio_to_pass_through",
        "cpu_ratio_to_floor",
        "cpu_ratio_to_pass_through",
    ):
        _assert_summary(result[name], f"{shape}.{name}")


def test_requests_per_million_counted(figures):
    result = figures["requests_per_million"]

    assert result["events"] == 2000 * result["messages"]
    assert result["requests"] >= result["messages"]
    assert result["per_million"] >= 500
    assert result["ratio_to_minimum"] >= 1


def test_gzip_levels_cover_one_to_nine(figures):
    rows = figures["gzip_levels"]

    assert [row["level"] for row in rows] == list(range(1, 10))
    for row in rows:
        _assert_summary(row["cpu_milliseconds"], f"gzip level {row['level']}")
        assert 0 < row["compressed_bytes"] < row["body_bytes"]
        assert 0 < row["size_ratio"] < 1


def test_cold_start_beside_requests(figures):
    result = figures["cold_start"]

    _assert_summary(result["main_ms"], "cold_start.main_ms")
    _assert_summary(result["requests_ms"], "cold_start.requests_ms")
    _assert_summary(result["ratio"], "cold_start.ratio")


@pytest.mark.parametrize("shape", ["peak_memory", "peak_memory_array"])
def test_peak_memory_measured(figures, shape):
    result = figures[shape]

    assert result["status"] == 200
    assert result["message_bytes"] > 0
    assert result["body_bytes"] > result["message_bytes"]
    assert result["peak_above_baseline_bytes"] > 0
    assert result["ratio_to_message"] > 0


def test_array_message_same_events(figures):
    # The same lines joined by commas, inside brackets.
    lines = figures["peak_memory"]["message_bytes"]

    assert figures["peak_memory_array"]["message_bytes"] == lines + 2


def test_breakdown_gives_every_row():
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.breakdown",
            "--repeat",
            "2",
            "--events",
            "50",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    rows = json.loads(completed.stdout)

    assert [row["forwarder"] for row in rows][0] == "as deployed"
    assert len(rows) == 4
    for row in rows:
        assert row["cpu_microseconds_per_event"] > 0, row["forwarder"]
        assert row["ratio_to_floor"] > 0, row["forwarder"]
