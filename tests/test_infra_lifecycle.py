"""What depends on what, what a change touches, and what prod protects.

The dependency tests read the registration requests that the engine would
receive (`Node`): each resource's parent and the URNs it depends on, from
`depends_on` and from its inputs. The change tests build the stack twice and
compare every resource's recorded inputs, path by path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from infra_mocks import (
    SECRET_VALUE,
    BuiltStack,
    SecretVersions,
    base_config,
    build,
    load,
    make_function_dir,
)
from pulumi.runtime import rpc

from infra.config import ConfigError

TOPIC = "gcp:pubsub/topic:Topic"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
BUCKET = "gcp:storage/bucket:Bucket"
BUCKET_OBJECT = "gcp:storage/bucketObject:BucketObject"
FUNCTION = "gcp:cloudfunctionsv2/function:Function"
SECRET = "gcp:secretmanager/secret:Secret"
SECRET_VERSION = "gcp:secretmanager/secretVersion:SecretVersion"
RUN_IAM = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"

DEAD_LETTER_TOPIC = (TOPIC, "messaging-dead-letter")
DEAD_LETTER_SUBSCRIPTION = (SUBSCRIPTION, "messaging-dead-letter-kept")
EVENTS_TOPIC = (TOPIC, "messaging-events")
PUSH_SUBSCRIPTION = (SUBSCRIPTION, "delivery-events-push")
FUNCTION_KEY = (FUNCTION, "forwarder-function")
SOURCE_KEYS = {
    (BUCKET, "forwarder-source"),
    (BUCKET_OBJECT, "forwarder-source-archive"),
}

ROTATED_VALUE = "r0tated-6c1d2e3f-credential"


@pytest.fixture(scope="module")
def function_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_function_dir(tmp_path_factory.mktemp("lifecycle"))


@pytest.fixture(scope="module")
def stack(function_dir: Path) -> BuiltStack:
    return build(base_config(), function_dir)


def protected(stack: BuiltStack) -> set[tuple[str, str]]:
    return {key for key, node in stack.nodes.items() if node.protect}


def changed_inputs(
    before: BuiltStack, after: BuiltStack
) -> dict[tuple[str, str], set[str]]:
    """Return, per resource, the input paths whose values differ between builds."""
    old, new = before.flat_inputs(), after.flat_inputs()
    assert set(old) == set(new), "the two builds registered different resources"
    changes = {}
    for key in old:
        paths = {
            path
            for path in old[key].keys() | new[key].keys()
            if old[key].get(path) != new[key].get(path)
        }
        if paths:
            changes[key] = paths
    return changes


# --- Protection of the dead-letter topic and subscription ---


def test_prod_protects_dead_letter_resources(function_dir: Path):
    prod = build(base_config(), function_dir, stack="prod")
    assert prod.nodes[DEAD_LETTER_TOPIC].protect, "prod dead-letter topic"
    assert prod.nodes[DEAD_LETTER_SUBSCRIPTION].protect, "prod dead-letter kept"
    assert protected(prod) == {DEAD_LETTER_TOPIC, DEAD_LETTER_SUBSCRIPTION}, (
        "prod protects other resources than the dead-letter ones"
    )


def test_dev_protects_nothing(stack: BuiltStack):
    assert protected(stack) == set(), "dev protects resources"


def test_protect_dead_letter_set_on_dev(function_dir: Path):
    dev = build(base_config(protectDeadLetter="true"), function_dir)
    assert protected(dev) == {DEAD_LETTER_TOPIC, DEAD_LETTER_SUBSCRIPTION}


def test_protect_dead_letter_unset_on_prod(function_dir: Path):
    prod = build(base_config(protectDeadLetter="False"), function_dir, stack="prod")
    assert protected(prod) == set(), "prod protects resources with the key false"


def test_protect_dead_letter_default_follows_stack():
    assert load(base_config(), stack="prod").protect_dead_letter is True
    assert load(base_config(), stack="dev").protect_dead_letter is False
    assert load(base_config(), stack="production").protect_dead_letter is False


def test_invalid_protect_dead_letter_rejected():
    with pytest.raises(ConfigError) as caught:
        load(base_config(protectDeadLetter="yes"))
    message = str(caught.value)
    assert caught.value.key == "protectDeadLetter"
    assert "'yes'" in message
    assert "pulumi config set protectDeadLetter true" in message


# --- Dependencies on the function source ---


def test_function_depends_on_source_archive(stack: BuiltStack):
    upstream = stack.upstream(FUNCTION_KEY)
    build_inputs = stack.nodes[FUNCTION_KEY].property_dependencies["buildConfig"]
    archive_urn = stack.nodes[(BUCKET_OBJECT, "forwarder-source-archive")].urn
    assert SOURCE_KEYS.issubset(upstream), "forwarder-function lacks its source"
    assert archive_urn in build_inputs, "buildConfig does not use the archive"


@pytest.mark.parametrize(
    "key", [EVENTS_TOPIC, DEAD_LETTER_TOPIC, DEAD_LETTER_SUBSCRIPTION]
)
def test_messaging_never_depends_on_source(stack: BuiltStack, key):
    upstream = stack.upstream(key)
    assert not upstream & SOURCE_KEYS, f"{key[1]} depends on {upstream & SOURCE_KEYS}"
    assert FUNCTION_KEY not in upstream, f"{key[1]} depends on the function"


@pytest.mark.parametrize("key", [PUSH_SUBSCRIPTION, (RUN_IAM, "delivery-push-invoker")])
def test_push_reaches_source_through_function(stack: BuiltStack, key):
    # The push subscription needs the function's URL, and its invoker grant
    # the function's Cloud Run service. An update of the function in place
    # keeps both, so neither input changes with the code (see the next test).
    upstream = stack.upstream(key)
    around_function = stack.upstream(key, avoiding=[FUNCTION_KEY])
    assert FUNCTION_KEY in upstream, f"{key[1]} does not wait for the function"
    assert not around_function & SOURCE_KEYS, (
        f"{key[1]} depends on the source other than through the function"
    )


def test_code_change_updates_only_function(tmp_path: Path):
    first_dir = make_function_dir(tmp_path / "first")
    second_dir = make_function_dir(tmp_path / "second")
    (second_dir / "main.py").write_text(
        'def forward(request):\n    return "changed", 204\n', encoding="utf-8"
    )
    before = build(base_config(), first_dir)
    after = build(base_config(), second_dir)
    changes = changed_inputs(before, after)

    object_key = (BUCKET_OBJECT, "forwarder-source-archive")
    assert set(changes) == {object_key, FUNCTION_KEY}, (
        f"a code change alters the inputs of {sorted(changes)}"
    )
    assert "name" in changes[object_key], "the archive name ignores the content"
    assert changes[FUNCTION_KEY] == {"buildConfig.source.storageSource.object"}, (
        f"forwarder-function inputs changed: {changes[FUNCTION_KEY]}"
    )


# --- Rotation of the Mixpanel credential ---


def test_rotation_adds_version_rolls_function(function_dir: Path):
    # `pulumi config set --secret mixpanelServiceAccountSecret NEW` and
    # `pulumi up`. Secret Manager cannot change a version's data, so
    # `pulumi preview` shows the SecretVersion as replaced, with its data as
    # [secret], and the function as updated, because its secret variable
    # names the new version number. Pulumi creates the new version, updates
    # the function onto it, and deletes the old version last.
    versions = SecretVersions()
    before = build(base_config(), function_dir, secret_versions=versions)
    after = build(
        base_config(mixpanelServiceAccountSecret=ROTATED_VALUE),
        function_dir,
        secret_versions=versions,
    )
    changes = changed_inputs(before, after)
    version_path = "serviceConfig.secretEnvironmentVariables[0].version"
    variables = after.one(FUNCTION).inputs["serviceConfig"][
        "secretEnvironmentVariables"
    ]

    assert set(changes) == {(SECRET_VERSION, "credential-version"), FUNCTION_KEY}, (
        f"a rotation alters the inputs of {sorted(changes)}"
    )
    assert changes[(SECRET_VERSION, "credential-version")] == {"secretData"}
    assert changes[FUNCTION_KEY] == {version_path}, changes[FUNCTION_KEY]
    assert variables[0]["version"] == "2", "forwarder-function is not on version 2"
    assert versions.data_by_secret, "no secret version was added"


def test_rotated_credential_stays_secret(function_dir: Path):
    versions = SecretVersions()
    build(base_config(), function_dir, secret_versions=versions)
    after = build(
        base_config(mixpanelServiceAccountSecret=ROTATED_VALUE),
        function_dir,
        secret_versions=versions,
    )
    data = after.one(SECRET_VERSION).inputs["secretData"]
    everything = after.serialized_inputs()
    elsewhere = after.serialized_inputs(skip=[(SECRET_VERSION, "secretData")])
    outputs = json.dumps(after.outputs)

    assert rpc.is_rpc_secret(data), "credential-version data is not a secret"
    assert rpc.unwrap_rpc_secret(data) == ROTATED_VALUE, "credential-version data"
    assert SECRET_VALUE not in everything, "the old credential is still an input"
    assert ROTATED_VALUE not in elsewhere, "the new credential leaks into an input"
    assert SECRET_VALUE not in outputs, "the old credential is in a stack output"
    assert ROTATED_VALUE not in outputs, "the new credential is in a stack output"
    assert not after.secret_outputs, f"secret outputs: {after.secret_outputs}"


def test_unchanged_credential_keeps_version(function_dir: Path):
    versions = SecretVersions()
    before = build(base_config(), function_dir, secret_versions=versions)
    again = build(base_config(), function_dir, secret_versions=versions)
    variables = again.one(FUNCTION).inputs["serviceConfig"][
        "secretEnvironmentVariables"
    ]
    assert changed_inputs(before, again) == {}, "a rerun changes inputs"
    assert variables[0]["version"] == "1", "forwarder-function left version 1"
