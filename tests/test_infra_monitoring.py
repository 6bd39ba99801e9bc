"""Alert policies, log-based metrics and the dashboard, under Pulumi's mocks.

The last tests run the real function and check that the log-based metrics'
filters and extractors find its log lines, with a small evaluator for the
part of the Logging query language that the metrics use.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from infra_mocks import (
    GCP_PROJECT,
    PROJECT_NUMBER,
    BuiltStack,
    base_config,
    build,
    load,
    make_function_dir,
)

from conftest import load_envelope
from infra.config import ConfigError
from local.mixpanel_standin import Fault

ALERT_POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
CHANNEL = "gcp:monitoring/notificationChannel:NotificationChannel"
LOG_METRIC = "gcp:logging/metric:Metric"
DASHBOARD = "gcp:monitoring/dashboard:Dashboard"

SERVICE = "mp-dev-forwarder"
PUSH_SUBSCRIPTION = "mp-dev-events-push"
DEAD_LETTER_SUBSCRIPTION = "mp-dev-dead-letter-kept"

# The metrics Google Cloud writes that the stack may chart or alert on.
GOOGLE_METRICS = {
    "pubsub.googleapis.com/subscription/num_undelivered_messages",
    "pubsub.googleapis.com/subscription/oldest_unacked_message_age",
    "run.googleapis.com/request_count",
    "run.googleapis.com/request_latencies",
    "run.googleapis.com/container/instance_count",
}

# Enum values of Aggregation in the Monitoring API.
ALIGNERS = {
    "ALIGN_NONE",
    "ALIGN_DELTA",
    "ALIGN_RATE",
    "ALIGN_MIN",
    "ALIGN_MAX",
    "ALIGN_MEAN",
    "ALIGN_COUNT",
    "ALIGN_SUM",
    "ALIGN_PERCENTILE_99",
    "ALIGN_PERCENTILE_95",
    "ALIGN_PERCENTILE_50",
}
REDUCERS = {
    "REDUCE_NONE",
    "REDUCE_MEAN",
    "REDUCE_MIN",
    "REDUCE_MAX",
    "REDUCE_SUM",
    "REDUCE_COUNT",
    "REDUCE_PERCENTILE_99",
    "REDUCE_PERCENTILE_95",
    "REDUCE_PERCENTILE_50",
}

DEAD_LETTER_FILTER = (
    'metric.type="pubsub.googleapis.com/subscription/num_undelivered_messages" '
    'AND resource.type="pubsub_subscription" '
    f'AND resource.labels.subscription_id="{DEAD_LETTER_SUBSCRIPTION}"'
)
OLDEST_UNACKED_FILTER = (
    'metric.type="pubsub.googleapis.com/subscription/oldest_unacked_message_age" '
    'AND resource.type="pubsub_subscription" '
    f'AND resource.labels.subscription_id="{PUSH_SUBSCRIPTION}"'
)
REQUESTS_FILTER = (
    'metric.type="run.googleapis.com/request_count" '
    'AND resource.type="cloud_run_revision" '
    f'AND resource.labels.service_name="{SERVICE}"'
)
FUNCTION_LOGS = (
    f'resource.type="cloud_run_revision" AND resource.labels.service_name="{SERVICE}"'
)


@pytest.fixture(scope="module")
def function_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_function_dir(tmp_path_factory.mktemp("monitoring"))


@pytest.fixture(scope="module")
def stack(function_dir: Path) -> BuiltStack:
    """The dev stack without alert emails."""
    return build(base_config(), function_dir)


@pytest.fixture(scope="module")
def emailed(function_dir: Path) -> BuiltStack:
    """The dev stack with two alert emails and tuned thresholds."""
    return build(
        base_config(
            alertEmails=" oncall@example.com,team@example.org , ",
            oldestUnackedAlertSeconds="900",
            errorRateAlertPercent="12",
        ),
        function_dir,
    )


def policy(stack: BuiltStack, name: str) -> dict:
    return stack.one(ALERT_POLICY, name).inputs


def threshold(stack: BuiltStack, name: str) -> dict:
    (condition,) = policy(stack, name)["conditions"]
    return condition["conditionThreshold"]


def dashboard(stack: BuiltStack) -> dict:
    return json.loads(stack.one(DASHBOARD).inputs["dashboardJson"])


def data_sets(definition: dict) -> list[dict]:
    return [
        data_set
        for widget in definition["gridLayout"]["widgets"]
        if "xyChart" in widget
        for data_set in widget["xyChart"]["dataSets"]
    ]


def log_metric_types(stack: BuiltStack) -> set[str]:
    return {
        f"logging.googleapis.com/user/{r.inputs['name']}"
        for r in stack.of_type(LOG_METRIC)
    }


def promql_name(metric_type: str) -> str:
    """Map a metric type to PromQL as Cloud Monitoring documents it."""
    return re.sub(r"[^A-Za-z0-9_:]", "_", metric_type.replace("/", ":", 1))


# Alert policies


def test_three_alert_policies(stack: BuiltStack):
    names = {r.name for r in stack.of_type(ALERT_POLICY)}
    assert names == {
        "monitoring-dead-letters",
        "monitoring-push-backlog",
        "monitoring-error-rate",
    }


def test_dead_letter_policy_fires_on_one_message(stack: BuiltStack):
    condition = threshold(stack, "dead-letters")
    assert condition["filter"] == DEAD_LETTER_FILTER
    assert condition["comparison"] == "COMPARISON_GT"
    assert condition["thresholdValue"] == 0
    assert condition["duration"] == "0s"
    assert condition["aggregations"] == [
        {
            "alignmentPeriod": "60s",
            "perSeriesAligner": "ALIGN_MAX",
            "crossSeriesReducer": "REDUCE_SUM",
        }
    ]
    assert "denominatorFilter" not in condition
    assert policy(stack, "dead-letters")["severity"] == "ERROR"


def test_push_backlog_policy_default_age(stack: BuiltStack):
    condition = threshold(stack, "push-backlog")
    assert condition["filter"] == OLDEST_UNACKED_FILTER
    assert condition["comparison"] == "COMPARISON_GT"
    assert condition["thresholdValue"] == 600
    assert condition["aggregations"][0]["perSeriesAligner"] == "ALIGN_MAX"
    assert "600 s" in policy(stack, "push-backlog")["displayName"]


def test_push_backlog_policy_configured_age(emailed: BuiltStack):
    condition = threshold(emailed, "push-backlog")
    assert condition["thresholdValue"] == 900
    assert "900 s" in policy(emailed, "push-backlog")["displayName"]


def test_error_rate_policy_is_ratio_of_non_2xx(stack: BuiltStack):
    condition = threshold(stack, "error-rate")
    aggregation = {
        "alignmentPeriod": "300s",
        "perSeriesAligner": "ALIGN_RATE",
        "crossSeriesReducer": "REDUCE_SUM",
    }
    assert condition["filter"] == (
        REQUESTS_FILTER + ' AND metric.labels.response_code_class!="2xx"'
    )
    assert condition["denominatorFilter"] == REQUESTS_FILTER
    assert condition["aggregations"] == [aggregation]
    assert condition["denominatorAggregations"] == [aggregation]
    assert condition["comparison"] == "COMPARISON_GT"
    assert condition["thresholdValue"] == pytest.approx(0.05)


def test_error_rate_policy_configured_percent(emailed: BuiltStack):
    assert threshold(emailed, "error-rate")["thresholdValue"] == pytest.approx(0.12)
    assert "12%" in policy(emailed, "error-rate")["displayName"]


def test_policies_document_the_next_step(stack: BuiltStack):
    for name in ("dead-letters", "push-backlog", "error-rate"):
        documentation = policy(stack, name)["documentation"]
        assert documentation["mimeType"] == "text/markdown", name
        assert "docs/RUNBOOK.md" in documentation["content"], name
    assert (
        "python -m ops replay"
        in policy(stack, "dead-letters")["documentation"]["content"]
    )


# Notification channels


def test_no_emails_means_policies_without_channels(stack: BuiltStack):
    assert stack.of_type(CHANNEL) == []
    for registration in stack.of_type(ALERT_POLICY):
        assert registration.inputs.get("notificationChannels", []) == [], (
            registration.name
        )


def test_each_email_gets_a_channel(emailed: BuiltStack):
    channels = emailed.of_type(CHANNEL)
    addresses = sorted(c.inputs["labels"]["email_address"] for c in channels)
    assert addresses == ["oncall@example.com", "team@example.org"]
    for channel in channels:
        assert channel.inputs["type"] == "email", channel.name
        assert channel.inputs["project"] == GCP_PROJECT, channel.name


def test_every_policy_notifies_every_channel(emailed: BuiltStack):
    channel_names = {
        emailed.nodes[(CHANNEL, c.name)].outputs["name"]
        for c in emailed.of_type(CHANNEL)
    }
    assert len(channel_names) == 2
    for registration in emailed.of_type(ALERT_POLICY):
        notified = set(registration.inputs["notificationChannels"])
        assert notified == channel_names, registration.name
        for name in notified:
            assert name.startswith(f"projects/{PROJECT_NUMBER}/notificationChannels/")


def test_channel_names_ignore_email_order(function_dir: Path):
    first = build(base_config(alertEmails="a@example.com,b@example.com"), function_dir)
    second = build(base_config(alertEmails="b@example.com,a@example.com"), function_dir)
    assert {c.name for c in first.of_type(CHANNEL)} == {
        c.name for c in second.of_type(CHANNEL)
    }


# Configuration


def test_alert_config_defaults():
    cfg = load(base_config())
    assert cfg.alert_emails == ()
    assert cfg.oldest_unacked_alert_seconds == 600
    assert cfg.error_rate_alert_percent == 5


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("not-an-address", "'not-an-address' is not an email address"),
        ("a@example.com,a@EXAMPLE.com", "listed twice"),
        ('["a@example.com"]', "not a list"),
        ("a b@example.com", "is not an email address"),
    ],
)
def test_invalid_alert_emails_rejected(value: str, expected: str):
    with pytest.raises(ConfigError) as caught:
        load(base_config(alertEmails=value))
    assert caught.value.key == "alertEmails"
    assert expected in str(caught.value)
    assert "pulumi config set alertEmails" in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value", "fix"),
    [
        ("oldestUnackedAlertSeconds", "59", "600"),
        ("oldestUnackedAlertSeconds", "604801", "600"),
        ("oldestUnackedAlertSeconds", "ten", "600"),
        ("errorRateAlertPercent", "0", "5"),
        ("errorRateAlertPercent", "101", "5"),
    ],
)
def test_alert_thresholds_out_of_range_rejected(key: str, value: str, fix: str):
    with pytest.raises(ConfigError) as caught:
        load(base_config(**{key: value}))
    assert caught.value.key == key
    assert value in str(caught.value)
    assert f"pulumi config set {key} {fix}" in str(caught.value)


# Log-based metrics


def test_log_metrics_read_the_function_logs(stack: BuiltStack):
    metrics = {r.inputs["name"]: r.inputs for r in stack.of_type(LOG_METRIC)}
    assert set(metrics) == {
        "mp-dev/events_imported",
        "mp-dev/events_dead_lettered",
        "mp-dev/requests_retried",
    }
    assert metrics["mp-dev/events_imported"]["filter"] == (
        f'{FUNCTION_LOGS} AND jsonPayload.message="message forwarded"'
    )
    assert metrics["mp-dev/events_dead_lettered"]["filter"] == (
        f'{FUNCTION_LOGS} AND jsonPayload.message="events dead-lettered by error code"'
    )
    assert metrics["mp-dev/requests_retried"]["filter"] == (
        f'{FUNCTION_LOGS} AND jsonPayload.message:"retrying in" '
        "AND jsonPayload.retry:* AND jsonPayload.attempt:*"
    )


def test_event_metrics_sum_a_field(stack: BuiltStack):
    metrics = {r.inputs["name"]: r.inputs for r in stack.of_type(LOG_METRIC)}
    imported = metrics["mp-dev/events_imported"]
    dead_lettered = metrics["mp-dev/events_dead_lettered"]
    assert imported["valueExtractor"] == "EXTRACT(jsonPayload.imported)"
    assert dead_lettered["valueExtractor"] == "EXTRACT(jsonPayload.dead_lettered)"
    assert dead_lettered["labelExtractors"] == {"error": "EXTRACT(jsonPayload.error)"}
    for inputs in (imported, dead_lettered):
        descriptor = inputs["metricDescriptor"]
        assert descriptor["metricKind"] == "DELTA", inputs["name"]
        assert descriptor["valueType"] == "DISTRIBUTION", inputs["name"]
        assert "exponentialBuckets" in inputs["bucketOptions"], inputs["name"]


def test_retry_metric_counts_lines_by_call(stack: BuiltStack):
    (retried,) = [
        r.inputs
        for r in stack.of_type(LOG_METRIC)
        if r.inputs["name"] == "mp-dev/requests_retried"
    ]
    assert retried["metricDescriptor"]["valueType"] == "INT64"
    assert "valueExtractor" not in retried
    assert retried["labelExtractors"] == {
        "call": "EXTRACT(jsonPayload.retry)",
        "status": "EXTRACT(jsonPayload.status)",
    }


def test_log_metric_labels_declared(stack: BuiltStack):
    for registration in stack.of_type(LOG_METRIC):
        declared = {
            label["key"]
            for label in registration.inputs["metricDescriptor"].get("labels", [])
        }
        extracted = set(registration.inputs.get("labelExtractors", {}))
        assert declared == extracted, registration.name


# Dashboard


def test_dashboard_json_is_valid(stack: BuiltStack):
    definition = dashboard(stack)
    widgets = definition["gridLayout"]["widgets"]
    assert definition["displayName"] == "Mixpanel forwarder (mp-dev)"
    assert len(widgets) == 9
    for widget in widgets:
        assert widget.get("title"), widget
        assert widget["xyChart"]["dataSets"], widget["title"]
    for data_set in data_sets(definition):
        query = data_set["timeSeriesQuery"]
        assert len(query) == 1, query
        assert set(query) <= {"timeSeriesFilter", "prometheusQuery"}, query


def test_dashboard_aggregations_are_valid(stack: BuiltStack):
    for data_set in data_sets(dashboard(stack)):
        series_filter = data_set["timeSeriesQuery"].get("timeSeriesFilter")
        if series_filter is None:
            continue
        aggregation = series_filter["aggregation"]
        assert aggregation["perSeriesAligner"] in ALIGNERS, aggregation
        assert aggregation.get("crossSeriesReducer", "REDUCE_NONE") in REDUCERS
        assert re.fullmatch(r"\d+s", aggregation["alignmentPeriod"]), aggregation


def test_dashboard_refers_only_to_known_metrics(stack: BuiltStack):
    created = log_metric_types(stack)
    known = GOOGLE_METRICS | created
    promql_known = {
        promql_name(metric_type) + suffix
        for metric_type in created
        for suffix in ("", "_sum", "_count", "_bucket")
    }
    charted: set[str] = set()
    for data_set in data_sets(dashboard(stack)):
        query = data_set["timeSeriesQuery"]
        if "timeSeriesFilter" in query:
            types = re.findall(
                r'metric\.type="([^"]+)"', query["timeSeriesFilter"]["filter"]
            )
            assert len(types) == 1, query
            assert types[0] in known, types[0]
            charted.add(types[0])
        else:
            names = re.findall(
                r"[A-Za-z_][A-Za-z0-9_]*:[A-Za-z0-9_:]*", query["prometheusQuery"]
            )
            assert names, query
            for name in names:
                assert name in promql_known, name
                charted.add(name)
    assert charted >= GOOGLE_METRICS, GOOGLE_METRICS - charted
    assert "logging.googleapis.com/user/mp-dev/requests_retried" in charted
    assert "logging_googleapis_com:user_mp_dev_events_imported_sum" in charted
    assert "logging_googleapis_com:user_mp_dev_events_dead_lettered_sum" in charted


def test_dashboard_charts_this_stack(stack: BuiltStack):
    for data_set in data_sets(dashboard(stack)):
        query = data_set["timeSeriesQuery"]
        text = query.get("prometheusQuery") or query["timeSeriesFilter"]["filter"]
        assert (
            SERVICE in text
            or PUSH_SUBSCRIPTION in text
            or DEAD_LETTER_SUBSCRIPTION in text
        ), text


def test_dashboard_marks_alert_thresholds(emailed: BuiltStack):
    widgets = {w["title"]: w for w in dashboard(emailed)["gridLayout"]["widgets"]}
    age = widgets["Oldest unacknowledged message on the push subscription (s)"]
    assert age["xyChart"]["thresholds"][0]["value"] == 900
    assert widgets["Dead letters waiting"]["xyChart"]["thresholds"][0]["value"] == 0


def test_dashboard_url_output(stack: BuiltStack):
    dashboard_name = stack.nodes[(DASHBOARD, "monitoring-dashboard")].outputs["name"]
    dashboard_id = dashboard_name.rsplit("/", 1)[-1]
    assert stack.outputs["dashboardUrl"] == (
        "https://console.cloud.google.com/monitoring/dashboards/builder/"
        f"{dashboard_id}?project={GCP_PROJECT}"
    )


def test_monitoring_waits_for_its_apis(stack: BuiltStack):
    for registration in stack.of_type(LOG_METRIC):
        apis = stack.api_dependencies(LOG_METRIC, registration.name)
        assert "logging.googleapis.com" in apis, registration.name
    for type_ in (ALERT_POLICY, DASHBOARD):
        for registration in stack.of_type(type_):
            apis = stack.api_dependencies(type_, registration.name)
            assert "monitoring.googleapis.com" in apis, registration.name


# The metrics against the real function's log lines

TERM = re.compile(r"^([A-Za-z_][\w.]*)(=|:)(.+)$")


def as_log_entry(line: dict) -> dict:
    """Wrap one of the function's JSON lines as Cloud Run would log it."""
    payload = {key: value for key, value in line.items() if key != "severity"}
    return {
        "resource": {"type": "cloud_run_revision", "labels": {"service_name": SERVICE}},
        "severity": line["severity"],
        "jsonPayload": payload,
    }


def lookup(entry: dict, path: str):
    value = entry
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def matches(query: str, entry: dict) -> bool:
    """Evaluate the AND of `path="text"`, `path:"text"` and `path:*` terms."""
    for term in query.split(" AND "):
        match = TERM.match(term)
        assert match, f"the test evaluator does not support the term {term!r}"
        path, operator, operand = match.groups()
        value = lookup(entry, path)
        if operator == "=":
            found = value == json.loads(operand)
        elif operand == "*":
            found = value is not None
        else:
            found = (
                isinstance(value, str) and json.loads(operand).lower() in value.lower()
            )
        if not found:
            return False
    return True


def extract(extractor: str, entry: dict):
    match = re.fullmatch(r"EXTRACT\(([\w.]+)\)", extractor)
    assert match, f"the test evaluator does not support {extractor!r}"
    return lookup(entry, match.group(1))


def metric_inputs(stack: BuiltStack, name: str) -> dict:
    (inputs,) = [
        r.inputs for r in stack.of_type(LOG_METRIC) if r.inputs["name"] == name
    ]
    return inputs


def test_imported_metric_finds_function_lines(stack, forwarder, mixpanel):
    envelope = load_envelope("push-seed-events.json")
    before = len(forwarder.log_entries())
    response = forwarder.push(envelope)
    metric = metric_inputs(stack, "mp-dev/events_imported")

    entries = [as_log_entry(line) for line in forwarder.log_entries()[before:]]
    found = [e for e in entries if matches(metric["filter"], e)]

    assert response.status_code == 200, response.text
    assert len(found) == 1
    value = extract(metric["valueExtractor"], found[-1])
    assert value == len(mixpanel.imported_events())


def test_retry_metric_finds_function_lines(stack, forwarder, mixpanel):
    before = len(forwarder.log_entries())
    mixpanel.enqueue(Fault(status=503, body="unavailable"))
    response = forwarder.push(load_envelope("push-seed-events.json"))
    metric = metric_inputs(stack, "mp-dev/requests_retried")

    entries = [as_log_entry(line) for line in forwarder.log_entries()[before:]]
    found = [e for e in entries if matches(metric["filter"], e)]

    assert response.status_code == 200, response.text
    assert len(found) == 1
    labels = {
        label: extract(extractor, found[0])
        for label, extractor in metric["labelExtractors"].items()
    }
    assert labels == {"call": "Mixpanel import", "status": 503}


def test_metric_filters_skip_other_lines(stack, forwarder, mixpanel, pubsub):
    # A retry and a dead letter make the push log more than its summary.
    envelope = load_envelope("push-seed-events.json")
    data = base64.b64decode(envelope["message"]["data"]) + b"\nnot json"
    envelope["message"]["data"] = base64.b64encode(data).decode()
    mixpanel.enqueue(Fault(status=503, body="unavailable"))
    before = len(forwarder.log_entries())
    forwarder.push(envelope)
    entries = [as_log_entry(line) for line in forwarder.log_entries()[before:]]
    metric = metric_inputs(stack, "mp-dev/events_imported")
    forwarded = [e for e in entries if matches(metric["filter"], e)]
    others = [e for e in entries if e not in forwarded]
    elsewhere = {**forwarded[0], "resource": {"type": "gae_app", "labels": {}}}

    assert len(forwarded) == 1
    assert len(others) >= 2, "the push logged no retry or dead-letter line"
    assert not any(matches(metric["filter"], e) for e in others)
    assert not matches(metric["filter"], elsewhere)


def test_dead_lettered_metric_finds_function_lines(stack, forwarder, pubsub):
    data = b'{"event": "ok", "properties": {"distinct_id": "u"}}\nnot json\nnot json'
    envelope = load_envelope("push-seed-events.json")
    envelope["message"]["data"] = base64.b64encode(data).decode()
    before = len(forwarder.log_entries())
    response = forwarder.push(envelope)
    metric = metric_inputs(stack, "mp-dev/events_dead_lettered")

    entries = [as_log_entry(line) for line in forwarder.log_entries()[before:]]
    found = [e for e in entries if matches(metric["filter"], e)]

    assert response.status_code == 200, response.text
    assert len(found) == 1
    assert extract(metric["valueExtractor"], found[0]) == 2
    assert extract(metric["labelExtractors"]["error"], found[0]) == "invalid_json"
