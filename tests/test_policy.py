"""The policy pack's rules on passing and violating resources, and on this program.

Each resource is registered through the real `pulumi_gcp` classes under
Pulumi's mocks, so its properties have the names and shapes the engine sends.
They then take the SDK's own path into a policy: serialized, put into a
protobuf Struct, read back with `deserialize_properties` and wrapped in
`unknown_checking_proxy`, as `pulumi_policy` does for each request. The rules
receive real `ResourceValidationArgs`, `StackValidationArgs` and
`PolicyResource` objects built from that. The last tests start the pack as
the Pulumi CLI does and send it analyzer requests over its local gRPC port.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import grpc
import pulumi
import pulumi_gcp as gcp
import pytest
import yaml
from google.protobuf import empty_pb2, json_format, struct_pb2
from infra_mocks import (
    CREDENTIAL_KEYS,
    ROOT,
    BuiltStack,
    Registration,
    base_config,
    build,
    make_function_dir,
    project_key,
    register,
    token_config,
)
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import deserialize_properties, serialize_properties
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from infra.grants import GRANTS
from policy import rules

POLICIES = {policy.name: policy for policy in rules.POLICIES}
PACK_DIR = ROOT / "policy"

PROJECT = "policy-test-project"
LOCATION = "us-central1"
OWN_ACCOUNT = f"forwarder@{PROJECT}.iam.gserviceaccount.com"
COMPUTE_DEFAULT = "123456789012-compute@developer.gserviceaccount.com"
APP_ENGINE_DEFAULT = f"{PROJECT}@appspot.gserviceaccount.com"
IMAGE = "us-docker.pkg.dev/cloudrun/container/hello"
PUSH_ENDPOINT = "https://forwarder-x7k2p9q4ra-uc.a.run.app"
# Shaped like a Mixpanel project token: 32 hexadecimal characters.
TOKEN_LIKE = "0f3a9c2b7d4e8f1a6b5c0d9e2f7a4b13"
PLAIN_SECRET = "hunter2-plain-text"


# --- The SDK's path from resource properties to a policy's arguments ---


def struct_of(values: Mapping) -> struct_pb2.Struct:
    """Return properties as the protobuf Struct of an analyzer request."""
    struct = struct_pb2.Struct()
    struct.update(dict(serialize_properties(values)))
    return struct


def policy_props(values: Mapping) -> Mapping:
    """Return properties as `pulumi_policy` hands them to a policy."""
    struct = struct_of(values)
    return unknown_checking_proxy(
        deserialize_properties(json_format.MessageToDict(struct))
    )


def resource_options(protect: bool = False, parent: str | None = None):
    return PolicyResourceOptions(
        protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], parent
    )


def resource_args(type_: str, name: str, values: Mapping) -> ResourceValidationArgs:
    urn = f"urn:pulumi:dev::policy-test::{type_}::{name}"
    return ResourceValidationArgs(
        type_, policy_props(values), urn, name, resource_options(), None
    )


def args_of(registration: Registration) -> ResourceValidationArgs:
    return resource_args(registration.type_, registration.name, registration.inputs)


def stack_resources(built: BuiltStack) -> list[PolicyResource]:
    """Return the stack's resources as `AnalyzeStack` builds them: outputs, links."""
    by_urn: dict[str, PolicyResource] = {}
    for node in built.nodes.values():
        by_urn[node.urn] = PolicyResource(
            node.type_,
            policy_props(node.outputs),
            node.urn,
            node.name,
            resource_options(node.protect, node.parent or None),
            None,
            None,
            [],
            {},
        )
    for node in built.nodes.values():
        resource = by_urn[node.urn]
        resource.parent = by_urn.get(node.parent)
        resource.dependencies = [by_urn[u] for u in node.dependencies if u in by_urn]
        resource.property_dependencies = {
            key: [by_urn[u] for u in urns if u in by_urn]
            for key, urns in node.property_dependencies.items()
        }
    return list(by_urn.values())


def violations(policy_name: str, args) -> list[str]:
    """Return the messages the policy reports for `args`."""
    messages: list[str] = []

    def report(message: str, urn: str | None = None) -> None:
        messages.append(message)

    POLICIES[policy_name].validate(args, report)
    return messages


def stack_violations(resources: list[PolicyResource]) -> list[tuple[str, str | None]]:
    """Return (message, urn) of each violation of the stack policy."""
    found: list[tuple[str, str | None]] = []

    def report(message: str, urn: str | None = None) -> None:
        found.append((message, urn))

    POLICIES["dead-letter-topic-has-subscription"].validate(
        StackValidationArgs(resources), report
    )
    return found


def only_registration(program: Callable[[], object]) -> Registration:
    """Register the one resource that `program` creates and return it."""
    registrations = register(program).registrations
    assert len(registrations) == 1, [r.name for r in registrations]
    return registrations[0]


def unknown(values: dict, *path: str) -> dict:
    """Return `values` with the string at `path` replaced by the preview unknown."""
    target = values
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = UNKNOWN_STRING_VALUE
    return values


# --- Resources, each built with the real pulumi_gcp class ---


def function_v2(name: str = "fn", **service_config) -> Callable[[], object]:
    def program():
        return gcp.cloudfunctionsv2.Function(
            name,
            name=name,
            location=LOCATION,
            service_config=gcp.cloudfunctionsv2.FunctionServiceConfigArgs(
                **service_config
            ),
        )

    return program


def function_v1(name: str = "fn-v1", **arguments) -> Callable[[], object]:
    def program():
        return gcp.cloudfunctions.Function(name, runtime="python312", **arguments)

    return program


def run_service(
    name: str = "svc", envs=(), service_account: str | None = OWN_ACCOUNT, **arguments
) -> Callable[[], object]:
    def program():
        return gcp.cloudrunv2.Service(
            name,
            location=LOCATION,
            template=gcp.cloudrunv2.ServiceTemplateArgs(
                service_account=service_account,
                containers=[
                    gcp.cloudrunv2.ServiceTemplateContainerArgs(
                        image=IMAGE, envs=list(envs)
                    )
                ],
            ),
            **arguments,
        )

    return program


def env(name: str, value: str) -> gcp.cloudrunv2.ServiceTemplateContainerEnvArgs:
    return gcp.cloudrunv2.ServiceTemplateContainerEnvArgs(name=name, value=value)


def secret_env(name: str) -> gcp.cloudrunv2.ServiceTemplateContainerEnvArgs:
    return gcp.cloudrunv2.ServiceTemplateContainerEnvArgs(
        name=name,
        value_source=gcp.cloudrunv2.ServiceTemplateContainerEnvValueSourceArgs(
            secret_key_ref=gcp.cloudrunv2.ServiceTemplateContainerEnvValueSourceSecretKeyRefArgs(
                secret="api-token", version="1"
            )
        ),
    )


def policy_data(role: str, *members: str) -> str:
    return json.dumps({"bindings": [{"role": role, "members": list(members)}]})


# --- The pack ---


def test_pack_has_six_mandatory_policies():
    names = [policy.name for policy in rules.POLICIES]
    assert rules.PACK_NAME == "mixpanel-pubsub-policy"
    assert rules.ENFORCEMENT_LEVEL is EnforcementLevel.MANDATORY
    assert len(names) == len(set(names)), f"duplicate policy names: {names}"
    assert set(names) == {
        "no-public-invoker",
        "no-primitive-role",
        "no-plaintext-credential-env",
        "push-subscription-has-dead-letter-policy",
        "dead-letter-topic-has-subscription",
        "explicit-runtime-service-account",
    }
    for policy in rules.POLICIES:
        assert policy.description, f"{policy.name} has no description"
        assert policy.enforcement_level is None, (
            f"{policy.name} overrides the pack's enforcement level"
        )


def test_pack_policy_kinds():
    stack_policy = POLICIES["dead-letter-topic-has-subscription"]
    assert isinstance(stack_policy, StackValidationPolicy), stack_policy.name
    for name, policy in POLICIES.items():
        if policy is not stack_policy:
            assert isinstance(policy, ResourceValidationPolicy), name


def test_pack_entry_point_builds_policy_pack():
    tree = ast.parse((ROOT / "policy" / "__main__.py").read_text(encoding="utf-8"))
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "PolicyPack"
    ]
    assert len(calls) == 1, "policy/__main__.py must build one PolicyPack"
    keywords = {k.arg: getattr(k.value, "id", None) for k in calls[0].keywords}
    assert keywords == {
        "name": "PACK_NAME",
        "enforcement_level": "ENFORCEMENT_LEVEL",
        "policies": "POLICIES",
    }, "policy/__main__.py passes other values than the rules module's"


def test_pack_project_file_and_pins():
    project = yaml.safe_load(
        (ROOT / "policy" / "PulumiPolicy.yaml").read_text(encoding="utf-8")
    )
    requirements = (ROOT / "policy" / "requirements.txt").read_text(encoding="utf-8")
    pins = [line for line in requirements.splitlines() if not line.startswith("#")]
    assert project["runtime"]["name"] == "python", "PulumiPolicy.yaml runtime"
    assert project["description"], "PulumiPolicy.yaml description"
    assert project["version"], "PulumiPolicy.yaml version"
    assert sorted(pins) == ["pulumi-policy==1.21.0", "pulumi==3.272.0"]


# --- no-public-invoker ---


PUBLIC_INVOKERS = {
    "run-v2-member": lambda: gcp.cloudrunv2.ServiceIamMember(
        "public",
        name="svc",
        location=LOCATION,
        role="roles/run.invoker",
        member="allUsers",
    ),
    "function-v2-member": lambda: gcp.cloudfunctionsv2.FunctionIamMember(
        "public",
        cloud_function="fn",
        location=LOCATION,
        role="roles/cloudfunctions.invoker",
        member="allAuthenticatedUsers",
    ),
    "function-v1-binding": lambda: gcp.cloudfunctions.FunctionIamBinding(
        "public",
        cloud_function="fn",
        role="roles/cloudfunctions.invoker",
        members=[f"serviceAccount:{OWN_ACCOUNT}", "allUsers"],
    ),
    "run-v1-policy": lambda: gcp.cloudrun.IamPolicy(
        "public",
        service="svc",
        location=LOCATION,
        policy_data=policy_data("roles/run.invoker", "allUsers"),
    ),
    "function-v2-policy": lambda: gcp.cloudfunctionsv2.FunctionIamPolicy(
        "public",
        cloud_function="fn",
        location=LOCATION,
        policy_data=policy_data("roles/cloudfunctions.invoker", "allUsers"),
    ),
}


@pytest.mark.parametrize("case", sorted(PUBLIC_INVOKERS))
def test_public_invoker_rejected(case: str):
    registration = only_registration(PUBLIC_INVOKERS[case])
    messages = violations("no-public-invoker", args_of(registration))
    assert len(messages) == 1, f"{case}: {messages}"
    assert "public" in messages[0], f"{case}: the message names no resource"
    assert "all" in messages[0], f"{case}: the message names no member"


def test_invoker_check_disabled_rejected():
    registration = only_registration(run_service(invoker_iam_disabled=True))
    messages = violations("no-public-invoker", args_of(registration))
    assert len(messages) == 1, messages
    assert "invokerIamDisabled" in messages[0], messages[0]


PRIVATE_INVOKERS = {
    "run-v2-member": lambda: gcp.cloudrunv2.ServiceIamMember(
        "private",
        name="svc",
        location=LOCATION,
        role="roles/run.invoker",
        member=f"serviceAccount:{OWN_ACCOUNT}",
    ),
    "function-v1-binding": lambda: gcp.cloudfunctions.FunctionIamBinding(
        "private",
        cloud_function="fn",
        role="roles/cloudfunctions.invoker",
        members=[f"serviceAccount:{OWN_ACCOUNT}"],
    ),
    "run-v2-service": run_service(invoker_iam_disabled=False),
    # Public objects are a storage question, outside this rule.
    "bucket-member": lambda: gcp.storage.BucketIAMMember(
        "public-objects",
        bucket="site",
        role="roles/storage.objectViewer",
        member="allUsers",
    ),
}


@pytest.mark.parametrize("case", sorted(PRIVATE_INVOKERS))
def test_private_invoker_accepted(case: str):
    registration = only_registration(PRIVATE_INVOKERS[case])
    messages = violations("no-public-invoker", args_of(registration))
    assert messages == [], f"{case}: {messages}"


# --- no-primitive-role ---


PRIMITIVE_GRANTS = {
    "project-member": lambda: gcp.projects.IAMMember(
        "broad",
        project=PROJECT,
        role="roles/editor",
        member=f"serviceAccount:{OWN_ACCOUNT}",
    ),
    "project-binding": lambda: gcp.projects.IAMBinding(
        "broad", project=PROJECT, role="roles/owner", members=["user:a@example.com"]
    ),
    "account-policy": lambda: gcp.serviceaccount.IAMPolicy(
        "broad",
        service_account_id=f"projects/{PROJECT}/serviceAccounts/{OWN_ACCOUNT}",
        policy_data=policy_data("roles/viewer", "user:a@example.com"),
    ),
    "bucket-member": lambda: gcp.storage.BucketIAMMember(
        "broad", bucket="site", role="roles/owner", member="user:a@example.com"
    ),
    "topic-binding": lambda: gcp.pubsub.TopicIAMBinding(
        "broad", topic="events", role="roles/editor", members=["group:g@example.com"]
    ),
    "run-v2-member": lambda: gcp.cloudrunv2.ServiceIamMember(
        "broad",
        name="svc",
        location=LOCATION,
        role="roles/viewer",
        member="user:a@example.com",
    ),
}


@pytest.mark.parametrize("case", sorted(PRIMITIVE_GRANTS))
def test_primitive_role_rejected(case: str):
    registration = only_registration(PRIMITIVE_GRANTS[case])
    messages = violations("no-primitive-role", args_of(registration))
    assert len(messages) == 1, f"{case}: {messages}"
    assert "broad" in messages[0], f"{case}: the message names no resource"
    assert "roles/" in messages[0], f"{case}: the message names no role"


PREDEFINED_GRANTS = {
    "project-member": lambda: gcp.projects.IAMMember(
        "narrow",
        project=PROJECT,
        role="roles/logging.logWriter",
        member=f"serviceAccount:{OWN_ACCOUNT}",
    ),
    # A predefined role whose name ends in "editor" is not the basic role.
    "project-binding": lambda: gcp.projects.IAMBinding(
        "narrow",
        project=PROJECT,
        role="roles/monitoring.editor",
        members=["user:a@example.com"],
    ),
    "account-policy": lambda: gcp.serviceaccount.IAMPolicy(
        "narrow",
        service_account_id=f"projects/{PROJECT}/serviceAccounts/{OWN_ACCOUNT}",
        policy_data=policy_data("roles/iam.serviceAccountTokenCreator", "user:a@x.io"),
    ),
}


@pytest.mark.parametrize("case", sorted(PREDEFINED_GRANTS))
def test_predefined_role_accepted(case: str):
    registration = only_registration(PREDEFINED_GRANTS[case])
    messages = violations("no-primitive-role", args_of(registration))
    assert messages == [], f"{case}: {messages}"


def test_unknown_role_in_preview_accepted():
    values = {"project": PROJECT, "role": "x", "member": "user:a@example.com"}
    args = resource_args(
        "gcp:projects/iAMMember:IAMMember", "pending", unknown(values, "role")
    )
    assert violations("no-primitive-role", args) == [], "pending"


# --- no-plaintext-credential-env ---


PLAIN_CREDENTIALS = {
    "function-v2-run": (
        function_v2(
            service_account_email=OWN_ACCOUNT,
            environment_variables={"MIXPANEL_API_SECRET": PLAIN_SECRET},
        ),
        "MIXPANEL_API_SECRET",
    ),
    "function-v2-value": (
        function_v2(
            service_account_email=OWN_ACCOUNT,
            environment_variables={"MIXPANEL_PROJECT": TOKEN_LIKE},
        ),
        "MIXPANEL_PROJECT",
    ),
    "function-v2-build": (
        lambda: gcp.cloudfunctionsv2.Function(
            "fn",
            name="fn",
            location=LOCATION,
            build_config=gcp.cloudfunctionsv2.FunctionBuildConfigArgs(
                runtime="python312",
                environment_variables={"PIP_INDEX_TOKEN": PLAIN_SECRET},
            ),
            service_config=gcp.cloudfunctionsv2.FunctionServiceConfigArgs(
                service_account_email=OWN_ACCOUNT
            ),
        ),
        "PIP_INDEX_TOKEN",
    ),
    "function-v1-run": (
        function_v1(
            service_account_email=OWN_ACCOUNT,
            environment_variables={"api_key": PLAIN_SECRET},
        ),
        "api_key",
    ),
    "function-v1-build": (
        function_v1(
            service_account_email=OWN_ACCOUNT,
            build_environment_variables={"REGISTRY_PASSWORD": PLAIN_SECRET},
        ),
        "REGISTRY_PASSWORD",
    ),
    "run-v2-service": (
        run_service(
            envs=[env("LOG_LEVEL", "INFO"), env("DB_CREDENTIAL", PLAIN_SECRET)]
        ),
        "DB_CREDENTIAL",
    ),
}


@pytest.mark.parametrize("case", sorted(PLAIN_CREDENTIALS))
def test_plaintext_credential_rejected(case: str):
    program, variable = PLAIN_CREDENTIALS[case]
    registration = only_registration(program)
    messages = violations("no-plaintext-credential-env", args_of(registration))
    assert len(messages) == 1, f"{case}: {messages}"
    assert variable in messages[0], f"{case}: the message names no variable"
    assert registration.name in messages[0], f"{case}: the message names no resource"
    assert PLAIN_SECRET not in messages[0], f"{case}: the message shows the value"
    assert TOKEN_LIKE not in messages[0], f"{case}: the message shows the value"


SECRET_CREDENTIALS = {
    "function-v2": function_v2(
        service_account_email=OWN_ACCOUNT,
        environment_variables={"MIXPANEL_PROJECT_ID": "3141592", "LOG_LEVEL": "INFO"},
        secret_environment_variables=[
            gcp.cloudfunctionsv2.FunctionServiceConfigSecretEnvironmentVariableArgs(
                key="MIXPANEL_SERVICE_ACCOUNT_SECRET",
                project_id=PROJECT,
                secret="mixpanel-secret",
                version="3",
            )
        ],
    ),
    "function-v2-empty": function_v2(
        service_account_email=OWN_ACCOUNT, environment_variables={"API_KEY": ""}
    ),
    "function-v1": function_v1(
        service_account_email=OWN_ACCOUNT,
        environment_variables={"DEAD_LETTER_TOPIC": f"projects/{PROJECT}/topics/dl"},
    ),
    "run-v2-service": run_service(envs=[secret_env("API_TOKEN"), env("MODE", "prod")]),
}


@pytest.mark.parametrize("case", sorted(SECRET_CREDENTIALS))
def test_secret_credential_accepted(case: str):
    registration = only_registration(SECRET_CREDENTIALS[case])
    messages = violations("no-plaintext-credential-env", args_of(registration))
    assert messages == [], f"{case}: {messages}"


def test_unknown_credential_value_rejected_by_name():
    values = {"serviceConfig": {"environmentVariables": {"API_TOKEN": "x"}}}
    unknown(values, "serviceConfig", "environmentVariables", "API_TOKEN")
    args = resource_args("gcp:cloudfunctionsv2/function:Function", "pending", values)
    messages = violations("no-plaintext-credential-env", args)
    assert len(messages) == 1, f"pending: {messages}"


def test_unknown_plain_value_accepted():
    values = {"serviceConfig": {"environmentVariables": {"DEAD_LETTER_TOPIC": "x"}}}
    unknown(values, "serviceConfig", "environmentVariables", "DEAD_LETTER_TOPIC")
    args = resource_args("gcp:cloudfunctionsv2/function:Function", "pending", values)
    assert violations("no-plaintext-credential-env", args) == [], "pending"


# --- push-subscription-has-dead-letter-policy ---


def subscription(name: str = "push", **arguments) -> Callable[[], object]:
    def program():
        return gcp.pubsub.Subscription(
            name, name=name, topic=f"projects/{PROJECT}/topics/events", **arguments
        )

    return program


PUSH = gcp.pubsub.SubscriptionPushConfigArgs(push_endpoint=PUSH_ENDPOINT)
DEAD_LETTER = gcp.pubsub.SubscriptionDeadLetterPolicyArgs(
    dead_letter_topic=f"projects/{PROJECT}/topics/dead-letter",
    max_delivery_attempts=10,
)


def test_push_without_dead_letter_rejected():
    registration = only_registration(subscription(push_config=PUSH))
    messages = violations(
        "push-subscription-has-dead-letter-policy", args_of(registration)
    )
    assert len(messages) == 1, messages
    assert "push" in messages[0], "the message names no subscription"
    assert "deadLetterPolicy" in messages[0], messages[0]


def test_push_with_dead_letter_accepted():
    registration = only_registration(
        subscription(push_config=PUSH, dead_letter_policy=DEAD_LETTER)
    )
    messages = violations(
        "push-subscription-has-dead-letter-policy", args_of(registration)
    )
    assert messages == [], messages


def test_pull_without_dead_letter_accepted():
    registration = only_registration(subscription("pull"))
    messages = violations(
        "push-subscription-has-dead-letter-policy", args_of(registration)
    )
    assert messages == [], messages


def test_unknown_dead_letter_topic_accepted():
    values = {
        "topic": "events",
        "pushConfig": {"pushEndpoint": PUSH_ENDPOINT},
        "deadLetterPolicy": {"deadLetterTopic": "x", "maxDeliveryAttempts": 10},
    }
    unknown(values, "deadLetterPolicy", "deadLetterTopic")
    unknown(values, "pushConfig", "pushEndpoint")
    args = resource_args("gcp:pubsub/subscription:Subscription", "pending", values)
    messages = violations("push-subscription-has-dead-letter-policy", args)
    assert messages == [], messages


# --- dead-letter-topic-has-subscription ---


def dead_letter_program(*, keep: bool) -> Callable[[], None]:
    """Register two topics, a push subscription, and if `keep` a dead-letter one."""

    def program():
        events = gcp.pubsub.Topic("events", name="events", project=PROJECT)
        dead_letter = gcp.pubsub.Topic("dead-letter", name="dl", project=PROJECT)
        gcp.pubsub.Subscription(
            "push",
            name="push",
            project=PROJECT,
            topic=events.id,
            push_config=PUSH,
            dead_letter_policy=gcp.pubsub.SubscriptionDeadLetterPolicyArgs(
                dead_letter_topic=dead_letter.id, max_delivery_attempts=5
            ),
        )
        if keep:
            gcp.pubsub.Subscription(
                "kept", name="kept", project=PROJECT, topic=dead_letter.id
            )

    return program


def test_dead_letter_topic_without_subscription_rejected():
    built = register(dead_letter_program(keep=False))
    found = stack_violations(stack_resources(built))
    push_urn = built.nodes[("gcp:pubsub/subscription:Subscription", "push")].urn
    assert len(found) == 1, found
    assert found[0][1] == push_urn, "the violation is not tied to the subscription"
    assert "push" in found[0][0], "the message names no subscription"
    assert "dl" in found[0][0], "the message names no topic"


def test_dead_letter_topic_with_subscription_accepted():
    built = register(dead_letter_program(keep=True))
    assert stack_violations(stack_resources(built)) == []


def test_dead_letter_topic_matched_by_name():
    def program():
        gcp.pubsub.Subscription(
            "push",
            name="push",
            topic="events",
            push_config=PUSH,
            dead_letter_policy=DEAD_LETTER,
        )
        gcp.pubsub.Subscription("kept", name="kept", topic="dead-letter")

    built = register(program)
    assert stack_violations(stack_resources(built)) == []


def test_dead_letter_topic_in_other_project_rejected():
    def program():
        gcp.pubsub.Subscription(
            "push",
            name="push",
            topic="events",
            push_config=PUSH,
            dead_letter_policy=DEAD_LETTER,
        )
        gcp.pubsub.Subscription(
            "kept", name="kept", topic="projects/other/topics/dead-letter"
        )

    built = register(program)
    assert len(stack_violations(stack_resources(built))) == 1


def test_own_topic_does_not_count_as_reader():
    def program():
        gcp.pubsub.Subscription(
            "loop",
            name="loop",
            topic="dead-letter",
            project=PROJECT,
            dead_letter_policy=DEAD_LETTER,
        )

    built = register(program)
    assert len(stack_violations(stack_resources(built))) == 1


def preview_resources(*, keep: bool) -> list[PolicyResource]:
    """Return a new stack's resources as `pulumi preview` passes them: ids unknown."""
    type_ = "gcp:pubsub/subscription:Subscription"
    topic = PolicyResource(
        "gcp:pubsub/topic:Topic",
        policy_props({"name": "dl", "id": UNKNOWN_STRING_VALUE}),
        "urn:topic",
        "dead-letter",
        resource_options(),
        None,
        None,
        [],
        {},
    )
    push = PolicyResource(
        type_,
        policy_props(
            {
                "topic": UNKNOWN_STRING_VALUE,
                "pushConfig": {"pushEndpoint": UNKNOWN_STRING_VALUE},
                "deadLetterPolicy": {"deadLetterTopic": UNKNOWN_STRING_VALUE},
            }
        ),
        "urn:push",
        "push",
        resource_options(),
        None,
        None,
        [topic],
        {"deadLetterPolicy": [topic]},
    )
    resources = [topic, push]
    if keep:
        reader = PolicyResource(
            type_,
            policy_props({"topic": UNKNOWN_STRING_VALUE}),
            "urn:kept",
            "kept",
            resource_options(),
            None,
            None,
            [topic],
            {"topic": [topic]},
        )
        resources.append(reader)
    return resources


def test_preview_matches_by_dependency():
    assert stack_violations(preview_resources(keep=True)) == []


def test_preview_without_subscription_rejected():
    found = stack_violations(preview_resources(keep=False))
    assert len(found) == 1, found
    assert found[0][1] == "urn:push", "the violation is not tied to the subscription"
    assert "dead-letter" in found[0][0], "the message names no topic"


# --- explicit-runtime-service-account ---


DEFAULT_ACCOUNTS = {
    "function-v2-none": lambda: gcp.cloudfunctionsv2.Function(
        "fn", name="fn", location=LOCATION
    ),
    "function-v2-empty": function_v2(max_instance_count=3),
    "function-v2-compute": function_v2(service_account_email=COMPUTE_DEFAULT),
    "function-v1-none": function_v1(),
    "function-v1-app-engine": function_v1(service_account_email=APP_ENGINE_DEFAULT),
    "run-v2-none": run_service(service_account=None),
}


@pytest.mark.parametrize("case", sorted(DEFAULT_ACCOUNTS))
def test_default_runtime_account_rejected(case: str):
    registration = only_registration(DEFAULT_ACCOUNTS[case])
    messages = violations("explicit-runtime-service-account", args_of(registration))
    assert len(messages) == 1, f"{case}: {messages}"
    assert registration.name in messages[0], f"{case}: the message names no resource"


OWN_ACCOUNTS = {
    "function-v2": function_v2(service_account_email=OWN_ACCOUNT),
    "function-v1": function_v1(service_account_email=OWN_ACCOUNT),
    "run-v2": run_service(),
}


@pytest.mark.parametrize("case", sorted(OWN_ACCOUNTS))
def test_own_runtime_account_accepted(case: str):
    registration = only_registration(OWN_ACCOUNTS[case])
    messages = violations("explicit-runtime-service-account", args_of(registration))
    assert messages == [], f"{case}: {messages}"


def test_unknown_runtime_account_accepted():
    values = unknown(
        {"serviceConfig": {"serviceAccountEmail": "x"}},
        "serviceConfig",
        "serviceAccountEmail",
    )
    args = resource_args("gcp:cloudfunctionsv2/function:Function", "pending", values)
    assert violations("explicit-runtime-service-account", args) == [], "pending"


# --- This project's program ---


@pytest.fixture(scope="module")
def function_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_function_dir(tmp_path_factory.mktemp("policy"))


PROGRAM_CASES = {
    "dev": (base_config(), "dev"),
    "prod": (base_config(), "prod"),
    "token": (token_config(mixpanelRegion="eu"), "dev"),
    "pii": (
        base_config(
            piiDropProperties="email",
            piiHashProperties="distinct_id",
            piiHashKey="7d2f9a4c1e8b3d6f0a5c2e9b4d7f1a3c",
            keepIpAddress="true",
        ),
        "dev",
    ),
}
PROGRAM_SECRET_KEYS = (*CREDENTIAL_KEYS, project_key("piiHashKey"))


@pytest.mark.parametrize("case", sorted(PROGRAM_CASES))
def test_program_passes_every_policy(case: str, function_dir: Path):
    config, stack = PROGRAM_CASES[case]
    built = build(config, function_dir, stack=stack, secret_keys=PROGRAM_SECRET_KEYS)
    checked_types = set()
    for registration in built.registrations:
        for name, policy in POLICIES.items():
            if isinstance(policy, StackValidationPolicy):
                continue
            messages = violations(name, args_of(registration))
            assert messages == [], f"{case}: {registration.name} violates {name}"
        checked_types.add(registration.type_)
    assert stack_violations(stack_resources(built)) == [], case
    assert "gcp:cloudfunctionsv2/function:Function" in checked_types, case
    assert "gcp:pubsub/subscription:Subscription" in checked_types, case


def test_program_resources_are_in_scope(function_dir: Path):
    """The rules look at this program's function, subscriptions and grants."""
    built = build(base_config(), function_dir)
    function = built.one("gcp:cloudfunctionsv2/function:Function")
    push = built.one("gcp:pubsub/subscription:Subscription", "events-push")
    variables = rules.plain_environment(function.type_, policy_props(function.inputs))
    account = rules.runtime_service_account(
        function.type_, policy_props(function.inputs)
    )
    iam = [r for r in built.registrations if rules.is_iam_resource(r.type_)]
    assert len(variables) >= 6, "forwarder-function environment not read"
    assert account is not None, "forwarder-function account not read"
    assert account[1].startswith("mp-dev-run@"), "forwarder-function account"
    always = [grant for grant in GRANTS if grant.config_key is None]
    assert len(iam) == len(always), f"IAM resources seen: {[r.name for r in iam]}"
    assert rules.lookup(policy_props(push.inputs), "pushConfig") is not None, push.name


def test_lookup_reads_through_sdk_proxy():
    props = policy_props({"a": {"b": [{"c": "d"}]}, "u": UNKNOWN_STRING_VALUE})
    assert rules.lookup(props, "a", "b", 0, "c") == "d"
    assert rules.lookup(props, "a", "missing") is None
    assert rules.lookup(props, "a", "b", 5) is None
    assert rules.lookup(props, "u") is rules.UNKNOWN
    assert rules.lookup(props, "u", "deeper") is rules.UNKNOWN


def test_secret_input_reaches_policy_unwrapped():
    secret = pulumi.Output.secret(PLAIN_SECRET)
    registration = only_registration(
        function_v2(
            service_account_email=OWN_ACCOUNT,
            environment_variables={"MIXPANEL_SECRET": secret},
        )
    )
    messages = violations("no-plaintext-credential-env", args_of(registration))
    assert len(messages) == 1, (
        "a secret Output in a plain variable is still plain text in the function"
    )


# --- The pack as Pulumi runs it ---


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """Start the pack the way the Pulumi CLI does and connect to its server.

    The CLI runs `python -u -m pulumi.policy ENGINE PACK_DIRECTORY`, and the
    pack prints the local port of its gRPC analyzer server on stdout.
    """
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "unused", str(PACK_DIR)],
        cwd=PACK_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = process.stdout.readline().strip()
        assert port.isdigit(), f"the pack printed no port: {process.stderr.read()}"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()


def analyzer_resources(built: BuiltStack) -> list[analyzer_pb2.AnalyzerResource]:
    """Return the stack's resources as the engine sends them to `AnalyzeStack`."""
    return [
        analyzer_pb2.AnalyzerResource(
            type=node.type_,
            properties=struct_of(node.outputs),
            urn=node.urn,
            name=node.name,
            parent=node.parent,
            dependencies=node.dependencies,
            propertyDependencies={
                key: analyzer_pb2.AnalyzerPropertyDependencies(urns=urns)
                for key, urns in node.property_dependencies.items()
            },
        )
        for node in built.nodes.values()
    ]


def test_running_pack_rejects_unread_dead_letter_topic(analyzer):
    built = register(dead_letter_program(keep=False))
    response = analyzer.AnalyzeStack(
        analyzer_pb2.AnalyzeStackRequest(resources=analyzer_resources(built))
    )
    found = [(d.policyName, d.urn) for d in response.diagnostics]
    push_urn = built.nodes[("gcp:pubsub/subscription:Subscription", "push")].urn
    assert found == [("dead-letter-topic-has-subscription", push_urn)], found


def test_running_pack_lists_mandatory_policies(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    levels = {policy.name: policy.enforcementLevel for policy in info.policies}
    assert info.name == rules.PACK_NAME
    assert set(levels) == set(POLICIES)
    for name, level in levels.items():
        assert level == analyzer_pb2.MANDATORY, f"{name} is not mandatory"


def test_running_pack_rejects_public_invoker(analyzer):
    registration = only_registration(PUBLIC_INVOKERS["run-v2-member"])
    request = analyzer_pb2.AnalyzeRequest(
        type=registration.type_,
        properties=struct_of(registration.inputs),
        urn="urn:pulumi:dev::policy-test::gcp:cloudrunv2/serviceIamMember:"
        "ServiceIamMember::public",
        name=registration.name,
    )
    response = analyzer.Analyze(request)
    names = [diagnostic.policyName for diagnostic in response.diagnostics]
    assert names == ["no-public-invoker"], names


def test_running_pack_accepts_program(analyzer, function_dir: Path):
    built = build(base_config(), function_dir, stack="prod")
    for registration in built.registrations:
        response = analyzer.Analyze(
            analyzer_pb2.AnalyzeRequest(
                type=registration.type_,
                properties=struct_of(registration.inputs),
                urn=built.nodes[(registration.type_, registration.name)].urn,
                name=registration.name,
            )
        )
        messages = [diagnostic.message for diagnostic in response.diagnostics]
        assert messages == [], f"{registration.name}: {messages}"

    response = analyzer.AnalyzeStack(
        analyzer_pb2.AnalyzeStackRequest(resources=analyzer_resources(built))
    )
    messages = [diagnostic.message for diagnostic in response.diagnostics]
    assert messages == [], messages
