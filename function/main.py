"""Cloud Run function that forwards Pub/Sub push messages to Mixpanel.

Deploy with entry point `forward`. The package `forwarder` beside this file
does the work; this module only adapts the HTTP request and reply.
"""

from forwarder import logs
from forwarder.handler import handle_push

logs.configure()

_JSON = {"Content-Type": "application/json"}


def forward(request):
    """Forward one Pub/Sub push request (a `flask.Request`) to Mixpanel.

    Returns:
        A (body, status, headers) tuple: 200 when every event was imported
        or dead-lettered, non-2xx when Pub/Sub must redeliver the message.
    """
    if request.method != "POST":
        return b'{"error": "use POST"}', 405, {**_JSON, "Allow": "POST"}

    reply = handle_push(request.get_data(cache=False))
    return reply.encode(), reply.status, _JSON
