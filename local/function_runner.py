"""Running the real function under functions-framework on loopback.

The tests and the demo both start the function this way, so what they
exercise is the deployed entry point, served over HTTP.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
FUNCTION_SOURCE = ROOT / "function" / "main.py"

# Variables of the function that must come only from `env`, never from the
# caller's own environment.
_FUNCTION_PREFIXES = (
    "MIXPANEL_",
    "PUBSUB_",
    "RETRY_",
    "DEAD_LETTER",
    "LOG_LEVEL",
    "PII_",
    "FORWARDER_",
)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FunctionProcess:
    """The function's entry point `forward` served by functions-framework."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.url = ""
        self._process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> str:
        """Start the server and return its URL once it accepts requests."""
        port = free_port()
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(_FUNCTION_PREFIXES)
        }
        env.update(self.env)
        command = [
            sys.executable,
            "-m",
            "functions_framework",
            "--source",
            str(FUNCTION_SOURCE),
            "--target",
            "forward",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        with self.log_path.open("wb") as log_file:
            self._process = subprocess.Popen(
                command, env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT
            )
        self.url = f"http://127.0.0.1:{port}/"

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"functions-framework exited with {self._process.returncode}:\n"
                    + self.log_text()
                )
            try:
                requests.get(self.url, timeout=1)
            except requests.ConnectionError:
                time.sleep(0.1)
                continue
            return self.url
        self.stop()
        raise RuntimeError(f"functions-framework did not start within {timeout:g} s")

    def stop(self) -> None:
        """Stop the server and wait for it to exit."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> FunctionProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def push(self, envelope: Mapping | bytes, timeout: float = 60) -> requests.Response:
        """POST a push request body (a dict is sent as JSON) to the function."""
        body = envelope if isinstance(envelope, bytes) else json.dumps(envelope)
        return requests.post(
            self.url,
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=timeout,
        )

    def log_text(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_entries(self) -> list[dict]:
        """Return the function's JSON log lines, without the server's own lines."""
        entries = []
        for line in self.log_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and "severity" in entry:
                entries.append(entry)
        return entries
