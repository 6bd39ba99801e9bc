"""The forwarding function: its source, its build, and what it may touch."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pulumi_gcp as gcp

from .apis import ProjectApis
from .archive import source_archive
from .config import StackConfig
from .credentials import MixpanelSecret
from .hash_key import HASH_KEY_ENV_VAR, PiiHashKey
from .identities import ServiceAccounts
from .messaging import Messaging

RUNTIME = "python312"
ENTRY_POINT = "forward"

# Cloud Run's "Internal" ingress admits Pub/Sub push requests from the same
# project (or VPC Service Controls perimeter) when they target the default
# run.app URL, which the push subscription uses. Requests from the internet
# cannot reach the function. Source: the Internal row of the settings table in
# https://cloud.google.com/run/docs/securing/ingress (1st gen functions
# differ, because there internal-only ingress blocks Pub/Sub push).
# NOTE: not yet exercised by a deploy. If pushes fail with 404 or 403 while
# run.invoker is granted, switch to ALLOW_ALL, which keeps the OIDC check.
INGRESS = "ALLOW_INTERNAL_ONLY"

# Images kept per package in the build repository beyond the age limit.
KEPT_IMAGE_VERSIONS = 5
IMAGE_MAX_AGE = f"{30 * 86_400}s"


class Forwarder(pulumi.ComponentResource):
    """Packages `function/`, builds it with its own account, and deploys it.

    Args:
        name: Logical name, the prefix of every child's name.
        cfg: The validated stack configuration.
        apis: The enabled APIs, for `depends_on`.
        accounts: The runtime and build service accounts.
        messaging: The dead-letter topic the function publishes to.
        secret: The credential's secret and version.
        function_dir: The directory whose files become the function source.
        hash_key: The PII hash key's secret and version, when properties are
            hashed.
    """

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        apis: ProjectApis,
        accounts: ServiceAccounts,
        messaging: Messaging,
        secret: MixpanelSecret,
        function_dir: Path,
        hash_key: PiiHashKey | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("mixpanel-pubsub:infra:Forwarder", name, None, opts)
        object_name, archive = source_archive(function_dir)
        storage = pulumi.ResourceOptions(
            parent=self, depends_on=apis.needed_by("storage")
        )
        registry = pulumi.ResourceOptions(
            parent=self, depends_on=apis.needed_by("artifactregistry")
        )
        project_iam = pulumi.ResourceOptions(
            parent=self, depends_on=apis.needed_by("cloudresourcemanager")
        )
        build_member = accounts.build.member

        # Holds the uploaded source archives. Bucket names are global, so the
        # project id is part of the name.
        self.source_bucket = gcp.storage.Bucket(
            f"{name}-source",
            project=cfg.project,
            name=f"{cfg.project}-{cfg.resource_prefix}-source",
            location=cfg.region,
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            force_destroy=True,
            opts=storage,
        )

        # The zipped source, named after its content so that any change to
        # `function/` uploads a new object and rebuilds the function.
        self.source_object = gcp.storage.BucketObject(
            f"{name}-source-archive",
            bucket=self.source_bucket.name,
            name=object_name,
            source=archive,
            opts=storage,
        )

        # Receives the images the build produces, so the build account can be
        # given write access to this repository alone.
        self.image_repository = gcp.artifactregistry.Repository(
            f"{name}-images",
            project=cfg.project,
            location=cfg.region,
            repository_id=f"{cfg.resource_prefix}-functions",
            format="DOCKER",
            description="Images of the Mixpanel forwarder function",
            cleanup_policies=image_cleanup_policies(),
            opts=registry,
        )

        build_grants = self._grant_build_roles(
            name, cfg, build_member, storage, registry, project_iam
        )

        # Lets the function publish events that Mixpanel rejects to the
        # dead-letter topic, which is the only topic it may publish to.
        self.runtime_dead_letter_publisher = gcp.pubsub.TopicIAMMember(
            f"{name}-runtime-dead-letter-publisher",
            project=cfg.project,
            topic=messaging.dead_letter_topic.name,
            role="roles/pubsub.publisher",
            member=accounts.runtime.member,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=apis.needed_by("pubsub")
            ),
        )

        # The forwarder itself. It depends on every grant it uses while it is
        # built and while it runs, so `pulumi destroy` deletes it before them.
        # NOTE: IAM changes can take minutes to propagate, so the first build
        # on a new project may fail. Rerunning `pulumi up` later retries it.
        self.function = gcp.cloudfunctionsv2.Function(
            f"{name}-function",
            project=cfg.project,
            location=cfg.region,
            name=f"{cfg.resource_prefix}-forwarder",
            description="Forwards Pub/Sub push messages to the Mixpanel Import API",
            build_config=gcp.cloudfunctionsv2.FunctionBuildConfigArgs(
                runtime=RUNTIME,
                entry_point=ENTRY_POINT,
                service_account=accounts.build.name,
                docker_repository=self.image_repository.id,
                source=gcp.cloudfunctionsv2.FunctionBuildConfigSourceArgs(
                    storage_source=(
                        gcp.cloudfunctionsv2.FunctionBuildConfigSourceStorageSourceArgs(
                            bucket=self.source_bucket.name,
                            object=self.source_object.name,
                        )
                    )
                ),
            ),
            service_config=gcp.cloudfunctionsv2.FunctionServiceConfigArgs(
                service_account_email=accounts.runtime.email,
                timeout_seconds=cfg.function_timeout_seconds,
                available_memory=cfg.function_memory,
                available_cpu=cfg.function_cpu,
                max_instance_count=cfg.max_instances,
                max_instance_request_concurrency=cfg.instance_concurrency,
                ingress_settings=INGRESS,
                all_traffic_on_latest_revision=True,
                environment_variables=plain_environment(cfg, messaging),
                secret_environment_variables=secret_environment(cfg, secret, hash_key),
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[
                    *apis.needed_by(
                        "cloudfunctions", "run", "cloudbuild", "artifactregistry"
                    ),
                    *build_grants,
                    secret.runtime_accessor,
                    *([hash_key.runtime_accessor] if hash_key else []),
                    self.runtime_dead_letter_publisher,
                ],
            ),
        )

        self.url = self.function.service_config.apply(lambda service: service.uri)
        self.register_outputs({"functionName": self.function.name, "url": self.url})

    def _grant_build_roles(
        self,
        name: str,
        cfg: StackConfig,
        build_member: pulumi.Output[str],
        storage: pulumi.ResourceOptions,
        registry: pulumi.ResourceOptions,
        project_iam: pulumi.ResourceOptions,
    ) -> list[pulumi.Resource]:
        """Grant the build account what Cloud Build needs, and return the grants.

        Cloud Build reads the source, writes logs and pushes the image.
        """
        # Lets the build read the uploaded archive in the source bucket.
        source_reader = gcp.storage.BucketIAMMember(
            f"{name}-build-source-reader",
            bucket=self.source_bucket.name,
            role="roles/storage.objectViewer",
            member=build_member,
            opts=storage,
        )

        # Lets the build fetch the copy of the source that Cloud Functions
        # stages in its own gcf-v2-sources-NUMBER-REGION bucket. That bucket
        # appears only on the first deploy, so no bucket-level grant can come
        # first. The condition limits this project grant to those buckets.
        staged_source_reader = gcp.projects.IAMMember(
            f"{name}-build-staged-source-reader",
            project=cfg.project,
            role="roles/storage.objectViewer",
            member=build_member,
            condition=gcp.projects.IAMMemberConditionArgs(
                title="Cloud Functions source buckets only",
                description="Buckets named gcf-v2-sources-*",
                expression=(
                    'resource.name.startsWith("projects/_/buckets/gcf-v2-sources-")'
                ),
            ),
            opts=project_iam,
        )

        # Lets the build write its logs. Log entries have no resource narrower
        # than the project to grant this on.
        log_writer = gcp.projects.IAMMember(
            f"{name}-build-log-writer",
            project=cfg.project,
            role="roles/logging.logWriter",
            member=build_member,
            opts=project_iam,
        )

        # Lets the build push the function image, to this repository alone.
        image_writer = gcp.artifactregistry.RepositoryIamMember(
            f"{name}-build-image-writer",
            project=cfg.project,
            location=cfg.region,
            repository=self.image_repository.name,
            role="roles/artifactregistry.writer",
            member=build_member,
            opts=registry,
        )

        return [source_reader, staged_source_reader, log_writer, image_writer]


def image_cleanup_policies() -> list[gcp.artifactregistry.RepositoryCleanupPolicyArgs]:
    """Return policies that delete old images but keep the most recent ones.

    When a version matches both a keep and a delete policy, Artifact Registry
    keeps it, so the newest images, including the one the function runs,
    survive the age limit.
    """
    registry = gcp.artifactregistry
    keep_recent = registry.RepositoryCleanupPolicyArgs(
        id="keep-recent",
        action="KEEP",
        most_recent_versions=registry.RepositoryCleanupPolicyMostRecentVersionsArgs(
            keep_count=KEPT_IMAGE_VERSIONS
        ),
    )
    delete_old = registry.RepositoryCleanupPolicyArgs(
        id="delete-old",
        action="DELETE",
        condition=registry.RepositoryCleanupPolicyConditionArgs(
            tag_state="ANY", older_than=IMAGE_MAX_AGE
        ),
    )
    return [keep_recent, delete_old]


def plain_environment(
    cfg: StackConfig, messaging: Messaging
) -> dict[str, pulumi.Input[str]]:
    """Return the function's environment variables other than the secrets."""
    environment: dict[str, pulumi.Input[str]] = {
        "MIXPANEL_PROJECT_ID": cfg.mixpanel_project_id,
        "MIXPANEL_REGION": cfg.mixpanel_region,
        "DEAD_LETTER_TOPIC": messaging.dead_letter_topic.id,
        "RETRY_DEADLINE_SECONDS": str(cfg.retry_deadline_seconds),
        "MIXPANEL_REQUEST_TIMEOUT_SECONDS": str(cfg.request_timeout_seconds),
        "LOG_LEVEL": cfg.log_level,
    }
    if cfg.credential.username is not None:
        environment["MIXPANEL_SERVICE_ACCOUNT_USERNAME"] = cfg.credential.username
    # The PII variables appear only when set, and the function's defaults
    # (nothing dropped or hashed, no IP address kept) apply without them.
    if cfg.pii.drop_properties:
        environment["PII_DROP_PROPERTIES"] = ",".join(cfg.pii.drop_properties)
    if cfg.pii.hash_properties:
        environment["PII_HASH_PROPERTIES"] = ",".join(cfg.pii.hash_properties)
    if cfg.pii.keep_ip_address:
        environment["PII_KEEP_IP"] = "true"
    return environment


def secret_environment(
    cfg: StackConfig, secret: MixpanelSecret, hash_key: PiiHashKey | None
) -> list[gcp.cloudfunctionsv2.FunctionServiceConfigSecretEnvironmentVariableArgs]:
    """Return the secret variables: the credential, then the hash key if any.

    Each is pinned to its version, so a new value rolls out a new revision.
    """
    pinned = [(cfg.credential.env_var, secret.secret, secret.version)]
    if hash_key is not None:
        pinned.append((HASH_KEY_ENV_VAR, hash_key.secret, hash_key.version))
    return [
        gcp.cloudfunctionsv2.FunctionServiceConfigSecretEnvironmentVariableArgs(
            key=env_var,
            project_id=cfg.project,
            secret=stored.secret_id,
            version=version.version,
        )
        for env_var, stored, version in pinned
    ]
