"""Every IAM grant the program makes, as data for docs and tests.

The resources themselves are created next to what they apply to (in
`credentials`, `hash_key`, `forwarder` and `messaging`). A test checks that
this table and the registered IAM resources match one to one, so it stays in
step.
"""

from __future__ import annotations

from dataclasses import dataclass

# The principals that receive roles. PREFIX is the stack's resource prefix
# (mp-STACK by default) and PROJECT_NUMBER the Google Cloud project's number.
RUNTIME_ACCOUNT = "runtime service account PREFIX-run"
PUSH_ACCOUNT = "push service account PREFIX-push"
BUILD_ACCOUNT = "build service account PREFIX-build"
PUBSUB_SERVICE_AGENT = (
    "Pub/Sub service agent service-PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com"
)


@dataclass(frozen=True)
class Grant:
    """One role that one principal receives on one resource.

    `config_key` names the stack configuration key that must be set for the
    program to make the grant, and is None for a grant it always makes.
    """

    member: str
    role: str
    resource: str
    resource_type: str
    reason: str
    config_key: str | None = None


GRANTS: tuple[Grant, ...] = (
    Grant(
        member=RUNTIME_ACCOUNT,
        role="roles/secretmanager.secretAccessor",
        resource="the Mixpanel credential's secret",
        resource_type="gcp:secretmanager/secretIamMember:SecretIamMember",
        reason="The function reads the credential from its secret variable.",
    ),
    Grant(
        member=RUNTIME_ACCOUNT,
        role="roles/secretmanager.secretAccessor",
        resource="the PII hash key's secret, when piiHashProperties is set",
        resource_type="gcp:secretmanager/secretIamMember:SecretIamMember",
        reason=(
            "The function reads the key that hashes properties from its secret "
            "variable."
        ),
        config_key="piiHashProperties",
    ),
    Grant(
        member=RUNTIME_ACCOUNT,
        role="roles/pubsub.publisher",
        resource="the dead-letter topic",
        resource_type="gcp:pubsub/topicIAMMember:TopicIAMMember",
        reason=(
            "The function publishes the events that Mixpanel rejects or that it "
            "cannot decode."
        ),
    ),
    Grant(
        member=PUSH_ACCOUNT,
        role="roles/run.invoker",
        resource="the function's Cloud Run service",
        resource_type="gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
        reason="The service rejects pushes without a token of an invoker.",
    ),
    Grant(
        member=PUBSUB_SERVICE_AGENT,
        role="roles/iam.serviceAccountTokenCreator",
        resource="the push service account",
        resource_type="gcp:serviceaccount/iAMMember:IAMMember",
        reason=(
            "Pub/Sub signs each push's OIDC token as the push account; projects "
            "created before 8 April 2021 need this grant."
        ),
    ),
    Grant(
        member=PUBSUB_SERVICE_AGENT,
        role="roles/pubsub.publisher",
        resource="the dead-letter topic",
        resource_type="gcp:pubsub/topicIAMMember:TopicIAMMember",
        reason="Pub/Sub moves a message there after its last delivery attempt.",
    ),
    Grant(
        member=PUBSUB_SERVICE_AGENT,
        role="roles/pubsub.subscriber",
        resource="the push subscription",
        resource_type="gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember",
        reason="Pub/Sub acknowledges a message that it moves to the dead-letter topic.",
    ),
    Grant(
        member=BUILD_ACCOUNT,
        role="roles/storage.objectViewer",
        resource="the function source bucket",
        resource_type="gcp:storage/bucketIAMMember:BucketIAMMember",
        reason="Cloud Build reads the uploaded source archive.",
    ),
    Grant(
        member=BUILD_ACCOUNT,
        role="roles/storage.objectViewer",
        resource="the project, only for buckets named gcf-v2-sources-*",
        resource_type="gcp:projects/iAMMember:IAMMember",
        reason=(
            "Cloud Build reads the copy of the source that Cloud Functions stages "
            "in a bucket that exists only after the first deploy, so no "
            "bucket-level grant can come first."
        ),
    ),
    Grant(
        member=BUILD_ACCOUNT,
        role="roles/logging.logWriter",
        resource="the project",
        resource_type="gcp:projects/iAMMember:IAMMember",
        reason="Cloud Build writes build logs, which have no narrower resource.",
    ),
    Grant(
        member=BUILD_ACCOUNT,
        role="roles/artifactregistry.writer",
        resource="the function's image repository",
        resource_type="gcp:artifactregistry/repositoryIamMember:RepositoryIamMember",
        reason="Cloud Build pushes the function image.",
    ),
)
