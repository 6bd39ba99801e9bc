"""The Google Cloud APIs that the stack's resources need."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_gcp as gcp

# Short name, API, and why the stack needs it.
APIS: dict[str, tuple[str, str]] = {
    "pubsub": ("pubsub.googleapis.com", "topics, subscriptions, the service agent"),
    "secretmanager": ("secretmanager.googleapis.com", "the Mixpanel credential"),
    "cloudfunctions": ("cloudfunctions.googleapis.com", "the forwarding function"),
    "run": ("run.googleapis.com", "the Cloud Run service behind the function"),
    "cloudbuild": ("cloudbuild.googleapis.com", "building the function source"),
    "artifactregistry": ("artifactregistry.googleapis.com", "the function image"),
    "storage": ("storage.googleapis.com", "the function source bucket"),
    "iam": ("iam.googleapis.com", "service accounts and their IAM policies"),
    "logging": (
        "logging.googleapis.com",
        "build and function logs, and the log-based metrics",
    ),
    "monitoring": (
        "monitoring.googleapis.com",
        "alert policies, notification channels and the dashboard",
    ),
    "cloudresourcemanager": (
        "cloudresourcemanager.googleapis.com",
        "project-level IAM grants",
    ),
}


class ProjectApis(pulumi.ComponentResource):
    """Enables the APIs in `APIS` and hands them out as dependencies."""

    def __init__(
        self,
        name: str,
        project: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("mixpanel-pubsub:infra:ProjectApis", name, None, opts)

        self.services: dict[str, gcp.projects.Service] = {}
        for short_name, (api, _reason) in APIS.items():
            # Enables one API from `APIS` (the reason is listed there). Leaving
            # it enabled on destroy keeps other workloads in the project working.
            self.services[short_name] = gcp.projects.Service(
                f"{name}-{short_name}",
                project=project,
                service=api,
                disable_on_destroy=False,
                opts=pulumi.ResourceOptions(parent=self),
            )

        self.register_outputs(
            {name: service.service for name, service in self.services.items()}
        )

    def needed_by(self, *short_names: str) -> Sequence[pulumi.Resource]:
        """Return the enablements of the named APIs, for `depends_on`."""
        return [self.services[short_name] for short_name in short_names]
