"""The Mixpanel credential in Secret Manager, readable by the function alone."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from .apis import ProjectApis
from .config import CredentialKind, StackConfig

SECRET_SUFFIXES = {
    CredentialKind.SERVICE_ACCOUNT: "mixpanel-service-account-secret",
    CredentialKind.PROJECT_TOKEN: "mixpanel-project-token",
}


class MixpanelSecret(pulumi.ComponentResource):
    """Stores the credential as a secret version and lets the runtime read it.

    The credential reaches Google Cloud only as the version's data. The
    function reads it from a secret environment variable pinned to that
    version, so a new credential creates a new version and rolls out a new
    function revision.
    """

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        apis: ProjectApis,
        runtime_account: gcp.serviceaccount.Account,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("mixpanel-pubsub:infra:MixpanelSecret", name, None, opts)
        child = pulumi.ResourceOptions(
            parent=self, depends_on=apis.needed_by("secretmanager")
        )
        credential = cfg.credential

        self.secret, self.version, self.runtime_accessor = add_runtime_secret(
            name,
            project=cfg.project,
            secret_id=f"{cfg.resource_prefix}-{SECRET_SUFFIXES[credential.kind]}",
            value=credential.value,
            runtime_account=runtime_account,
            opts=child,
        )

        self.register_outputs(
            {"secretId": self.secret.secret_id, "version": self.version.version}
        )


def add_runtime_secret(
    name: str,
    *,
    project: str,
    secret_id: str,
    value: pulumi.Input[str],
    runtime_account: gcp.serviceaccount.Account,
    opts: pulumi.ResourceOptions,
) -> tuple[
    gcp.secretmanager.Secret,
    gcp.secretmanager.SecretVersion,
    gcp.secretmanager.SecretIamMember,
]:
    """Register a secret, its version holding `value`, and the runtime's access.

    Returns:
        The secret, its version, and the runtime account's accessor grant.
    """
    # Holds the value, replicated wherever Google chooses.
    secret = gcp.secretmanager.Secret(
        f"{name}-secret",
        project=project,
        secret_id=secret_id,
        replication=gcp.secretmanager.SecretReplicationArgs(
            auto=gcp.secretmanager.SecretReplicationAutoArgs()
        ),
        opts=opts,
    )

    # The value itself, taken from the encrypted stack config.
    version = gcp.secretmanager.SecretVersion(
        f"{name}-version", secret=secret.id, secret_data=value, opts=opts
    )

    # Lets the function's runtime account read this secret and no other.
    accessor = gcp.secretmanager.SecretIamMember(
        f"{name}-runtime-accessor",
        project=project,
        secret_id=secret.secret_id,
        role="roles/secretmanager.secretAccessor",
        member=runtime_account.member,
        opts=opts,
    )
    return secret, version, accessor
