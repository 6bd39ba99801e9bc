"""The table of IAM grants in infra.grants against what the program registers."""

from __future__ import annotations

from collections import Counter

import pytest
from infra_mocks import (
    CREDENTIAL_KEYS,
    GCP_PROJECT,
    PUBSUB_AGENT,
    BuiltStack,
    base_config,
    build,
    make_function_dir,
    project_key,
)

from infra.grants import (
    BUILD_ACCOUNT,
    GRANTS,
    PUBSUB_SERVICE_AGENT,
    PUSH_ACCOUNT,
    RUNTIME_ACCOUNT,
)
from policy.rules import is_iam_resource

MEMBER_KINDS = {
    f"serviceAccount:mp-dev-run@{GCP_PROJECT}.iam.gserviceaccount.com": RUNTIME_ACCOUNT,
    f"serviceAccount:mp-dev-push@{GCP_PROJECT}.iam.gserviceaccount.com": PUSH_ACCOUNT,
    f"serviceAccount:mp-dev-build@{GCP_PROJECT}.iam.gserviceaccount.com": BUILD_ACCOUNT,
    f"serviceAccount:{PUBSUB_AGENT}": PUBSUB_SERVICE_AGENT,
}


# The configuration that makes the program create each optional grant.
OPTIONAL_GRANT_CONFIG = {
    "piiHashProperties": {
        "piiHashProperties": "distinct_id",
        "piiHashKey": "5e0c1a9d3b7f4e2a8c6d0b1f9e3a7c5d4b2e0f1a",
    },
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> BuiltStack:
    return build(base_config(), make_function_dir(tmp_path_factory.mktemp("grants")))


@pytest.fixture(scope="module")
def full_stack(tmp_path_factory: pytest.TempPathFactory) -> BuiltStack:
    config = {}
    for values in OPTIONAL_GRANT_CONFIG.values():
        config.update(values)
    return build(
        base_config(**config),
        make_function_dir(tmp_path_factory.mktemp("all-grants")),
        secret_keys=[*CREDENTIAL_KEYS, project_key("piiHashKey")],
    )


def registered_grants(stack: BuiltStack) -> Counter:
    grants: Counter = Counter()
    for registration in stack.registrations:
        if not is_iam_resource(registration.type_):
            continue
        member = registration.inputs["member"]
        assert member in MEMBER_KINDS, f"{registration.name} grants to {member}"
        kind = MEMBER_KINDS[member]
        grants[(kind, registration.inputs["role"], registration.type_)] += 1
    return grants


def test_grant_table_matches_program(stack: BuiltStack):
    listed = Counter(
        (g.member, g.role, g.resource_type) for g in GRANTS if g.config_key is None
    )
    registered = registered_grants(stack)
    assert registered - listed == Counter(), "granted but missing from GRANTS"
    assert listed - registered == Counter(), "listed in GRANTS but not granted"


def test_grant_table_matches_program_with_options(full_stack: BuiltStack):
    listed = Counter((g.member, g.role, g.resource_type) for g in GRANTS)
    registered = registered_grants(full_stack)
    assert registered - listed == Counter(), "granted but missing from GRANTS"
    assert listed - registered == Counter(), "listed in GRANTS but not granted"


def test_optional_grants_have_config():
    for grant in GRANTS:
        if grant.config_key is not None:
            assert grant.config_key in OPTIONAL_GRANT_CONFIG, grant.resource


def test_grant_table_entries_complete():
    for grant in GRANTS:
        label = f"{grant.member} {grant.role}"
        assert grant.role.startswith("roles/"), label
        assert grant.resource, f"{label} names no resource"
        assert grant.reason.endswith("."), f"{label} gives no reason"


def test_project_level_grants_are_the_build_ones():
    project_grants = [g for g in GRANTS if g.resource_type.startswith("gcp:projects/")]
    assert len(project_grants) == 2, [g.role for g in project_grants]
    for grant in project_grants:
        assert grant.member == BUILD_ACCOUNT, grant.role
        assert grant.resource.startswith("the project"), grant.role
