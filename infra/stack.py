"""Assembly of the whole pipeline from its components, and its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pulumi

from .apis import ProjectApis
from .config import StackConfig
from .credentials import MixpanelSecret
from .forwarder import Forwarder
from .hash_key import PiiHashKey
from .identities import ServiceAccounts
from .messaging import Messaging, PushDelivery
from .monitoring import Monitoring

FUNCTION_DIR = Path(__file__).resolve().parent.parent / "function"

# A Mixpanel event that strict import accepts. The shell fills in `time` when
# the command runs, because Mixpanel rejects events from the future and events
# older than the project's retention, so no fixed timestamp stays valid.
TEST_EVENT_NAME = "pubsub_forwarder_test"
TEST_DISTINCT_ID = "pubsub-forwarder-test"
_NOW = "'\"$(date +%s)\"'"


def build_stack(
    cfg: StackConfig, function_dir: Path = FUNCTION_DIR
) -> dict[str, pulumi.Output[str]]:
    """Register every resource of the pipeline and return the stack outputs.

    Args:
        cfg: The validated stack configuration.
        function_dir: The directory packaged as the function source.

    Returns:
        The stack outputs by name. None of them contains the credential.
    """
    apis = ProjectApis("apis", cfg.project)
    accounts = ServiceAccounts("accounts", cfg, apis)
    messaging = Messaging("messaging", cfg, apis)
    secret = MixpanelSecret("credential", cfg, apis, accounts.runtime)
    hash_key = None
    if cfg.pii.hash_key is not None:
        hash_key = PiiHashKey("pii-hash-key", cfg, apis, accounts.runtime)
    forwarder = Forwarder(
        "forwarder", cfg, apis, accounts, messaging, secret, function_dir, hash_key
    )
    delivery = PushDelivery(
        "delivery", cfg, apis, messaging, accounts.push, forwarder.function
    )
    monitoring = Monitoring(
        "monitoring", cfg, apis, messaging, delivery, forwarder.function
    )

    return {
        "eventsTopic": messaging.events_topic.id,
        "deadLetterTopic": messaging.dead_letter_topic.id,
        "deadLetterSubscription": messaging.dead_letter_subscription.id,
        "pushSubscription": delivery.subscription.id,
        "functionName": forwarder.function.name,
        "functionUrl": forwarder.url,
        "publishTestCommand": messaging.events_topic.id.apply(publish_test_command),
        "dashboardUrl": monitoring.dashboard_url,
    }


def publish_test_command(topic: str) -> str:
    """Return a `gcloud` command that publishes one test event to `topic`.

    The message is single-quoted for POSIX shells, and `$(date +%s)` is
    spliced in outside the quotes so that the event carries the current time.
    """
    template = {
        "event": TEST_EVENT_NAME,
        "properties": {
            "distinct_id": TEST_DISTINCT_ID,
            "time": "@NOW@",
            "$insert_id": "test-@NOW@",
        },
    }
    message = json.dumps(template, separators=(",", ":"))
    message = message.replace('"@NOW@"', _NOW).replace("@NOW@", _NOW)
    return f"gcloud pubsub topics publish {topic} --message '{message}'"


def export_outputs(outputs: dict[str, pulumi.Output[str]]) -> None:
    """Export the outputs of `build_stack` as stack outputs."""
    for name, value in outputs.items():
        pulumi.export(name, value)
