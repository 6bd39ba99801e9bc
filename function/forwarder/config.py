"""Settings of the forwarder, read once from the environment and validated."""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec

from .errors import ConfigError
from .hook import DEFAULT_TRANSFORM, TRANSFORM_PATTERN, TRANSFORM_VARIABLE
from .privacy import (
    MIN_HASH_KEY_LENGTH,
    UNHASHABLE,
    PrivacyRules,
    PropertyPath,
    parse_paths,
)

# Import API hosts by data residency. Events sent to another residency's host
# are not ingested, so an unknown region is an error and never falls back to US.
REGION_HOSTS = {
    "us": "https://api.mixpanel.com",
    "eu": "https://api-eu.mixpanel.com",
    "in": "https://api-in.mixpanel.com",
}

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Mixpanel's documented per-request limits.
MAX_EVENTS_PER_REQUEST = 2000
MAX_REQUEST_BYTES = 10 * 1024 * 1024

# Mixpanel's OpenAPI example for 413 names 2 MiB and its own samples flush at
# that size, so the default cap stays there rather than at the documented 10 MB.
DEFAULT_MAX_BATCH_BYTES = 2 * 1024 * 1024

# A push subscription waits at most 600 s for a response.
MAX_DEADLINE_SECONDS = 600

_TOPIC_PATTERN = re.compile(r"^projects/[^/]+/topics/[^/]+$")


class Settings(msgspec.Struct, frozen=True):
    """Validated configuration of one function instance."""

    api_url: str
    project_id: str | None
    username: str
    password: str
    region: str
    dead_letter_topic: str
    retry_deadline_seconds: float
    request_timeout_seconds: float
    initial_backoff_seconds: float
    max_backoff_seconds: float
    max_batch_bytes: int
    pubsub_emulator_host: str | None
    privacy: PrivacyRules = PrivacyRules()
    transform: str = DEFAULT_TRANSFORM

    def __rich_repr__(self) -> Iterator[tuple[str, Any]]:
        # The fields that repr shows. msgspec's own __repr__ and
        # __rich_repr__, which the rich library calls, would print the
        # credential too.
        yield "api_url", self.api_url
        yield "project_id", self.project_id
        yield "region", self.region
        yield "dead_letter_topic", self.dead_letter_topic

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.__rich_repr__())
        return f"Settings({fields})"

    @property
    def secrets(self) -> tuple[str, ...]:
        """The credential values and the hash key, for redaction in logs.

        The HTTP Basic form of the credential is included, because an error
        body that echoes the Authorization header would carry it.
        """
        basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        values = (self.password, self.username, self.privacy.hash_key, basic)
        return tuple(value for value in values if value)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the forwarder's environment variables.

    Raises:
        ConfigError: a variable is missing or invalid; the message names it and
            never contains a credential.
    """
    env = os.environ if environ is None else environ

    region = _get(env, "MIXPANEL_REGION", "us").lower()
    if region not in REGION_HOSTS:
        raise ConfigError(
            "MIXPANEL_REGION",
            f"invalid value {region!r}; expected one of us, eu, in",
        )

    log_level = _get(env, "LOG_LEVEL", "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(
            "LOG_LEVEL",
            f"invalid value {log_level!r}; expected one of {', '.join(LOG_LEVELS)}",
        )

    api_url = _get(env, "MIXPANEL_API_URL", "") or REGION_HOSTS[region]
    _check_api_url(api_url)

    username, password, project_id = _credential(env)

    topic = _get(env, "DEAD_LETTER_TOPIC", "")
    if not topic:
        raise ConfigError("DEAD_LETTER_TOPIC", "missing; set it to projects/P/topics/T")
    if not _TOPIC_PATTERN.match(topic):
        raise ConfigError(
            "DEAD_LETTER_TOPIC",
            f"invalid value {topic!r}; expected projects/P/topics/T",
        )

    retry_deadline = _number(
        env, "RETRY_DEADLINE_SECONDS", 150, 0, MAX_DEADLINE_SECONDS
    )
    request_timeout = _number(
        env, "MIXPANEL_REQUEST_TIMEOUT_SECONDS", 30, 0.1, MAX_DEADLINE_SECONDS
    )
    initial_backoff = _number(env, "RETRY_INITIAL_BACKOFF_SECONDS", 2, 0, 600)
    max_backoff = _number(env, "RETRY_MAX_BACKOFF_SECONDS", 60, 0, 600)
    if max_backoff < initial_backoff:
        raise ConfigError(
            "RETRY_MAX_BACKOFF_SECONDS",
            f"{max_backoff:g} is below RETRY_INITIAL_BACKOFF_SECONDS "
            f"({initial_backoff:g})",
        )
    max_batch_bytes = int(
        _number(
            env,
            "MIXPANEL_MAX_BATCH_BYTES",
            DEFAULT_MAX_BATCH_BYTES,
            1024,
            MAX_REQUEST_BYTES,
        )
    )

    return Settings(
        api_url=api_url.rstrip("/"),
        project_id=project_id,
        username=username,
        password=password,
        region=region,
        dead_letter_topic=topic,
        retry_deadline_seconds=retry_deadline,
        request_timeout_seconds=request_timeout,
        initial_backoff_seconds=initial_backoff,
        max_backoff_seconds=max_backoff,
        max_batch_bytes=max_batch_bytes,
        pubsub_emulator_host=_get(env, "PUBSUB_EMULATOR_HOST", "") or None,
        privacy=_privacy(env),
        transform=_transform(env),
    )


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, default).strip()


def _credential(env: Mapping[str, str]) -> tuple[str, str, str | None]:
    """Return (username, password, project id) for HTTP Basic authentication."""
    project_id = _get(env, "MIXPANEL_PROJECT_ID", "") or None
    if project_id is not None and not (project_id.isascii() and project_id.isdigit()):
        # The value is not echoed: a credential pasted into the wrong variable
        # would otherwise reach the log.
        raise ConfigError(
            "MIXPANEL_PROJECT_ID",
            f"invalid value of {len(project_id)} characters; expected the numeric "
            "project id from the Mixpanel project settings, digits 0-9 only",
        )

    username = _get(env, "MIXPANEL_SERVICE_ACCOUNT_USERNAME", "")
    secret = _get(env, "MIXPANEL_SERVICE_ACCOUNT_SECRET", "")
    token = _get(env, "MIXPANEL_PROJECT_TOKEN", "")

    if token and (username or secret):
        raise ConfigError(
            "MIXPANEL_PROJECT_TOKEN",
            "set either MIXPANEL_PROJECT_TOKEN or the service account variables "
            "MIXPANEL_SERVICE_ACCOUNT_USERNAME and MIXPANEL_SERVICE_ACCOUNT_SECRET, "
            "not both",
        )
    if token:
        # A project token authenticates as the user name with an empty password.
        return token, "", project_id

    if not username and not secret:
        raise ConfigError(
            "MIXPANEL_SERVICE_ACCOUNT_SECRET",
            "missing; set MIXPANEL_SERVICE_ACCOUNT_USERNAME and "
            "MIXPANEL_SERVICE_ACCOUNT_SECRET, or MIXPANEL_PROJECT_TOKEN",
        )
    if not username:
        raise ConfigError(
            "MIXPANEL_SERVICE_ACCOUNT_USERNAME",
            "missing; a service account secret needs its user name",
        )
    if not secret:
        raise ConfigError(
            "MIXPANEL_SERVICE_ACCOUNT_SECRET",
            "missing; a service account user name needs its secret",
        )
    if project_id is None:
        raise ConfigError(
            "MIXPANEL_PROJECT_ID",
            "missing; service account authentication needs the project id",
        )
    return username, secret, project_id


def _privacy(env: Mapping[str, str]) -> PrivacyRules:
    """Read the properties to drop and hash, the hash key and the IP rule."""
    drop_paths = _paths(env, "PII_DROP_PROPERTIES")
    hash_paths = _paths(env, "PII_HASH_PROPERTIES")

    both = [path for path in hash_paths if path in drop_paths]
    if both:
        raise ConfigError(
            "PII_HASH_PROPERTIES",
            f"{'.'.join(both[0])!r} is also in PII_DROP_PROPERTIES; list each "
            "property in one of them",
        )
    for path in hash_paths:
        if path[0] in UNHASHABLE and len(path) == 1:
            raise ConfigError(
                "PII_HASH_PROPERTIES",
                f"{path[0]!r} cannot be hashed, because Mixpanel needs it as it "
                "is; list it in PII_DROP_PROPERTIES to remove it",
            )

    hash_key = _get(env, "PII_HASH_KEY", "")
    if hash_paths and not hash_key:
        raise ConfigError(
            "PII_HASH_KEY",
            "missing; PII_HASH_PROPERTIES is set and needs the HMAC key, which "
            "the deployed function reads from Secret Manager",
        )
    if hash_key and len(hash_key) < MIN_HASH_KEY_LENGTH:
        # The message gives the length only, never the key.
        raise ConfigError(
            "PII_HASH_KEY",
            f"too short ({len(hash_key)} characters); use at least "
            f"{MIN_HASH_KEY_LENGTH}, such as the output of openssl rand -hex 32",
        )

    return PrivacyRules(
        drop_paths=drop_paths,
        hash_paths=hash_paths,
        hash_key=hash_key,
        keep_ip=_boolean(env, "PII_KEEP_IP", False),
    )


def _paths(env: Mapping[str, str], name: str) -> tuple[PropertyPath, ...]:
    try:
        return parse_paths(_get(env, name, ""))
    except ValueError as err:
        raise ConfigError(name, str(err)) from None


def _boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name, "").lower()
    if not raw:
        return default
    if raw not in ("true", "false"):
        raise ConfigError(name, f"invalid value {raw!r}; expected true or false")
    return raw == "true"


def _transform(env: Mapping[str, str]) -> str:
    spec = _get(env, TRANSFORM_VARIABLE, "") or DEFAULT_TRANSFORM
    if not TRANSFORM_PATTERN.match(spec):
        raise ConfigError(
            TRANSFORM_VARIABLE,
            f"invalid value {spec!r}; expected module:function, such as "
            f"{DEFAULT_TRANSFORM}",
        )
    return spec


def _check_api_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        # The URL is not echoed, because it carries a credential.
        raise ConfigError(
            "MIXPANEL_API_URL",
            "contains a user name or password; put the credential in "
            "MIXPANEL_SERVICE_ACCOUNT_SECRET or MIXPANEL_PROJECT_TOKEN instead",
        )
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return
    raise ConfigError(
        "MIXPANEL_API_URL",
        f"invalid value {url!r}; expected an https URL, or plain http to a "
        "loopback host such as http://127.0.0.1:8080 for a local stand-in",
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    minimum: float,
    maximum: float,
) -> float:
    raw = _get(env, name, "")
    if not raw:
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"invalid value {raw!r}; expected a number") from None
    if not minimum <= value <= maximum:
        raise ConfigError(
            name,
            f"{raw!r} is out of range; expected {_plain(minimum)} to {_plain(maximum)}",
        )
    return value


def _plain(number: float) -> str:
    """Format a bound without exponent notation: 10485760, not 1.04858e+07."""
    return str(int(number)) if number == int(number) else str(number)
