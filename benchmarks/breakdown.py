"""The forwarder's time beyond the floor, apportioned stage by stage.

Usage: python -m benchmarks.breakdown [--repeat N] [--events N]

The forwarder runs on one 2,000-event message (or --events), interleaved
with the floor of `benchmarks.run`. It runs first as deployed, then with one
more stage replaced by a stub in each row. The stages are the PII and IP
rules, the check of property values that the parse of each line makes, and
then all of the normalisation but the serialisation. The default transform
hook is not called (`hook.passes_records_on`), so it has no row. Each
stage's cost is the difference between two rows. The stubs skip work that
the delivery guarantees need, so this only apportions the time, and
`benchmarks.run` gives the figures. Times are CPU time of this process, per
event, and each ratio is the median of the ratios of paired runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from benchmarks import run, workloads

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per row")
    parser.add_argument("--events", type=int, default=2000, help="events per message")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(run.DEFAULT_FUNCTION_DIR))
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[0]})
    from forwarder import codec, handler, mixpanel, privacy

    data = workloads.realistic_data(args.events)
    body = workloads.push_body(data)
    sink = run.Sink(set(cpus[1:]))
    rows = []
    try:
        forwarder = run.Forwarder(sink)

        def floor() -> None:
            run.run_floor(
                body,
                codec.LIBRARY,
                mixpanel.GZIP_LEVEL,
                mixpanel.GZIP_WBITS,
                codec.LINE_LOADS,
            )

        def measure(label: str) -> None:
            forwarder(body)
            floor()
            spent, floors = [], []
            for _ in range(args.repeat):
                started = time.process_time()
                forwarder(body)
                spent.append(time.process_time() - started)
                started = time.process_time()
                floor()
                floors.append(time.process_time() - started)
            per_event = statistics.median(spent) / args.events * 1e6
            floor_per_event = statistics.median(floors) / args.events * 1e6
            # Paired, as in benchmarks.run, so that a slow moment of the
            # machine hits both runs of a pair alike.
            ratios = [
                floor / forwarded
                for floor, forwarded in zip(floors, spent, strict=True)
            ]
            rows.append(
                {
                    "forwarder": label,
                    "cpu_microseconds_per_event": per_event,
                    "floor_cpu_microseconds_per_event": floor_per_event,
                    "ratio_to_floor": statistics.median(ratios),
                }
            )

        measure("as deployed")
        privacy.PropertyPrivacy.rewrite = lambda self, event: event
        privacy.PropertyPrivacy.set_ip = lambda self, properties: None
        measure("without the PII and IP rules")
        # The plain parse, with the check taken as passed.
        codec.loads_event = codec.LINE_LOADS
        measure("and without the check of property values")
        handler.encode_event = lambda value, publish_ms, now_ms, *rules: (
            value["properties"]["$insert_id"],
            codec.dumps(value),
        )
        measure("and without normalisation, only serialisation")
    finally:
        sink.stop()
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
