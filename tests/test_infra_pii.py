"""The PII settings and the hash key's secret, under Pulumi's mocks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from infra_mocks import (
    CREDENTIAL_KEYS,
    ROOT,
    SECRET_VALUE,
    BuiltStack,
    SecretVersions,
    base_config,
    build,
    load,
    make_function_dir,
    project_key,
)
from pulumi.runtime import rpc

from infra.archive import source_files
from infra.config import ConfigError

FUNCTION = "gcp:cloudfunctionsv2/function:Function"
FUNCTION_KEY = (FUNCTION, "forwarder-function")
BUCKET_OBJECT = "gcp:storage/bucketObject:BucketObject"
SECRET = "gcp:secretmanager/secret:Secret"
SECRET_VERSION = "gcp:secretmanager/secretVersion:SecretVersion"
SECRET_IAM = "gcp:secretmanager/secretIamMember:SecretIamMember"
RUNTIME_MEMBER = "serviceAccount:mp-dev-run@test-gcp-project.iam.gserviceaccount.com"

HASH_KEY = "hk-4b8e2f6a0c9d1e3f5a7b9c0d2e4f6a8b-key"
ROTATED_KEY = "hk-rotated-7e5d3c1b9a8f6e4d2c0b-key"
PII_SECRET_KEYS = (*CREDENTIAL_KEYS, project_key("piiHashKey"))
PII_CONFIG = {
    "piiDropProperties": "email, address.street",
    "piiHashProperties": "distinct_id,contact.phone",
    "piiHashKey": HASH_KEY,
    "keepIpAddress": "TRUE",
}


def pii_build(function_dir: Path, **overrides: str | None) -> BuiltStack:
    return build(
        base_config(**{**PII_CONFIG, **overrides}),
        function_dir,
        secret_keys=PII_SECRET_KEYS,
    )


def rejection(config: dict[str, str], **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(config, **kwargs)
    return caught.value


def service_config(stack: BuiltStack) -> dict:
    return stack.one(FUNCTION).inputs["serviceConfig"]


@pytest.fixture(scope="module")
def function_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_function_dir(tmp_path_factory.mktemp("pii"))


@pytest.fixture(scope="module")
def stack(function_dir: Path) -> BuiltStack:
    return pii_build(function_dir)


@pytest.fixture(scope="module")
def plain_stack(function_dir: Path) -> BuiltStack:
    return build(base_config(), function_dir)


# Without PII settings.


def test_no_hash_key_no_secret_resources(plain_stack: BuiltStack):
    secret_ids = [r.inputs["secretId"] for r in plain_stack.of_type(SECRET)]

    assert secret_ids == ["mp-dev-mixpanel-service-account-secret"]
    assert len(plain_stack.of_type(SECRET_VERSION)) == 1
    assert len(plain_stack.of_type(SECRET_IAM)) == 1


def test_no_pii_variables_by_default(plain_stack: BuiltStack):
    config = service_config(plain_stack)

    assert not [name for name in config["environmentVariables"] if "PII" in name]
    assert len(config["secretEnvironmentVariables"]) == 1


def test_unused_hash_key_not_deployed(function_dir: Path):
    built = build(
        base_config(piiHashKey=HASH_KEY), function_dir, secret_keys=PII_SECRET_KEYS
    )

    assert len(built.of_type(SECRET)) == 1
    assert any("piiHashKey is set" in warning for warning in built.warnings)
    assert HASH_KEY not in built.serialized_inputs()


# With PII settings.


def test_hash_key_in_own_secret(stack: BuiltStack):
    secret = stack.one(SECRET, "pii-hash-key-secret")
    version = stack.one(SECRET_VERSION, "pii-hash-key-version")

    assert secret.inputs["secretId"] == "mp-dev-pii-hash-key"
    assert rpc.is_rpc_secret(version.inputs["secretData"]), version.name
    assert rpc.unwrap_rpc_secret(version.inputs["secretData"]) == HASH_KEY


def test_runtime_reads_hash_key_secret_only(stack: BuiltStack):
    grant = stack.one(SECRET_IAM, "pii-hash-key-runtime-accessor")

    assert grant.inputs["secretId"] == "mp-dev-pii-hash-key", grant.name
    assert grant.inputs["role"] == "roles/secretmanager.secretAccessor", grant.name
    assert grant.inputs["member"] == RUNTIME_MEMBER, grant.name


def test_hash_key_variable_pinned_to_version(stack: BuiltStack):
    variables = {
        variable["key"]: variable
        for variable in service_config(stack)["secretEnvironmentVariables"]
    }

    assert set(variables) == {"MIXPANEL_SERVICE_ACCOUNT_SECRET", "PII_HASH_KEY"}
    assert variables["PII_HASH_KEY"]["secret"] == "mp-dev-pii-hash-key"
    assert variables["PII_HASH_KEY"]["version"] == "1"
    assert variables["PII_HASH_KEY"]["projectId"] == "test-gcp-project"


def test_pii_rules_in_plain_environment(stack: BuiltStack):
    environment = service_config(stack)["environmentVariables"]

    assert environment["PII_DROP_PROPERTIES"] == "email,address.street"
    assert environment["PII_HASH_PROPERTIES"] == "distinct_id,contact.phone"
    assert environment["PII_KEEP_IP"] == "true"
    assert "PII_HASH_KEY" not in environment


def test_hash_key_only_in_secret_version(stack: BuiltStack):
    elsewhere = stack.serialized_inputs(skip=[(SECRET_VERSION, "secretData")])

    assert HASH_KEY not in elsewhere, "the hash key leaks into another input"
    assert HASH_KEY not in json.dumps(stack.outputs), "the hash key is an output"
    assert not stack.secret_outputs, f"secret outputs: {stack.secret_outputs}"
    for name in stack.physical_names():
        assert HASH_KEY not in name, f"the hash key is in the name {name}"


def test_function_waits_for_hash_key_grant(stack: BuiltStack):
    dependencies = stack.depends_on(*FUNCTION_KEY)

    assert (SECRET_IAM, "pii-hash-key-runtime-accessor") in dependencies
    assert (SECRET_IAM, "credential-runtime-accessor") in dependencies


def test_config_holds_parsed_rules():
    cfg = load(base_config(**PII_CONFIG), secret_keys=PII_SECRET_KEYS)

    assert cfg.pii.drop_properties == ("email", "address.street")
    assert cfg.pii.hash_properties == ("distinct_id", "contact.phone")
    assert cfg.pii.keep_ip_address is True
    assert cfg.pii.hash_key is not None
    assert HASH_KEY not in repr(cfg)


def test_rotated_key_rolls_function(function_dir: Path):
    versions = SecretVersions()
    first = build(
        base_config(**PII_CONFIG),
        function_dir,
        secret_keys=PII_SECRET_KEYS,
        secret_versions=versions,
    )
    second = build(
        base_config(**{**PII_CONFIG, "piiHashKey": ROTATED_KEY}),
        function_dir,
        secret_keys=PII_SECRET_KEYS,
        secret_versions=versions,
    )

    def versions_by_variable(stack: BuiltStack) -> dict[str, str]:
        return {
            variable["key"]: variable["version"]
            for variable in service_config(stack)["secretEnvironmentVariables"]
        }

    assert versions_by_variable(first)["PII_HASH_KEY"] == "1"
    assert versions_by_variable(second)["PII_HASH_KEY"] == "2"
    assert versions_by_variable(second)["MIXPANEL_SERVICE_ACCOUNT_SECRET"] == "1"


# Validation.


def test_hash_paths_need_key():
    error = rejection(base_config(piiHashProperties="distinct_id"))

    assert error.key == "piiHashKey"
    assert "openssl rand -hex 32" in str(error)


def test_plain_text_key_rejected():
    error = rejection(base_config(**PII_CONFIG), secret_keys=CREDENTIAL_KEYS)

    assert error.key == "piiHashKey"
    assert "--secret" in str(error)
    assert HASH_KEY not in str(error)


def test_short_key_rejected_without_showing_it():
    short = "k" * 31

    error = rejection(
        base_config(**{**PII_CONFIG, "piiHashKey": short}),
        secret_keys=PII_SECRET_KEYS,
    )

    assert error.key == "piiHashKey"
    assert "31 characters" in str(error)
    assert short not in str(error)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("piiDropProperties", "address..street", "is not a property path"),
        ("piiDropProperties", '["email"]', "not a list"),
        ("piiDropProperties", "email,email", "listed twice"),
        ("piiHashProperties", "time", "cannot be hashed"),
        ("piiHashProperties", "email", "also in piiDropProperties"),
        ("keepIpAddress", "yes", "expected true or false"),
    ],
)
def test_invalid_pii_value_rejected(key: str, value: str, problem: str):
    error = rejection(
        base_config(**{**PII_CONFIG, key: value}), secret_keys=PII_SECRET_KEYS
    )

    assert error.key == key
    assert problem in str(error)
    assert f"pulumi config set {key}" in str(error)
    assert HASH_KEY not in str(error)
    assert SECRET_VALUE not in str(error)


def test_empty_keep_ip_means_false():
    cfg = load(base_config(keepIpAddress=""))

    assert cfg.pii.keep_ip_address is False


# The transform ships with the function.


def test_function_source_contains_hook_and_privacy():
    files = {relative for relative, _path in source_files(ROOT / "function")}

    assert "transform.py" in files
    assert "forwarder/hook.py" in files
    assert "forwarder/privacy.py" in files


def test_transform_change_redeploys_function_only(tmp_path: Path):
    directory = make_function_dir(tmp_path)
    transform = directory / "transform.py"
    shutil.copy(ROOT / "function" / "transform.py", transform)
    before = build(base_config(), directory)
    transform.write_text(
        transform.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8"
    )
    after = build(base_config(), directory)

    old, new = before.flat_inputs(), after.flat_inputs()
    changed = {
        key: {path for path in old[key] if old[key][path] != new[key].get(path)}
        for key in old
    }
    changed = {key: paths for key, paths in changed.items() if paths}
    assert set(changed) == {(BUCKET_OBJECT, "forwarder-source-archive"), FUNCTION_KEY}
    assert changed[(BUCKET_OBJECT, "forwarder-source-archive")] == {"name"}
    assert changed[FUNCTION_KEY] == {"buildConfig.source.storageSource.object"}
