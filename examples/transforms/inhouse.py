"""A transform for an in-house event shape, to copy into function/transform.py.

The producers of this example publish one JSON object per event:

    {"id": "5c3e...", "type": "order_completed", "ts": "2026-11-30T09:15:02Z",
     "user": {"id": "u-1842", "email": "ada@example.com", "name": "Ada"},
     "payload": {"order_id": "A-1001", "total": 37.5, "items": [...]}}

`type` is the event in snake_case, `ts` an ISO-8601 time or epoch
milliseconds, and `payload` the event's own fields. `user` is an object,
except that older producers send the user id as a string, and anonymous
visitors send null with a `device` id instead. Health checks of type `heartbeat` are not
product analytics and produce no event. An order produces an "Order
Completed" event and one "Product Purchased" event per line item.
"""

from __future__ import annotations

from typing import Any

# Mixpanel event names for the in-house types. Other types become their name
# in title case, so `search_performed` is sent as "Search Performed".
EVENT_NAMES = {
    "page_viewed": "Page Viewed",
    "signed_up": "Sign Up",
    "order_completed": "Order Completed",
}
IGNORED_TYPES = frozenset({"heartbeat"})
ORDER_TYPE = "order_completed"
ITEM_EVENT = "Product Purchased"


def transform(record: Any, context: Any) -> list[dict[str, Any]]:
    """Map one in-house event onto Mixpanel events.

    Raises:
        ValueError: the record has no `type`, so it is not an in-house event.
            The forwarder dead-letters it as `transform_failed`.
    """
    if not isinstance(record, dict) or not isinstance(record.get("type"), str):
        raise ValueError("record has no 'type'; expected an in-house event object")
    kind = record["type"]
    if kind in IGNORED_TYPES:
        return []

    properties = _common_properties(record, context)
    payload = dict(record.get("payload") or {})
    items = payload.pop("items", []) if kind == ORDER_TYPE else []
    if kind == ORDER_TYPE:
        payload["item_count"] = len(items)

    main = {
        "event": EVENT_NAMES.get(kind, kind.replace("_", " ").title()),
        "properties": {**properties, **payload},
    }
    if isinstance(record.get("id"), str):
        # The in-house id is a UUID, which Mixpanel accepts as $insert_id.
        main["properties"]["$insert_id"] = record["id"]
    return [main, *_item_events(items, payload.get("order_id"), properties)]


def _common_properties(record: dict[str, Any], context: Any) -> dict[str, Any]:
    """Return the identity, time and source that every event of a record shares."""
    properties: dict[str, Any] = {}
    user = record.get("user")
    if isinstance(user, dict):
        properties["distinct_id"] = user.get("id")
        for field in ("email", "name"):
            if field in user:
                properties[field] = user[field]
    elif user is not None:
        properties["distinct_id"] = user
    if record.get("device") is not None:
        properties["$device_id"] = record["device"]

    # Without `ts` the forwarder uses the message's publish time.
    if record.get("ts") is not None:
        properties["time"] = record["ts"]
    if "source" in context.attributes:
        properties["source"] = context.attributes["source"]
    return properties


def _item_events(
    items: list[dict[str, Any]], order_id: Any, properties: dict[str, Any]
) -> list[dict[str, Any]]:
    """Return one event per line item of an order.

    The events carry no $insert_id, so the forwarder derives one from their
    content. `line` makes two identical items of one order differ, because
    Mixpanel would store events with the same derived id once.
    """
    events = []
    for line, item in enumerate(items, start=1):
        events.append(
            {
                "event": ITEM_EVENT,
                "properties": {
                    **properties,
                    "order_id": order_id,
                    "line": line,
                    "sku": item.get("sku"),
                    "quantity": item.get("qty", 1),
                    "price": item.get("price"),
                },
            }
        )
    return events
