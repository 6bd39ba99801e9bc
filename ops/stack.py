"""The topic and subscription the tools work on: from options, else the stack.

Inside the project (a directory with Pulumi.yaml, or below one), the names
come from `pulumi stack output --json`. Full names given as options
(projects/P/topics/T, projects/P/subscriptions/S) are used as they are, short
ids are placed in --project or in the stack's project, and --project alone
moves the stack's names to that project.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_FILE = "Pulumi.yaml"
PULUMI_TIMEOUT_SECONDS = 120

# Stack outputs of infra/stack.py that name what the tools use.
EVENTS_TOPIC_OUTPUT = "eventsTopic"
DEAD_LETTER_SUBSCRIPTION_OUTPUT = "deadLetterSubscription"

_FULL_NAME = {
    "topics": re.compile(r"projects/([a-z][a-z0-9-]{4,28}[a-z0-9])/topics/([^/]+)"),
    "subscriptions": re.compile(
        r"projects/([a-z][a-z0-9-]{4,28}[a-z0-9])/subscriptions/([^/]+)"
    ),
}
_RESOURCE_ID = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")
_PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")


class TargetError(Exception):
    """A topic or subscription could not be determined.

    The message names the option or the stack output that would settle it.
    """


@dataclass(frozen=True)
class Target:
    """A topic or subscription option, with where to look when it is not given."""

    kind: str  # "topics" or "subscriptions"
    option: str  # the command-line option, for messages
    value: str | None
    output: str  # the stack output that names it


class StackOutputs:
    """The current stack's outputs, read once and only when first needed.

    Args:
        stack: the stack to read, or None for the selected one.
        start: the directory where the search for Pulumi.yaml begins.
    """

    def __init__(self, stack: str | None, start: Path) -> None:
        self._stack = stack
        self._start = start
        self._outputs: dict[str, Any] | None = None

    def get(self, key: str, option: str) -> str:
        """Return output `key`, which `option` would replace.

        Raises:
            TargetError: the outputs cannot be read or lack the key.
        """
        if self._outputs is None:
            self._outputs = self._read()
        value = self._outputs.get(key)
        if not isinstance(value, str) or not value:
            raise TargetError(
                f"the stack outputs have no {key!r}; deploy the stack with "
                f"`pulumi up`, or pass {option}"
            )
        return value

    def _read(self) -> dict[str, Any]:
        project_dir = find_project_dir(self._start)
        if project_dir is None:
            raise TargetError(
                f"no {PROJECT_FILE} in {self._start} or its parents, so there are "
                "no stack outputs to read; run inside the project, or pass the "
                "names as options"
            )
        command = ["pulumi", "stack", "output", "--json"]
        if self._stack:
            command += ["--stack", self._stack]
        try:
            result = subprocess.run(  # noqa: S603, S607 - fixed arguments, no shell
                command,
                cwd=project_dir,
                capture_output=True,
                text=True,
                timeout=PULUMI_TIMEOUT_SECONDS,
                check=False,
            )
        except FileNotFoundError:
            raise TargetError(
                "the pulumi command was not found on PATH; install the Pulumi "
                "CLI, or pass the names as options"
            ) from None
        except subprocess.TimeoutExpired:
            raise TargetError(
                f"`{' '.join(command)}` did not finish within "
                f"{PULUMI_TIMEOUT_SECONDS} s"
            ) from None
        if result.returncode != 0:
            detail = " ".join(result.stderr.split())[:400] or "no error output"
            raise TargetError(
                f"`{' '.join(command)}` failed with exit status "
                f"{result.returncode}: {detail}"
            )
        try:
            outputs = json.loads(result.stdout)
        except ValueError as err:
            raise TargetError(
                f"`{' '.join(command)}` printed something that is not JSON: {err}"
            ) from None
        if not isinstance(outputs, dict):
            raise TargetError(
                f"`{' '.join(command)}` printed JSON that is not an object"
            )
        return outputs


def find_project_dir(start: Path) -> Path | None:
    """Return the nearest directory at or above `start` that has Pulumi.yaml."""
    start = start.resolve()
    for directory in (start, *start.parents):
        if (directory / PROJECT_FILE).is_file():
            return directory
    return None


def resolve(target: Target, project: str | None, outputs: StackOutputs) -> str:
    """Return the full name of `target`, projects/P/KIND/ID.

    Raises:
        TargetError: the option is invalid, or the stack outputs are needed and
            cannot be read.
    """
    if project is not None and not _PROJECT_ID.fullmatch(project):
        raise TargetError(
            f"--project {project!r} is not a valid project id (6-30 lowercase "
            "letters, digits and hyphens)"
        )

    value = target.value
    if value is not None and "/" in value:
        match = _FULL_NAME[target.kind].fullmatch(value)
        if match is None or not _RESOURCE_ID.fullmatch(match.group(2)):
            raise TargetError(
                f"{target.option} {value!r} is neither an id nor a full name "
                f"projects/PROJECT/{target.kind}/ID"
            )
        return value

    if value is not None:
        if not _RESOURCE_ID.fullmatch(value):
            raise TargetError(
                f"{target.option} {value!r} is not a valid id (3-255 letters, "
                "digits and - _ . ~ + %, starting with a letter)"
            )
        resource_id = value
    else:
        resource_id = _split(outputs.get(target.output, target.option), target)[1]

    if project is None:
        stack_name = outputs.get(target.output, "--project")
        project = _split(stack_name, target)[0]
    return f"projects/{project}/{target.kind}/{resource_id}"


def _split(full_name: str, target: Target) -> tuple[str, str]:
    match = _FULL_NAME[target.kind].fullmatch(full_name)
    if match is None:
        raise TargetError(
            f"the stack output {target.output!r} is {full_name!r}, not a full "
            f"name projects/PROJECT/{target.kind}/ID"
        )
    return match.group(1), match.group(2)
