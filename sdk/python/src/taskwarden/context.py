"""What a handler sees: its task (id, attempt, ...), cancellation, progress, fan-out and its
parents' outcomes.

Cancellation reaches an ``async`` handler as asyncio cancellation (``CancelledError`` at its next
``await``), whatever the cause: the task was cancelled, its lease was lost, its timeout passed, or
the worker shut down past its grace period. A sync handler runs in a thread, which Python cannot
interrupt: it sees the same cancellation through ``ctx.cancelled``, ``ctx.check_cancelled()`` or
``ctx.wait_cancelled(seconds)`` (a sleep that wakes up on cancellation).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, Union

from .errors import ApiError, Permanent
from .workflow import FanOut, Node, ParentResult, Policy, as_nodes, policy_json

if TYPE_CHECKING:
    from .app import TaskDef

T = TypeVar("T")

JoinLike = Union[Node[T], "TaskDef[Any, T]"]
"""A fan-out's join: a node (``merge.node(...)``) or a task (its payload then empty)."""


class Backend(Protocol):
    """Where a context's calls go: the worker (over HTTP), or ``run_inline`` (in process)."""

    loop: asyncio.AbstractEventLoop | None

    def progress(self, ctx: Context, fraction: float, message: str | None) -> None: ...

    def log(self, ctx: Context, line: str) -> None: ...

    async def fan_out(self, ctx: Context, body: dict[str, Any]) -> FanOut[Any]: ...

    async def parents_page(
        self, ctx: Context, after: str | None, limit: int
    ) -> tuple[list[ParentResult], str | None]: ...


class Context:
    """Given to every handler as its first argument."""

    def __init__(
        self,
        *,
        id: str,
        kind: str,
        queue: str,
        attempt: int,
        max_attempts: int,
        parent_count: int,
        backend: Backend,
        worker_id: str | None = None,
    ) -> None:
        self.id = id
        """The task's id."""
        self.kind = kind
        self.queue = queue
        self.attempt = attempt
        """This attempt's number, from 1."""
        self.max_attempts = max_attempts
        self.parent_count = parent_count
        """For a workflow task (a fan-out's join, say): how many parents it has."""
        self.worker_id = worker_id
        self.traceparent: str | None = None
        """The W3C trace context this attempt runs in (its run span, or the one the task was
        submitted in), to pass on as a ``traceparent`` header to what the handler calls."""
        self._backend = backend
        self._cancelled = threading.Event()
        self.cancel_reason: str | None = None
        """Why the handler is being stopped: ``cancelled``, ``lease lost``, ``timed out`` or
        ``shutdown``; None while it is not."""

    def __repr__(self) -> str:
        return f"Context(id={self.id!r}, kind={self.kind!r}, attempt={self.attempt})"

    # --- cancellation ---

    def _cancel(self, reason: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        """True once the handler should stop."""
        return self._cancelled.is_set()

    def check_cancelled(self) -> None:
        """Raises ``asyncio.CancelledError`` if the handler should stop (for sync handlers, which
        cannot be interrupted: call it between steps)."""
        if self._cancelled.is_set():
            raise asyncio.CancelledError(self.cancel_reason or "cancelled")

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Blocks up to ``timeout`` seconds, waking at once on cancellation; True if cancelled.
        A sync handler's interruptible sleep."""
        return self._cancelled.wait(timeout)

    # --- progress ---

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Records progress (``fraction`` from 0 to 1); it reaches the server with the next
        heartbeat. Safe to call from a sync handler's thread."""
        self._backend.progress(self, min(1.0, max(0.0, float(fraction))), message)

    def log(self, line: str) -> None:
        """Adds a line to this task's log (``taskwarden task logs ID``, or
        ``GET /v1/tasks/{id}/logs``): it reaches the server with the next heartbeat or with the
        attempt's outcome, dated now. Safe to call from a sync handler's thread."""
        self._backend.log(self, str(line))

    # --- fan-out and parents ---

    async def fan_out(
        self,
        children: Sequence[Node[Any]],
        join: JoinLike[T],
        *,
        policy: Policy | None = None,
    ) -> FanOut[T]:
        """Adds ``children`` (run in parallel) and ``join`` (runs once they all finished, reads
        their outcomes with ``ctx.parents()``) to this task's workflow. Whatever waited for this
        task now waits for the join, whose result stands in for this task's: return the
        ``FanOut`` from the handler (annotated ``-> FanOut[R]``). Idempotent: a retried attempt
        gets the fan-out made the first time. ``policy``: the fan-out's own failure policy
        (``"collect"``, ``"fail_fast"`` or ``Quorum(...)``)."""
        if not children:
            raise ValueError("a fan-out needs at least one child")
        join_node: Node[T] = join if isinstance(join, Node) else join.node()
        body: dict[str, Any] = {"children": as_nodes(children), "join": join_node.to_json()}
        if self.traceparent is not None:
            body["traceparent"] = self.traceparent
        if policy is not None:
            body["failure_policy"] = policy_json(policy)
        try:
            result: FanOut[T] = await self._backend.fan_out(self, body)
        except ApiError as e:
            if e.status in (400, 422):
                raise Permanent(f"fan-out refused: {e}") from e
            raise
        return result

    def fan_out_sync(
        self,
        children: Sequence[Node[Any]],
        join: JoinLike[T],
        *,
        policy: Policy | None = None,
    ) -> FanOut[T]:
        """``fan_out`` for a sync handler (it runs the call on the worker's event loop)."""
        return self._run_sync(self.fan_out(children, join, policy=policy))

    async def parents(self) -> list[ParentResult]:
        """The outcomes of this task's parents, in node order (empty for a plain task), read a
        page at a time."""
        out: list[ParentResult] = []
        after: str | None = None
        while len(out) < self.parent_count or after is not None:
            page, after = await self._backend.parents_page(self, after, 1000)
            out.extend(page)
            if after is None or not page:
                break
        return out

    def parents_sync(self) -> list[ParentResult]:
        """``parents`` for a sync handler."""
        return self._run_sync(self.parents())

    def _run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._backend.loop
        if loop is None:
            return asyncio.run(coro)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coro.close()
            raise RuntimeError("a *_sync context call from the event loop: await the async one")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()
