"""Measure the forwarder beside its baselines, in one run and one process.

Usage: python -m benchmarks.run [--repeat N] [--quick] [--json FILE]
                                [--function-dir DIR]

Throughput is events per second on one core, from a push request entering
`main.forward` to the compressed requests received by a sink in another
process, on the other core. It is given for wall time and for the CPU time
of this process, which other load on the machine disturbs less. The
baselines run interleaved with the forwarder on the same data, in the same
process:

- floor: parse the envelope, decode the base64 data, parse each line,
  serialise all events as one array and gzip it, with the function's JSON
  libraries and gzip level and nothing else: orjson for the envelope and
  the array, and msgspec's plain parse, which checks nothing, for the lines;
- floor_stdlib: the same with the standard library's json, for context;
- pass_through: the approach of Mixpanel's public Pub/Sub guide, rebuilt
  from its description: parse the lines with the standard library, send all
  events in one request, gzip at the standard library's default level 9.

Cold start is the time to import `function/main.py` in a fresh interpreter,
beside the time to import `requests` alone. Peak memory comes from
`benchmarks.memory`. Every figure is the median of the runs, with the
minimum and maximum beside it.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import requests

from benchmarks import workloads

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FUNCTION_DIR = ROOT / "function"

PASS_THROUGH_GZIP_LEVEL = 9
# Mixpanel's minimum: 2,000 events per request.
MIN_REQUESTS_PER_MILLION = 500
BENCHMARK_ENV = {
    "MIXPANEL_PROJECT_TOKEN": "benchmark-token",
    "DEAD_LETTER_TOPIC": "projects/bench/topics/mp-bench-dead-letter",
    # Nothing is dead-lettered in these workloads, so the address is never
    # called, and it stays on loopback should it be.
    "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
}


class Sink:
    """The counting import endpoint, in a child process on the given cores."""

    def __init__(self, cpus: set[int] | None = None) -> None:
        # The sink stops when its standard input closes, at the latest when
        # this process ends.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.sink"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        port = int(self.process.stdout.readline())
        self.url = f"http://127.0.0.1:{port}"
        if cpus:
            os.sched_setaffinity(self.process.pid, cpus)
        self.session = requests.Session()

    def stats(self) -> dict:
        return self.session.get(f"{self.url}/stats", timeout=120).json()

    def reset(self) -> None:
        self.session.post(f"{self.url}/reset", timeout=10)

    def stop(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(timeout=10)


class Forwarder:
    """`main.forward` configured to send to the sink, with its logs discarded."""

    def __init__(self, sink: Sink) -> None:
        os.environ.update(BENCHMARK_ENV, MIXPANEL_API_URL=sink.url)
        import main

        # The log line of each message is formatted as in production, then
        # dropped, so that it costs what it costs without flooding stderr.
        self._devnull = open(os.devnull, "w")  # noqa: SIM115
        for handler in logging.getLogger("forwarder").handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(self._devnull)
        self._main = main

    def __call__(self, body: bytes) -> None:
        from werkzeug.wrappers import Request

        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8080",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
        }
        reply, status, _ = self._main.forward(Request(environ))
        if status != 200:
            raise RuntimeError(f"the function responded {status}: {reply[:300]!r}")


def run_floor(body: bytes, library, level: int, wbits: int, loads_line=None) -> bytes:
    """Everything the forwarder must do at the least, with `library` for JSON.

    `loads_line` parses each line, `library.loads` unless given.
    """
    loads_line = loads_line or library.loads
    envelope = library.loads(body)
    data = base64.b64decode(envelope["message"]["data"])
    events = [loads_line(line) for line in data.splitlines() if line.strip()]
    return zlib.compress(_dumps(library, events), level, wbits=wbits)


def _dumps(library, value) -> bytes:
    if library is json:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    return library.dumps(value)


def run_pass_through(body: bytes, session: requests.Session, url: str) -> None:
    """Mixpanel's guide: parse, one request with everything, gzip level 9."""
    envelope = json.loads(body)
    data = base64.b64decode(envelope["message"]["data"]).decode("utf-8")
    events = [json.loads(line) for line in data.splitlines() if line.strip()]
    payload = zlib.compress(
        json.dumps(events).encode(), PASS_THROUGH_GZIP_LEVEL, wbits=31
    )
    response = session.post(
        f"{url}/import",
        params={"strict": "1"},
        data=payload,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        auth=("benchmark-token", ""),
        timeout=120,
    )
    response.raise_for_status()


def timed(call: Callable[[], object]) -> tuple[float, float]:
    """Run `call` and return its wall time and this process's CPU time."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def summary(values: list[float]) -> dict:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
    }


def ratio(numerators: list[float], denominators: list[float]) -> dict:
    """Median, minimum and maximum of the ratios of paired runs."""
    return summary([a / b for a, b in zip(numerators, denominators, strict=True)])


def throughput(
    shapes: dict[str, bytes], repeat: int, sink: Sink, forwarder: Forwarder
) -> dict:
    """Events per second for each shape and contender, wall and CPU time."""
    from forwarder import mixpanel

    library = _json_library()
    loads_line = _line_parser()
    level = mixpanel.GZIP_LEVEL
    wbits = getattr(mixpanel, "GZIP_WBITS", 31)
    session = requests.Session()
    results = {}
    for name, data in shapes.items():
        events = len(data.splitlines())
        body = workloads.push_body(data)
        contenders = {
            "forwarder": lambda body=body: forwarder(body),
            "floor": lambda body=body: run_floor(
                body, library, level, wbits, loads_line
            ),
            "floor_stdlib": lambda body=body: run_floor(body, json, level, wbits),
            "pass_through": lambda body=body: run_pass_through(body, session, sink.url),
        }
        sink.reset()
        for call in contenders.values():
            call()  # warm-up: connections, caches, lazily imported modules
        wall: dict[str, list[float]] = {key: [] for key in contenders}
        cpu: dict[str, list[float]] = {key: [] for key in contenders}
        for _ in range(repeat):
            for key, call in contenders.items():
                seconds, cpu_seconds = timed(call)
                wall[key].append(events / seconds)
                cpu[key].append(events / cpu_seconds)
        received = sink.stats()["events"]
        expected = 2 * (repeat + 1) * events
        if received != expected:
            raise RuntimeError(
                f"{name}: the sink received {received} events, expected {expected}"
            )
        results[name] = {
            "events": events,
            "message_bytes": len(data),
            "events_per_second": {key: summary(wall[key]) for key in contenders},
            "events_per_cpu_second": {key: summary(cpu[key]) for key in contenders},
            "ratio_to_floor": ratio(wall["forwarder"], wall["floor"]),
            "ratio_to_pass_through": ratio(wall["forwarder"], wall["pass_through"]),
            "cpu_ratio_to_floor": ratio(cpu["forwarder"], cpu["floor"]),
            "cpu_ratio_to_pass_through": ratio(cpu["forwarder"], cpu["pass_through"]),
        }
    return results


def _json_library():
    """The JSON library of the function under test, which its codec names."""
    from forwarder import codec

    # A version of the function from before orjson has no LIBRARY.
    return getattr(codec, "LIBRARY", json)


def _line_parser():
    """The plain parse of event lines in the function under test."""
    from forwarder import codec

    # A version without msgspec parses lines with its only JSON library.
    return getattr(codec, "LINE_LOADS", None) or _json_library().loads


def requests_per_million(messages: int, sink: Sink, forwarder: Forwarder) -> dict:
    """Import requests per million events, for dense 2,000-event messages."""
    sink.reset()
    for number in range(messages):
        data = workloads.realistic_data(2000, seed=100 + number)
        forwarder(workloads.push_body(data, str(8000000000000000 + number)))
    stats = sink.stats()
    per_million = stats["requests"] / stats["events"] * 1_000_000
    return {
        "messages": messages,
        "events": stats["events"],
        "requests": stats["requests"],
        "per_million": per_million,
        "ratio_to_minimum": per_million / MIN_REQUESTS_PER_MILLION,
    }


def gzip_levels(data: bytes, repeat: int) -> list[dict]:
    """Compression time and size of one 2,000-event request body per level."""
    library = _json_library()
    events = [library.loads(line) for line in data.splitlines()]
    body = _dumps(library, events)
    rows = []
    for level in range(1, 10):
        seconds = [
            timed(lambda level=level: zlib.compress(body, level, wbits=31))[1]
            for _ in range(repeat)
        ]
        compressed = len(zlib.compress(body, level, wbits=31))
        rows.append(
            {
                "level": level,
                "events": len(events),
                "body_bytes": len(body),
                "cpu_milliseconds": summary([value * 1000 for value in seconds]),
                "cpu_microseconds_per_event": statistics.median(seconds)
                / len(events)
                * 1e6,
                "compressed_bytes": compressed,
                "compressed_bytes_per_event": compressed / len(events),
                "size_ratio": compressed / len(body),
            }
        )
    return rows


def cold_start(repeat: int, function_dir: Path) -> dict:
    """Import time of function/main.py in fresh interpreters, beside requests.

    Both imports read bytecode from one fresh cache, which a first import of
    each fills, because PYTHONDONTWRITEBYTECODE may be set here.
    """
    probe = (
        "import sys, time\n"
        "sys.path.insert(0, {path!r})\n"
        "started = time.perf_counter()\n"
        "import {module}\n"
        "print(time.perf_counter() - started)\n"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = {
            key: value
            for key, value in os.environ.items()
            if key != "PYTHONDONTWRITEBYTECODE"
        }
        env.update(BENCHMARK_ENV, MIXPANEL_API_URL="http://127.0.0.1:9")
        env["PYTHONPYCACHEPREFIX"] = cache

        def measure(module: str) -> float:
            code = probe.format(path=str(function_dir), module=module)
            completed = subprocess.run(
                [sys.executable, "-c", code],
                check=True,
                capture_output=True,
                text=True,
                cwd=function_dir,
                env=env,
                timeout=60,
            )
            return float(completed.stdout)

        measure("main")
        measure("requests")
        main_times: list[float] = []
        requests_times: list[float] = []
        # Interleaved, so that a slow moment of the machine hits both alike.
        for _ in range(repeat):
            main_times.append(measure("main"))
            requests_times.append(measure("requests"))
    return {
        "main_ms": summary([value * 1000 for value in main_times]),
        "requests_ms": summary([value * 1000 for value in requests_times]),
        "ratio": ratio(main_times, requests_times),
    }


def peak_memory(
    sink: Sink, quick: bool, function_dir: Path, array: bool = False
) -> dict:
    """Peak resident memory for the near-limit message, above the baseline."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.memory",
        sink.url,
        "--function-dir",
        str(function_dir),
    ]
    if quick:
        command.append("--quick")
    if array:
        command.append("--array")
    completed = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"benchmarks.memory failed with exit status {completed.returncode}:\n"
            f"{completed.stderr}"
        )
    return json.loads(completed.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat", type=int, default=9, help="timed runs per figure (default 9)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small messages and 2 runs, to check that the benchmark works",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--function-dir",
        type=Path,
        default=DEFAULT_FUNCTION_DIR,
        help="the function's source to measure, such as an older version "
        "extracted with git archive (default: function/)",
    )
    args = parser.parse_args(argv)
    function_dir = args.function_dir.resolve()
    sys.path.insert(0, str(function_dir))

    # The benchmark runs on the first core it may use, and the sink on the
    # others, when there are others.
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[0]})
    repeat = 2 if args.quick else args.repeat
    shapes = {
        "sample_10": workloads.seed_data(),
        "realistic_2000": workloads.realistic_data(200 if args.quick else 2000),
        "near_10mb": workloads.near_limit_data(
            workloads.QUICK_MESSAGE_BYTES if args.quick else None
        ),
    }

    from forwarder import codec
    from forwarder.mixpanel import GZIP_LEVEL

    started = _machine_load()
    sink = Sink(set(cpus[1:]))
    try:
        forwarder = Forwarder(sink)
        results = {
            "quick": args.quick,
            "command": " ".join(["python -m benchmarks.run", *(argv or sys.argv[1:])]),
            "machine": machine(),
            "load_average_before": started,
            "json_library": codec.NAME,
            "gzip_level": GZIP_LEVEL,
            "throughput": throughput(shapes, repeat, sink, forwarder),
            "requests_per_million": requests_per_million(
                3 if args.quick else 50, sink, forwarder
            ),
            "gzip_levels": gzip_levels(shapes["realistic_2000"], max(repeat, 5)),
            "cold_start": cold_start(3 if args.quick else 21, function_dir),
            "peak_memory": peak_memory(sink, args.quick, function_dir),
            "peak_memory_array": peak_memory(
                sink, args.quick, function_dir, array=True
            ),
            "load_average_after": _machine_load(),
        }
    finally:
        sink.stop()

    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


def machine() -> dict:
    return {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "processor": _cpu_model(),
    }


def _machine_load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
