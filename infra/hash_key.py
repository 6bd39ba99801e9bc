"""The key that hashes personal properties, in Secret Manager for the function."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from .apis import ProjectApis
from .config import StackConfig
from .credentials import add_runtime_secret

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

        self.secret, self.version, self.runtime_accessor = add_runtime_secret(
            name,
            project=cfg.project,
            secret_id=f"{cfg.resource_prefix}-{ID_SUFFIX}",
            value=cfg.pii.hash_key,
            runtime_account=runtime_account,
            opts=child,
        )

        self.register_outputs(
            {"secretId": self.secret.secret_id, "version": self.version.version}
        )
