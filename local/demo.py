"""The demo pipeline: the real function between the two stand-ins, on loopback.

It starts the Mixpanel and Pub/Sub stand-ins and the function under
functions-framework, pushes the sample events as one Pub/Sub push request,
and prints the function's response, what Mixpanel stored and what went to
the dead-letter topic. Run it with `python -m local.demo`.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from local.function_runner import ROOT, FunctionProcess
from local.mixpanel_standin import MixpanelStandin
from local.pubsub_standin import PubSubStandin

SAMPLE = ROOT / "tests" / "data" / "seed-events.ndjson"
DEAD_LETTER_TOPIC = "projects/demo-project/topics/mp-demo-dead-letter"
SUBSCRIPTION = "projects/demo-project/subscriptions/mp-demo-events-push"
PROJECT_ID = "3141592"
# Fixed demo credentials of the stand-in; they open nothing outside this machine.
SA_USERNAME = "demo-sa.mp-service-account"
SA_SECRET = "demo-sa-secret"  # noqa: S105
# The sample events date from August 2021. A real Mixpanel project keeps 2 or
# 5 years of data and would reject them as too old, so the stand-in keeps 10.
RETENTION_DAYS = 10 * 365
INVALID_LINE = b'{"event": "broken", "properties": {'


def build_envelope(data: bytes, publish_time: str) -> dict:
    """Wrap message data in the body a push subscription sends."""
    return {
        "message": {
            "data": base64.b64encode(data).decode("ascii"),
            "attributes": {"source": "demo"},
            "messageId": "9000000000000001",
            "message_id": "9000000000000001",
            "publishTime": publish_time,
            "publish_time": publish_time,
        },
        "subscription": SUBSCRIPTION,
        "deliveryAttempt": 1,
    }


def run(data: bytes, out=sys.stdout) -> int:
    """Push `data` through the pipeline and print the outcome; return 0 on 2xx."""
    publish_time = datetime.now(UTC).isoformat(timespec="milliseconds")
    publish_time = publish_time.replace("+00:00", "Z")
    mixpanel = MixpanelStandin(
        project_id=PROJECT_ID,
        service_accounts={SA_USERNAME: SA_SECRET},
        retention_days=RETENTION_DAYS,
    )
    pubsub = PubSubStandin(topics=[DEAD_LETTER_TOPIC])

    with tempfile.TemporaryDirectory() as scratch, mixpanel, pubsub:
        env = {
            "MIXPANEL_PROJECT_ID": PROJECT_ID,
            "MIXPANEL_SERVICE_ACCOUNT_USERNAME": SA_USERNAME,
            "MIXPANEL_SERVICE_ACCOUNT_SECRET": SA_SECRET,
            "MIXPANEL_API_URL": mixpanel.url,
            "DEAD_LETTER_TOPIC": DEAD_LETTER_TOPIC,
            "PUBSUB_EMULATOR_HOST": pubsub.host,
        }
        function = FunctionProcess(env, Path(scratch) / "function.log")
        print(f"Mixpanel stand-in  {mixpanel.url}", file=out)
        print(f"Pub/Sub stand-in   http://{pubsub.host}", file=out)
        with function:
            print(f"function           {function.url}", file=out)
            response = function.push(build_envelope(data, publish_time))
            imported = mixpanel.imported_events()
            dead_letters = pubsub.published(DEAD_LETTER_TOPIC)
            requests_seen = len(mixpanel.requests)

    sent = [json.loads(line) for line in data.splitlines() if _parses(line)]
    print(f"\nFunction response: {response.status_code} {response.text}", file=out)
    print(f"\nMixpanel received {requests_seen} request(s) and stored", file=out)
    print(f"{len(imported)} event(s):", file=out)
    for event in imported:
        properties = event["properties"]
        print(
            f"  {event['event']:<12} {properties.get('distinct_id', ''):<9} "
            f"$insert_id={properties['$insert_id']:<10} "
            f"time={_iso(properties['time'])}",
            file=out,
        )
    _report_times(sent, imported, out)

    print(f"\nDead-lettered: {len(dead_letters)} message(s)", file=out)
    for message in dead_letters:
        print(
            f"  error={message.attributes.get('error')} "
            f"detail={message.attributes.get('error_detail')!r}",
            file=out,
        )
        for line in message.data.splitlines():
            print(f"    {line.decode('utf-8', 'replace')}", file=out)
    return 0 if 200 <= response.status_code < 300 else 1


def _report_times(sent: list, imported: list, out) -> None:
    """Print whether every stored time is the instant the event carried."""
    original = {
        event["properties"].get("$insert_id"): event["properties"].get("time")
        for event in sent
        if isinstance(event, dict) and isinstance(event.get("properties"), dict)
    }
    changed = []
    checked = 0
    for event in imported:
        insert_id = event["properties"]["$insert_id"]
        carried = original.get(insert_id)
        if isinstance(carried, int) and not isinstance(carried, bool):
            checked += 1
            carried_ms = carried * 1000 if carried < 100_000_000_000 else carried
            if carried_ms != event["properties"]["time"]:
                changed.append(insert_id)
    if changed:
        print(f"Times changed in transit for: {', '.join(changed)}", file=out)
    else:
        print(
            f"{checked} of {len(imported)} stored events carried an integer time "
            "with their own $insert_id; each stored time is that instant.",
            file=out,
        )


def _iso(milliseconds: int) -> str:
    moment = datetime.fromtimestamp(milliseconds / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events",
        type=Path,
        default=SAMPLE,
        help="newline-delimited JSON file of events to push (default: the sample)",
    )
    parser.add_argument(
        "--with-invalid-line",
        action="store_true",
        help="append a line that is not JSON, to show a dead-letter record",
    )
    args = parser.parse_args(argv)
    data = args.events.read_bytes().rstrip(b"\n")
    if args.with_invalid_line:
        data += b"\n" + INVALID_LINE
    return run(data)


if __name__ == "__main__":
    sys.exit(main())
