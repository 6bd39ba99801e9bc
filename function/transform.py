"""The transform hook: turn one incoming record into Mixpanel events.

Edit `transform` to map an in-house event shape onto Mixpanel's; this file is
deployed with the rest of `function/` by `pulumi up`. The forwarder calls it
once for each record, which is the parsed JSON of one line of a message (or
one element of a JSON array), with a `forwarder.hook.TransformContext`: the
message's `message_id`, `publish_time`, `publish_time_ms` and read-only
`attributes`. The exception is the code as shipped, only `return record`,
which the forwarder recognises: it passes each record on without the call,
with the same result.

Return None or [] for no event, a dict {"event": ..., "properties": {...}}
for one, or a list, tuple or generator of such dicts for several. Each event
then goes through the PII rules (PII_DROP_PROPERTIES, PII_HASH_PROPERTIES)
and Mixpanel's checks. An exception dead-letters the record with the error
`transform_failed`, and the other records go on. docs/TRANSFORMS.md walks
through writing one, and examples/transforms/inhouse.py is a full example.
"""


def transform(record, context):
    """Return the record unchanged, for producers that publish Mixpanel events."""
    return record
