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
from decimal import Decimal

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
    "alertEmails": "string",
    "oldestUnackedAlertSeconds": "integer",
    "errorRateAlertPercent": "integer",
    "resourcePrefix": "string",
    "logLevel": "string",
    "protectDeadLetter": "string",
    "piiDropProperties": "string",
    "piiHashProperties": "string",
    "piiHashKey": "string",
    "keepIpAddress": "string",
}

# Required provider keys that Pulumi.yaml cannot declare: Pulumi accepts a
# provider key there only with a fixed `value`, never a type or a default.
UNDECLARED_KEYS = frozenset({"gcp:project"})

# Keys whose value is a credential: read as secret Outputs, never printed.
SECRET_KEYS = frozenset(
    {"mixpanelServiceAccountSecret", "mixpanelProjectToken", "piiHashKey"}
)

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
    "alertEmails": "",
    "oldestUnackedAlertSeconds": 600,
    "errorRateAlertPercent": 5,
    "resourcePrefix": "",
    "logLevel": "INFO",
    "protectDeadLetter": "",
    "piiDropProperties": "",
    "piiHashProperties": "",
    "piiHashKey": "",
    "keepIpAddress": "false",
}

MIXPANEL_REGIONS = ("us", "eu", "in")

# The function rejects a shorter hash key: 32 hex characters carry 128 bits.
MIN_PII_HASH_KEY_LENGTH = 32
# Mixpanel reads `time` as a time, so a hash in its place fails validation.
UNHASHABLE_PROPERTIES = frozenset({"time"})
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# A push subscription waits at most 600 s for the endpoint's response.
MAX_ACK_DEADLINE_SECONDS = 600

# The longest suffix added to the prefix is "-build" on the build service
# account, whose id must be 6-30 characters, so the prefix has a maximum of 24.
MAX_PREFIX_LENGTH = 24

# The stack whose dead-letter topic and subscription are protected from
# deletion when protectDeadLetter is empty.
PRODUCTION_STACK = "prod"

# A 2nd gen function runs as a Cloud Run service, so its CPU and memory follow
# Cloud Run's rules. CPUs are fractional from 0.08 in steps of 0.001, or a
# whole 1, 2, 4, 6 or 8. Memory is 128 MiB to 32 GiB, within the range that
# the CPUs allow below. Sources: the tables on
# https://cloud.google.com/run/docs/configuring/services/cpu and
# https://cloud.google.com/run/docs/configuring/services/memory-limits
MIB, GIB = 1024**2, 1024**3
MEMORY_UNITS = {"k": 1000, "M": 1000**2, "G": 1000**3, "Mi": MIB, "Gi": GIB}
MIN_FRACTIONAL_CPU = 0.08
WHOLE_CPUS = (1, 2, 4, 6, 8)
MIN_MEMORY_BYTES = 128 * MIB
# (minimum CPUs, maximum memory with them), in increasing order.
MEMORY_CEILINGS = (
    (0.08, 512 * MIB),
    (0.5, 1 * GIB),
    (1, 4 * GIB),
    (2, 8 * GIB),
    (4, 16 * GIB),
    (6, 24 * GIB),
    (8, 32 * GIB),
)
# The minimum memory that Cloud Run accepts with these CPUs.
MEMORY_FLOORS = {4: 2 * GIB, 6: 4 * GIB, 8: 4 * GIB}

# Mixpanel's Import API takes at most 2000 events per request and about 30,000
# events per second per project (https://docs.mixpanel.com/reference/rate-limits).
MIXPANEL_EVENTS_PER_REQUEST = 2000
MIXPANEL_EVENTS_PER_SECOND = 30_000

_PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$")
_PROJECT_PATTERN = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION_PATTERN = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_MEMORY_PATTERN = re.compile(r"^([1-9][0-9]*)(k|M|G|Mi|Gi)$")
# One address: a local part and a domain with a dot, without spaces or commas.
_EMAIL_PATTERN = re.compile(r"^[^@\s,]+@[^@\s,]+\.[^@\s,]+$")

# Pub/Sub samples a subscription's metrics once a minute, and the push
# subscription keeps a message at most 7 days (its default retention).
MIN_OLDEST_UNACKED_ALERT_SECONDS = 60
MAX_OLDEST_UNACKED_ALERT_SECONDS = 7 * 86_400


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
class PiiConfig:
    """The personal-data rules that the function applies to every event.

    The properties are dotted paths relative to `properties`, as written in
    the stack configuration. `hash_key` is the HMAC key as a secret Output,
    and None when no property is hashed.
    """

    drop_properties: tuple[str, ...]
    hash_properties: tuple[str, ...]
    keep_ip_address: bool
    hash_key: pulumi.Output[str] | None = field(repr=False)


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
    alert_emails: tuple[str, ...]
    oldest_unacked_alert_seconds: int
    error_rate_alert_percent: int
    log_level: str
    protect_dead_letter: bool
    pii: PiiConfig


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
        **_alerting(reader),
        log_level=_log_level(reader),
        protect_dead_letter=_protect_dead_letter(reader, stack),
        pii=_pii(reader),
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

    def length(self, key: str) -> int:
        """Return the length of a key's stripped value, secret or not."""
        source, name = self._source(key)
        return len((source.get(name) or "").strip())

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
    function_memory, memory_bytes = _function_memory(reader)
    function_cpu = _function_cpu(reader)
    _check_memory_fits_cpu(function_memory, memory_bytes, function_cpu)

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
    _warn_about_mixpanel_rate_limit(max_instances, instance_concurrency)
    return {
        "function_memory": function_memory,
        "function_cpu": function_cpu,
        "max_instances": max_instances,
        "instance_concurrency": instance_concurrency,
    }


def _protect_dead_letter(reader: _Reader, stack: str) -> bool:
    """Read protectDeadLetter; empty means protect on the production stack only."""
    value = reader.text("protectDeadLetter").lower()
    if not value:
        return stack == PRODUCTION_STACK
    if value not in ("true", "false"):
        raise ConfigError(
            "protectDeadLetter",
            f"invalid value {value!r}; expected true, false, or empty for true "
            f"on the stack {PRODUCTION_STACK!r} and false elsewhere",
            "pulumi config set protectDeadLetter true",
        )
    return value == "true"


def _alerting(reader: _Reader) -> dict[str, tuple[str, ...] | int]:
    """Read the alert recipients and the thresholds of two alert policies."""
    return {
        "alert_emails": _alert_emails(reader),
        "oldest_unacked_alert_seconds": reader.integer(
            "oldestUnackedAlertSeconds",
            MIN_OLDEST_UNACKED_ALERT_SECONDS,
            MAX_OLDEST_UNACKED_ALERT_SECONDS,
            "Pub/Sub reports the age once a minute and keeps a message 7 days",
        ),
        "error_rate_alert_percent": reader.integer(
            "errorRateAlertPercent", 1, 100, "a percentage of the responses"
        ),
    }


def _alert_emails(reader: _Reader) -> tuple[str, ...]:
    """Read alertEmails: addresses separated by commas, empty entries skipped."""
    raw = reader.text("alertEmails")
    fix = "pulumi config set alertEmails 'oncall@example.com,team@example.com'"
    if raw.startswith("["):
        raise ConfigError(
            "alertEmails",
            f"invalid value {raw!r}; expected addresses separated by commas, not a "
            "list",
            fix,
        )

    addresses: list[str] = []
    seen: set[str] = set()
    for entry in raw.split(","):
        address = entry.strip()
        if not address:
            continue
        if not _EMAIL_PATTERN.match(address):
            raise ConfigError(
                "alertEmails",
                f"{address!r} is not an email address; expected addresses such as "
                "oncall@example.com, separated by commas",
                fix,
            )
        if address.lower() in seen:
            raise ConfigError(
                "alertEmails",
                f"{address!r} is listed twice; each address gets one notification "
                "channel",
                fix,
            )
        seen.add(address.lower())
        addresses.append(address)
    return tuple(addresses)


def _pii(reader: _Reader) -> PiiConfig:
    """Read the properties to drop and hash, the hash key and the IP rule."""
    drop = _property_paths(reader, "piiDropProperties")
    hashed = _property_paths(reader, "piiHashProperties")

    for path in hashed:
        if path in drop:
            raise ConfigError(
                "piiHashProperties",
                f"{path!r} is also in piiDropProperties; list each property in "
                "one of them",
                f"pulumi config set piiHashProperties '{_without(hashed, path)}'",
            )
        if path in UNHASHABLE_PROPERTIES:
            raise ConfigError(
                "piiHashProperties",
                f"{path!r} cannot be hashed, because Mixpanel needs it as it is; "
                "drop it instead",
                f"pulumi config set piiHashProperties '{_without(hashed, path)}'",
            )

    return PiiConfig(
        drop_properties=drop,
        hash_properties=hashed,
        keep_ip_address=_keep_ip_address(reader),
        hash_key=_pii_hash_key(reader, hashed),
    )


def _property_paths(reader: _Reader, key: str) -> tuple[str, ...]:
    """Read dotted property paths separated by commas, empty entries skipped."""
    raw = reader.text(key)
    fix = f"pulumi config set {key} 'email,address.street'"
    if raw.startswith("["):
        raise ConfigError(
            key,
            f"invalid value {raw!r}; expected paths separated by commas, not a list",
            fix,
        )

    paths: list[str] = []
    for entry in raw.split(","):
        path = entry.strip()
        if not path:
            continue
        segments = path.split(".")
        if any(not segment or segment != segment.strip() for segment in segments):
            raise ConfigError(
                key,
                f"{path!r} is not a property path; expected names separated by "
                "dots, such as address.street, each non-empty and without spaces "
                "at either end",
                fix,
            )
        if path in paths:
            raise ConfigError(key, f"{path!r} is listed twice", fix)
        paths.append(path)
    return tuple(paths)


def _without(paths: tuple[str, ...], removed: str) -> str:
    return ",".join(path for path in paths if path != removed)


def _pii_hash_key(
    reader: _Reader, hashed: tuple[str, ...]
) -> pulumi.Output[str] | None:
    """Read piiHashKey as a secret Output when properties are hashed."""
    fix = 'pulumi config set --secret piiHashKey "$(openssl rand -hex 32)"'
    if not hashed:
        if reader.is_set("piiHashKey"):
            pulumi.log.warn(
                "Configuration piiHashKey is set but piiHashProperties is empty, "
                "so the key is not deployed. Set piiHashProperties to hash "
                "properties, or run pulumi config rm piiHashKey"
            )
        return None

    if not reader.is_set("piiHashKey"):
        raise ConfigError(
            "piiHashKey",
            "missing; piiHashProperties is set and needs the key of the keyed "
            "hash (HMAC-SHA-256)",
            fix,
        )
    if not reader.is_encrypted("piiHashKey"):
        raise ConfigError(
            "piiHashKey",
            "stored in plain text in the stack configuration; the hash key must "
            "be encrypted",
            fix,
        )
    # The message gives the length only, never the key.
    length = reader.length("piiHashKey")
    if length < MIN_PII_HASH_KEY_LENGTH:
        raise ConfigError(
            "piiHashKey",
            f"too short ({length} characters); the function needs at least "
            f"{MIN_PII_HASH_KEY_LENGTH}",
            fix,
        )
    return reader.secret("piiHashKey")


def _keep_ip_address(reader: _Reader) -> bool:
    value = reader.text("keepIpAddress").lower()
    if not value:
        return False
    if value not in ("true", "false"):
        raise ConfigError(
            "keepIpAddress",
            f"invalid value {value!r}; expected true or false",
            "pulumi config set keepIpAddress false",
        )
    return value == "true"


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
    if not (project_id.isascii() and project_id.isdigit()):
        # The value is not echoed: a credential pasted into the wrong key
        # would otherwise be printed.
        raise ConfigError(
            "mixpanelProjectId",
            f"invalid value of {len(project_id)} characters; expected the numeric "
            "id from the Mixpanel project settings, digits 0-9 only",
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
    fractional = MIN_FRACTIONAL_CPU <= amount < 1
    if not (fractional or amount in WHOLE_CPUS):
        raise ConfigError(
            "functionCpu",
            f"{cpu} is not a CPU setting that Cloud Run accepts: from "
            f"{MIN_FRACTIONAL_CPU} to below 1, or one of "
            f"{', '.join(map(str, WHOLE_CPUS))}",
            fix,
        )
    if fractional and Decimal(cpu) % Decimal("0.001") != 0:
        raise ConfigError(
            "functionCpu",
            f"{cpu} has more than three decimals; Cloud Run sets fractional CPUs "
            "in steps of 0.001",
            fix,
        )
    return cpu


def _function_memory(reader: _Reader) -> tuple[str, int]:
    """Return the memory setting as written and in bytes, within Cloud Run's range."""
    memory = reader.text("functionMemory")
    match = _MEMORY_PATTERN.match(memory)
    if not match:
        raise ConfigError(
            "functionMemory",
            f"invalid value {memory!r}; expected an amount with a unit "
            "(k, M, G, Mi or Gi) such as 256Mi or 1Gi",
            "pulumi config set functionMemory 256Mi",
        )

    amount = int(match.group(1)) * MEMORY_UNITS[match.group(2)]
    maximum = MEMORY_CEILINGS[-1][1]
    if not MIN_MEMORY_BYTES <= amount <= maximum:
        raise ConfigError(
            "functionMemory",
            f"{memory} is outside the range {_memory_text(MIN_MEMORY_BYTES)}-"
            f"{_memory_text(maximum)} that Cloud Run accepts",
            "pulumi config set functionMemory 256Mi",
        )
    return memory, amount


def _check_memory_fits_cpu(memory: str, memory_bytes: int, cpu: str) -> None:
    """Check the memory against the range that Cloud Run allows for the CPUs."""
    cpus = float(cpu)
    ceiling = max(most for least, most in MEMORY_CEILINGS if least <= cpus)
    if memory_bytes > ceiling:
        needed = min(least for least, most in MEMORY_CEILINGS if most >= memory_bytes)
        raise ConfigError(
            "functionMemory",
            f"{memory} needs functionCpu of at least {needed:g}, but functionCpu is "
            f"{cpu}, with which Cloud Run allows at most {_memory_text(ceiling)}",
            f"pulumi config set functionCpu {needed:g}, or pulumi config set "
            f"functionMemory {_memory_text(ceiling)}",
        )

    floor = MEMORY_FLOORS.get(int(cpus), 0) if cpus.is_integer() else 0
    if memory_bytes < floor:
        raise ConfigError(
            "functionMemory",
            f"{memory} is below the {_memory_text(floor)} that Cloud Run requires "
            f"with functionCpu {cpu}",
            f"pulumi config set functionMemory {_memory_text(floor)}, or pulumi "
            "config set functionCpu 2",
        )


def _memory_text(amount: int) -> str:
    """Format a whole number of MiB as a quantity such as 512Mi or 4Gi."""
    if amount % GIB == 0:
        return f"{amount // GIB}Gi"
    return f"{amount // MIB}Mi"


def _warn_about_mixpanel_rate_limit(max_instances: int, concurrency: int) -> None:
    """Warn when the function could send more events than Mixpanel accepts.

    The bound assumes that every push in flight sends a full request of 2000
    events each second. That is an estimate of the worst case, so it warns and
    does not reject: above Mixpanel's limit the excess gets HTTP 429, which the
    function retries and then hands back to Pub/Sub.
    """
    in_flight = max_instances * concurrency
    events_per_second = in_flight * MIXPANEL_EVENTS_PER_REQUEST
    if events_per_second <= MIXPANEL_EVENTS_PER_SECOND:
        return

    max_in_flight = MIXPANEL_EVENTS_PER_SECOND // MIXPANEL_EVENTS_PER_REQUEST
    if concurrency <= max_in_flight:
        fix = f"pulumi config set maxInstances {max_in_flight // concurrency}"
    else:
        fix = (
            "pulumi config set maxInstances 1 and pulumi config set "
            f"instanceConcurrency {max_in_flight}"
        )
    pulumi.log.warn(
        f"Configuration maxInstances ({max_instances}) x instanceConcurrency "
        f"({concurrency}) lets {in_flight} pushes run at once. At "
        f"{MIXPANEL_EVENTS_PER_REQUEST} events per request and one request per "
        f"second each, that is up to {events_per_second} events per second, above "
        f"the about {MIXPANEL_EVENTS_PER_SECOND} that Mixpanel accepts per project, "
        "so Mixpanel may answer HTTP 429 and delay events. To stay below it, keep "
        f"maxInstances x instanceConcurrency at most {max_in_flight}: {fix}"
    )


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
            half = function_timeout // 2
            fixes.append(
                f"pulumi config set requestTimeoutSeconds {half} and "
                f"pulumi config set retryDeadlineSeconds {function_timeout - half}"
            )
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
