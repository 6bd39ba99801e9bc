"""Stack configuration, read from `pulumi.Config` and validated once.

Every other module takes a `StackConfig`, and none of them reads
configuration itself. Validation runs before any resource is registered, so a
bad value stops `pulumi up` before anything changes in the project.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass, field

import pulumi

PROJECT_NAME = "mixpanel-pubsub"

# Every key this module reads, with its Pulumi.yaml type. Provider keys carry
# their namespace, project keys are bare (Pulumi adds the project namespace).
KNOWN_KEYS: dict[str, str] = {
    "gcp:project": "string",
    "gcp:region": "string",
    "mixpanelProjectId": "string",
    "mixpanelRegion": "string",
    "mixpanelServiceAccountUsername": "string",
    "mixpanelServiceAccountSecret": "string",
    "mixpanelProjectToken": "string",
    "maxDeliveryAttempts": "integer",
    "minimumBackoffSeconds": "integer",
    "maximumBackoffSeconds": "integer",
    "ackDeadlineSeconds": "integer",
    "functionTimeoutSeconds": "integer",
    "retryDeadlineSeconds": "integer",
    "requestTimeoutSeconds": "integer",
    "functionMemory": "string",
    "functionCpu": "string",
    "maxInstances": "integer",
    "instanceConcurrency": "integer",
    "deadLetterRetentionDays": "integer",
    "resourcePrefix": "string",
    "logLevel": "string",
}

# Required provider keys that Pulumi.yaml cannot declare: Pulumi accepts a
# provider key there only with a fixed `value`, never a type or a default.
UNDECLARED_KEYS = frozenset({"gcp:project"})

# Keys whose value is a credential: read as secret Outputs, never printed.
SECRET_KEYS = frozenset({"mixpanelServiceAccountSecret", "mixpanelProjectToken"})

# Defaults shared with Pulumi.yaml (a test keeps the two in step). An empty
# string means "not set": Pulumi needs a default for every optional key.
DEFAULTS: dict[str, str | int] = {
    "gcp:region": "us-central1",
    "mixpanelRegion": "us",
    "mixpanelServiceAccountUsername": "",
    "mixpanelServiceAccountSecret": "",
    "mixpanelProjectToken": "",
    "maxDeliveryAttempts": 10,
    "minimumBackoffSeconds": 10,
    "maximumBackoffSeconds": 600,
    "ackDeadlineSeconds": 300,
    "functionTimeoutSeconds": 240,
    "retryDeadlineSeconds": 150,
    "requestTimeoutSeconds": 30,
    "functionMemory": "256Mi",
    "functionCpu": "0.167",
    "maxInstances": 10,
    "instanceConcurrency": 1,
    "deadLetterRetentionDays": 31,
    "resourcePrefix": "",
    "logLevel": "INFO",
}

MIXPANEL_REGIONS = ("us", "eu", "in")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# A push subscription waits at most 600 s for the endpoint's response.
MAX_ACK_DEADLINE_SECONDS = 600

# The longest suffix added to the prefix is "-build" on the build service
# account, whose id must be 6-30 characters, so the prefix has a maximum of 24.
MAX_PREFIX_LENGTH = 24

_PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$")
_PROJECT_PATTERN = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION_PATTERN = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_MEMORY_PATTERN = re.compile(r"^[1-9][0-9]*(k|M|G|Mi|Gi)$")


class ConfigError(pulumi.RunError):
    """A configuration value is missing or invalid.

    The message names the key, the bad value (never a credential) and the
    command that fixes it. Subclassing `pulumi.RunError` makes the Pulumi CLI
    print the message alone, without a traceback.
    """

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key = key
        super().__init__(f"Configuration {key}: {problem}. Fix it with: {fix}")


class CredentialKind(enum.Enum):
    """The two ways the Mixpanel Import API authenticates a request."""

    SERVICE_ACCOUNT = enum.auto()
    PROJECT_TOKEN = enum.auto()


@dataclass(frozen=True)
class MixpanelCredential:
    """The Mixpanel credential: its kind, config key, variable and value.

    `username` is the service account's user name, and None for a project
    token. `value` is the secret itself, as a secret Output.
    """

    kind: CredentialKind
    config_key: str
    env_var: str
    username: str | None
    value: pulumi.Output[str] = field(repr=False)


@dataclass(frozen=True)
class StackConfig:
    """All validated settings of one stack."""

    project: str
    region: str
    stack: str
    resource_prefix: str
    mixpanel_project_id: str
    mixpanel_region: str
    credential: MixpanelCredential
    max_delivery_attempts: int
    minimum_backoff_seconds: int
    maximum_backoff_seconds: int
    ack_deadline_seconds: int
    function_timeout_seconds: int
    retry_deadline_seconds: int
    request_timeout_seconds: int
    function_memory: str
    function_cpu: str
    max_instances: int
    instance_concurrency: int
    dead_letter_retention_days: int
    log_level: str


def default_prefix(stack: str) -> str:
    """Derive a resource prefix such as `mp-dev` from a stack name.

    Characters that GCP ids reject become hyphens. A name too long for the
    prefix is cut and given a short hash of the full stack name, so two long
    stack names that share a beginning still get different prefixes.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", stack.lower()).strip("-")
    prefix = f"mp-{slug}".rstrip("-")
    if len(prefix) <= MAX_PREFIX_LENGTH:
        return prefix

    digest = hashlib.sha256(stack.encode()).hexdigest()[:4]
    head = prefix[: MAX_PREFIX_LENGTH - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}"


def load_config() -> StackConfig:
    """Read and validate the stack's configuration.

    Raises:
        ConfigError: a value is missing or invalid.
    """
    reader = _Reader(pulumi.Config(), pulumi.Config("gcp"))
    stack = pulumi.get_stack()

    return StackConfig(
        **_gcp_location(reader),
        stack=stack,
        resource_prefix=_resource_prefix(reader, stack),
        mixpanel_project_id=_mixpanel_project_id(reader),
        mixpanel_region=_mixpanel_region(reader),
        credential=_credential(reader),
        **_delivery(reader),
        **_timing(reader),
        **_sizing(reader),
        dead_letter_retention_days=reader.integer(
            "deadLetterRetentionDays",
            1,
            31,
            "Pub/Sub keeps a subscription's messages at most 31 days",
        ),
        log_level=_log_level(reader),
    )


class _Reader:
    """Reader of keys in the project and `gcp` namespaces, with their defaults."""

    def __init__(self, project_config: pulumi.Config, gcp_config: pulumi.Config):
        self._project = project_config
        self._gcp = gcp_config

    def _source(self, key: str) -> tuple[pulumi.Config, str]:
        if key.startswith("gcp:"):
            return self._gcp, key.removeprefix("gcp:")
        return self._project, key

    def text(self, key: str) -> str:
        """Return a plain value, stripped, or its default ("" when none)."""
        source, name = self._source(key)
        value = source.get(name)
        if value is None:
            value = str(DEFAULTS.get(key, ""))
        return value.strip()

    def is_set(self, key: str) -> bool:
        """Return whether a key has a non-empty value, without returning the value."""
        source, name = self._source(key)
        return bool((source.get(name) or "").strip())

    def is_encrypted(self, key: str) -> bool:
        """Return whether the stack stores the key as a secret."""
        source, name = self._source(key)
        return pulumi.runtime.is_config_secret(source.full_key(name))

    def secret(self, key: str) -> pulumi.Output[str]:
        """Return a credential as a secret Output, stripped."""
        source, name = self._source(key)
        return source.require_secret(name).apply(str.strip)

    def integer(self, key: str, minimum: int, maximum: int, rule: str) -> int:
        """Return a whole number within [minimum, maximum].

        `rule` is the reason for the range, shown when the value is outside it.
        """
        raw = self.text(key)
        fix = f"pulumi config set {key} {DEFAULTS[key]}"
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(
                key, f"invalid value {raw!r}; expected a whole number", fix
            ) from None
        if not minimum <= value <= maximum:
            raise ConfigError(
                key, f"{value} is outside the range {minimum}-{maximum} ({rule})", fix
            )
        return value


def _gcp_location(reader: _Reader) -> dict[str, str]:
    project = reader.text("gcp:project")
    if not project:
        raise ConfigError(
            "gcp:project",
            "missing; it names the Google Cloud project to deploy into",
            "pulumi config set gcp:project YOUR_PROJECT_ID",
        )
    if not _PROJECT_PATTERN.match(project):
        raise ConfigError(
            "gcp:project",
            f"invalid value {project!r}; expected a project id of 6-30 lowercase "
            "letters, digits and hyphens",
            "pulumi config set gcp:project YOUR_PROJECT_ID",
        )

    region = reader.text("gcp:region")
    if not _REGION_PATTERN.match(region):
        raise ConfigError(
            "gcp:region",
            f"invalid value {region!r}; expected a region such as us-central1",
            "pulumi config set gcp:region us-central1",
        )
    return {"project": project, "region": region}


def _delivery(reader: _Reader) -> dict[str, int]:
    """Read the push subscription's delivery attempts and retry backoff."""
    max_delivery_attempts = reader.integer(
        "maxDeliveryAttempts", 5, 100, "Pub/Sub's limit for delivery attempts"
    )
    minimum_backoff = reader.integer(
        "minimumBackoffSeconds", 0, 600, "Pub/Sub's limit for a retry backoff"
    )
    maximum_backoff = reader.integer(
        "maximumBackoffSeconds", 0, 600, "Pub/Sub's limit for a retry backoff"
    )
    if minimum_backoff > maximum_backoff:
        raise ConfigError(
            "minimumBackoffSeconds",
            f"{minimum_backoff} is above maximumBackoffSeconds ({maximum_backoff})",
            f"pulumi config set minimumBackoffSeconds {maximum_backoff}",
        )
    return {
        "max_delivery_attempts": max_delivery_attempts,
        "minimum_backoff_seconds": minimum_backoff,
        "maximum_backoff_seconds": maximum_backoff,
    }


def _timing(reader: _Reader) -> dict[str, int]:
    """Read the four timeouts and check that they fit into each other."""
    ack_deadline = reader.integer(
        "ackDeadlineSeconds",
        10,
        MAX_ACK_DEADLINE_SECONDS,
        "Pub/Sub's limit for a push ack deadline",
    )
    function_timeout = reader.integer(
        "functionTimeoutSeconds",
        1,
        MAX_ACK_DEADLINE_SECONDS,
        "a push waits at most 600 s for the response",
    )
    retry_deadline = reader.integer(
        "retryDeadlineSeconds",
        0,
        MAX_ACK_DEADLINE_SECONDS,
        "it must fit in the function timeout",
    )
    request_timeout = reader.integer(
        "requestTimeoutSeconds",
        1,
        MAX_ACK_DEADLINE_SECONDS,
        "it must fit in the function timeout",
    )
    _check_timing_budget(
        retry_deadline, request_timeout, function_timeout, ack_deadline
    )
    return {
        "ack_deadline_seconds": ack_deadline,
        "function_timeout_seconds": function_timeout,
        "retry_deadline_seconds": retry_deadline,
        "request_timeout_seconds": request_timeout,
    }


def _sizing(reader: _Reader) -> dict[str, str | int]:
    """Read the memory, CPU and scaling of the function's instances."""
    function_memory = reader.text("functionMemory")
    if not _MEMORY_PATTERN.match(function_memory):
        raise ConfigError(
            "functionMemory",
            f"invalid value {function_memory!r}; expected an amount with a unit "
            "(k, M, G, Mi or Gi) such as 256Mi or 1Gi",
            "pulumi config set functionMemory 256Mi",
        )

    function_cpu = _function_cpu(reader)
    max_instances = reader.integer(
        "maxInstances", 1, 1000, "the range this program accepts"
    )
    instance_concurrency = reader.integer(
        "instanceConcurrency",
        1,
        1000,
        "Cloud Run's limit for concurrent requests per instance",
    )
    if instance_concurrency > 1 and float(function_cpu) < 1:
        raise ConfigError(
            "instanceConcurrency",
            f"{instance_concurrency} needs functionCpu of at least 1, but "
            f"functionCpu is {function_cpu}, and Cloud Run serves concurrent "
            "requests only with a whole CPU",
            "pulumi config set functionCpu 1, or pulumi config set "
            "instanceConcurrency 1",
        )
    return {
        "function_memory": function_memory,
        "function_cpu": function_cpu,
        "max_instances": max_instances,
        "instance_concurrency": instance_concurrency,
    }


def _log_level(reader: _Reader) -> str:
    log_level = reader.text("logLevel").upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(
            "logLevel",
            f"invalid value {log_level!r}; expected one of {', '.join(LOG_LEVELS)}",
            "pulumi config set logLevel INFO",
        )
    return log_level


def _resource_prefix(reader: _Reader, stack: str) -> str:
    prefix = reader.text("resourcePrefix")
    if not prefix:
        prefix = default_prefix(stack)
        origin = f"derived from the stack name {stack!r}"
    else:
        origin = "set in the stack configuration"

    if len(prefix) > MAX_PREFIX_LENGTH or not _PREFIX_PATTERN.match(prefix):
        raise ConfigError(
            "resourcePrefix",
            f"invalid value {prefix!r} ({origin}); expected 2-{MAX_PREFIX_LENGTH} "
            "lowercase letters, digits and hyphens, starting with a letter and "
            "not ending with a hyphen, so that service account ids stay within "
            "30 characters",
            "pulumi config set resourcePrefix mp-dev",
        )
    return prefix


def _mixpanel_project_id(reader: _Reader) -> str:
    project_id = reader.text("mixpanelProjectId")
    fix = "pulumi config set mixpanelProjectId YOUR_MIXPANEL_PROJECT_ID"
    if not project_id:
        raise ConfigError(
            "mixpanelProjectId",
            "missing; it is the numeric id in the Mixpanel project settings",
            fix,
        )
    if not project_id.isdigit():
        raise ConfigError(
            "mixpanelProjectId",
            f"invalid value {project_id!r}; expected the numeric id from the "
            "Mixpanel project settings",
            fix,
        )
    return project_id


def _mixpanel_region(reader: _Reader) -> str:
    region = reader.text("mixpanelRegion").lower()
    if region not in MIXPANEL_REGIONS:
        raise ConfigError(
            "mixpanelRegion",
            f"invalid value {region!r}; Mixpanel's data residency regions are "
            "us, eu and in, and events sent to another region's host are not "
            "ingested",
            "pulumi config set mixpanelRegion us (or eu, or in)",
        )
    return region


def _credential(reader: _Reader) -> MixpanelCredential:
    has_username = reader.is_set("mixpanelServiceAccountUsername")
    has_secret = reader.is_set("mixpanelServiceAccountSecret")
    has_token = reader.is_set("mixpanelProjectToken")

    if has_token and (has_username or has_secret):
        raise ConfigError(
            "mixpanelProjectToken",
            "set together with a service account credential "
            "(mixpanelServiceAccountUsername, mixpanelServiceAccountSecret); "
            "set exactly one kind of credential",
            "pulumi config rm mixpanelProjectToken, or pulumi config rm "
            "mixpanelServiceAccountUsername and pulumi config rm "
            "mixpanelServiceAccountSecret",
        )
    if not (has_token or has_username or has_secret):
        raise ConfigError(
            "mixpanelServiceAccountSecret",
            "no Mixpanel credential is set; set a service account "
            "(mixpanelServiceAccountUsername and mixpanelServiceAccountSecret) "
            "or a project token (mixpanelProjectToken)",
            "pulumi config set mixpanelServiceAccountUsername USERNAME and "
            "pulumi config set --secret mixpanelServiceAccountSecret SECRET, "
            "or pulumi config set --secret mixpanelProjectToken TOKEN",
        )
    if has_username and not has_secret:
        raise ConfigError(
            "mixpanelServiceAccountSecret",
            "missing; mixpanelServiceAccountUsername is set and needs its secret",
            "pulumi config set --secret mixpanelServiceAccountSecret SECRET",
        )
    if has_secret and not has_username:
        raise ConfigError(
            "mixpanelServiceAccountUsername",
            "missing; mixpanelServiceAccountSecret is set and needs its user name",
            "pulumi config set mixpanelServiceAccountUsername USERNAME",
        )

    if has_token:
        key, env_var, username = "mixpanelProjectToken", "MIXPANEL_PROJECT_TOKEN", None
        kind = CredentialKind.PROJECT_TOKEN
    else:
        key, env_var = "mixpanelServiceAccountSecret", "MIXPANEL_SERVICE_ACCOUNT_SECRET"
        username = reader.text("mixpanelServiceAccountUsername")
        kind = CredentialKind.SERVICE_ACCOUNT

    if not reader.is_encrypted(key):
        raise ConfigError(
            key,
            "stored in plain text in the stack configuration; a credential must "
            "be encrypted",
            f"pulumi config set --secret {key} VALUE",
        )
    return MixpanelCredential(
        kind=kind,
        config_key=key,
        env_var=env_var,
        username=username,
        value=reader.secret(key),
    )


def _function_cpu(reader: _Reader) -> str:
    cpu = reader.text("functionCpu")
    fix = "pulumi config set functionCpu 0.167"
    try:
        amount = float(cpu)
    except ValueError:
        raise ConfigError(
            "functionCpu",
            f"invalid value {cpu!r}; expected a number of CPUs such as 0.167 or 1",
            fix,
        ) from None
    if not 0 < amount <= 8:
        raise ConfigError(
            "functionCpu",
            f"{cpu} is out of range; Cloud Run functions get more than 0 and at "
            "most 8 CPUs",
            fix,
        )
    return cpu


def _check_timing_budget(
    retry_deadline: int, request_timeout: int, function_timeout: int, ack_deadline: int
) -> None:
    """Check retryDeadline + requestTimeout <= functionTimeout <= ackDeadline.

    The function stops retrying at the retry deadline, and its last Mixpanel
    request may take up to the request timeout, so both must fit in the
    function timeout. Pub/Sub treats a push that is still running at the ack
    deadline as failed and redelivers it, so the function timeout must fit in
    the ack deadline.
    """
    needed = retry_deadline + request_timeout
    if needed > function_timeout:
        fixes = []
        if needed <= ack_deadline:
            fixes.append(f"pulumi config set functionTimeoutSeconds {needed}")
        if function_timeout - request_timeout >= 0:
            fixes.append(
                "pulumi config set retryDeadlineSeconds "
                f"{function_timeout - request_timeout}"
            )
        if not fixes:
            fixes.append(f"pulumi config set requestTimeoutSeconds {function_timeout}")
        raise ConfigError(
            "functionTimeoutSeconds",
            f"{function_timeout} is below retryDeadlineSeconds + "
            f"requestTimeoutSeconds ({retry_deadline} + {request_timeout} = "
            f"{needed}), so the function could be stopped in its last Mixpanel "
            "request",
            ", or ".join(fixes),
        )
    if function_timeout > ack_deadline:
        raise ConfigError(
            "ackDeadlineSeconds",
            f"{ack_deadline} is below functionTimeoutSeconds ({function_timeout}), "
            "so Pub/Sub would redeliver a message the function is still working on",
            f"pulumi config set ackDeadlineSeconds {function_timeout}",
        )
