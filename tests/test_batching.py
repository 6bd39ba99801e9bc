"""Grouping of events into import requests within Mixpanel's limits."""

from __future__ import annotations

import json

from forwarder.batching import Item, build_batches, serialise_event
from forwarder.records import Record


def _items(count: int, padding: int = 0) -> list[Item]:
    items = []
    for number in range(count):
        event = {"event": "e", "properties": {"n": number, "pad": "x" * padding}}
        body = serialise_event(event)
        items.append(Item(Record(number, body, event), f"id-{number}", body))
    return items


def test_4001_events_split_2000_2000_1():
    batches, failures = build_batches(_items(4001), 2000, 10 * 1024 * 1024)

    assert [len(batch.items) for batch in batches] == [2000, 2000, 1]
    assert failures == []


def test_byte_cap_respected_and_order_kept():
    items = _items(50, padding=100)
    batches, _ = build_batches(items, 2000, 1024)

    assert all(len(batch.body) <= 1024 for batch in batches)
    sent = [event["properties"]["n"] for b in batches for event in json.loads(b.body)]
    assert sent == list(range(50))


def test_single_event_over_cap_is_failure():
    items = _items(3)
    big = _items(1, padding=5000)[0]
    batches, failures = build_batches([items[0], big, items[1]], 2000, 1024)

    assert [len(batch.items) for batch in batches] == [2]
    assert len(failures) == 1
    assert failures[0].code == "too_large"


def test_event_over_cap_only_with_brackets():
    item = _items(1)[0]
    limit = len(item.body) + 1

    batches, failures = build_batches([item], 2000, limit)

    assert batches == []
    assert failures[0].detail == (
        f"event is {limit - 1} bytes, {limit + 1} in a request of its own, above "
        f"the request limit of {limit} bytes"
    )


def test_halves_cover_batch():
    batches, _ = build_batches(_items(5), 2000, 1024 * 1024)
    left, right = batches[0].halves()

    assert left.items + right.items == batches[0].items
    assert len(left.items) == 2
