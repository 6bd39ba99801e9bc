"""Pub/Sub topics and subscriptions: where events arrive and failures stay."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from .apis import ProjectApis
from .config import StackConfig

SECONDS_PER_DAY = 86_400

# An empty TTL in an expiration policy means the subscription never expires.
# Pub/Sub's default deletes a subscription after 31 days without activity.
NEVER_EXPIRE = ""


class Messaging(pulumi.ComponentResource):
    """Creates the events topic and the dead-letter topic with its subscription.

    It also makes sure the Pub/Sub service agent exists and lets it publish to
    the dead-letter topic, which dead-lettering needs.
    """

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        apis: ProjectApis,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("mixpanel-pubsub:infra:Messaging", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=apis.needed_by("pubsub"))
        prefix = cfg.resource_prefix
        # Failed messages are the only data the pipeline keeps, so a stack can
        # protect their topic and subscription from deletion.
        dead_letter_opts = pulumi.ResourceOptions.merge(
            child, pulumi.ResourceOptions(protect=cfg.protect_dead_letter)
        )

        # The topic that producers publish Mixpanel events to.
        self.events_topic = gcp.pubsub.Topic(
            f"{name}-events",
            project=cfg.project,
            name=f"{prefix}-events",
            opts=child,
        )

        # Where messages go after the last delivery attempt fails, and where
        # the function sends single events that Mixpanel rejects.
        self.dead_letter_topic = gcp.pubsub.Topic(
            f"{name}-dead-letter",
            project=cfg.project,
            name=f"{prefix}-dead-letter",
            opts=dead_letter_opts,
        )

        # Keeps dead-lettered messages until someone pulls them, because
        # Pub/Sub drops messages published to a topic without subscriptions.
        self.dead_letter_subscription = gcp.pubsub.Subscription(
            f"{name}-dead-letter-kept",
            project=cfg.project,
            name=f"{prefix}-dead-letter-kept",
            topic=self.dead_letter_topic.id,
            message_retention_duration=(
                f"{cfg.dead_letter_retention_days * SECONDS_PER_DAY}s"
            ),
            retain_acked_messages=False,
            expiration_policy=gcp.pubsub.SubscriptionExpirationPolicyArgs(
                ttl=NEVER_EXPIRE
            ),
            opts=dead_letter_opts,
        )

        # Creates the Pub/Sub service agent if the project does not have it
        # yet, because the grants below name it and fail without it.
        self.service_agent = gcp.projects.ServiceIdentity(
            f"{name}-pubsub-agent",
            project=cfg.project,
            service="pubsub.googleapis.com",
            opts=child,
        )

        # Lets the service agent move messages to the dead-letter topic after
        # the last delivery attempt.
        self.agent_dead_letter_publisher = gcp.pubsub.TopicIAMMember(
            f"{name}-agent-dead-letter-publisher",
            project=cfg.project,
            topic=self.dead_letter_topic.name,
            role="roles/pubsub.publisher",
            member=self.service_agent.member,
            opts=child,
        )

        self.register_outputs(
            {
                "eventsTopic": self.events_topic.id,
                "deadLetterTopic": self.dead_letter_topic.id,
                "deadLetterSubscription": self.dead_letter_subscription.id,
            }
        )


class PushDelivery(pulumi.ComponentResource):
    """Pushes events to the function, with retries and dead-lettering.

    This is a subscription of its own and not the function's event trigger,
    because a trigger's subscription is managed by Eventarc and cannot carry a
    dead-letter policy.
    """

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        apis: ProjectApis,
        messaging: Messaging,
        push_account: gcp.serviceaccount.Account,
        function: gcp.cloudfunctionsv2.Function,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("mixpanel-pubsub:infra:PushDelivery", name, None, opts)
        agent_member = messaging.service_agent.member
        function_url = function.service_config.apply(lambda service: service.uri)
        run_service = function.service_config.apply(lambda service: service.service)

        # Lets the Pub/Sub service agent sign OIDC tokens as the push account.
        # Projects created before 8 April 2021 need this grant. It is made on
        # the push account alone, never on the project.
        self.agent_token_creator = gcp.serviceaccount.IAMMember(
            f"{name}-agent-token-creator",
            service_account_id=push_account.name,
            role="roles/iam.serviceAccountTokenCreator",
            member=agent_member,
            opts=pulumi.ResourceOptions(parent=self, depends_on=apis.needed_by("iam")),
        )

        # Lets the push account call the function's Cloud Run service, which
        # rejects requests without a token of an account holding run.invoker.
        self.push_invoker = gcp.cloudrunv2.ServiceIamMember(
            f"{name}-push-invoker",
            project=cfg.project,
            location=cfg.region,
            name=run_service,
            role="roles/run.invoker",
            member=push_account.member,
            opts=pulumi.ResourceOptions(parent=self, depends_on=apis.needed_by("run")),
        )

        # Delivers each event to the function and hands messages that keep
        # failing to the dead-letter topic. It depends on the two grants above
        # so that the first pushes are not rejected.
        self.subscription = gcp.pubsub.Subscription(
            f"{name}-events-push",
            project=cfg.project,
            name=f"{cfg.resource_prefix}-events-push",
            topic=messaging.events_topic.id,
            ack_deadline_seconds=cfg.ack_deadline_seconds,
            push_config=gcp.pubsub.SubscriptionPushConfigArgs(
                push_endpoint=function_url,
                oidc_token=gcp.pubsub.SubscriptionPushConfigOidcTokenArgs(
                    service_account_email=push_account.email,
                    audience=function_url,
                ),
            ),
            retry_policy=gcp.pubsub.SubscriptionRetryPolicyArgs(
                minimum_backoff=f"{cfg.minimum_backoff_seconds}s",
                maximum_backoff=f"{cfg.maximum_backoff_seconds}s",
            ),
            dead_letter_policy=gcp.pubsub.SubscriptionDeadLetterPolicyArgs(
                dead_letter_topic=messaging.dead_letter_topic.id,
                max_delivery_attempts=cfg.max_delivery_attempts,
            ),
            expiration_policy=gcp.pubsub.SubscriptionExpirationPolicyArgs(
                ttl=NEVER_EXPIRE
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[
                    *apis.needed_by("pubsub"),
                    self.agent_token_creator,
                    self.push_invoker,
                ],
            ),
        )

        # Lets the service agent acknowledge a message on this subscription
        # when it moves the message to the dead-letter topic.
        self.agent_subscriber = gcp.pubsub.SubscriptionIAMMember(
            f"{name}-agent-subscriber",
            project=cfg.project,
            subscription=self.subscription.name,
            role="roles/pubsub.subscriber",
            member=agent_member,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=apis.needed_by("pubsub")
            ),
        )

        self.register_outputs({"pushSubscription": self.subscription.id})
