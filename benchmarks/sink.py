"""A minimal import endpoint that counts what it receives, for benchmarks.

The Mixpanel stand-in validates every event, which would dominate a
throughput figure. This sink responds 200 as soon as it has read a request
and keeps the compressed body. It inflates and counts the stored bodies only
when asked for its counters, so the sender never waits for that work. It
keeps connections open between requests, as Mixpanel's API does, which
Werkzeug's development server never does. `benchmarks.run` starts it in its
own process and pins it to another core than the code under test.
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_lock = threading.Lock()
_bodies: list[tuple[bytes, bool]] = []
_REPLY = json.dumps({"code": 200, "status": "OK"}).encode()


class SinkHandler(BaseHTTPRequestHandler):
    """Stores POST /import bodies, and serves GET /stats and POST /reset."""

    protocol_version = "HTTP/1.1"
    # The headers and the body go out in two writes, and Nagle's algorithm
    # would hold the second until the client's delayed ACK, about 40 ms.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        if self.path == "/reset":
            with _lock:
                _bodies.clear()
            self._reply(b"{}")
            return
        compressed = self.headers.get("Content-Encoding") == "gzip"
        with _lock:
            _bodies.append((raw, compressed))
        self._reply(_REPLY)

    def do_GET(self) -> None:
        if self.path != "/stats":
            self.send_error(404)
            return
        with _lock:
            stored = list(_bodies)
        self._reply(json.dumps(_count(stored)).encode())

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Log nothing: a line per request would cost more than the request."""


def _count(stored: list[tuple[bytes, bool]]) -> dict:
    events = 0
    for raw, compressed in stored:
        events += len(json.loads(gzip.decompress(raw) if compressed else raw))
    return {
        "requests": len(stored),
        "events": events,
        "bytes": sum(len(raw) for raw, _ in stored),
    }


def main() -> None:
    """Serve on 127.0.0.1 and print the port on the first line of stdout.

    The sink stops when its standard input closes, as it does when the
    process that started it ends, so that no sink outlives its benchmark.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), SinkHandler)
    server.daemon_threads = True
    threading.Thread(target=_stop_at_end_of_input, args=(server,), daemon=True).start()
    print(server.server_address[1], flush=True)
    server.serve_forever()


def _stop_at_end_of_input(server: ThreadingHTTPServer) -> None:
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
