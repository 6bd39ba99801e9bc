"""JSON decoding and encoding on the forwarding path, in one place."""

from __future__ import annotations

import json
from typing import Any

NAME = "json"


def loads(data: bytes | str) -> Any:
    """Parse one JSON document."""
    return json.loads(data)


def dumps(value: Any) -> bytes:
    """Serialise compactly as UTF-8, rejecting NaN and Infinity."""
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode()
