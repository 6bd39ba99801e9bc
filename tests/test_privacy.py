"""Dropping and hashing of properties, the IP rule and their settings, in process."""

from __future__ import annotations

import copy
import hashlib
import hmac

import pytest

from forwarder.config import load_settings
from forwarder.errors import ConfigError
from forwarder.events import normalise_event
from forwarder.privacy import (
    MIN_HASH_KEY_LENGTH,
    NO_GEOLOCATION_IP,
    PrivacyRules,
    PropertyPrivacy,
    parse_paths,
)

KEY = "3f9a0c6e1b7d4258a9e0f1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6"
OTHER_KEY = "0" * 32 + "1" * 32
PUBLISH_MS = 1764583200123  # 2025-12-01T10:00:00.123Z

BASE_ENV = {
    "MIXPANEL_PROJECT_ID": "3141592",
    "MIXPANEL_SERVICE_ACCOUNT_USERNAME": "sa.user",
    "MIXPANEL_SERVICE_ACCOUNT_SECRET": "very-secret-value",
    "DEAD_LETTER_TOPIC": "projects/p/topics/dead",
}


def expected_hash(text: str, key: str = KEY) -> str:
    """HMAC-SHA-256 in hex, computed here without the module under test."""
    return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()


def privacy(
    drop: str = "", hashed: str = "", key: str = KEY, keep_ip: bool = False
) -> PropertyPrivacy:
    return PropertyPrivacy(
        PrivacyRules(
            drop_paths=parse_paths(drop),
            hash_paths=parse_paths(hashed),
            hash_key=key if hashed else "",
            keep_ip=keep_ip,
        )
    )


def event(**properties) -> dict:
    return {"event": "signup", "properties": {"distinct_id": "user-1", **properties}}


def settings(**changes):
    env = {**BASE_ENV, **changes}
    return load_settings({name: value for name, value in env.items() if value})


# Paths.


def test_paths_parsed_in_order():
    assert parse_paths("email, address.street,,name") == (
        ("email",),
        ("address", "street"),
        ("name",),
    )


def test_repeated_path_kept_once():
    assert parse_paths("email,email,user.email") == (("email",), ("user", "email"))


def test_empty_paths():
    assert parse_paths("") == ()
    assert parse_paths(" , ") == ()


@pytest.mark.parametrize("text", ["address.", ".street", "a..b", "user. email"])
def test_invalid_path_rejected(text):
    with pytest.raises(ValueError) as caught:
        parse_paths(text)

    assert repr(text.strip()) in str(caught.value)


# Dropping.


def test_drop_top_level():
    output = privacy(drop="email").apply(event(email="ada@example.com", plan="pro"))

    assert "email" not in output["properties"]
    assert output["properties"]["plan"] == "pro"


def test_drop_nested():
    original = event(address={"street": "12 Elm Row", "city": "Leeds"})

    output = privacy(drop="address.street").apply(original)

    assert output["properties"]["address"] == {"city": "Leeds"}


def test_drop_in_list_elements():
    original = event(contacts=[{"email": "a@example.com"}, {"email": "b@example.com"}])

    output = privacy(drop="contacts.email").apply(original)

    assert output["properties"]["contacts"] == [{}, {}]


def test_drop_key_with_dot():
    original = event(**{"utm.source": "newsletter", "utm": {"source": "ads"}})

    output = privacy(drop="utm.source").apply(original)

    assert "utm.source" not in output["properties"]
    assert output["properties"]["utm"] == {}


def test_drop_missing_path_changes_nothing():
    original = event(address="Leeds")

    output = privacy(drop="address.street,email").apply(original)

    assert output["properties"]["address"] == "Leeds"


def test_input_event_not_changed():
    original = event(
        email="ada@example.com",
        address={"street": "12 Elm Row"},
        contacts=[{"phone": "+44 20 7946 0958"}],
        ip="203.0.113.9",
    )
    before = copy.deepcopy(original)

    privacy(drop="email,address.street", hashed="contacts.phone").apply(original)

    assert original == before


def test_rewrite_without_rules_returns_event():
    original = event(ip="203.0.113.9")

    assert privacy().rewrite(original) is original


def test_rewrite_then_ip_rule_gives_apply():
    original = event(
        email="ada@example.com", contact={"phone": "+44 20 7946 0958"}, ip="x"
    )
    rules = privacy(drop="email", hashed="contact.phone")
    before = copy.deepcopy(original)

    rewritten = rules.rewrite(original)
    properties = dict(rewritten["properties"])
    rules.set_ip(properties)

    assert "email" not in rewritten["properties"]
    assert rewritten["properties"]["ip"] == "x"
    assert {**rewritten, "properties": properties} == rules.apply(original)
    assert original == before


def test_shared_nested_object_hashed_once_per_event():
    shared = {"phone": "+44 20 7946 0958"}
    first = event(contact=shared)
    second = event(contact=shared)
    rules = privacy(hashed="contact.phone")

    outputs = [rules.apply(first), rules.apply(second)]

    for output in outputs:
        assert output["properties"]["contact"]["phone"] == expected_hash(
            "+44 20 7946 0958"
        )
    assert shared == {"phone": "+44 20 7946 0958"}


# Hashing.


def test_hash_is_hmac_sha256_hex():
    output = privacy(hashed="email").apply(event(email="ada@example.com"))

    assert output["properties"]["email"] == expected_hash("ada@example.com")


def test_hash_nested_and_in_lists():
    original = event(
        user={"email": "ada@example.com"},
        contacts=[{"phone": "+44 20 7946 0958"}, {"phone": "+1 202 555 0143"}],
    )

    output = privacy(hashed="user.email,contacts.phone").apply(original)

    properties = output["properties"]
    assert properties["user"]["email"] == expected_hash("ada@example.com")
    assert properties["contacts"][0]["phone"] == expected_hash("+44 20 7946 0958")
    assert properties["contacts"][1]["phone"] == expected_hash("+1 202 555 0143")


def test_hash_stable_across_events_and_instances():
    first = privacy(hashed="distinct_id").apply(event())
    second = privacy(hashed="distinct_id").apply(event(plan="pro"))

    assert first["properties"]["distinct_id"] == second["properties"]["distinct_id"]


def test_hash_depends_on_key():
    first = privacy(hashed="distinct_id", key=KEY).apply(event())
    second = privacy(hashed="distinct_id", key=OTHER_KEY).apply(event())

    assert first["properties"]["distinct_id"] != second["properties"]["distinct_id"]


def test_hash_of_non_string_uses_canonical_json():
    rules = privacy(hashed="address,age,user_id")
    output = rules.apply(
        event(address={"zip": "LS1", "city": "Leeds"}, age=36, user_id="36")
    )

    properties = output["properties"]
    assert properties["address"] == expected_hash('{"city":"Leeds","zip":"LS1"}')
    assert properties["age"] == expected_hash("36")
    assert properties["user_id"] == properties["age"]


def test_hash_keeps_null():
    output = privacy(hashed="email").apply(event(email=None))

    assert output["properties"]["email"] is None


@pytest.mark.parametrize("placeholder", ["anonymous", "null", "0", True, 0])
def test_hash_keeps_placeholder_ids(placeholder):
    output = privacy(hashed="distinct_id").apply(event(distinct_id=placeholder))

    assert output["properties"]["distinct_id"] == placeholder


def test_hashed_distinct_id_is_valid():
    hashed = privacy(hashed="distinct_id").apply(event())

    normalised = normalise_event(hashed, PUBLISH_MS)

    assert normalised["properties"]["distinct_id"] == expected_hash("user-1")


def test_hash_of_lone_surrogate_is_stable():
    rules = privacy(hashed="name")

    first = rules.apply(event(name="a\ud800b"))
    second = rules.apply(event(name="a\ud800b"))

    assert first["properties"]["name"] == second["properties"]["name"]
    assert len(first["properties"]["name"]) == 64


# IP addresses.


def test_ip_removed_and_geolocation_off():
    original = event(ip="203.0.113.9", **{"$ip": "198.51.100.7"})

    output = privacy().apply(original)

    assert output["properties"]["ip"] == NO_GEOLOCATION_IP
    assert "$ip" not in output["properties"]


def test_ip_set_without_properties():
    assert privacy().apply({"event": "signup"}) == {
        "event": "signup",
        "properties": {"ip": NO_GEOLOCATION_IP},
    }


def test_keep_ip_keeps_own_address():
    output = privacy(keep_ip=True).apply(event(ip="203.0.113.9"))

    assert output["properties"]["ip"] == "203.0.113.9"


@pytest.mark.parametrize("missing", [{}, {"ip": None}, {"ip": ""}])
def test_keep_ip_without_address_sets_zero(missing):
    output = privacy(keep_ip=True).apply(event(**missing))

    assert output["properties"]["ip"] == NO_GEOLOCATION_IP


def test_keep_ip_takes_dollar_ip():
    output = privacy(keep_ip=True).apply(event(**{"$ip": "198.51.100.7"}))

    assert output["properties"]["ip"] == "198.51.100.7"
    assert output["properties"]["$ip"] == "198.51.100.7"


@pytest.mark.parametrize("value", [None, 42, [1], {"event": "x", "properties": []}])
def test_non_event_returned_as_is(value):
    assert privacy(drop="email").apply(value) is value


# Settings from the environment.


def test_settings_default_to_no_rules():
    rules = settings().privacy

    assert rules.drop_paths == ()
    assert rules.hash_paths == ()
    assert rules.hash_key == ""
    assert rules.keep_ip is False


def test_settings_read_rules():
    rules = settings(
        PII_DROP_PROPERTIES="email,address.street",
        PII_HASH_PROPERTIES="distinct_id",
        PII_HASH_KEY=KEY,
        PII_KEEP_IP="TRUE",
    ).privacy

    assert rules.drop_paths == (("email",), ("address", "street"))
    assert rules.hash_paths == (("distinct_id",),)
    assert rules.hash_key == KEY
    assert rules.keep_ip is True


def test_hash_paths_need_key():
    with pytest.raises(ConfigError) as caught:
        settings(PII_HASH_PROPERTIES="distinct_id")

    assert caught.value.variable == "PII_HASH_KEY"


def test_short_key_rejected_without_showing_it():
    short_key = "k" * (MIN_HASH_KEY_LENGTH - 1)

    with pytest.raises(ConfigError) as caught:
        settings(PII_HASH_PROPERTIES="distinct_id", PII_HASH_KEY=short_key)

    assert caught.value.variable == "PII_HASH_KEY"
    assert short_key not in str(caught.value)


def test_time_cannot_be_hashed():
    with pytest.raises(ConfigError) as caught:
        settings(PII_HASH_PROPERTIES="time", PII_HASH_KEY=KEY)

    assert caught.value.variable == "PII_HASH_PROPERTIES"


def test_path_in_both_lists_rejected():
    with pytest.raises(ConfigError) as caught:
        settings(
            PII_DROP_PROPERTIES="email",
            PII_HASH_PROPERTIES="email",
            PII_HASH_KEY=KEY,
        )

    assert caught.value.variable == "PII_HASH_PROPERTIES"
    assert "'email'" in str(caught.value)


@pytest.mark.parametrize("name", ["PII_DROP_PROPERTIES", "PII_HASH_PROPERTIES"])
def test_invalid_path_names_variable(name):
    with pytest.raises(ConfigError) as caught:
        settings(**{name: "address..street", "PII_HASH_KEY": KEY})

    assert caught.value.variable == name


def test_invalid_keep_ip_rejected():
    with pytest.raises(ConfigError) as caught:
        settings(PII_KEEP_IP="yes")

    assert caught.value.variable == "PII_KEEP_IP"


def test_key_registered_for_redaction():
    loaded = settings(PII_HASH_PROPERTIES="distinct_id", PII_HASH_KEY=KEY)

    assert KEY in loaded.secrets


def test_repr_hides_key():
    loaded = settings(PII_HASH_PROPERTIES="distinct_id", PII_HASH_KEY=KEY)

    assert KEY not in repr(loaded)
    assert KEY not in repr(loaded.privacy)
    assert "drop_paths=()" in repr(loaded.privacy)


def test_rich_repr_hides_key():
    # The rich library prints a msgspec Struct from its __rich_repr__.
    loaded = settings(PII_HASH_PROPERTIES="distinct_id", PII_HASH_KEY=KEY)

    for fields in (loaded.__rich_repr__(), loaded.privacy.__rich_repr__()):
        assert KEY not in repr(list(fields))


def test_transform_default_and_override():
    assert settings().transform == "transform:transform"
    assert settings(FORWARDER_TRANSFORM="custom.mod:run").transform == "custom.mod:run"


@pytest.mark.parametrize("spec", ["transform", "a:b:c", "mod:", "1mod:run"])
def test_invalid_transform_spec_rejected(spec):
    with pytest.raises(ConfigError) as caught:
        settings(FORWARDER_TRANSFORM=spec)

    assert caught.value.variable == "FORWARDER_TRANSFORM"
