"""The transform hook's contract and the example in-house transform, in process."""

from __future__ import annotations

import copy
import datetime
import json
import sys
import textwrap
from pathlib import Path
from types import MappingProxyType

import pytest

import transform as default_transform
from conftest import DATA, ROOT
from examples.transforms import inhouse
from forwarder import hook
from forwarder.envelope import PushMessage
from forwarder.errors import ConfigError, InvalidEvent
from forwarder.events import normalise_event
from forwarder.hook import (
    DEFAULT_TRANSFORM,
    MAX_EVENTS_PER_RECORD,
    REDACTED,
    TransformContext,
    context_for,
    load_transform,
    run_transform,
)
from forwarder.privacy import PrivacyRules, PropertyPrivacy
from forwarder.records import ErrorCode, Record

TRANSFORM_DATA = DATA / "transform"
CONTEXT = TransformContext(
    message_id="1000000000000001",
    publish_time="2026-12-01T10:00:00.123Z",
    publish_time_ms=1796119200123,
    attributes=MappingProxyType({"source": "web", "tenant": "tenant-4417"}),
)
RECORD = {
    "event": "page_view",
    "properties": {"distinct_id": "user-1", "email": "ada@example.com"},
}


def failure_detail(transform, record=RECORD, context=CONTEXT) -> str:
    """Run a transform that must fail and return the dead-letter detail."""
    with pytest.raises(InvalidEvent) as caught:
        run_transform(transform, record, context)
    assert caught.value.code == ErrorCode.TRANSFORM_FAILED
    return caught.value.detail


def inhouse_context() -> TransformContext:
    fields = json.loads((TRANSFORM_DATA / "inhouse-context.json").read_text())
    return TransformContext(
        message_id=fields["message_id"],
        publish_time=fields["publish_time"],
        publish_time_ms=fields["publish_time_ms"],
        attributes=MappingProxyType(fields["attributes"]),
    )


def ndjson_lines(name: str) -> list:
    text = (TRANSFORM_DATA / name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# The default hook.


def test_default_transform_is_identity():
    record = copy.deepcopy(RECORD)

    assert default_transform.transform(record, CONTEXT) is record
    assert run_transform(default_transform.transform, record, CONTEXT) == [record]
    assert record == RECORD


def test_default_spec_loads_function_transform():
    loaded = load_transform(DEFAULT_TRANSFORM)

    assert loaded is default_transform.transform
    assert Path(default_transform.__file__) == ROOT / "function" / "transform.py"


@pytest.mark.parametrize("value", [None, 42, "signup", [1, 2], True])
def test_identity_passes_any_record_on(value):
    # The record itself goes on as one event, so that normalise_event
    # rejects a scalar as invalid_event, as it did before the hook existed.
    assert run_transform(default_transform.transform, value, CONTEXT) == [value]


# Zero, one and several events.


@pytest.mark.parametrize("output", [None, [], ()], ids=["None", "list", "tuple"])
def test_no_event_returned(output):
    assert run_transform(lambda record, context: output, RECORD, CONTEXT) == []


def test_empty_generator_is_no_event():
    def transform(record, context):
        yield from ()

    assert run_transform(transform, RECORD, CONTEXT) == []


def test_dict_is_one_event():
    event = {"event": "signup", "properties": {"distinct_id": "u-1"}}

    assert run_transform(lambda record, context: event, RECORD, CONTEXT) == [event]


@pytest.mark.parametrize(
    "container", [list, tuple, iter], ids=["list", "tuple", "iter"]
)
def test_sequence_is_many_events(container):
    events = [
        {"event": "first", "properties": {"distinct_id": "u-1"}},
        {"event": "second", "properties": {"distinct_id": "u-1"}},
        {"event": "third", "properties": {"distinct_id": "u-2"}},
    ]

    output = run_transform(lambda record, context: container(events), RECORD, CONTEXT)

    assert output == events


def test_generator_is_many_events():
    def transform(record, context):
        for number in range(3):
            yield {"event": f"e{number}", "properties": {"distinct_id": "u-1"}}

    output = run_transform(transform, RECORD, CONTEXT)

    assert [event["event"] for event in output] == ["e0", "e1", "e2"]


def test_transform_receives_record_and_context():
    seen = []

    def transform(record, context):
        seen.append((record, context))
        return record

    run_transform(transform, RECORD, CONTEXT)

    assert seen == [(RECORD, CONTEXT)]


# Failures.


def test_exception_becomes_transform_failed():
    def transform(record, context):
        raise LookupError("no mapping for this shape")

    detail = failure_detail(transform)

    assert detail.startswith("LookupError: no mapping for this shape")


def test_exception_detail_names_line_in_transform():
    def transform(record, context):
        return record["missing"]

    detail = failure_detail(transform)

    assert detail.startswith("KeyError: 'missing'")
    assert f"(at {Path(__file__).name}:" in detail


def test_exception_from_library_names_transform_line():
    def transform(record, context):
        return json.loads("not JSON")

    detail = failure_detail(transform)

    assert detail.startswith("json.decoder.JSONDecodeError: Expecting value")
    assert f"(at {Path(__file__).name}:" in detail


def test_exception_type_of_module_is_qualified():
    class MappingError(Exception):
        pass

    def transform(record, context):
        raise MappingError("unknown")

    detail = failure_detail(transform)

    assert detail.startswith(f"{__name__}.")
    assert "MappingError: unknown" in detail


def test_exception_in_generator_is_caught():
    def transform(record, context):
        yield {"event": "first", "properties": {"distinct_id": "u-1"}}
        raise RuntimeError("broke after one event")

    detail = failure_detail(transform)

    assert detail.startswith("RuntimeError: broke after one event")


@pytest.mark.parametrize(
    ("output", "kind"),
    [("signup", "a str"), (42, "an int"), ({"a"}, "a set"), (b"{}", "a bytes")],
)
def test_non_event_output_rejected(output, kind):
    detail = failure_detail(lambda record, context: output)

    assert detail.startswith(f"the transform returned {kind};")


def test_non_dict_element_rejected():
    detail = failure_detail(lambda record, context: [RECORD, "second"])

    assert detail.startswith("the transform's event 2 is a str;")


def test_non_json_value_rejected():
    moment = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    event = {"event": "signup", "properties": {"distinct_id": "u-1", "when": moment}}

    detail = failure_detail(lambda record, context: event)

    assert "has a datetime at 'properties.when'" in detail


def test_non_string_key_rejected():
    event = {"event": "signup", "properties": {"distinct_id": "u-1", 7: "seven"}}

    detail = failure_detail(lambda record, context: event)

    assert "has a key of an int at 'properties'" in detail


def test_tuple_inside_event_rejected():
    event = {"event": "signup", "properties": {"distinct_id": "u-1", "tags": ("a",)}}

    detail = failure_detail(lambda record, context: event)

    assert "has a tuple at 'properties.tags'" in detail


def test_endless_generator_stopped():
    def transform(record, context):
        while True:
            yield {"event": "again", "properties": {"distinct_id": "u-1"}}

    detail = failure_detail(transform)

    assert f"more than {MAX_EVENTS_PER_RECORD} events" in detail


# Redaction of the exception's message.


def test_detail_redacts_record_values():
    record = {
        "event": "signup",
        "properties": {
            "distinct_id": "user-5521",
            "contact": {"email": "ada@example.com", "phones": ["+44 20 7946 0958"]},
            "age": 36,
            "score": 1234.5,
        },
    }

    def transform(record, context):
        props = record["properties"]
        raise ValueError(
            f"cannot map {props['distinct_id']} {props['contact']['email']} "
            f"{props['contact']['phones'][0]} s={props['score']}"
        )

    detail = failure_detail(transform, record)

    assert "user-5521" not in detail
    assert "ada@example.com" not in detail
    assert "+44 20 7946 0958" not in detail
    assert "1234.5" not in detail
    assert detail.count(REDACTED) == 4


def test_detail_redacts_repr_of_values():
    record = {"properties": {"name": "O'Brien\nSmith"}}

    def transform(record, context):
        raise ValueError(f"bad name {record['properties']['name']!r}")

    detail = failure_detail(transform, record)

    assert "Brien" not in detail
    assert REDACTED in detail


def test_detail_redacts_attribute_values():
    def transform(record, context):
        raise ValueError(f"tenant {context.attributes['tenant']} unknown")

    detail = failure_detail(transform)

    assert "tenant-4417" not in detail
    assert f"tenant {REDACTED} unknown" in detail


def test_detail_keeps_short_values():
    record = {"properties": {"distinct_id": "u1", "n": 7}}

    def transform(record, context):
        raise ValueError("u1 has 7")

    assert failure_detail(transform, record).startswith("ValueError: u1 has 7")


def test_detail_leaves_out_long_message():
    def transform(record, context):
        raise ValueError("x" * 5000)

    detail = failure_detail(transform)

    assert "xxxx" not in detail
    assert "a message of 5000 characters, left out" in detail


# Loading the hook.


def test_missing_module_is_config_error():
    with pytest.raises(ConfigError) as caught:
        load_transform("no_such_transform_module:transform")

    assert caught.value.variable == "FORWARDER_TRANSFORM"
    assert "ModuleNotFoundError" in str(caught.value)


def test_missing_function_is_config_error():
    with pytest.raises(ConfigError) as caught:
        load_transform("transform:no_such_function")

    assert caught.value.variable == "FORWARDER_TRANSFORM"
    assert "no function 'no_such_function'" in str(caught.value)


def test_syntax_error_is_config_error(tmp_path, monkeypatch):
    (tmp_path / "broken_transform.py").write_text("def transform(record, context)\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(ConfigError) as caught:
        load_transform("broken_transform:transform")

    assert caught.value.variable == "FORWARDER_TRANSFORM"
    assert "SyntaxError" in str(caught.value)


def test_module_imported_once(tmp_path, monkeypatch):
    # Each import of the module appends a line to a file beside it.
    source = textwrap.dedent(
        """
        from pathlib import Path

        with Path(__file__).with_suffix(".imports").open("a") as imports:
            imports.write("imported\\n")

        def transform(record, context):
            return record
        """
    )
    (tmp_path / "counted_transform.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))

    try:
        first = load_transform("counted_transform:transform")
        second = load_transform("counted_transform:transform")
    finally:
        sys.modules.pop("counted_transform", None)
        hook._loaded.pop("counted_transform:transform", None)

    assert first is second
    imports = (tmp_path / "counted_transform.imports").read_text().splitlines()
    assert imports == ["imported"]


def test_context_from_message():
    message = PushMessage(
        message_id="2070443601311540",
        publish_time_ms=1764583200123,
        publish_time="2025-12-01T10:00:00.123Z",
        subscription="projects/p/subscriptions/s",
        data=None,
        attributes={"source": "web"},
    )

    context = context_for(message)

    assert context.message_id == "2070443601311540"
    assert context.publish_time == "2025-12-01T10:00:00.123Z"
    assert context.publish_time_ms == 1764583200123
    assert dict(context.attributes) == {"source": "web"}
    with pytest.raises(TypeError):
        context.attributes["source"] = "changed"
    assert message.attributes == {"source": "web"}


# The example in-house transform, on golden files.


def test_inhouse_matches_golden_output():
    context = inhouse_context()
    records = ndjson_lines("inhouse-input.ndjson")
    expected = ndjson_lines("inhouse-expected.ndjson")
    assert len(records) == len(expected)

    for number, (record, events) in enumerate(zip(records, expected, strict=True)):
        output = run_transform(inhouse.transform, record, context)
        assert output == events, f"line {number + 1} of inhouse-input.ndjson"


def test_inhouse_output_is_valid_mixpanel():
    context = inhouse_context()
    privacy = PropertyPrivacy(PrivacyRules())

    for number, record in enumerate(ndjson_lines("inhouse-input.ndjson"), start=1):
        for event in run_transform(inhouse.transform, record, context):
            try:
                normalise_event(privacy.apply(event), context.publish_time_ms)
            except InvalidEvent as err:
                pytest.fail(f"line {number}: {event['event']} is invalid: {err}")


def test_inhouse_item_insert_ids_differ_and_repeat():
    context = inhouse_context()
    order = ndjson_lines("inhouse-input.ndjson")[2]
    privacy = PropertyPrivacy(PrivacyRules())

    def insert_ids() -> list[str]:
        events = run_transform(inhouse.transform, copy.deepcopy(order), context)
        return [
            normalise_event(privacy.apply(event), context.publish_time_ms)[
                "properties"
            ]["$insert_id"]
            for event in events
        ]

    first = insert_ids()

    assert len(first) == 4
    assert len(set(first)) == 4
    assert insert_ids() == first


def test_inhouse_record_without_type_fails():
    detail = failure_detail(inhouse.transform, {"user": "u-1", "ts": 1764494130000})

    assert detail.startswith("ValueError: record has no 'type'")
    assert "(at inhouse.py:" in detail


def test_inhouse_leaves_record_unchanged():
    record = ndjson_lines("inhouse-input.ndjson")[2]
    before = copy.deepcopy(record)

    run_transform(inhouse.transform, record, inhouse_context())

    assert record == before


@pytest.mark.parametrize("as_record", [False, True])
def test_redaction_uses_record_as_received(as_record):
    def pop_then_raise(record, context):
        mail = record["properties"].pop("email")
        raise ValueError(f"cannot map {mail}")

    raw = json.dumps(RECORD).encode()
    value = copy.deepcopy(RECORD)
    source = Record(0, raw, value) if as_record else raw
    with pytest.raises(InvalidEvent) as caught:
        run_transform(pop_then_raise, value, CONTEXT, source)

    assert "ada@example.com" not in caught.value.detail
    assert REDACTED in caught.value.detail


def test_redaction_covers_keys():
    record = {"event": "e", "properties": {"ada@example.com": True}}

    def raise_with_key(record, context):
        raise KeyError("ada@example.com")

    with pytest.raises(InvalidEvent) as caught:
        run_transform(raise_with_key, record, CONTEXT)

    assert "ada@example.com" not in caught.value.detail


def test_broken_exception_str_is_failure():
    class Broken(Exception):
        def __str__(self):
            raise RuntimeError("no message")

    def raise_broken(record, context):
        raise Broken()

    with pytest.raises(InvalidEvent) as caught:
        run_transform(raise_broken, RECORD, CONTEXT)

    assert caught.value.code == ErrorCode.TRANSFORM_FAILED


def test_system_exit_in_hook_is_failure():
    def exit_hook(record, context):
        raise SystemExit(3)

    with pytest.raises(InvalidEvent) as caught:
        run_transform(exit_hook, RECORD, CONTEXT)

    assert caught.value.code == ErrorCode.TRANSFORM_FAILED


# The hook that the handler need not call.


class _CallableHook:
    def __call__(self, record, context):
        return record


class _HookHolder:
    def hook(self, record, context=None):
        return self


def _documented(record, context):
    """Pass the record on."""
    return record


def _changes_in_place(record, context):
    record["properties"]["seen"] = True
    return record


def _returns_context(record, context):
    return context


def _takes_any(*args):
    return args


def _takes_keywords(*, record):
    return record


def _takes_more(record, context, *rest):
    return record


@pytest.mark.parametrize(
    ("transform", "passes_on"),
    [
        (default_transform.transform, True),
        (lambda record, context: record, True),
        (_documented, True),
        (_changes_in_place, False),
        (_returns_context, False),
        (_takes_any, False),
        (_takes_keywords, False),
        (_takes_more, False),
        (lambda record, context: [record], False),
        (_CallableHook(), False),
        (_HookHolder().hook, False),
        (inhouse.transform, False),
    ],
)
def test_passes_on_only_return_record(transform, passes_on):
    assert hook.passes_records_on(transform) is passes_on
