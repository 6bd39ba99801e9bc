"""Deterministic messages for the benchmarks, in the three sizes measured."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

SEED_FILE = (
    Path(__file__).resolve().parent.parent / "tests" / "data" / "seed-events.ndjson"
)
PUBSUB_MAX_MESSAGE_BYTES = 10 * 1000 * 1000
# The near-limit message of a quick run, which only checks that all works.
QUICK_MESSAGE_BYTES = 1000 * 1000

_EVENTS = ("page_view", "add_to_cart", "checkout_started", "purchase", "search")
_PAGES = ("home", "product", "cart", "checkout", "account", "search-results")


def realistic_event(rng: random.Random, number: int) -> dict:
    """Return an event of about 550 bytes with 20 properties, some nested."""
    page = rng.choice(_PAGES)
    return {
        "event": rng.choice(_EVENTS),
        "properties": {
            "distinct_id": f"user-{rng.randrange(10**7):07d}",
            "$insert_id": f"{number:08x}-{rng.randrange(16**12):012x}",
            "time": 1764583200 + number,
            "$browser": rng.choice(("Chrome", "Firefox", "Safari")),
            "$os": rng.choice(("Linux", "Windows", "Mac OS X", "iOS")),
            "$current_url": f"https://shop.example.com/{page}/{rng.randrange(10**5)}",
            "$referrer": "https://www.example.org/",
            "plan": rng.choice(("free", "pro", "team")),
            "cart_value": round(rng.uniform(5, 500), 2),
            "items": rng.randrange(1, 9),
            "currency": "EUR",
            "logged_in": rng.random() < 0.6,
            "page_load_ms": rng.randrange(80, 4000),
            "session": rng.randrange(10**6),
            "locale": rng.choice(("de-DE", "en-GB", "fr-FR")),
            "experiment": {"name": "checkout-v2", "variant": rng.choice("AB")},
            "utm": {"source": "mail", "campaign": "winter"},
            "screen": {"w": 1920, "h": 1080},
            "tags": rng.sample(["sale", "new", "gift", "eco", "bundle"], 2),
            "app_version": f"4.{rng.randrange(20)}.{rng.randrange(10)}",
        },
    }


def ndjson(events: list[dict]) -> bytes:
    return b"\n".join(
        json.dumps(event, separators=(",", ":")).encode() for event in events
    )


def seed_data() -> bytes:
    """Return the ten sample events as message data."""
    return SEED_FILE.read_bytes().rstrip(b"\n")


def realistic_data(count: int, seed: int = 7) -> bytes:
    """`count` realistic events as newline-delimited JSON."""
    rng = random.Random(seed)
    return ndjson([realistic_event(rng, number) for number in range(count)])


def near_limit_data(limit: int | None = None, seed: int = 11) -> bytes:
    """Realistic events filling a message to 64 KiB under `limit` bytes.

    The default limit is Pub/Sub's 10 MB, and the 64 KiB leave room for the
    attributes that count towards it.
    """
    limit = PUBSUB_MAX_MESSAGE_BYTES if limit is None else limit
    rng = random.Random(seed)
    lines: list[bytes] = []
    size = 0
    number = 0
    while True:
        line = json.dumps(realistic_event(rng, number), separators=(",", ":")).encode()
        if size + len(line) + 1 > limit - 64 * 1024:
            break
        lines.append(line)
        size += len(line) + 1
        number += 1
    return b"\n".join(lines)


def push_body(data: bytes, message_id: str = "7000000000000001") -> bytes:
    """Wrap message data in a Pub/Sub push request body."""
    envelope = {
        "message": {
            "data": base64.b64encode(data).decode("ascii"),
            "attributes": {"source": "benchmark"},
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": "2026-12-01T10:00:00.123Z",
            "publish_time": "2026-12-01T10:00:00.123Z",
        },
        "subscription": "projects/bench/subscriptions/mp-bench-events-push",
        "deliveryAttempt": 1,
    }
    return json.dumps(envelope).encode()
