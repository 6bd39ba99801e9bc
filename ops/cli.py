"""The `python -m ops` command line: replay, export and publish.

Exit status: 0 when the command completed, 1 when a Pub/Sub call failed for
good (the summary reports what was done before), 2 for invalid usage, 130
when interrupted.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from . import deadletter, publish_file, stack
from .pubsub import PubSubClient, PubSubError

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

# Values that --error accepts: the function's codes and the one this tool
# reports for messages that Pub/Sub moved after the last delivery attempt.
ERROR_CODES = (
    "invalid_payload",
    "invalid_json",
    "invalid_event",
    "too_large",
    "rejected",
    "transform_failed",
    deadletter.NO_ERROR_CODE,
)


def _common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options that every command shares."""
    options = [
        click.option(
            "--stack",
            "stack_name",
            metavar="NAME",
            help="Pulumi stack whose outputs name the topic and subscription "
            "(default: the selected stack).",
        ),
        click.option(
            "--project",
            metavar="ID",
            help="Google Cloud project of the topic and subscription; it replaces "
            "the project in the stack outputs.",
        ),
        click.option(
            "--retries",
            type=click.IntRange(0, 20),
            default=5,
            show_default=True,
            help="Retries of a Pub/Sub call after a transient failure.",
        ),
        click.option(
            "-v",
            "--verbose",
            is_flag=True,
            help="Log each pull and republish, not only retries and errors.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group()
def main() -> None:
    """Replay and export dead letters, and publish event files.

    The project, topic and subscription come from `pulumi stack output` when
    run inside the project; options override them. With PUBSUB_EMULATOR_HOST
    set, every call goes to that emulator without credentials.
    """


@main.command()
@click.option(
    "--subscription",
    metavar="NAME",
    help="Dead-letter subscription: an id or projects/P/subscriptions/S "
    "(default: the stack output deadLetterSubscription).",
)
@click.option(
    "--topic",
    metavar="NAME",
    help="Topic to republish to: an id or projects/P/topics/T "
    "(default: the stack output eventsTopic).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Pull and count the messages, then release them; publish and "
    "acknowledge nothing.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    help="Replay at most N messages.",
)
@click.option(
    "--error",
    "errors",
    type=click.Choice(ERROR_CODES),
    multiple=True,
    help="Replay only messages with this `error` code; repeat for several.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    metavar="PER_SECOND",
    help="Republish at most this many messages a second.",
)
@_common_options
def replay(
    subscription: str | None,
    topic: str | None,
    dry_run: bool,
    limit: int | None,
    errors: tuple[str, ...],
    rate: float | None,
    stack_name: str | None,
    project: str | None,
    retries: int,
    verbose: bool,
) -> None:
    """Republish dead letters to the events topic.

    Each message is acknowledged on the dead-letter subscription only after
    its republish succeeded, so an interrupted replay loses nothing. The
    republished message carries the original publish time in the
    source_publish_time attribute, so events keep their time and $insert_id
    and a second replay imports nothing twice.
    """
    _configure_logging(verbose)
    outputs = stack.StackOutputs(stack_name, Path.cwd())
    subscription_name = _resolve(
        stack.Target(
            "subscriptions",
            "--subscription",
            subscription,
            stack.DEAD_LETTER_SUBSCRIPTION_OUTPUT,
        ),
        project,
        outputs,
    )
    topic_name = _resolve(
        stack.Target("topics", "--topic", topic, stack.EVENTS_TOPIC_OUTPUT),
        project,
        outputs,
    )
    client = _client(retries)

    verb = "Counting" if dry_run else "Replaying"
    click.echo(f"{verb} {subscription_name} -> {topic_name}", err=True)
    with _progress(limit, "replay") as bar:
        summary = deadletter.replay(
            client,
            subscription=subscription_name,
            topic=topic_name,
            limit=limit,
            errors=set(errors) or None,
            rate=rate,
            dry_run=dry_run,
            progress=bar.update,
        )

    _print_replay_summary(summary, subscription_name, topic_name)
    _exit_for(summary.stopped_by)


@main.command()
@click.option(
    "--subscription",
    metavar="NAME",
    help="Dead-letter subscription: an id or projects/P/subscriptions/S "
    "(default: the stack output deadLetterSubscription).",
)
@click.option(
    "--output",
    "-o",
    "output_path",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    required=True,
    help="File to write, one JSON object per message; - writes to stdout.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), metavar="N", help="Export at most N."
)
@click.option(
    "--error",
    "errors",
    type=click.Choice(ERROR_CODES),
    multiple=True,
    help="Export only messages with this `error` code; repeat for several.",
)
@_common_options
def export(
    subscription: str | None,
    output_path: str,
    limit: int | None,
    errors: tuple[str, ...],
    stack_name: str | None,
    project: str | None,
    retries: int,
    verbose: bool,
) -> None:
    """Write dead letters to a JSON lines file, acknowledging none of them.

    Each line has messageId, publishTime, attributes, data (base64) and text
    (the data as UTF-8, or null). The messages stay on the subscription.
    """
    _configure_logging(verbose)
    outputs = stack.StackOutputs(stack_name, Path.cwd())
    subscription_name = _resolve(
        stack.Target(
            "subscriptions",
            "--subscription",
            subscription,
            stack.DEAD_LETTER_SUBSCRIPTION_OUTPUT,
        ),
        project,
        outputs,
    )
    client = _client(retries)

    click.echo(f"Exporting {subscription_name} to {output_path}", err=True)
    with (
        click.open_file(output_path, "w", encoding="utf-8") as output,
        _progress(limit, "export") as bar,
    ):
        summary = deadletter.export(
            client,
            subscription=subscription_name,
            output=output,
            limit=limit,
            errors=set(errors) or None,
            progress=bar.update,
        )

    click.echo(
        f"Exported {summary.written_total} messages from {subscription_name}; "
        "none was acknowledged.",
        err=output_path == "-",
    )
    _echo_counts(summary.written, err=output_path == "-")
    _exit_for(summary.stopped_by)


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--topic",
    metavar="NAME",
    help="Topic to publish to: an id or projects/P/topics/T "
    "(default: the stack output eventsTopic).",
)
@click.option(
    "--events-per-message",
    type=click.IntRange(1, 100_000),
    default=500,
    show_default=True,
    help=(
        "Maximum number of events in one message. A message also ends before "
        "7 MiB of data."
    ),
)
@click.option(
    "--attribute",
    "attributes",
    metavar="KEY=VALUE",
    multiple=True,
    help="Attribute set on every message; repeat for several.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    metavar="PER_SECOND",
    help="Publish at most this many messages a second.",
)
@click.option(
    "--allow-invalid",
    is_flag=True,
    help="Send lines that are not JSON too, for example to exercise "
    "dead-lettering; by default the whole file is checked first.",
)
@_common_options
def publish(
    path: Path,
    topic: str | None,
    events_per_message: int,
    attributes: tuple[str, ...],
    rate: float | None,
    allow_invalid: bool,
    stack_name: str | None,
    project: str | None,
    retries: int,
    verbose: bool,
) -> None:
    """Publish the events in PATH, a newline-delimited JSON file.

    For load tests and backfills. Events keep the file's order, and each
    message carries up to --events-per-message lines.
    """
    _configure_logging(verbose)
    parsed_attributes = _parse_attributes(attributes)
    outputs = stack.StackOutputs(stack_name, Path.cwd())
    topic_name = _resolve(
        stack.Target("topics", "--topic", topic, stack.EVENTS_TOPIC_OUTPUT),
        project,
        outputs,
    )
    client = _client(retries)

    click.echo(f"Publishing {path} to {topic_name}", err=True)
    try:
        with tqdm(
            total=path.stat().st_size,
            unit="B",
            unit_scale=True,
            desc="publish",
            disable=None,
            file=sys.stderr,
        ) as bar:
            summary = publish_file.publish_file(
                client,
                path=path,
                topic=topic_name,
                events_per_message=events_per_message,
                attributes=parsed_attributes,
                rate=rate,
                validate=not allow_invalid,
                progress=bar.update,
            )
    except publish_file.InvalidFileError as err:
        raise click.ClickException(
            f"{err}. Nothing was published; fix the line, or pass --allow-invalid"
        ) from None

    click.echo(
        f"Published {summary.events} events in {summary.messages} messages "
        f"to {topic_name}."
    )
    _exit_for(summary.stopped_by)


class _StderrHandler(logging.Handler):
    """Writes each record to the standard error stream of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def _configure_logging(verbose: bool) -> None:
    """Send the `ops` package's log records to stderr, leaving the root logger."""
    logger = logging.getLogger("ops")
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)


def _resolve(
    target: stack.Target, project: str | None, outputs: stack.StackOutputs
) -> str:
    try:
        return stack.resolve(target, project, outputs)
    except stack.TargetError as err:
        raise click.UsageError(f"Cannot determine {target.option}: {err}") from None


def _client(retries: int) -> PubSubClient:
    try:
        client = PubSubClient.from_environment(retries=retries)
    except PubSubError as err:
        raise click.ClickException(str(err)) from None
    if not client.base_url.startswith("https://"):
        click.echo(f"Using the Pub/Sub emulator at {client.base_url}", err=True)
    return client


def _progress(limit: int | None, description: str) -> tqdm:
    # disable=None turns the bar off when stderr is not a terminal.
    return tqdm(
        total=limit, unit="msg", desc=description, disable=None, file=sys.stderr
    )


def _parse_attributes(pairs: tuple[str, ...]) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise click.BadParameter(
                f"{pair!r} is not KEY=VALUE", param_hint="--attribute"
            )
        attributes[key] = value
    return attributes


def _messages(count: int) -> str:
    return f"{count} message" if count == 1 else f"{count} messages"


def _print_replay_summary(
    summary: deadletter.ReplaySummary, subscription: str, topic: str
) -> None:
    if summary.dry_run:
        click.echo(
            f"Dry run: {_messages(summary.replayed_total)} on {subscription} would "
            "be replayed; nothing was published or acknowledged."
        )
    else:
        click.echo(
            f"Replayed {_messages(summary.replayed_total)} from {subscription} "
            f"to {topic}."
        )
    _echo_counts(summary.replayed)
    if summary.skipped:
        click.echo(
            f"Left {sum(summary.skipped.values())} messages that --error excludes "
            "on the subscription:"
        )
        _echo_counts(summary.skipped)
    if summary.parts:
        click.echo(
            f"Left {summary.parts} parts of lines too long for one message on the "
            "subscription; a part alone is no event, so use export to read them."
        )
    if summary.unacknowledged:
        click.echo(
            f"{summary.unacknowledged} messages were republished but not "
            "acknowledged; they stay on the subscription, and replaying them again "
            "imports nothing twice."
        )


def _echo_counts(counts: dict[str, int], err: bool = False) -> None:
    for code, count in sorted(counts.items()):
        click.echo(f"  {code:<28} {count}", err=err)


def _exit_for(stopped_by: str | None) -> None:
    if stopped_by is None:
        return
    if stopped_by == "interrupted":
        click.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    click.echo(f"Error: {stopped_by}", err=True)
    sys.exit(EXIT_FAILED)
