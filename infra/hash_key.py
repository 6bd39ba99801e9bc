"""The key that hashes personal properties, in Secret Manager for the function."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from .apis import ProjectApis
from .config import StackConfig

# The secret's id is PREFIX-pii-hash-key.
ID_SUFFIX = "pii-hash-key"
# The function reads the key from this secret environment variable.
HASH_KEY_ENV_VAR = "PII_HASH_KEY"


class PiiHashKey(pulumi.ComponentResource):
    """Stores the HMAC key as a secret version and lets the runtime read it.

    Like the Mixpanel credential, the key reaches Google Cloud only as the
    version's data, and the function reads it from a secret environment
    variable pinned to that version. The program registers this component
    only when `piiHashProperties` is set.
    """

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        apis: ProjectApis,
        runtime_account: gcp.serviceaccount.Account,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("mixpanel-pubsub:infra:PiiHashKey", name, None, opts)
        if cfg.pii.hash_key is None:
            raise ValueError("PiiHashKey needs cfg.pii.hash_key, which is None")
        child = pulumi.ResourceOptions(
            parent=self, depends_on=apis.needed_by("secretmanager")
        )

        # Holds the hash key, replicated wherever Google chooses.
        self.secret = gcp.secretmanager.Secret(
            f"{name}-secret",
            project=cfg.project,
            secret_id=f"{cfg.resource_prefix}-{ID_SUFFIX}",
            replication=gcp.secretmanager.SecretReplicationArgs(
                auto=gcp.secretmanager.SecretReplicationAutoArgs()
            ),
            opts=child,
        )

        # The key itself, taken from the encrypted stack config.
        self.version = gcp.secretmanager.SecretVersion(
            f"{name}-version",
            secret=self.secret.id,
            secret_data=cfg.pii.hash_key,
            opts=child,
        )

        # Lets the function's runtime account read this secret and no other.
        self.runtime_accessor = gcp.secretmanager.SecretIamMember(
            f"{name}-runtime-accessor",
            project=cfg.project,
            secret_id=self.secret.secret_id,
            role="roles/secretmanager.secretAccessor",
            member=runtime_account.member,
            opts=child,
        )

        self.register_outputs(
            {"secretId": self.secret.secret_id, "version": self.version.version}
        )
