"""Task options as the API takes them: durations, backoff policies, and the submit body.

Durations are accepted the way people write them (``30``, ``1.5``, ``"500ms"``, ``"30s"``,
``"5m"``, ``timedelta(...)``) and sent in milliseconds, so a decorator reads like its intent:
``@app.task(timeout="30s", backoff="exponential")``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

Duration = int | float | str | timedelta
"""Seconds as a number, a string such as ``"250ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"1d"``,
or a ``timedelta``."""

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def seconds(value: Duration) -> float:
    """A duration in seconds."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool):
        raise TypeError("a duration is a number of seconds, a string such as '30s', or a timedelta")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {value}")
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"not a duration: {value!r} (try '500ms', '30s', '5m', '2h', '1d')")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def millis(value: Duration) -> int:
    """A duration in whole milliseconds, as the API takes it."""
    return round(seconds(value) * 1000)


@dataclass(frozen=True)
class Backoff:
    """How long a task waits before its next attempt: ``min * multiplier ** (n - 1)``, capped at
    ``max``, less up to ``jitter`` of it at random (so tasks that failed together spread out)."""

    min: Duration = 1
    max: Duration = "5m"
    multiplier: float = 2.0
    jitter: float = 0.2

    def to_json(self) -> dict[str, Any]:
        return {
            "min_ms": millis(self.min),
            "max_ms": millis(self.max),
            "multiplier": float(self.multiplier),
            "jitter": float(self.jitter),
        }


BackoffLike = Backoff | str | Mapping[str, Any]
"""A ``Backoff``, the API's own dict, or a name: ``"exponential"`` (1 s doubling up to 5 min,
the server's default), ``"fixed"`` (1 s each time), ``"none"`` (at once), or a duration such as
``"10s"`` (that long each time)."""


def backoff_json(value: BackoffLike) -> dict[str, Any]:
    """The API's form of a backoff policy."""
    if isinstance(value, Backoff):
        return value.to_json()
    if isinstance(value, Mapping):
        return dict(value)
    if value == "exponential":
        return Backoff().to_json()
    if value == "fixed":
        return Backoff(min=1, max=1, multiplier=1.0, jitter=0.0).to_json()
    if value == "none":
        return Backoff(min=0, max=0, multiplier=1.0, jitter=0.0).to_json()
    every = millis(value)
    return {"min_ms": every, "max_ms": every, "multiplier": 1.0, "jitter": 0.0}


def timestamp(value: datetime | str) -> str:
    """An RFC 3339 time; a naive datetime is taken as UTC."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class TaskOptions:
    """Options of a task, set on the decorator and overridable per call (``with_options``).
    ``None`` leaves the server's default."""

    queue: str | None = None
    priority: int | None = None
    retries: int | None = None
    timeout: Duration | None = None
    lease_timeout: Duration | None = None
    backoff: BackoffLike | None = None
    tags: Sequence[str] | None = None
    resources: Mapping[str, int] | None = None
    labels: Mapping[str, str] | None = None
    concurrency_key: str | None = None
    rate_key: str | None = None
    idempotency_key: str | None = None
    delay: Duration | None = None
    run_at: datetime | str | None = None
    expires_in: Duration | None = None
    expires_at: datetime | str | None = None

    def merged(self, **changes: Any) -> TaskOptions:
        """These options with the given ones (those not None) in place."""
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for key, value in changes.items():
            if key not in fields:
                raise TypeError(f"unknown task option {key!r}")
            if value is not None:
                fields[key] = value
        return TaskOptions(**fields)

    def to_json(self, *, node: bool = False) -> dict[str, Any]:
        """The API's fields for these options. A workflow node (``node=True``) takes fewer:
        no scheduling or idempotency fields."""
        body: dict[str, Any] = {}
        if self.queue is not None:
            body["queue"] = self.queue
        if self.priority is not None:
            body["priority"] = self.priority
        if self.retries is not None:
            body["max_attempts"] = self.retries + 1
        if self.timeout is not None:
            body["timeout_ms"] = max(1, millis(self.timeout))
        if self.lease_timeout is not None:
            body["lease_timeout_ms"] = millis(self.lease_timeout)
        if self.backoff is not None:
            body["backoff"] = backoff_json(self.backoff)
        if self.tags is not None:
            body["tags"] = list(self.tags)
        if node:
            return body
        if self.resources is not None:
            body["resources"] = dict(self.resources)
        if self.labels is not None:
            body["labels"] = dict(self.labels)
        if self.concurrency_key is not None:
            body["concurrency_key"] = self.concurrency_key
        if self.rate_key is not None:
            body["rate_key"] = self.rate_key
        if self.idempotency_key is not None:
            body["idempotency_key"] = self.idempotency_key
        if self.delay is not None:
            body["delay_ms"] = millis(self.delay)
        if self.run_at is not None:
            body["run_at"] = timestamp(self.run_at)
        if self.expires_in is not None:
            body["expires_in_ms"] = max(1, millis(self.expires_in))
        if self.expires_at is not None:
            body["expires_at"] = timestamp(self.expires_at)
        return body


OPTION_NAMES = frozenset(TaskOptions.__dataclass_fields__)
