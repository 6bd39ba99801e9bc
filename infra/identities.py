"""The service accounts of the pipeline, one per job."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from .apis import ProjectApis
from .config import StackConfig


class ServiceAccounts(pulumi.ComponentResource):
    """Creates the runtime, push and build service accounts.

    Each account does one job, so each has only the roles of that job. The
    roles themselves are granted next to the resources they apply to.
    """

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        apis: ProjectApis,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("mixpanel-pubsub:infra:ServiceAccounts", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=apis.needed_by("iam"))
        prefix = cfg.resource_prefix

        # The identity the function runs as: it reads the Mixpanel credential
        # and publishes events that Mixpanel rejects to the dead-letter topic.
        self.runtime = gcp.serviceaccount.Account(
            f"{name}-runtime",
            project=cfg.project,
            account_id=f"{prefix}-run",
            display_name=f"Mixpanel forwarder runtime ({cfg.stack})",
            opts=child,
        )

        # The identity in the OIDC token that the push subscription sends, so
        # the function's Cloud Run service can require authenticated calls.
        self.push = gcp.serviceaccount.Account(
            f"{name}-push",
            project=cfg.project,
            account_id=f"{prefix}-push",
            display_name=f"Mixpanel forwarder push invoker ({cfg.stack})",
            opts=child,
        )

        # The identity Cloud Build uses to build the function. Google changed
        # which account builds run as by default (July 2024), so the rights of
        # the default account cannot be assumed and this one gets its own.
        self.build = gcp.serviceaccount.Account(
            f"{name}-build",
            project=cfg.project,
            account_id=f"{prefix}-build",
            display_name=f"Mixpanel forwarder function build ({cfg.stack})",
            opts=child,
        )

        self.register_outputs(
            {
                "runtimeEmail": self.runtime.email,
                "pushEmail": self.push.email,
                "buildEmail": self.build.email,
            }
        )
