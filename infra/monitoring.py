"""Alerts, log-based metrics and a dashboard for the pipeline.

Three alert policies watch Google's own metrics: dead letters waiting on the
dead-letter subscription, the age of the push subscription's oldest
unacknowledged message, and the share of the function's responses that are
not 2xx. Three log-based metrics count what the function's JSON log lines
report, and one dashboard charts them next to the backlog, latency and
instance count.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp

from .apis import ProjectApis
from .config import StackConfig
from .messaging import Messaging, PushDelivery

# Metric types that Google Cloud writes for Pub/Sub subscriptions and for
# Cloud Run services, which 2nd gen functions run on.
UNDELIVERED_MESSAGES = "pubsub.googleapis.com/subscription/num_undelivered_messages"
OLDEST_UNACKED_AGE = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"
REQUEST_COUNT = "run.googleapis.com/request_count"
REQUEST_LATENCIES = "run.googleapis.com/request_latencies"
INSTANCE_COUNT = "run.googleapis.com/container/instance_count"
GOOGLE_METRICS = frozenset(
    {
        UNDELIVERED_MESSAGES,
        OLDEST_UNACKED_AGE,
        REQUEST_COUNT,
        REQUEST_LATENCIES,
        INSTANCE_COUNT,
    }
)

# A log-based metric named NAME has the metric type USER_METRIC_PREFIX + NAME.
USER_METRIC_PREFIX = "logging.googleapis.com/user/"

# The `message` of the function's log lines that the metrics read, from
# function/forwarder/handler.py and function/forwarder/retry.py.
FORWARDED_MESSAGE = "message forwarded"
DEAD_LETTERED_BY_CODE_MESSAGE = "events dead-lettered by error code"
RETRY_MESSAGE_PART = "retrying in"

# Alerts align Pub/Sub's metrics, which are sampled once a minute, to one
# minute, and the error rate to five minutes, so that a single failed push
# among few does not raise it.
ALIGNMENT_PERIOD = "60s"
ERROR_RATE_ALIGNMENT_PERIOD = "300s"

# Exponential buckets with bounds 1, 2, 4, ... 65,536 for the events of one
# message.
COUNT_BUCKETS = gcp.logging.MetricBucketOptionsArgs(
    exponential_buckets=gcp.logging.MetricBucketOptionsExponentialBucketsArgs(
        num_finite_buckets=16, growth_factor=2, scale=1
    )
)

CONSOLE_DASHBOARD_URL = (
    "https://console.cloud.google.com/monitoring/dashboards/builder/"
    "{id}?project={project}"
)


@dataclass(frozen=True)
class LogMetricSpec:
    """Definition of one log-based metric: its log lines, value and labels."""

    key: str
    description: str
    message_filter: str
    value_type: str  # INT64 counts entries, DISTRIBUTION records a value
    value_extractor: str | None
    labels: Mapping[str, tuple[str, str]]  # label: (extractor, description)


LOG_METRICS = (
    LogMetricSpec(
        key="events_imported",
        description=(
            "Events the function imported into Mixpanel, one value per "
            "forwarded message; the sum is the number of events"
        ),
        message_filter=f'jsonPayload.message="{FORWARDED_MESSAGE}"',
        value_type="DISTRIBUTION",
        value_extractor="EXTRACT(jsonPayload.imported)",
        labels={},
    ),
    LogMetricSpec(
        key="events_dead_lettered",
        description=(
            "Events the function published to the dead-letter topic, by the "
            "`error` code of their dead letter; the sum is the number of events"
        ),
        message_filter=f'jsonPayload.message="{DEAD_LETTERED_BY_CODE_MESSAGE}"',
        value_type="DISTRIBUTION",
        value_extractor="EXTRACT(jsonPayload.dead_lettered)",
        labels={"error": ("EXTRACT(jsonPayload.error)", "The dead letter's `error`")},
    ),
    LogMetricSpec(
        key="requests_retried",
        description=(
            "Requests to Mixpanel or Pub/Sub that the function retried, by call "
            "and HTTP status (empty for timeouts and failed connections)"
        ),
        message_filter=(
            f'jsonPayload.message:"{RETRY_MESSAGE_PART}" AND '
            "jsonPayload.retry:* AND jsonPayload.attempt:*"
        ),
        value_type="INT64",
        value_extractor=None,
        labels={
            "call": ("EXTRACT(jsonPayload.retry)", "The call retried"),
            "status": ("EXTRACT(jsonPayload.status)", "HTTP status that failed"),
        },
    ),
)


class Monitoring(pulumi.ComponentResource):
    """Creates the alert policies, log-based metrics and dashboard.

    Args:
        name: Logical name, the prefix of every child's name.
        cfg: The validated stack configuration.
        apis: The enabled APIs, for `depends_on`.
        messaging: The dead-letter subscription to watch.
        delivery: The push subscription to watch.
        function: The forwarding function, whose Cloud Run service is watched.
    """

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        apis: ProjectApis,
        messaging: Messaging,
        delivery: PushDelivery,
        function: gcp.cloudfunctionsv2.Function,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("mixpanel-pubsub:infra:Monitoring", name, None, opts)
        monitoring_options = pulumi.ResourceOptions(
            parent=self, depends_on=apis.needed_by("monitoring")
        )
        service_name = function.service_config.apply(
            lambda service: service.service.rsplit("/", 1)[-1]
        )
        push_subscription = delivery.subscription.name
        dead_letter_subscription = messaging.dead_letter_subscription.name

        # One email channel per configured address. Without any, the policies
        # still open incidents in the console but send no notification.
        self.channels = [
            gcp.monitoring.NotificationChannel(
                f"{name}-email-{_address_key(address)}",
                project=cfg.project,
                type="email",
                display_name=f"{cfg.resource_prefix} alerts to {address}",
                labels={"email_address": address},
                opts=monitoring_options,
            )
            for address in cfg.alert_emails
        ]
        channel_names = [channel.name for channel in self.channels]

        # Counts what the function's log lines report. Each metric reads the
        # JSON fields of one kind of line from the function's Cloud Run service.
        self.log_metrics = {
            spec.key: gcp.logging.Metric(
                f"{name}-{spec.key.replace('_', '-')}",
                project=cfg.project,
                name=log_metric_name(cfg.resource_prefix, spec.key),
                description=spec.description,
                filter=service_name.apply(
                    lambda service, spec=spec: log_filter(service, spec.message_filter)
                ),
                metric_descriptor=gcp.logging.MetricMetricDescriptorArgs(
                    metric_kind="DELTA",
                    value_type=spec.value_type,
                    unit="1",
                    labels=[
                        gcp.logging.MetricMetricDescriptorLabelArgs(
                            key=label, value_type="STRING", description=description
                        )
                        for label, (_extractor, description) in spec.labels.items()
                    ],
                ),
                value_extractor=spec.value_extractor,
                label_extractors={
                    label: extractor
                    for label, (extractor, _description) in spec.labels.items()
                },
                bucket_options=(
                    COUNT_BUCKETS if spec.value_type == "DISTRIBUTION" else None
                ),
                opts=pulumi.ResourceOptions(
                    parent=self, depends_on=apis.needed_by("logging")
                ),
            )
            for spec in LOG_METRICS
        }

        self.alert_policies = self._alert_policies(
            name,
            cfg,
            channel_names,
            service_name,
            push_subscription,
            dead_letter_subscription,
            monitoring_options,
        )

        # Charts the log-based metrics beside Google's metrics of the two
        # subscriptions and the function's service.
        metric_types = {
            spec.key: USER_METRIC_PREFIX
            + log_metric_name(cfg.resource_prefix, spec.key)
            for spec in LOG_METRICS
        }
        self.dashboard = gcp.monitoring.Dashboard(
            f"{name}-dashboard",
            project=cfg.project,
            dashboard_json=pulumi.Output.all(
                service_name, push_subscription, dead_letter_subscription
            ).apply(
                lambda names: json.dumps(
                    dashboard_definition(
                        title=f"Mixpanel forwarder ({cfg.resource_prefix})",
                        service=names[0],
                        push_subscription=names[1],
                        dead_letter_subscription=names[2],
                        metric_types=metric_types,
                        oldest_unacked_alert_seconds=cfg.oldest_unacked_alert_seconds,
                    ),
                    indent=2,
                )
            ),
            opts=pulumi.ResourceOptions.merge(
                monitoring_options,
                pulumi.ResourceOptions(depends_on=list(self.log_metrics.values())),
            ),
        )
        self.dashboard_url = self.dashboard.id.apply(
            lambda dashboard_id: CONSOLE_DASHBOARD_URL.format(
                id=dashboard_id.rsplit("/", 1)[-1], project=cfg.project
            )
        )

        self.register_outputs({"dashboardUrl": self.dashboard_url})

    def _alert_policies(
        self,
        name: str,
        cfg: StackConfig,
        channel_names: Sequence[pulumi.Output[str]],
        service_name: pulumi.Output[str],
        push_subscription: pulumi.Output[str],
        dead_letter_subscription: pulumi.Output[str],
        monitoring_options: pulumi.ResourceOptions,
    ) -> dict[str, gcp.monitoring.AlertPolicy]:
        prefix = cfg.resource_prefix
        policies: dict[str, gcp.monitoring.AlertPolicy] = {}

        # Fires as soon as one dead letter waits, because each contains events
        # that Mixpanel has not imported.
        policies["dead-letters"] = _threshold_policy(
            f"{name}-dead-letters",
            cfg,
            display_name=f"{prefix}: dead letters waiting",
            severity="ERROR",
            filter_=dead_letter_subscription.apply(
                lambda sub: subscription_filter(UNDELIVERED_MESSAGES, sub)
            ),
            threshold=0,
            documentation=dead_letter_subscription.apply(
                lambda sub: (
                    f"Messages wait on the dead-letter subscription {sub}. Read "
                    "their `error` attribute with `python -m ops export -o "
                    "dead.ndjson`, fix the cause, then run `python -m ops replay`. "
                    "The repository's docs/RUNBOOK.md has the steps."
                )
            ),
            channel_names=channel_names,
            opts=monitoring_options,
        )

        # Fires when the push subscription keeps a message longer than
        # oldestUnackedAlertSeconds: the function keeps failing it or cannot
        # keep up.
        policies["push-backlog"] = _threshold_policy(
            f"{name}-push-backlog",
            cfg,
            display_name=(
                f"{prefix}: events older than {cfg.oldest_unacked_alert_seconds} s "
                "not delivered"
            ),
            severity="WARNING",
            filter_=push_subscription.apply(
                lambda sub: subscription_filter(OLDEST_UNACKED_AGE, sub)
            ),
            threshold=cfg.oldest_unacked_alert_seconds,
            documentation=push_subscription.apply(
                lambda sub: (
                    f"The oldest message on the push subscription {sub} is older "
                    f"than {cfg.oldest_unacked_alert_seconds} s. Check the "
                    "function's responses and retries on the dashboard, and its "
                    "error logs; docs/RUNBOOK.md lists the usual causes."
                )
            ),
            channel_names=channel_names,
            opts=monitoring_options,
        )

        # Fires when more than errorRateAlertPercent of the function's
        # responses in five minutes are not 2xx, which Pub/Sub redelivers.
        policies["error-rate"] = _threshold_policy(
            f"{name}-error-rate",
            cfg,
            display_name=(
                f"{prefix}: over {cfg.error_rate_alert_percent}% of pushes failing"
            ),
            severity="ERROR",
            filter_=service_name.apply(
                lambda service: (
                    service_filter(REQUEST_COUNT, service)
                    + ' AND metric.labels.response_code_class!="2xx"'
                )
            ),
            denominator_filter=service_name.apply(
                lambda service: service_filter(REQUEST_COUNT, service)
            ),
            threshold=cfg.error_rate_alert_percent / 100,
            alignment_period=ERROR_RATE_ALIGNMENT_PERIOD,
            aligner="ALIGN_RATE",
            documentation=service_name.apply(
                lambda service: (
                    f"More than {cfg.error_rate_alert_percent}% of the responses of "
                    f"the Cloud Run service {service} are not 2xx. Its error logs "
                    "name the cause: a rejected credential, a wrong data residency "
                    "region, or Mixpanel or Pub/Sub failing. docs/RUNBOOK.md has "
                    "the fixes."
                )
            ),
            channel_names=channel_names,
            opts=monitoring_options,
        )
        return policies


def _threshold_policy(
    resource_name: str,
    cfg: StackConfig,
    *,
    display_name: str,
    severity: str,
    filter_: pulumi.Input[str],
    threshold: float,
    documentation: pulumi.Input[str],
    channel_names: Sequence[pulumi.Output[str]],
    opts: pulumi.ResourceOptions,
    denominator_filter: pulumi.Input[str] | None = None,
    alignment_period: str = ALIGNMENT_PERIOD,
    aligner: str = "ALIGN_MAX",
) -> gcp.monitoring.AlertPolicy:
    """Register a policy with one condition: the series above `threshold`.

    With `denominator_filter`, the condition compares the ratio of the two
    filters' series, each summed over all of its series.
    """
    aggregation = gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
        alignment_period=alignment_period,
        per_series_aligner=aligner,
        cross_series_reducer="REDUCE_SUM",
    )
    denominator = None
    if denominator_filter is not None:
        denominator = [
            gcp.monitoring.AlertPolicyConditionConditionThresholdDenominatorAggregationArgs(
                alignment_period=alignment_period,
                per_series_aligner=aligner,
                cross_series_reducer="REDUCE_SUM",
            )
        ]
    return gcp.monitoring.AlertPolicy(
        resource_name,
        project=cfg.project,
        display_name=display_name,
        combiner="OR",
        severity=severity,
        conditions=[
            gcp.monitoring.AlertPolicyConditionArgs(
                display_name=display_name,
                condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
                    filter=filter_,
                    denominator_filter=denominator_filter,
                    aggregations=[aggregation],
                    denominator_aggregations=denominator,
                    comparison="COMPARISON_GT",
                    threshold_value=threshold,
                    duration="0s",
                    trigger=gcp.monitoring.AlertPolicyConditionConditionThresholdTriggerArgs(
                        count=1
                    ),
                ),
            )
        ],
        documentation=gcp.monitoring.AlertPolicyDocumentationArgs(
            content=documentation, mime_type="text/markdown"
        ),
        notification_channels=list(channel_names),
        opts=opts,
    )


def log_metric_name(prefix: str, key: str) -> str:
    """Return the id of a log-based metric, such as mp-dev/events_imported."""
    return f"{prefix}/{key}"


def log_filter(service: str, message_filter: str) -> str:
    """Return a Logging query for one kind of the function's log lines."""
    return (
        'resource.type="cloud_run_revision" AND '
        f'resource.labels.service_name="{service}" AND {message_filter}'
    )


def subscription_filter(metric_type: str, subscription_id: str) -> str:
    """Return a Monitoring filter for a Pub/Sub metric of one subscription."""
    return (
        f'metric.type="{metric_type}" AND resource.type="pubsub_subscription" AND '
        f'resource.labels.subscription_id="{subscription_id}"'
    )


def service_filter(metric_type: str, service: str) -> str:
    """Return a Monitoring filter for a Cloud Run metric of one service."""
    return (
        f'metric.type="{metric_type}" AND resource.type="cloud_run_revision" AND '
        f'resource.labels.service_name="{service}"'
    )


def promql_name(metric_type: str) -> str:
    """Return the PromQL name of a Cloud Monitoring metric type.

    Cloud Monitoring's mapping, documented at
    https://cloud.google.com/monitoring/promql/promql-mapping, replaces the
    first "/" with ":" and every other character that PromQL does not allow
    with "_". A distribution metric is queried with the suffix _sum, _count
    or _bucket, like a histogram.
    """
    return re.sub(r"[^A-Za-z0-9_:]", "_", metric_type.replace("/", ":", 1))


def dashboard_definition(
    *,
    title: str,
    service: str,
    push_subscription: str,
    dead_letter_subscription: str,
    metric_types: Mapping[str, str],
    oldest_unacked_alert_seconds: int,
) -> dict[str, Any]:
    """Return the dashboard as the Monitoring API's Dashboard JSON."""
    widgets = [
        *_event_widgets(service, metric_types),
        *_subscription_widgets(
            push_subscription, dead_letter_subscription, oldest_unacked_alert_seconds
        ),
        *_function_widgets(service),
    ]
    return {"displayName": title, "gridLayout": {"columns": "3", "widgets": widgets}}


def _event_widgets(service: str, metric_types: Mapping[str, str]) -> list[dict]:
    """Charts of the log-based metrics: events imported, dead-lettered, retried."""
    imported = promql_name(metric_types["events_imported"])
    dead_lettered = promql_name(metric_types["events_dead_lettered"])
    selector = f'{{service_name="{service}"}}'
    retried = service_filter(metric_types["requests_retried"], service)

    # The filter-based aligners keep a distribution a distribution or reduce
    # it to its mean or percentiles, so the sums of the event metrics come
    # from PromQL's _sum series.
    # NOTE: the PromQL queries are checked here only for the metric names they
    # use; a deployed dashboard is the first place Cloud Monitoring runs them.
    return [
        _promql_chart(
            "Events imported per second",
            f"sum(rate({imported}_sum{selector}[5m]))",
        ),
        _promql_chart(
            "Events dead-lettered per second, by error code",
            f"sum by (error) (rate({dead_lettered}_sum{selector}[5m]))",
        ),
        _filter_chart(
            "Requests retried per second, by call",
            [(retried, "ALIGN_RATE", "REDUCE_SUM", ["metric.label.call"], None)],
        ),
    ]


def _subscription_widgets(
    push_subscription: str, dead_letter_subscription: str, oldest_unacked: int
) -> list[dict]:
    """Charts of the two subscriptions, with the alert thresholds marked."""
    push_backlog = subscription_filter(UNDELIVERED_MESSAGES, push_subscription)
    push_age = subscription_filter(OLDEST_UNACKED_AGE, push_subscription)
    dead_letters = subscription_filter(UNDELIVERED_MESSAGES, dead_letter_subscription)
    return [
        _filter_chart(
            "Push backlog: undelivered messages",
            [(push_backlog, "ALIGN_MAX", None, [], None)],
        ),
        _filter_chart(
            "Oldest unacknowledged message on the push subscription (s)",
            [(push_age, "ALIGN_MAX", None, [], None)],
            threshold=oldest_unacked,
        ),
        _filter_chart(
            "Dead letters waiting",
            [(dead_letters, "ALIGN_MAX", None, [], None)],
            threshold=0,
        ),
    ]


def _function_widgets(service: str) -> list[dict]:
    """Charts of the function's Cloud Run service: responses, latency, instances."""
    requests = service_filter(REQUEST_COUNT, service)
    latencies = service_filter(REQUEST_LATENCIES, service)
    instances = service_filter(INSTANCE_COUNT, service)
    by_class = ["metric.label.response_code_class"]
    return [
        _filter_chart(
            "Function responses per second, by class",
            [(requests, "ALIGN_RATE", "REDUCE_SUM", by_class, None)],
        ),
        _filter_chart(
            "Function latency (ms)",
            [
                (latencies, "ALIGN_DELTA", f"REDUCE_PERCENTILE_{p}", [], f"p{p}")
                for p in (50, 95, 99)
            ],
        ),
        _filter_chart(
            "Function instances, by state",
            [(instances, "ALIGN_MAX", "REDUCE_SUM", ["metric.label.state"], None)],
        ),
    ]


def _filter_chart(
    title: str,
    series: Sequence[tuple[str, str, str | None, list[str], str | None]],
    threshold: float | None = None,
) -> dict[str, Any]:
    """Return a line chart of (filter, aligner, reducer, group by, legend) series."""
    data_sets = []
    for filter_, aligner, reducer, group_by, legend in series:
        aggregation: dict[str, Any] = {
            "alignmentPeriod": ALIGNMENT_PERIOD,
            "perSeriesAligner": aligner,
        }
        if reducer is not None:
            aggregation["crossSeriesReducer"] = reducer
            aggregation["groupByFields"] = group_by
        data_set: dict[str, Any] = {
            "timeSeriesQuery": {
                "timeSeriesFilter": {"filter": filter_, "aggregation": aggregation}
            },
            "plotType": "LINE",
        }
        if legend is not None:
            data_set["legendTemplate"] = legend
        data_sets.append(data_set)
    chart: dict[str, Any] = {"dataSets": data_sets}
    if threshold is not None:
        chart["thresholds"] = [
            {"label": "alert", "value": threshold, "color": "RED", "direction": "ABOVE"}
        ]
    return {"title": title, "xyChart": chart}


def _promql_chart(title: str, query: str) -> dict[str, Any]:
    return {
        "title": title,
        "xyChart": {
            "dataSets": [
                {"timeSeriesQuery": {"prometheusQuery": query}, "plotType": "LINE"}
            ]
        },
    }


def _address_key(address: str) -> str:
    """Return a short stable key for an address, for a resource name.

    The key depends on the address alone, so reordering alertEmails changes
    no channel.
    """
    return hashlib.sha256(address.lower().encode()).hexdigest()[:8]
