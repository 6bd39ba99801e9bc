"""Shared plumbing for the stand-in HTTP servers: bind, serve, stop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

logger = logging.getLogger(__name__)

LOOPBACK_HOST = "127.0.0.1"

# Seconds between the serving thread's checks for a shutdown request, so stop()
# returns within about this long.
_POLL_INTERVAL_SECONDS = 0.05


class _RequestLogHandler(WSGIRequestHandler):
    """Request handler that sends werkzeug's access log to this module's logger."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log one line per request at DEBUG, without headers."""
        logger.debug("%s %s -> %s", self.command, self.path, code)

    def log(self, type: str, message: str, *args: Any) -> None:
        """Log werkzeug's own messages, raising errors to WARNING."""
        level = logging.WARNING if type == "error" else logging.DEBUG
        logger.log(level, message, *args)


class LocalServer:
    """Base class for a WSGI stand-in served on the loopback interface.

    A subclass implements handle(). start() binds 127.0.0.1 and serves from a
    daemon thread. Werkzeug's threaded server handles each connection in a
    daemon thread too and does not join them on close, so a slow handler
    blocks neither stop() nor the interpreter's exit.
    """

    def __init__(self) -> None:
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def handle(self, request: Request) -> Response:
        """Build the response to one request."""
        raise NotImplementedError

    def start(self, port: int = 0) -> str:
        """Bind 127.0.0.1 on `port` (0 picks a free one), serve, and return address().

        Raises:
            RuntimeError: the server is already running.
            OSError: the port could not be bound.
        """
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")

        server = make_server(
            LOOPBACK_HOST,
            port,
            self._wsgi_app,
            threaded=True,
            request_handler=_RequestLogHandler,
        )
        self._stopping.clear()
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_SECONDS},
            name=f"{type(self).__name__}:{server.server_port}",
            daemon=True,
        )
        thread.start()
        self._server = server
        self._thread = thread

        logger.info("%s listening on %s", type(self).__name__, self.address())
        return self.address()

    def stop(self) -> None:
        """Stop serving and close the listening socket, if the server is running."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return

        self._stopping.set()
        server.shutdown()
        thread.join()
        server.server_close()
        self._server = None
        self._thread = None

        logger.info("%s stopped", type(self).__name__)

    @property
    def port(self) -> int:
        """TCP port the server is bound to."""
        if self._server is None:
            raise RuntimeError(
                f"{type(self).__name__} is not running. Call start() first."
            )
        return self._server.server_port

    def address(self) -> str:
        """Return the address in the form clients use. Subclasses override it."""
        return f"{LOOPBACK_HOST}:{self.port}"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _sleep(self, seconds: float) -> None:
        """Sleep for `seconds`, returning early when stop() is called."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _wsgi_app(
        self, environ: dict[str, Any], start_response: Any
    ) -> Iterable[bytes]:
        request = Request(environ)
        response = self.handle(request)
        return response(environ, start_response)
