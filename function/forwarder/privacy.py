"""Removal and keyed hashing of personal properties, and the IP address rule.

`config` reads the rules from the environment. `handler` applies them to each
event that the transform returns, the IP rule through `events.encode_event`,
before any check of the event, so a dropped value reaches neither Mixpanel,
nor a log line, nor the `error_detail` of a dead letter.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from .events import PLACEHOLDER_IDS

# A path names a property inside `properties`, one key per element.
PropertyPath = tuple[str, ...]

# Mixpanel reads an event's IP address from `ip`. Producers sometimes use
# `$ip`, which is Mixpanel's name for it on profile updates.
IP_PROPERTY = "ip"
IP_ALIASES = ("$ip",)

# Mixpanel geolocates an event from the address of the server that sent the
# import request unless the event names an address in `ip`. Mixpanel's SDKs
# send ip=0 to turn geolocation off (the `ip = 0` argument of mixpanel-ruby,
# the ip=0 URL parameter of the mobile SDKs), so events without an address
# of their own carry "0". Sources:
# https://docs.mixpanel.com/docs/tracking-best-practices/geolocation and
# https://docs.mixpanel.com/docs/best-practices/server-side-best-practices
# NOTE: that the Import API leaves an event with `"ip": "0"` without
# geolocation is inferred from those pages and not confirmed on a real
# project. Check one event's $city and mp_country_code after the first deploy.
NO_GEOLOCATION_IP = "0"

# Mixpanel reads `time` as a time, so a hash in its place fails validation.
UNHASHABLE = frozenset({"time"})

# Identity properties keep the values that Mixpanel treats as "no id", so
# that hashing never turns events without a user into one shared user.
IDENTITY_PROPERTIES = frozenset({"distinct_id", "$device_id", "$user_id"})

# A key of 32 random hex characters carries 128 bits.
MIN_HASH_KEY_LENGTH = 32

_DROP = object()


def parse_paths(text: str) -> tuple[PropertyPath, ...]:
    """Parse comma-separated dotted paths such as `email,address.street`.

    Empty entries are skipped, and a repeated path is kept once.

    Raises:
        ValueError: an entry has an empty segment or one with spaces at an end.
    """
    paths: list[PropertyPath] = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        segments = tuple(entry.split("."))
        for segment in segments:
            if not segment or segment != segment.strip():
                raise ValueError(
                    f"invalid property path {entry!r}; expected names separated "
                    "by dots, such as address.street, each non-empty and "
                    "without spaces at either end"
                )
        if segments not in paths:
            paths.append(segments)
    return tuple(paths)


class PrivacyRules(msgspec.Struct, frozen=True):
    """The properties to drop and to hash, the hash key, and the IP rule."""

    drop_paths: tuple[PropertyPath, ...] = ()
    hash_paths: tuple[PropertyPath, ...] = ()
    hash_key: str = ""
    keep_ip: bool = False

    def __rich_repr__(self) -> Iterator[tuple[str, Any]]:
        # The fields that repr shows. msgspec's own __repr__ and
        # __rich_repr__, which the rich library calls, would print the key.
        yield "drop_paths", self.drop_paths
        yield "hash_paths", self.hash_paths
        yield "keep_ip", self.keep_ip

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.__rich_repr__())
        return f"PrivacyRules({fields})"


class PropertyPrivacy:
    """Applies one set of `PrivacyRules` to events."""

    def __init__(self, rules: PrivacyRules) -> None:
        self._rules = rules
        self._paths = bool(rules.drop_paths or rules.hash_paths)
        self._mac = None
        if rules.hash_paths:
            # The prepared HMAC is copied for each value, which saves hashing
            # the key every time.
            self._mac = hmac.new(rules.hash_key.encode(), digestmod=hashlib.sha256)

    def apply(self, event: Any) -> Any:
        """Return a copy of the event with the rules applied.

        The input is never changed, so events that share nested objects are
        each processed once. A value that is not an event with a
        `properties` object is returned as it is, for `normalise_event` to
        reject.
        """
        event = self.rewrite(event)
        if not isinstance(event, dict):
            return event
        properties = event.get("properties", {})
        if not isinstance(properties, dict):
            return event
        properties = dict(properties)
        self.set_ip(properties)
        return {**event, "properties": properties}

    def rewrite(self, event: Any) -> Any:
        """Apply the drop and hash rules, and not the IP rule, as `apply` does.

        Returns the event itself when no rule changes it, which saves a copy
        of every event when none is configured. `events.encode_event` then
        applies `set_ip` to its own copy of the properties.
        """
        if not self._paths or not isinstance(event, dict):
            return event
        original = event.get("properties", {})
        if not isinstance(original, dict):
            return event

        properties = original
        for path in self._rules.drop_paths:
            properties = _rewrite(properties, path, _drop)
        for path in self._rules.hash_paths:
            is_identity = len(path) == 1 and path[0] in IDENTITY_PROPERTIES
            action = self.hash_identity if is_identity else self.hash_value
            properties = _rewrite(properties, path, action)
        if properties is original:
            return event
        return {**event, "properties": properties}

    def hash_value(self, value: Any) -> Any:
        """Return the hex HMAC-SHA-256 of a value, or None for None.

        A string is hashed as UTF-8, and any other value as its canonical
        JSON text, so the number 42 and the string "42" hash alike.
        """
        if value is None or self._mac is None:
            return value
        if isinstance(value, str):
            text = value
        else:
            text = json.dumps(
                value, sort_keys=True, ensure_ascii=False, separators=(",", ":")
            )
        mac = self._mac.copy()
        # A lone surrogate from a "\ud800" escape has no UTF-8 form, and
        # "surrogatepass" still gives it a stable encoding.
        mac.update(text.encode("utf-8", "surrogatepass"))
        return mac.hexdigest()

    def hash_identity(self, value: Any) -> Any:
        """Hash an identity value, keeping the placeholders Mixpanel rejects."""
        if isinstance(value, bool) or (
            isinstance(value, str | int) and str(value).lower() in PLACEHOLDER_IDS
        ):
            return value
        return self.hash_value(value)

    def set_ip(self, properties: dict[str, Any]) -> None:
        """Apply the IP rule to a dict of properties, in place."""
        if not self._rules.keep_ip:
            for name in IP_ALIASES:
                properties.pop(name, None)
            properties[IP_PROPERTY] = NO_GEOLOCATION_IP
            return
        if properties.get(IP_PROPERTY) not in (None, ""):
            return
        alias = next(
            (properties[name] for name in IP_ALIASES if properties.get(name)), None
        )
        properties[IP_PROPERTY] = alias if isinstance(alias, str) else NO_GEOLOCATION_IP


def _drop(value: Any) -> Any:
    return _DROP


def _rewrite(value: Any, path: PropertyPath, action: Callable[[Any], Any]) -> Any:
    """Return `value` with `action` applied to what `path` names inside it.

    A key may itself contain dots, so every split of the path is tried: the
    path a.b.c matches the key "a.b.c", the key "c" under "a.b", and so on.
    A list met before the path ends passes the rest of the path to each of
    its elements. A dict or list is copied before it changes, and an
    unchanged one is returned as the same object.
    """
    if isinstance(value, list):
        rewritten = [_rewrite(item, path, action) for item in value]
        if all(new is old for new, old in zip(rewritten, value, strict=True)):
            return value
        return rewritten
    if not isinstance(value, dict):
        return value

    result = value
    for split in range(len(path), 0, -1):
        key = ".".join(path[:split])
        if key not in result:
            continue
        current = result[key]
        rest = path[split:]
        replacement = _rewrite(current, rest, action) if rest else action(current)
        if replacement is current:
            continue
        if result is value:
            result = dict(value)
        if replacement is _DROP:
            del result[key]
        else:
            result[key] = replacement
    return result
