"""Validation of the stack configuration and its declaration in Pulumi.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from infra_mocks import (
    ROOT,
    SA_USERNAME,
    SECRET_VALUE,
    TOKEN_VALUE,
    base_config,
    build,
    last_registrations,
    load,
    make_function_dir,
    project_key,
    token_config,
)

from infra.config import (
    DEFAULTS,
    KNOWN_KEYS,
    MAX_PREFIX_LENGTH,
    PROJECT_NAME,
    SECRET_KEYS,
    UNDECLARED_KEYS,
    ConfigError,
    CredentialKind,
    default_prefix,
)


def rejection(config: dict[str, str], **kwargs) -> ConfigError:
    """Return the ConfigError that loading `config` raises."""
    with pytest.raises(ConfigError) as caught:
        load(config, **kwargs)
    return caught.value


def pulumi_yaml() -> dict:
    return yaml.safe_load((ROOT / "Pulumi.yaml").read_text(encoding="utf-8"))


def stack_file(stack: str) -> dict:
    path = ROOT / f"Pulumi.{stack}.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))["config"]


def test_defaults_load():
    cfg = load(base_config())
    assert cfg.project == "test-gcp-project"
    assert cfg.region == "us-central1"
    assert cfg.resource_prefix == "mp-dev"
    assert cfg.mixpanel_region == "us"
    assert cfg.credential.kind is CredentialKind.SERVICE_ACCOUNT
    assert cfg.credential.username == SA_USERNAME
    assert cfg.max_delivery_attempts == 10
    assert cfg.ack_deadline_seconds == 300
    assert cfg.function_timeout_seconds == 240
    assert cfg.retry_deadline_seconds == 150
    assert cfg.request_timeout_seconds == 30
    assert cfg.function_cpu == "0.167"
    assert cfg.dead_letter_retention_days == 31


def test_config_repr_hides_credential():
    cfg = load(base_config())
    assert SECRET_VALUE not in repr(cfg)


def test_mixpanel_region_is_case_insensitive():
    assert load(base_config(mixpanelRegion="EU")).mixpanel_region == "eu"
    assert load(base_config(mixpanelRegion=" In ")).mixpanel_region == "in"


def test_unknown_mixpanel_region_rejected():
    error = rejection(base_config(mixpanelRegion="de"))
    assert error.key == "mixpanelRegion"
    assert "'de'" in str(error)
    assert "us, eu and in" in str(error)
    assert "pulumi config set mixpanelRegion" in str(error)


def test_max_delivery_attempts_three_rejected_before_resources(tmp_path: Path):
    function_dir = make_function_dir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        build(base_config(maxDeliveryAttempts="3"), function_dir)
    message = str(caught.value)
    assert caught.value.key == "maxDeliveryAttempts"
    assert "maxDeliveryAttempts" in message
    assert " 3 " in message
    assert "5-100" in message
    assert "pulumi config set maxDeliveryAttempts 10" in message
    assert last_registrations == [], "resources were registered before the error"


@pytest.mark.parametrize("value", ["4", "101", "ten", "2.5"])
def test_max_delivery_attempts_out_of_range(value: str):
    error = rejection(base_config(maxDeliveryAttempts=value))
    assert error.key == "maxDeliveryAttempts"
    assert repr(value) in str(error) or f" {value} " in str(error)


def test_both_credential_kinds_rejected():
    error = rejection(base_config(mixpanelProjectToken=TOKEN_VALUE))
    message = str(error)
    assert "mixpanelProjectToken" in message
    assert "mixpanelServiceAccountUsername" in message
    assert "mixpanelServiceAccountSecret" in message
    assert "exactly one" in message
    assert "pulumi config rm mixpanelProjectToken" in message


def test_no_credential_rejected():
    error = rejection(
        base_config(
            mixpanelServiceAccountUsername=None, mixpanelServiceAccountSecret=None
        )
    )
    message = str(error)
    assert "no Mixpanel credential" in message
    assert "pulumi config set --secret mixpanelServiceAccountSecret" in message
    assert "pulumi config set mixpanelServiceAccountUsername" in message
    assert "pulumi config set --secret mixpanelProjectToken" in message


def test_empty_credentials_count_as_unset():
    error = rejection(
        base_config(mixpanelServiceAccountUsername="", mixpanelServiceAccountSecret="")
    )
    assert "no Mixpanel credential" in str(error)


def test_username_without_secret_rejected():
    error = rejection(base_config(mixpanelServiceAccountSecret=None))
    assert error.key == "mixpanelServiceAccountSecret"
    assert "pulumi config set --secret mixpanelServiceAccountSecret" in str(error)


def test_secret_without_username_rejected():
    error = rejection(base_config(mixpanelServiceAccountUsername=None))
    assert error.key == "mixpanelServiceAccountUsername"
    assert "pulumi config set mixpanelServiceAccountUsername" in str(error)


def test_plain_text_credential_rejected():
    error = rejection(base_config(), secret_keys=[])
    assert error.key == "mixpanelServiceAccountSecret"
    assert "plain text" in str(error)
    assert "pulumi config set --secret mixpanelServiceAccountSecret" in str(error)
    assert SECRET_VALUE not in str(error)


def test_plain_text_token_rejected():
    error = rejection(token_config(), secret_keys=[])
    assert error.key == "mixpanelProjectToken"
    assert TOKEN_VALUE not in str(error)


def test_token_credential_loads():
    cfg = load(token_config())
    assert cfg.credential.kind is CredentialKind.PROJECT_TOKEN
    assert cfg.credential.username is None
    assert cfg.credential.env_var == "MIXPANEL_PROJECT_TOKEN"


def test_retry_and_request_must_fit_function_timeout():
    error = rejection(base_config(retryDeadlineSeconds="220"))
    message = str(error)
    assert error.key == "functionTimeoutSeconds"
    assert "220 + 30 = 250" in message
    assert "pulumi config set functionTimeoutSeconds 250" in message
    assert "pulumi config set retryDeadlineSeconds 210" in message


def test_function_timeout_must_fit_ack_deadline():
    error = rejection(base_config(functionTimeoutSeconds="400"))
    assert error.key == "ackDeadlineSeconds"
    assert "400" in str(error)
    assert "pulumi config set ackDeadlineSeconds 400" in str(error)


def test_budget_at_its_limits_accepted():
    cfg = load(
        base_config(
            retryDeadlineSeconds="570",
            requestTimeoutSeconds="30",
            functionTimeoutSeconds="600",
            ackDeadlineSeconds="600",
        )
    )
    assert cfg.function_timeout_seconds == 600
    assert cfg.ack_deadline_seconds == 600


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ackDeadlineSeconds", "9"),
        ("ackDeadlineSeconds", "601"),
        ("functionTimeoutSeconds", "0"),
        ("minimumBackoffSeconds", "-1"),
        ("maximumBackoffSeconds", "601"),
        ("deadLetterRetentionDays", "32"),
        ("deadLetterRetentionDays", "0"),
        ("maxInstances", "0"),
        ("instanceConcurrency", "0"),
    ],
)
def test_integer_out_of_range_rejected(key: str, value: str):
    error = rejection(base_config(**{key: value}))
    assert error.key == key
    assert f" {value} " in str(error)
    assert f"pulumi config set {key} {DEFAULTS[key]}" in str(error)


def test_minimum_backoff_above_maximum_rejected():
    error = rejection(
        base_config(minimumBackoffSeconds="120", maximumBackoffSeconds="60")
    )
    assert error.key == "minimumBackoffSeconds"
    assert "pulumi config set minimumBackoffSeconds 60" in str(error)


def test_concurrency_needs_whole_cpu():
    error = rejection(base_config(instanceConcurrency="4"))
    assert error.key == "instanceConcurrency"
    assert "0.167" in str(error)
    assert "pulumi config set functionCpu 1" in str(error)
    cfg = load(base_config(instanceConcurrency="4", functionCpu="1"))
    assert cfg.instance_concurrency == 4


@pytest.mark.parametrize("value", ["fast", "0", "-1", "9"])
def test_invalid_cpu_rejected(value: str):
    error = rejection(base_config(functionCpu=value))
    assert error.key == "functionCpu"
    assert value in str(error)


@pytest.mark.parametrize("value", ["256", "256MB", "0Mi", "lots"])
def test_invalid_memory_rejected(value: str):
    error = rejection(base_config(functionMemory=value))
    assert error.key == "functionMemory"
    assert repr(value) in str(error)


def test_log_level_normalized_and_checked():
    assert load(base_config(logLevel="debug")).log_level == "DEBUG"
    error = rejection(base_config(logLevel="verbose"))
    assert error.key == "logLevel"


def test_missing_gcp_project_rejected():
    error = rejection(base_config(**{"gcp:project": None}))
    assert error.key == "gcp:project"
    assert "pulumi config set gcp:project" in str(error)


def test_invalid_gcp_project_rejected():
    error = rejection(base_config(**{"gcp:project": "My_Project"}))
    assert "'My_Project'" in str(error)


def test_missing_mixpanel_project_id_rejected():
    error = rejection(base_config(mixpanelProjectId=None))
    assert error.key == "mixpanelProjectId"
    assert "pulumi config set mixpanelProjectId" in str(error)


def test_non_numeric_mixpanel_project_id_rejected():
    error = rejection(base_config(mixpanelProjectId="my-project"))
    assert "mixpanelProjectId" in str(error)
    assert "10 characters" in str(error)


def test_project_id_error_hides_pasted_secret():
    error = rejection(base_config(mixpanelProjectId=SECRET_VALUE))
    assert SECRET_VALUE not in str(error)


def test_unicode_digit_project_id_rejected():
    error = rejection(base_config(mixpanelProjectId="\uff11\uff12\uff13"))
    assert "digits 0-9 only" in str(error)


def test_errors_never_show_credential():
    cases = [
        base_config(maxDeliveryAttempts="3"),
        base_config(mixpanelProjectToken=TOKEN_VALUE),
        base_config(mixpanelServiceAccountUsername=None),
        base_config(retryDeadlineSeconds="500"),
        token_config(mixpanelRegion="mars"),
    ]
    for config in cases:
        message = str(rejection(config))
        assert SECRET_VALUE not in message, message
        assert TOKEN_VALUE not in message, message
    for config in (base_config(), token_config()):
        message = str(rejection(config, secret_keys=[]))
        assert SECRET_VALUE not in message, message
        assert TOKEN_VALUE not in message, message


def test_prefix_derived_from_stack():
    assert load(base_config(), stack="dev").resource_prefix == "mp-dev"
    assert load(base_config(), stack="prod").resource_prefix == "mp-prod"


def test_explicit_prefix_used():
    assert load(base_config(resourcePrefix="shop-eu")).resource_prefix == "shop-eu"


@pytest.mark.parametrize(
    "prefix", ["Mp-Dev", "9lives", "x", "ends-", "a" * (MAX_PREFIX_LENGTH + 1)]
)
def test_invalid_prefix_rejected(prefix: str):
    error = rejection(base_config(resourcePrefix=prefix))
    assert error.key == "resourcePrefix"
    assert repr(prefix) in str(error)


@pytest.mark.parametrize(
    ("stack", "prefix"),
    [("dev", "mp-dev"), ("Prod_EU", "mp-prod-eu"), ("feature/x", "mp-feature-x")],
)
def test_default_prefix(stack: str, prefix: str):
    assert default_prefix(stack) == prefix


def test_long_stack_names_get_distinct_short_prefixes():
    first = default_prefix("feature-" + "a" * 40 + "-one")
    second = default_prefix("feature-" + "a" * 40 + "-two")
    assert first != second
    for prefix in (first, second):
        assert len(prefix) <= MAX_PREFIX_LENGTH, prefix
        assert len(f"{prefix}-build") <= 30, prefix
    assert load(base_config(), stack="feature-" + "a" * 40).resource_prefix


def test_pulumi_yaml_project_settings():
    project = pulumi_yaml()
    assert project["name"] == PROJECT_NAME
    assert project["main"] == "infra/"
    assert project["runtime"] == {
        "name": "python",
        "options": {"toolchain": "pip", "virtualenv": ".venv"},
    }


def test_pulumi_yaml_declares_every_key():
    declared = pulumi_yaml()["config"]
    assert set(declared) == set(KNOWN_KEYS) - UNDECLARED_KEYS


def test_pulumi_yaml_project_keys_typed_and_described():
    declared = pulumi_yaml()["config"]
    for key, declaration in declared.items():
        if ":" in key:
            continue
        assert declaration.get("type") == KNOWN_KEYS[key], f"{key} type"
        assert declaration.get("description"), f"{key} has no description"
        if key in DEFAULTS:
            assert declaration.get("default") == DEFAULTS[key], f"{key} default"
        else:
            assert "default" not in declaration, f"{key} is required"
        assert not declaration.get("secret"), (
            f"{key}: Pulumi rejects an empty default on a secret key"
        )


def test_pulumi_yaml_provider_keys_carry_only_values():
    declared = pulumi_yaml()["config"]
    for key, declaration in declared.items():
        if ":" not in key:
            continue
        assert "type" not in declaration, f"{key}: Pulumi rejects a type here"
        assert "default" not in declaration, f"{key}: Pulumi rejects a default here"
        assert declaration.get("value") == DEFAULTS[key], f"{key} value"
        assert declaration.get("description"), f"{key} has no description"


def test_secret_keys_are_known():
    assert set(SECRET_KEYS) <= set(KNOWN_KEYS)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_file_uses_known_keys_without_secrets(stack: str):
    values = stack_file(stack)
    known = {key if ":" in key else project_key(key) for key in KNOWN_KEYS}
    for key, value in values.items():
        assert key in known, f"Pulumi.{stack}.yaml sets unknown key {key}"
        assert not isinstance(value, dict), (
            f"Pulumi.{stack}.yaml stores {key} as {value}"
        )
        bare = key.removeprefix(f"{PROJECT_NAME}:")
        assert bare not in SECRET_KEYS, f"Pulumi.{stack}.yaml commits {key}"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_file_validates_once_credential_set(stack: str):
    values = {key: str(value) for key, value in stack_file(stack).items()}
    username_key = project_key("mixpanelServiceAccountUsername")
    values.setdefault(username_key, SA_USERNAME)
    values[project_key("mixpanelServiceAccountSecret")] = SECRET_VALUE
    cfg = load(values, stack=stack)
    assert cfg.resource_prefix == f"mp-{stack}"
    assert cfg.project == "my-gcp-project"
