"""Peak resident memory for one near-limit message, in a fresh process.

Usage: python -m benchmarks.memory SINK_URL [--quick] [--array]
       [--function-dir DIR]

The message is newline-delimited JSON, or with --array the same events as
one JSON array, which the function parses whole.

The parent writes the push body to a file, so building the workload does not
count. The child imports `function/main.py` with a configuration that sends
to the sink, forwards one small message so that connections and lazily
imported modules are in place, and reads its resident set size. It then
calls `forward` with a request whose body streams from the file, as a body
streams from the socket under functions-framework, so the figure includes
reading the body. The result is the peak resident set size during the call
less the resident set size before it.

The peak is the kernel's high-water mark (VmHWM in /proc/self/status),
reset before the call. `getrusage` is no use here: after fork and exec it
also reports the peak of the parent, which built the workload.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FUNCTION_DIR = ROOT / "function"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sink_url", help="the URL of a running benchmarks.sink")
    parser.add_argument(
        "--quick", action="store_true", help="a 1 MB message, to check that all works"
    )
    parser.add_argument(
        "--array",
        action="store_true",
        help="send the events as one JSON array instead of one per line",
    )
    parser.add_argument(
        "--function-dir",
        type=Path,
        default=DEFAULT_FUNCTION_DIR,
        help="the function's source to measure (default: function/)",
    )
    args = parser.parse_args(argv[1:])
    function_dir = args.function_dir.resolve()
    from benchmarks import workloads

    limit = workloads.QUICK_MESSAGE_BYTES if args.quick else None
    data = workloads.near_limit_data(limit)
    if args.array:
        data = b"[" + data.replace(b"\n", b",") + b"]"
    with tempfile.NamedTemporaryFile(delete=False, suffix=".json") as handle:
        handle.write(workloads.push_body(data))
        body_path = Path(handle.name)
    message_bytes = len(data)
    del data

    env = {
        **os.environ,
        "MIXPANEL_PROJECT_TOKEN": "benchmark-token",
        "MIXPANEL_API_URL": args.sink_url,
        "DEAD_LETTER_TOPIC": "projects/bench/topics/mp-bench-dead-letter",
        # Nothing is dead-lettered, and the address stays on loopback.
        "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
        "LOG_LEVEL": "WARNING",
    }
    code = (
        f"import sys; sys.path[:0] = [{str(function_dir)!r}, {str(ROOT)!r}]\n"
        "from benchmarks.memory import measure\n"
        f"measure({str(body_path)!r}, {message_bytes})\n"
    )
    try:
        completed = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=env,
            cwd=function_dir,
            timeout=300,
        )
    finally:
        body_path.unlink()
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr)
        return completed.returncode
    print(completed.stdout.strip())
    return 0


def measure(body_path: str, message_bytes: int) -> None:
    """Forward the body once through `main.forward` and print the figures as JSON."""
    import main
    from benchmarks import workloads

    warm_up = workloads.push_body(workloads.seed_data(), "7000000000000000")
    _forward(main, warm_up, len(warm_up))
    del warm_up

    size = Path(body_path).stat().st_size
    _reset_peak()
    before = _resident_bytes()
    with open(body_path, "rb") as stream:
        status = _forward(main, stream, size)
    peak = _peak_resident_bytes()
    print(
        json.dumps(
            {
                "status": status,
                "message_bytes": message_bytes,
                "body_bytes": size,
                "resident_before_bytes": before,
                "peak_above_baseline_bytes": peak - before,
                "ratio_to_message": (peak - before) / message_bytes,
            }
        )
    )


def _forward(main, body, size: int) -> int:
    """Call `main.forward` with a POST request whose body is bytes or a file."""
    import io

    from werkzeug.wrappers import Request

    stream = io.BytesIO(body) if isinstance(body, bytes) else body
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(size),
        "wsgi.input": stream,
        "wsgi.url_scheme": "http",
    }
    _, status, _ = main.forward(Request(environ))
    if status != 200:
        raise RuntimeError(f"the function responded {status}")
    return status


def _resident_bytes() -> int:
    # The second field of /proc/self/statm is the resident set, in pages.
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _reset_peak() -> None:
    # Writing 5 to clear_refs resets VmHWM to the current resident set
    # (Linux 4.0 and later).
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _peak_resident_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
