"""Errors: what the server refused, what a task ended as, and what a handler may raise.

Two families live here. Client-side errors (``ApiError`` and its subclasses, ``TransportError``,
``WaitTimeout``, ``TaskFailed``) describe a call or a task that did not go as hoped. Handler-side
signals (``Permanent``, ``RetryAfter``) are raised *inside* a task handler to choose how its
attempt ends; any other exception from a handler is a retryable failure.
"""

from __future__ import annotations

from typing import Any


class TaskwardenError(Exception):
    """Base of every error this package raises on its own."""


class ApiError(TaskwardenError):
    """The server answered with an error: its HTTP status, stable code, the field to blame, and
    its message (``payload.url: required (...)``)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        where = f" (field: {field})" if field else ""
        super().__init__(f"{status} {code}: {message}{where}")


class InvalidRequest(ApiError):
    """400: the request does not fit the API (a missing field, a value out of range)."""


class Unprocessable(ApiError):
    """422: the request fits the API but breaks a rule, such as a payload that does not match the
    JSON Schema a worker registered for its kind. ``field`` names the JSON path."""


class Unauthorized(ApiError):
    """401 or 403: no token, a bad token, or a token without the right role."""


class NotFound(ApiError):
    """404: no such task, workflow, queue or schedule."""


class Conflict(ApiError):
    """409: the change does not apply to the thing's current state."""


class LeaseLost(Conflict):
    """409 ``lease_lost``: the lease this worker call names is no longer held."""


class Unavailable(ApiError):
    """503: the server is starting, shutting down or cannot reach its store."""


def api_error(status: int, code: str, message: str, field: str | None = None) -> ApiError:
    """The most specific ``ApiError`` subclass for a status and code."""
    cls: type[ApiError]
    if code == "lease_lost":
        cls = LeaseLost
    else:
        cls = {
            400: InvalidRequest,
            401: Unauthorized,
            403: Unauthorized,
            404: NotFound,
            409: Conflict,
            422: Unprocessable,
            503: Unavailable,
        }.get(status, ApiError)
    return cls(status, code, message, field)


class TransportError(TaskwardenError):
    """The server could not be reached, or the connection broke before an answer came."""


class WaitTimeout(TaskwardenError, TimeoutError):
    """A wait for a task or workflow ran out before it finished. The task goes on."""

    def __init__(self, task_id: str, timeout: float) -> None:
        self.task_id = task_id
        self.timeout = timeout
        super().__init__(f"task {task_id} did not finish within {timeout:g} s")


class TaskFailed(TaskwardenError):
    """A task ended without a result: ``state`` is ``failed``, ``cancelled`` or ``expired``;
    ``error`` is the last attempt's error and ``attempts`` how many attempts were made."""

    def __init__(
        self,
        task_id: str,
        state: str,
        error: str | None,
        attempts: int,
        task: dict[str, Any] | None = None,
    ) -> None:
        self.task_id = task_id
        self.state = state
        self.error = error
        self.attempts = attempts
        self.task = task or {}
        super().__init__(f"task {task_id} {state} after {attempts} attempt(s): {error}")


class TaskCancelled(TaskFailed):
    """The task was cancelled."""


class TaskExpired(TaskFailed):
    """No attempt started before the task's ``expires_at``."""


def task_failed(task: dict[str, Any]) -> TaskFailed:
    """The exception that stands for a task that ended unsuccessfully."""
    state = str(task.get("state"))
    cls = {"cancelled": TaskCancelled, "expired": TaskExpired}.get(state, TaskFailed)
    return cls(
        str(task.get("id")),
        state,
        task.get("error"),
        int(task.get("attempts") or 0),
        task,
    )


class ConversionError(TaskwardenError, ValueError):
    """A value does not fit its annotated type. ``path`` is where, as a JSON path such as
    ``payload.items[2].url``."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.reason = message
        super().__init__(f"{path}: {message}")


# --- raised by handlers -------------------------------------------------------------------------


class Permanent(Exception):
    """Raise from a handler to fail the task now, without retries (it becomes a dead letter)."""


class RetryAfter(Exception):
    """Raise from a handler to retry after ``seconds`` instead of the task's backoff (while
    attempts remain)."""

    def __init__(self, seconds: float, message: str = "retry requested") -> None:
        self.seconds = seconds
        super().__init__(message)


class QuorumNotReached(TaskwardenError):
    """A gather under ``Quorum(...)`` can no longer reach it: too many tasks failed."""

    def __init__(self, needed: int, succeeded: int, failures: list[TaskFailed]) -> None:
        self.needed = needed
        self.succeeded = succeeded
        self.failures = failures
        super().__init__(
            f"quorum not reached: {succeeded} succeeded, {needed} needed, {len(failures)} failed"
        )
