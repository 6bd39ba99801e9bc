"""The rules of the mixpanel-pubsub policy pack, as plain functions.

Each rule takes the arguments that `pulumi_policy` passes to a validation and
a `report_violation` callback. Resource rules read the resource's inputs,
the stack rule reads every resource's outputs. `POLICIES` wraps the rules for
`PolicyPack` in `__main__.py`, and the tests call them directly.

During `pulumi preview` a value computed by another resource is not known yet,
and reading it through the SDK's proxy raises `UnknownValueError`. The helpers
below return `UNKNOWN` in its place: a rule counts an unknown value as set,
because it comes from another resource, and never reports it as a credential.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

PACK_NAME = "mixpanel-pubsub-policy"
ENFORCEMENT_LEVEL = EnforcementLevel.MANDATORY

PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
PRIMITIVE_ROLES = ("roles/owner", "roles/editor", "roles/viewer")

# IAM resources of the GCP provider end in one of these class names: member
# resources carry `role` and `member`, bindings `role` and `members`, and
# policies a JSON `policyData` with `bindings`.
IAM_CLASS = re.compile(
    r"(IAMMember|IAMBinding|IamMember|IamBinding|IAMPolicy|IamPolicy)$"
)

# Provider modules whose IAM resources decide who may invoke a service.
SERVING_MODULES = ("cloudrun", "cloudrunv2", "cloudfunctions", "cloudfunctionsv2")

FUNCTION_V1 = "gcp:cloudfunctions/function:Function"
FUNCTION_V2 = "gcp:cloudfunctionsv2/function:Function"
RUN_SERVICE_V2 = "gcp:cloudrunv2/service:Service"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
TOPIC = "gcp:pubsub/topic:Topic"

# An environment variable whose name contains one of these words is taken
# for a credential, such as MIXPANEL_API_SECRET, NPM_TOKEN or APIKEY. Matching
# parts of words also flags a few harmless names (MONKEY_COUNT), which can
# be renamed.
CREDENTIAL_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|KEY|CREDENTIAL", re.IGNORECASE)

# A value of 32 or more letters and digits that mixes both looks like an API
# key or token.
# NOTE: Mixpanel documents its project tokens only as alphanumeric, so whether
# tokens and service account secrets match this pattern is an estimate. The
# name check above works without it.
CREDENTIAL_VALUE = re.compile(
    r"^(?=[^0-9]*[0-9])(?=[^A-Za-z]*[A-Za-z])[A-Za-z0-9]{32,}$"
)

# The service accounts that a function or Cloud Run service runs as when none
# is set: Compute Engine's default account, and App Engine's for 1st gen
# functions. Google grants them the Editor role on the project unless the
# organization policy iam.automaticIamGrantsForDefaultServiceAccounts stops it.
DEFAULT_ACCOUNT = re.compile(
    r"(-compute@developer\.gserviceaccount\.com|@appspot\.gserviceaccount\.com)$"
)


class _Unknown:
    """The marker for a value that `pulumi preview` does not know yet."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()


def lookup(value: Any, *path: str | int) -> Any:
    """Return the value at `path`, None when it is absent, UNKNOWN when unknown."""
    for key in path:
        if value is None or value is UNKNOWN:
            return value
        try:
            if isinstance(value, Mapping) or _is_sequence(value):
                value = value[key]
            else:
                return None
        except (KeyError, IndexError, TypeError):
            return None
        except UnknownValueError:
            return UNKNOWN
    return value


def elements(value: Any) -> list[Any]:
    """Return the items of a list value, with UNKNOWN for each unknown item."""
    if not _is_sequence(value):
        return []
    items = []
    for index in range(len(value)):
        try:
            items.append(value[index])
        except UnknownValueError:
            items.append(UNKNOWN)
    return items


def entries(value: Any) -> list[tuple[str, Any]]:
    """Return the (key, value) pairs of a map value, with UNKNOWN for unknown values."""
    if not isinstance(value, Mapping):
        return []
    pairs = []
    for key in value:
        try:
            pairs.append((key, value[key]))
        except UnknownValueError:
            pairs.append((key, UNKNOWN))
    return pairs


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _is_set(value: Any) -> bool:
    """Return whether a value is present: not None and not empty (UNKNOWN is set)."""
    return value is not None and value != ""


def _type_parts(resource_type: str) -> tuple[str, str, str]:
    """Split a type token such as gcp:pubsub/topic:Topic into (gcp, pubsub, Topic)."""
    parts = resource_type.split(":")
    if len(parts) != 3:
        return "", "", ""
    package, module, class_name = parts
    return package, module.split("/")[0], class_name


def is_iam_resource(resource_type: str) -> bool:
    """Return whether the type is a GCP IAM member, binding or policy."""
    package, _module, class_name = _type_parts(resource_type)
    return package == "gcp" and bool(IAM_CLASS.search(class_name))


def iam_bindings(props: Mapping[str, Any]) -> list[tuple[Any, list[str]]]:
    """Return the (role, known members) pairs that an IAM resource grants.

    The role is UNKNOWN when `pulumi preview` does not know it yet. An unknown
    `policyData` yields no pairs, and so does invalid JSON, which the provider
    rejects anyway.
    """
    role = lookup(props, "role")
    member = lookup(props, "member")
    if member is not None:
        return [(role, [member] if isinstance(member, str) else [])]
    members = lookup(props, "members")
    if members is not None:
        return [(role, [m for m in elements(members) if isinstance(m, str)])]

    policy_data = lookup(props, "policyData")
    if not isinstance(policy_data, str):
        return []
    try:
        policy = json.loads(policy_data)
    except ValueError:
        return []
    bindings = policy.get("bindings", []) if isinstance(policy, dict) else []
    pairs = []
    for binding in bindings:
        if isinstance(binding, dict):
            found = [m for m in binding.get("members", []) if isinstance(m, str)]
            pairs.append((binding.get("role"), found))
    return pairs


def no_public_invoker(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    """Report a Cloud Run service or Cloud Function that anyone may call.

    That is any role granted to allUsers or allAuthenticatedUsers by an IAM
    resource of Cloud Run or Cloud Functions (1st and 2nd gen), and a Cloud
    Run v2 service with `invokerIamDisabled`, which skips the invoker check.
    """
    package, module, class_name = _type_parts(args.resource_type)
    if args.resource_type == RUN_SERVICE_V2:
        if lookup(args.props, "invokerIamDisabled") is True:
            report_violation(
                f"{args.name} sets invokerIamDisabled, so Cloud Run lets any caller "
                "invoke it. Remove the setting and grant roles/run.invoker to the "
                "service account that calls it.",
                None,
            )
        return
    if package != "gcp" or module not in SERVING_MODULES:
        return
    if not IAM_CLASS.search(class_name):
        return

    for role, members in iam_bindings(args.props):
        for member in members:
            if member in PUBLIC_MEMBERS:
                report_violation(
                    f"{args.name} grants {role} to {member}, which lets anyone "
                    f"{_audience(member)} call the service. Grant the role to the "
                    "service account that calls it instead.",
                    None,
                )


def _audience(member: str) -> str:
    if member == "allUsers":
        return "on the internet"
    return "with a Google account"


def no_primitive_role(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    """Report an IAM member, binding or policy that grants owner, editor or viewer.

    These basic roles span every service in the project, so a predefined role
    for the one job is always narrower.
    """
    if not is_iam_resource(args.resource_type):
        return
    for role, _members in iam_bindings(args.props):
        if role in PRIMITIVE_ROLES:
            report_violation(
                f"{args.name} grants the basic role {role}, which covers every "
                "service in the project. Grant a predefined role for the one job, "
                "such as roles/pubsub.publisher, on the one resource it needs.",
                None,
            )


def plain_environment(
    resource_type: str, props: Mapping[str, Any]
) -> list[tuple[str, Any, Any]]:
    """Return the (input path, name, value) of each plain environment variable.

    Covers 2nd and 1st gen Cloud Functions (run and build variables) and the
    containers of Cloud Run v2 services. A Cloud Run variable that takes its
    value from Secret Manager (`valueSource`) is not plain and is left out.
    """
    if resource_type == FUNCTION_V2:
        maps = {
            "serviceConfig.environmentVariables": lookup(
                props, "serviceConfig", "environmentVariables"
            ),
            "buildConfig.environmentVariables": lookup(
                props, "buildConfig", "environmentVariables"
            ),
        }
    elif resource_type == FUNCTION_V1:
        maps = {
            "environmentVariables": lookup(props, "environmentVariables"),
            "buildEnvironmentVariables": lookup(props, "buildEnvironmentVariables"),
        }
    elif resource_type == RUN_SERVICE_V2:
        variables = []
        containers = elements(lookup(props, "template", "containers"))
        for index, container in enumerate(containers):
            for env in elements(lookup(container, "envs")):
                if lookup(env, "valueSource") is not None:
                    continue
                path = f"template.containers[{index}].envs"
                variables.append((path, lookup(env, "name"), lookup(env, "value")))
        return variables
    else:
        return []

    return [
        (path, name, value)
        for path, mapping in maps.items()
        for name, value in entries(mapping)
    ]


def no_plaintext_credential_env(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    """Report a credential passed in a plain environment variable.

    A variable counts as a credential when its name contains SECRET, TOKEN,
    PASSWORD, KEY or CREDENTIAL (any case) and it has a value, or when its
    value looks like an API key (`CREDENTIAL_VALUE`). Plain variables are
    readable by anyone who can view the function or service, so a credential
    belongs in Secret Manager. The message never shows the value.
    """
    for path, name, value in plain_environment(args.resource_type, args.props):
        named_like_credential = isinstance(name, str) and bool(
            CREDENTIAL_NAME.search(name)
        )
        if named_like_credential and _is_set(value):
            reason = "its name marks it as a credential"
        elif isinstance(value, str) and CREDENTIAL_VALUE.match(value):
            reason = "its value looks like an API key or token"
        else:
            continue
        report_violation(
            f"{args.name} sets {name} in plain text in {path}, and {reason}. "
            f"{_credential_fix(args.resource_type, path)}",
            None,
        )


def _credential_fix(resource_type: str, path: str) -> str:
    """Return how to pass a credential to the variables at `path` instead."""
    if path.startswith("build"):
        return (
            "Build variables cannot come from Secret Manager, so grant the build "
            "service account access to what the build fetches instead."
        )
    if resource_type == RUN_SERVICE_V2:
        where = "an env with valueSource.secretKeyRef"
    elif resource_type == FUNCTION_V2:
        where = "serviceConfig.secretEnvironmentVariables or secretVolumes"
    else:
        where = "secretEnvironmentVariables or secretVolumes"
    return f"Store it in Secret Manager and pass it as {where}."


def push_subscription_has_dead_letter_policy(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    """Report a push subscription without a dead-letter topic.

    Without one, Pub/Sub keeps redelivering a message that the endpoint
    always rejects until the message's retention ends, and then drops it.
    """
    if args.resource_type != SUBSCRIPTION:
        return
    if lookup(args.props, "pushConfig") is None:
        return
    if _is_set(lookup(args.props, "deadLetterPolicy", "deadLetterTopic")):
        return
    report_violation(
        f"Push subscription {args.name} has no deadLetterPolicy.deadLetterTopic, "
        "so a message that keeps failing is redelivered until its retention ends "
        "and then dropped. Set dead_letter_policy with a dead-letter topic and "
        "max_delivery_attempts.",
        None,
    )


def dead_letter_topic_has_subscription(
    args: StackValidationArgs, report_violation: ReportViolation
) -> None:
    """Report a dead-letter topic that no other subscription in the stack reads.

    Pub/Sub drops messages published to a topic without subscriptions, so a
    dead-letter topic without one loses every message sent to it. A topic
    and a subscription match when the subscription's `topic` input comes from
    the same Topic resource as the dead-letter topic, or when the two values
    name the same topic.

    NOTE: during `pulumi preview` of a new stack both values are unknown. A
    subscription whose dead-letter topic is not a Topic resource of this stack
    is then skipped, and `pulumi up` checks it once the values are known.
    """
    subscriptions = [r for r in args.resources if r.resource_type == SUBSCRIPTION]
    for subscription in subscriptions:
        dead_letter_topic = lookup(
            subscription.props, "deadLetterPolicy", "deadLetterTopic"
        )
        if not _is_set(dead_letter_topic):
            continue
        topics = _topic_resources(subscription, "deadLetterPolicy")
        target = _topic_name(dead_letter_topic, lookup(subscription.props, "project"))
        if target is None and not topics:
            continue

        readers = [
            other
            for other in subscriptions
            if other is not subscription and _reads_topic(other, topics, target)
        ]
        if not readers:
            report_violation(
                f"Subscription {subscription.name} dead-letters to "
                f"{_describe(dead_letter_topic, topics)}, which no subscription in "
                "this stack reads, so Pub/Sub drops every message sent there. Add "
                "a pull subscription to that topic.",
                subscription.urn,
            )


def _topic_resources(resource: PolicyResource, input_name: str) -> list[PolicyResource]:
    """Return the Topic resources that an input of `resource` is computed from."""
    dependencies = resource.property_dependencies.get(input_name, [])
    return [d for d in dependencies if d.resource_type == TOPIC]


def _reads_topic(
    subscription: PolicyResource, topics: list[PolicyResource], target: Any
) -> bool:
    if any(topic in topics for topic in _topic_resources(subscription, "topic")):
        return True
    if target is None:
        return False
    name = _topic_name(
        lookup(subscription.props, "topic"), lookup(subscription.props, "project")
    )
    return name is not None and _same_topic(name, target)


def _topic_name(value: Any, project: Any) -> tuple[str | None, str] | None:
    """Return (project, topic id) from projects/P/topics/T or a bare id T."""
    if not isinstance(value, str) or not value:
        return None
    match = re.fullmatch(r"projects/([^/]+)/topics/([^/]+)", value)
    if match:
        return match.group(1), match.group(2)
    if "/" in value:
        return None
    return (project if isinstance(project, str) else None), value


def _same_topic(first: tuple[str | None, str], second: tuple[str | None, str]) -> bool:
    """Compare topic ids, and projects where both are known."""
    if first[1] != second[1]:
        return False
    return first[0] is None or second[0] is None or first[0] == second[0]


def _describe(value: Any, topics: list[PolicyResource]) -> str:
    if isinstance(value, str):
        return value
    if topics:
        return f"the topic of {topics[0].name}"
    return "its dead-letter topic"


def runtime_service_account(
    resource_type: str, props: Mapping[str, Any]
) -> tuple[str, Any] | None:
    """Return (input path, value) of the runtime account, None for other types."""
    if resource_type == FUNCTION_V2:
        path = ("serviceConfig", "serviceAccountEmail")
    elif resource_type == FUNCTION_V1:
        path = ("serviceAccountEmail",)
    elif resource_type == RUN_SERVICE_V2:
        path = ("template", "serviceAccount")
    else:
        return None
    return ".".join(path), lookup(props, *path)


def explicit_runtime_service_account(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    """Report a function or Cloud Run service without a runtime account of its own.

    Without one it runs as a default service account (`DEFAULT_ACCOUNT`),
    which other workloads share and which often has the Editor role.
    """
    found = runtime_service_account(args.resource_type, args.props)
    if found is None:
        return
    path, account = found
    if not _is_set(account):
        report_violation(
            f"{args.name} sets no {path}, so it runs as the project's default "
            "service account. Create a service account for it and set its email.",
            None,
        )
    elif isinstance(account, str) and DEFAULT_ACCOUNT.search(account):
        report_violation(
            f"{args.name} runs as the default service account {account}, which "
            "other workloads share. Create a service account for it and set its "
            f"email in {path}.",
            None,
        )


POLICIES = [
    ResourceValidationPolicy(
        name="no-public-invoker",
        description="Cloud Run services and Cloud Functions grant no role to "
        "allUsers or allAuthenticatedUsers and keep the IAM invoker check.",
        validate=no_public_invoker,
    ),
    ResourceValidationPolicy(
        name="no-primitive-role",
        description="IAM members, bindings and policies grant no basic role "
        "(roles/owner, roles/editor, roles/viewer).",
        validate=no_primitive_role,
    ),
    ResourceValidationPolicy(
        name="no-plaintext-credential-env",
        description="Functions and Cloud Run services receive credentials from "
        "Secret Manager, never in plain environment variables.",
        validate=no_plaintext_credential_env,
    ),
    ResourceValidationPolicy(
        name="push-subscription-has-dead-letter-policy",
        description="Every push subscription has a dead-letter topic.",
        validate=push_subscription_has_dead_letter_policy,
    ),
    StackValidationPolicy(
        name="dead-letter-topic-has-subscription",
        description="Every dead-letter topic has a subscription that keeps "
        "its messages.",
        validate=dead_letter_topic_has_subscription,
    ),
    ResourceValidationPolicy(
        name="explicit-runtime-service-account",
        description="Functions and Cloud Run services run as a service account "
        "of their own, not a default one.",
        validate=explicit_runtime_service_account,
    ),
]
