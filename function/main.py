"""Cloud Run function that forwards Pub/Sub push messages to Mixpanel.

Deploy with entry point `forward`. The package `forwarder` beside this file
does the work; this module only adapts the HTTP request and reply.
"""

import json

from forwarder import logs
from forwarder.handler import handle_push

logs.configure()

_JSON = {"Content-Type": "application/json"}
# The body is read this much at a time into one buffer, so that reading needs
# no more memory than the body and one piece.
_READ_CHUNK = 1024 * 1024


def forward(request):
    """Forward one Pub/Sub push request (a `flask.Request`) to Mixpanel.

    Returns:
        A (body, status, headers) tuple: 200 when every event was imported
        or dead-lettered, non-2xx when Pub/Sub must redeliver the message.
    """
    if request.method != "POST":
        return b'{"error": "use POST"}', 405, {**_JSON, "Allow": "POST"}

    reply = handle_push(_read_body(request))
    return reply.encode(), reply.status, _JSON


def _read_body(request) -> bytes | str:
    """Read the request body, as the text that `json.loads` would decode.

    A push body of a 10 MB message is about 13 MB of JSON. Decoded here, the
    bytes are released before the envelope is parsed, so that no more than
    two copies of that size exist at any time. Parsing the text gives what
    parsing the bytes would give, and a body that does not decode is
    returned as bytes, for the parser to reject with its own message.
    """
    size = request.content_length
    if size is None:
        data = request.get_data(cache=False)
    else:
        data = _read_exactly(request.stream, size)
    try:
        text = data.decode(json.detect_encoding(data), "surrogatepass")
    except UnicodeDecodeError:
        return bytes(data)
    if text.startswith("\ufeff"):
        # json.loads rejects a byte order mark in text but not in bytes.
        return bytes(data)
    return text


def _read_exactly(stream, size: int) -> bytearray:
    """Read up to `size` bytes into one buffer, in pieces of _READ_CHUNK.

    The stream is the server's (gunicorn's under functions-framework), which
    need not have `readinto`.
    """
    buffer = bytearray(size)
    filled = 0
    while filled < size:
        piece = stream.read(min(_READ_CHUNK, size - filled))
        if not piece:
            break
        buffer[filled : filled + len(piece)] = piece
        filled += len(piece)
    if filled < size:
        # A stream that ends early without raising, as werkzeug's does,
        # leaves the JSON truncated, and the envelope parser reports it.
        del buffer[filled:]
    return buffer
