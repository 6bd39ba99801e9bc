"""The Pulumi program's resources, IAM and outputs, under Pulumi's mocks."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from infra_mocks import (
    GCP_PROJECT,
    PUBSUB_AGENT,
    REGION,
    SA_USERNAME,
    SECRET_VALUE,
    TOKEN_VALUE,
    BuiltStack,
    base_config,
    build,
    make_function_dir,
    token_config,
)
from pulumi.runtime import rpc

from infra.apis import APIS

SERVICE = "gcp:projects/service:Service"
TOPIC = "gcp:pubsub/topic:Topic"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
TOPIC_IAM = "gcp:pubsub/topicIAMMember:TopicIAMMember"
SUBSCRIPTION_IAM = "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember"
SERVICE_IDENTITY = "gcp:projects/serviceIdentity:ServiceIdentity"
ACCOUNT = "gcp:serviceaccount/account:Account"
ACCOUNT_IAM = "gcp:serviceaccount/iAMMember:IAMMember"
PROJECT_IAM = "gcp:projects/iAMMember:IAMMember"
SECRET = "gcp:secretmanager/secret:Secret"
SECRET_VERSION = "gcp:secretmanager/secretVersion:SecretVersion"
SECRET_IAM = "gcp:secretmanager/secretIamMember:SecretIamMember"
BUCKET = "gcp:storage/bucket:Bucket"
BUCKET_OBJECT = "gcp:storage/bucketObject:BucketObject"
BUCKET_IAM = "gcp:storage/bucketIAMMember:BucketIAMMember"
REPOSITORY = "gcp:artifactregistry/repository:Repository"
REPOSITORY_IAM = "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember"
FUNCTION = "gcp:cloudfunctionsv2/function:Function"
RUN_IAM = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"

# The APIs each resource type needs enabled before it can be created.
REQUIRED_APIS = {
    TOPIC: {"pubsub.googleapis.com"},
    SUBSCRIPTION: {"pubsub.googleapis.com"},
    TOPIC_IAM: {"pubsub.googleapis.com"},
    SUBSCRIPTION_IAM: {"pubsub.googleapis.com"},
    SERVICE_IDENTITY: {"pubsub.googleapis.com"},
    ACCOUNT: {"iam.googleapis.com"},
    ACCOUNT_IAM: {"iam.googleapis.com"},
    PROJECT_IAM: {"cloudresourcemanager.googleapis.com"},
    SECRET: {"secretmanager.googleapis.com"},
    SECRET_VERSION: {"secretmanager.googleapis.com"},
    SECRET_IAM: {"secretmanager.googleapis.com"},
    BUCKET: {"storage.googleapis.com"},
    BUCKET_OBJECT: {"storage.googleapis.com"},
    BUCKET_IAM: {"storage.googleapis.com"},
    REPOSITORY: {"artifactregistry.googleapis.com"},
    REPOSITORY_IAM: {"artifactregistry.googleapis.com"},
    FUNCTION: {
        "cloudfunctions.googleapis.com",
        "run.googleapis.com",
        "cloudbuild.googleapis.com",
        "artifactregistry.googleapis.com",
    },
    RUN_IAM: {"run.googleapis.com"},
    "gcp:logging/metric:Metric": {"logging.googleapis.com"},
    "gcp:monitoring/alertPolicy:AlertPolicy": {"monitoring.googleapis.com"},
    "gcp:monitoring/notificationChannel:NotificationChannel": {
        "monitoring.googleapis.com"
    },
    "gcp:monitoring/dashboard:Dashboard": {"monitoring.googleapis.com"},
}

FUNCTION_URL = "https://mp-dev-forwarder-x7k2p9q4ra-uc.a.run.app"
DEAD_LETTER_TOPIC_ID = f"projects/{GCP_PROJECT}/topics/mp-dev-dead-letter"
EVENTS_TOPIC_ID = f"projects/{GCP_PROJECT}/topics/mp-dev-events"
RUNTIME_EMAIL = f"mp-dev-run@{GCP_PROJECT}.iam.gserviceaccount.com"
PUSH_EMAIL = f"mp-dev-push@{GCP_PROJECT}.iam.gserviceaccount.com"
BUILD_EMAIL = f"mp-dev-build@{GCP_PROJECT}.iam.gserviceaccount.com"
AGENT_MEMBER = f"serviceAccount:{PUBSUB_AGENT}"

STACK_OUTPUTS = {
    "eventsTopic",
    "deadLetterTopic",
    "deadLetterSubscription",
    "pushSubscription",
    "functionName",
    "functionUrl",
    "publishTestCommand",
    "dashboardUrl",
}


@pytest.fixture(scope="module")
def function_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_function_dir(tmp_path_factory.mktemp("infra"))


@pytest.fixture(scope="module")
def stack(function_dir: Path) -> BuiltStack:
    """The dev stack with a service account credential and default tuning."""
    return build(base_config(), function_dir)


@pytest.fixture(scope="module")
def token_stack(function_dir: Path) -> BuiltStack:
    """The dev stack with a project token credential."""
    return build(token_config(), function_dir)


def function_inputs(stack: BuiltStack) -> dict:
    return stack.one(FUNCTION).inputs


def test_apis_enabled_and_kept_on_destroy(stack: BuiltStack):
    services = {r.inputs["service"]: r for r in stack.of_type(SERVICE)}
    for api, _reason in APIS.values():
        assert api in services, f"API {api} is not enabled"
        assert services[api].inputs["disableOnDestroy"] is False, (
            f"{services[api].name} would disable {api} on destroy"
        )
        assert services[api].inputs["project"] == GCP_PROJECT, services[api].name


def test_every_resource_depends_on_its_apis(stack: BuiltStack):
    for registration in stack.registrations:
        if registration.type_.startswith("mixpanel-pubsub:") or (
            registration.type_ == SERVICE
        ):
            continue
        assert registration.type_ in REQUIRED_APIS, (
            f"{registration.name} has type {registration.type_}, which this test "
            "does not know the required APIs of"
        )
        missing = REQUIRED_APIS[registration.type_] - stack.api_dependencies(
            registration.type_, registration.name
        )
        assert not missing, f"{registration.name} does not depend on {missing}"


def test_every_resource_has_a_component_parent(stack: BuiltStack):
    for registration in stack.registrations:
        if registration.type_.startswith("mixpanel-pubsub:"):
            continue
        parent = stack.parents[(registration.type_, registration.name)]
        assert parent is not None, f"{registration.name} has no parent"
        assert parent[0].startswith("mixpanel-pubsub:infra:"), (
            f"{registration.name} is parented to {parent}, not a component"
        )


def test_topics_named_from_prefix(stack: BuiltStack):
    events = stack.one(TOPIC, "events")
    dead_letter = stack.one(TOPIC, "dead-letter")
    assert events.inputs["name"] == "mp-dev-events", events.name
    assert dead_letter.inputs["name"] == "mp-dev-dead-letter", dead_letter.name


def test_dead_letter_subscription_keeps_failures(stack: BuiltStack):
    retained = stack.one(SUBSCRIPTION, "dead-letter-kept")
    assert retained.inputs["topic"] == DEAD_LETTER_TOPIC_ID, retained.name
    assert retained.inputs["messageRetentionDuration"] == f"{31 * 86400}s", (
        retained.name
    )
    assert retained.inputs["retainAckedMessages"] is False, retained.name
    assert retained.inputs["expirationPolicy"] == {"ttl": ""}, retained.name
    assert "pushConfig" not in retained.inputs, (
        f"{retained.name} must be a pull subscription"
    )


def test_push_subscription_delivers_to_function(stack: BuiltStack):
    push = stack.one(SUBSCRIPTION, "events-push")
    config = push.inputs["pushConfig"]
    assert push.inputs["topic"] == EVENTS_TOPIC_ID, push.name
    assert config["pushEndpoint"] == FUNCTION_URL, push.name
    assert config["oidcToken"]["serviceAccountEmail"] == PUSH_EMAIL, push.name
    assert config["oidcToken"]["audience"] == FUNCTION_URL, push.name


def test_push_subscription_retries_and_dead_letters(stack: BuiltStack):
    push = stack.one(SUBSCRIPTION, "events-push")
    assert push.inputs["ackDeadlineSeconds"] == 300, push.name
    assert push.inputs["retryPolicy"] == {
        "minimumBackoff": "10s",
        "maximumBackoff": "600s",
    }, push.name
    assert push.inputs["deadLetterPolicy"] == {
        "deadLetterTopic": DEAD_LETTER_TOPIC_ID,
        "maxDeliveryAttempts": 10,
    }, push.name
    assert push.inputs["expirationPolicy"] == {"ttl": ""}, push.name


def test_function_has_no_event_trigger(stack: BuiltStack):
    inputs = function_inputs(stack)
    assert "eventTrigger" not in inputs, (
        "the function must not have an event trigger: its subscription could "
        "not carry a dead-letter policy"
    )


def test_push_subscription_waits_for_its_grants(stack: BuiltStack):
    push = stack.one(SUBSCRIPTION, "events-push")
    dependencies = stack.depends_on(SUBSCRIPTION, push.name)
    assert (RUN_IAM, "delivery-push-invoker") in dependencies, push.name
    assert (ACCOUNT_IAM, "delivery-agent-token-creator") in dependencies, push.name


def test_function_build_config(stack: BuiltStack):
    build_config = function_inputs(stack)["buildConfig"]
    bucket = stack.one(BUCKET)
    source_object = stack.one(BUCKET_OBJECT)
    assert build_config["runtime"] == "python312", "forwarder-function runtime"
    assert build_config["entryPoint"] == "forward", "forwarder-function entry point"
    assert build_config["serviceAccount"] == (
        f"projects/{GCP_PROJECT}/serviceAccounts/{BUILD_EMAIL}"
    ), "forwarder-function build account"
    assert build_config["source"]["storageSource"] == {
        "bucket": bucket.inputs["name"],
        "object": source_object.inputs["name"],
    }, "forwarder-function source"
    assert build_config["dockerRepository"] == (
        f"projects/{GCP_PROJECT}/locations/{REGION}/repositories/mp-dev-functions"
    ), "forwarder-function image repository"


def test_function_service_config(stack: BuiltStack):
    inputs = function_inputs(stack)
    service_config = inputs["serviceConfig"]
    assert inputs["name"] == "mp-dev-forwarder", "forwarder-function name"
    assert inputs["location"] == REGION, "forwarder-function location"
    assert service_config["serviceAccountEmail"] == RUNTIME_EMAIL, "runtime account"
    assert service_config["timeoutSeconds"] == 240, "forwarder-function timeout"
    assert service_config["availableMemory"] == "256Mi", "forwarder-function memory"
    assert service_config["availableCpu"] == "0.167", "forwarder-function cpu"
    assert service_config["maxInstanceCount"] == 10, "forwarder-function instances"
    assert service_config["maxInstanceRequestConcurrency"] == 1, "concurrency"
    assert service_config["ingressSettings"] == "ALLOW_INTERNAL_ONLY", "ingress"
    assert service_config["allTrafficOnLatestRevision"] is True, "traffic"


def test_function_plain_environment(stack: BuiltStack):
    environment = function_inputs(stack)["serviceConfig"]["environmentVariables"]
    assert environment == {
        "MIXPANEL_PROJECT_ID": "3141592",
        "MIXPANEL_REGION": "us",
        "MIXPANEL_SERVICE_ACCOUNT_USERNAME": SA_USERNAME,
        "DEAD_LETTER_TOPIC": DEAD_LETTER_TOPIC_ID,
        "RETRY_DEADLINE_SECONDS": "150",
        "MIXPANEL_REQUEST_TIMEOUT_SECONDS": "30",
        "LOG_LEVEL": "INFO",
    }, "forwarder-function environment"


def test_function_secret_pinned_to_version(stack: BuiltStack):
    secret_variables = function_inputs(stack)["serviceConfig"][
        "secretEnvironmentVariables"
    ]
    secret = stack.one(SECRET)
    assert len(secret_variables) == 1, "forwarder-function secret variables"
    variable = secret_variables[0]
    assert variable["key"] == "MIXPANEL_SERVICE_ACCOUNT_SECRET", "secret variable"
    assert variable["secret"] == secret.inputs["secretId"], "secret variable"
    assert variable["projectId"] == GCP_PROJECT, "secret variable project"
    assert variable["version"] == "1", "secret variable must use the version number"
    assert variable["version"] != "latest", "secret variable must not float"


def test_function_depends_on_runtime_and_build_grants(stack: BuiltStack):
    dependencies = stack.depends_on(FUNCTION, "forwarder-function")
    for grant in [
        (SECRET_IAM, "credential-runtime-accessor"),
        (TOPIC_IAM, "forwarder-runtime-dead-letter-publisher"),
        (BUCKET_IAM, "forwarder-build-source-reader"),
        (PROJECT_IAM, "forwarder-build-staged-source-reader"),
        (PROJECT_IAM, "forwarder-build-log-writer"),
        (REPOSITORY_IAM, "forwarder-build-image-writer"),
    ]:
        assert grant in dependencies, f"forwarder-function does not wait for {grant}"


def test_service_accounts(stack: BuiltStack):
    account_ids = {r.name: r.inputs["accountId"] for r in stack.of_type(ACCOUNT)}
    assert account_ids == {
        "accounts-runtime": "mp-dev-run",
        "accounts-push": "mp-dev-push",
        "accounts-build": "mp-dev-build",
    }
    for name, account_id in account_ids.items():
        assert 6 <= len(account_id) <= 30, f"{name} id {account_id!r} length"


def test_build_account_roles(stack: BuiltStack):
    build_member = f"serviceAccount:{BUILD_EMAIL}"
    source_reader = stack.one(BUCKET_IAM, "build-source-reader")
    assert source_reader.inputs["role"] == "roles/storage.objectViewer"
    assert source_reader.inputs["member"] == build_member, source_reader.name
    assert source_reader.inputs["bucket"] == stack.one(BUCKET).inputs["name"]

    image_writer = stack.one(REPOSITORY_IAM, "build-image-writer")
    assert image_writer.inputs["role"] == "roles/artifactregistry.writer"
    assert image_writer.inputs["member"] == build_member, image_writer.name
    assert image_writer.inputs["repository"] == "mp-dev-functions", image_writer.name

    log_writer = stack.one(PROJECT_IAM, "build-log-writer")
    assert log_writer.inputs["role"] == "roles/logging.logWriter", log_writer.name
    assert log_writer.inputs["member"] == build_member, log_writer.name

    staged = stack.one(PROJECT_IAM, "build-staged-source-reader")
    assert staged.inputs["role"] == "roles/storage.objectViewer", staged.name
    assert staged.inputs["member"] == build_member, staged.name
    assert "gcf-v2-sources-" in staged.inputs["condition"]["expression"], staged.name


def test_project_level_grants_are_the_build_ones(stack: BuiltStack):
    project_grants = {
        (r.inputs["role"], r.inputs["member"]) for r in stack.of_type(PROJECT_IAM)
    }
    build_member = f"serviceAccount:{BUILD_EMAIL}"
    assert project_grants == {
        ("roles/logging.logWriter", build_member),
        ("roles/storage.objectViewer", build_member),
    }


def test_pubsub_service_agent_grants(stack: BuiltStack):
    identity = stack.one(SERVICE_IDENTITY)
    assert identity.inputs["service"] == "pubsub.googleapis.com", identity.name

    publisher = stack.one(TOPIC_IAM, "agent-dead-letter-publisher")
    assert publisher.inputs["role"] == "roles/pubsub.publisher", publisher.name
    assert publisher.inputs["member"] == AGENT_MEMBER, publisher.name
    assert publisher.inputs["topic"] == "mp-dev-dead-letter", publisher.name

    subscriber = stack.one(SUBSCRIPTION_IAM, "agent-subscriber")
    assert subscriber.inputs["role"] == "roles/pubsub.subscriber", subscriber.name
    assert subscriber.inputs["member"] == AGENT_MEMBER, subscriber.name
    assert subscriber.inputs["subscription"] == "mp-dev-events-push", subscriber.name

    token_creator = stack.one(ACCOUNT_IAM, "agent-token-creator")
    assert token_creator.inputs["role"] == "roles/iam.serviceAccountTokenCreator"
    assert token_creator.inputs["member"] == AGENT_MEMBER, token_creator.name
    assert token_creator.inputs["serviceAccountId"] == (
        f"projects/{GCP_PROJECT}/serviceAccounts/{PUSH_EMAIL}"
    ), token_creator.name


def test_push_account_invokes_run_service(stack: BuiltStack):
    invoker = stack.one(RUN_IAM)
    assert invoker.inputs["role"] == "roles/run.invoker", invoker.name
    assert invoker.inputs["member"] == f"serviceAccount:{PUSH_EMAIL}", invoker.name
    assert invoker.inputs["name"] == (
        f"projects/{GCP_PROJECT}/locations/{REGION}/services/mp-dev-forwarder"
    ), invoker.name
    assert invoker.inputs["location"] == REGION, invoker.name


def test_runtime_account_grants(stack: BuiltStack):
    runtime_member = f"serviceAccount:{RUNTIME_EMAIL}"
    accessor = stack.one(SECRET_IAM)
    assert accessor.inputs["role"] == "roles/secretmanager.secretAccessor"
    assert accessor.inputs["member"] == runtime_member, accessor.name
    assert accessor.inputs["secretId"] == stack.one(SECRET).inputs["secretId"]

    publisher = stack.one(TOPIC_IAM, "runtime-dead-letter-publisher")
    assert publisher.inputs["role"] == "roles/pubsub.publisher", publisher.name
    assert publisher.inputs["member"] == runtime_member, publisher.name
    assert publisher.inputs["topic"] == "mp-dev-dead-letter", publisher.name


def test_iam_is_member_level_only(stack: BuiltStack):
    for registration in stack.registrations:
        assert not re.search(r"(?i)iam(binding|policy)", registration.type_), (
            f"{registration.name} is an authoritative {registration.type_}"
        )


def test_no_public_members_or_primitive_roles(stack: BuiltStack):
    for registration in stack.registrations:
        member = str(registration.inputs.get("member", ""))
        role = str(registration.inputs.get("role", ""))
        assert member not in ("allUsers", "allAuthenticatedUsers"), registration.name
        assert role not in ("roles/owner", "roles/editor", "roles/viewer"), (
            f"{registration.name} grants the primitive role {role}"
        )
    serialized = stack.serialized_inputs()
    assert "allUsers" not in serialized
    assert "allAuthenticatedUsers" not in serialized


def test_secret_replicated_automatically(stack: BuiltStack):
    secret = stack.one(SECRET)
    assert secret.inputs["secretId"] == "mp-dev-mixpanel-service-account-secret"
    assert secret.inputs["replication"] == {"auto": {}}, secret.name


def test_secret_version_data_is_secret(stack: BuiltStack):
    version = stack.one(SECRET_VERSION)
    data = version.inputs["secretData"]
    assert rpc.is_rpc_secret(data), f"{version.name} secret_data is not a secret"
    assert rpc.unwrap_rpc_secret(data) == SECRET_VALUE, version.name
    assert version.inputs["secret"] == (
        f"projects/{GCP_PROJECT}/secrets/mp-dev-mixpanel-service-account-secret"
    ), version.name


def test_credential_reaches_only_secret_version(stack: BuiltStack):
    elsewhere = stack.serialized_inputs(skip=[(SECRET_VERSION, "secretData")])
    assert SECRET_VALUE not in elsewhere, "the credential leaks into another input"
    names = " ".join(r.name for r in stack.registrations)
    assert SECRET_VALUE not in names, "the credential is in a resource name"
    assert SECRET_VALUE not in json.dumps(stack.outputs), "in a stack output"


def test_stack_outputs(stack: BuiltStack):
    assert set(stack.outputs) == STACK_OUTPUTS
    assert stack.outputs["eventsTopic"] == EVENTS_TOPIC_ID
    assert stack.outputs["deadLetterTopic"] == DEAD_LETTER_TOPIC_ID
    assert stack.outputs["deadLetterSubscription"] == (
        f"projects/{GCP_PROJECT}/subscriptions/mp-dev-dead-letter-kept"
    )
    assert stack.outputs["pushSubscription"] == (
        f"projects/{GCP_PROJECT}/subscriptions/mp-dev-events-push"
    )
    assert stack.outputs["functionName"] == "mp-dev-forwarder"
    assert stack.outputs["functionUrl"] == FUNCTION_URL
    assert not stack.secret_outputs, f"secret outputs: {stack.secret_outputs}"


def test_publish_test_command_sends_valid_event(stack: BuiltStack):
    command = stack.outputs["publishTestCommand"]
    words = shlex.split(command)
    assert words[:5] == ["gcloud", "pubsub", "topics", "publish", EVENTS_TOPIC_ID]
    assert words[5] == "--message", command
    # The shell would replace $(date +%s) with the time, so the test does too.
    message = json.loads(words[6].replace("$(date +%s)", "1796000000"))
    properties = message["properties"]
    assert set(message) == {"event", "properties"}, command
    assert message["event"], command
    assert properties["time"] == 1796000000, command
    assert properties["distinct_id"], command
    assert re.fullmatch(r"[A-Za-z0-9-]{1,36}", properties["$insert_id"]), command


def test_source_bucket_is_private(stack: BuiltStack):
    bucket = stack.one(BUCKET)
    assert bucket.inputs["name"] == f"{GCP_PROJECT}-mp-dev-source", bucket.name
    assert len(bucket.inputs["name"]) <= 63, bucket.name
    assert bucket.inputs["uniformBucketLevelAccess"] is True, bucket.name
    assert bucket.inputs["publicAccessPrevention"] == "enforced", bucket.name
    assert bucket.inputs["location"] == REGION, bucket.name


def test_source_object_holds_function_files(stack: BuiltStack):
    source_object = stack.one(BUCKET_OBJECT)
    assert re.fullmatch(
        r"function-source-[0-9a-f]{16}\.zip", source_object.inputs["name"]
    ), source_object.name
    assert source_object.inputs["bucket"] == stack.one(BUCKET).inputs["name"]
    assets = source_object.inputs["source"].assets
    assert sorted(assets) == ["main.py", "requirements.txt"], source_object.name


def test_image_repository_is_cleaned_up(stack: BuiltStack):
    repository = stack.one(REPOSITORY)
    policies = {p["id"]: p for p in repository.inputs["cleanupPolicies"]}
    assert repository.inputs["format"] == "DOCKER", repository.name
    assert policies["keep-recent"]["action"] == "KEEP", repository.name
    assert policies["keep-recent"]["mostRecentVersions"]["keepCount"] == 5
    assert policies["delete-old"]["action"] == "DELETE", repository.name


def test_project_token_credential(token_stack: BuiltStack):
    service_config = function_inputs(token_stack)["serviceConfig"]
    environment = service_config["environmentVariables"]
    variable = service_config["secretEnvironmentVariables"][0]
    secret = token_stack.one(SECRET)
    version = token_stack.one(SECRET_VERSION)
    assert variable["key"] == "MIXPANEL_PROJECT_TOKEN", "token secret variable"
    assert variable["version"] == "1", "token secret variable version"
    assert "MIXPANEL_SERVICE_ACCOUNT_USERNAME" not in environment
    assert secret.inputs["secretId"] == "mp-dev-mixpanel-project-token", secret.name
    assert rpc.unwrap_rpc_secret(version.inputs["secretData"]) == TOKEN_VALUE
    elsewhere = token_stack.serialized_inputs(skip=[(SECRET_VERSION, "secretData")])
    assert TOKEN_VALUE not in elsewhere, "the token leaks into another input"
    assert TOKEN_VALUE not in json.dumps(token_stack.outputs), "in a stack output"


def test_mixpanel_region_eu_reaches_function(function_dir: Path):
    eu_stack = build(base_config(mixpanelRegion="EU"), function_dir)
    environment = function_inputs(eu_stack)["serviceConfig"]["environmentVariables"]
    assert environment["MIXPANEL_REGION"] == "eu", "forwarder-function region"


def test_tuning_values_reach_resources(function_dir: Path):
    tuned = build(
        base_config(
            maxDeliveryAttempts="20",
            minimumBackoffSeconds="5",
            maximumBackoffSeconds="120",
            ackDeadlineSeconds="500",
            functionTimeoutSeconds="400",
            retryDeadlineSeconds="300",
            requestTimeoutSeconds="60",
            functionMemory="1Gi",
            functionCpu="1",
            maxInstances="40",
            instanceConcurrency="4",
            deadLetterRetentionDays="7",
            logLevel="warning",
        ),
        function_dir,
    )
    push = tuned.one(SUBSCRIPTION, "events-push")
    retained = tuned.one(SUBSCRIPTION, "dead-letter-kept")
    service_config = function_inputs(tuned)["serviceConfig"]
    environment = service_config["environmentVariables"]

    assert push.inputs["deadLetterPolicy"]["maxDeliveryAttempts"] == 20, push.name
    assert push.inputs["retryPolicy"] == {
        "minimumBackoff": "5s",
        "maximumBackoff": "120s",
    }, push.name
    assert push.inputs["ackDeadlineSeconds"] == 500, push.name
    assert retained.inputs["messageRetentionDuration"] == f"{7 * 86400}s", retained.name

    assert service_config["timeoutSeconds"] == 400, "forwarder-function timeout"
    assert service_config["availableMemory"] == "1Gi", "forwarder-function memory"
    assert service_config["availableCpu"] == "1", "forwarder-function cpu"
    assert service_config["maxInstanceCount"] == 40, "forwarder-function instances"
    assert service_config["maxInstanceRequestConcurrency"] == 4, "concurrency"

    assert environment["RETRY_DEADLINE_SECONDS"] == "300", "retry deadline"
    assert environment["MIXPANEL_REQUEST_TIMEOUT_SECONDS"] == "60", "request timeout"
    assert environment["LOG_LEVEL"] == "WARNING", "log level"


def test_dev_and_prod_ids_do_not_collide(stack: BuiltStack, function_dir: Path):
    prod = build(base_config(), function_dir, stack="prod")
    dev_names = stack.physical_names()
    prod_names = prod.physical_names()
    shared = {
        name
        for name in dev_names & prod_names
        if not name.startswith("function-source-")
    }
    assert dev_names, "the dev stack chose no resource ids"
    assert not shared, f"dev and prod both use {sorted(shared)}"
    assert prod.one(TOPIC, "events").inputs["name"] == "mp-prod-events"
